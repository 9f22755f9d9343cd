// rxshuttle through a real ssh session in the e2e lab (test/e2e/lab.ts): one
// tunnel for 10.98.0.0/24 with 10.98.0.4/32 excluded, from the cli namespace.
// cli cannot reach 10.98.0.0/24 on its own (srv does not forward, see
// lifecycle.test.ts), so everything that arrives here came through the tunnel.
import { describe, expect, it } from 'vitest';
import { LAB, type Lab, labBytesSha256, PAGE_MARKER } from './lab.js';
import { curl, echoOnce, GEN_BYTES, Rxshuttle, useLab } from './tunnel-helpers.js';

const MB100 = 100_000_000;

// Every data path: by default (--transport auto, which picks ssh2 in the lab) TCP in
// direct-tcpip channels of the in-process ssh connection; with the ssh binary, TCP in
// rxshuttle's own mux, or handed to ssh's ControlMaster (--ssh-forward). Each gets its own lab
// and tunnel.
describe.each([
  {
    mode: 'in ssh2 direct-tcpip channels (the default)',
    extra: [] as string[],
    closedLine: /closed ssh#\d+ 10\.98\.0\.3:80: done/,
    halfClose: true,
  },
  {
    mode: "in rxshuttle's own mux (--transport ssh)",
    extra: ['--transport', 'ssh'],
    closedLine: /closed #\d+ 10\.98\.0\.3:80: done/,
    halfClose: true,
  },
  { mode: 'handed to ssh', extra: ['--ssh-forward'], closedLine: /closed ssh#\d+ 10\.98\.0\.3:80: done/, halfClose: false },
])('through the tunnel (10.98.0.0/24, -x 10.98.0.4/32), TCP $mode', ({ extra, closedLine, halfClose }) => {
  let lab: Lab;
  let rx: Rxshuttle;

  // One tunnel for all the tests of a path.
  useLab(
    {},
    async (up) => {
      lab = up;
      rx = await Rxshuttle.remote(lab, [...extra, LAB.targetSubnet, '-x', `${LAB.target4}/32`]);
    },
    { stopEachTest: false },
  );

  it('carries the connection on the expected path', async () => {
    const r = await curl(lab, 'cli', `http://${LAB.target}/`);
    expect(r.code).toBe(0);
    await rx.waitFor(closedLine);
  });

  // With --ssh-forward ssh holds the socket as two descriptors and cannot pass a remote EOF on
  // (README: "How it works"); the mux keeps half-close.
  if (halfClose) {
    it('a server that answers and closes first: the client sees EOF while its own side is still open', async () => {
      lab.spawn('tgt', ['socat', `TCP-LISTEN:9009,bind=${LAB.target},fork,reuseaddr`, 'SYSTEM:echo bye']);
      for (let i = 0; i < 50; i++) {
        if ((await lab.exec('tgt', ['ss', '-ltnH', 'sport = :9009'])).stdout.trim() !== '') break;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      // fd 3 stays open for writing the whole time: only the server's FIN can end `cat`.
      const r = await lab.exec('cli', ['timeout', '10', 'bash', '-c', `exec 3<>/dev/tcp/${LAB.target}/9009; cat <&3`], {
        timeoutMs: 15_000,
      });
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toBe('bye\n');
    });
  }

  it('fetches the page from 10.98.0.3, and the target sees srv as the client', async () => {
    const r = await curl(lab, 'cli', `http://${LAB.target}/`);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(PAGE_MARKER);
    await rx.waitFor(new RegExp(`Accept: ${LAB.cli.replace(/\./g, '\\.')}:\\d+ -> 10\\.98\\.0\\.3:80\\.`));

    // the connection really left from srv: that is what a tunnel does
    const who = await curl(lab, 'cli', `http://${LAB.target}/whoami`);
    expect(who.code).toBe(0);
    expect(JSON.parse(who.stdout)).toMatchObject({ remoteAddress: LAB.srvTargetSide, localAddress: LAB.target, localPort: 80 });
  });

  it('downloads 100 MB byte-identical', async () => {
    const t0 = Date.now();
    const r = await lab.exec(
      'cli',
      ['bash', '-c', `set -o pipefail; curl -sS --fail --max-time 150 http://${LAB.target}/bytes/${MB100} | sha256sum`],
      { timeoutMs: 170_000 },
    );
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout.split(' ')[0]).toBe(labBytesSha256(MB100));
    console.log(`100 MB download through the tunnel: ${Date.now() - t0} ms`);
  });

  it('uploads 100 MB byte-identical', async () => {
    const t0 = Date.now();
    const r = await lab.exec(
      'cli',
      [
        'bash',
        '-c',
        `set -o pipefail; ${lab.nodePath} ${GEN_BYTES} ${MB100} up | ` +
          `curl -sS --fail --max-time 150 -X POST -T - -H 'Expect:' -H 'content-type: application/octet-stream' ` +
          `-w '\\n%header{x-body-bytes}' http://${LAB.target}/sha256`,
      ],
      { timeoutMs: 170_000 },
    );
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    // stdout: the sha256 the target computed, then the body length it counted
    const [sha, bodyBytes] = r.stdout.split('\n');
    expect(bodyBytes).toBe(String(MB100));
    expect(sha).toBe(labBytesSha256(MB100, 'up'));
    console.log(`100 MB upload through the tunnel: ${Date.now() - t0} ms`);
  });

  it('a closed port on the target (10.98.0.3:81) is refused at once, not hung', async () => {
    const t0 = Date.now();
    const r = await curl(lab, 'cli', `http://${LAB.target}:${LAB.closedPort}/`, [], 20);
    const elapsed = Date.now() - t0;
    expect(r.code).not.toBe(0);
    expect(r.code, `curl: ${r.stderr}`).not.toBe(28); // 28 = curl's own timeout: it hung
    expect(r.stdout).toBe('');
    expect(elapsed).toBeLessThan(5_000);
    // It did go through the tunnel (the local accept happened) and was refused there.
    await rx.waitFor(`-> ${LAB.target}:${LAB.closedPort}.`);

    // The same with a bare socket: 'error' or 'close' without any data, within 5 s.
    const e = await echoOnce(lab, 'cli', LAB.target, LAB.closedPort, 10_000);
    expect(e.ok).toBe(0);
    expect(e.timedOut).toBe(false);
    expect(e.elapsedMs).toBeLessThan(5_000);
    expect(e.firstFailures[0]?.reason).toMatch(/^(error ECONNRESET|error ECONNREFUSED|error EPIPE|closed after 0 of)/);
  });

  it('does not tunnel the excluded 10.98.0.4 (but tunnels .3 and .5 of the same /24)', async () => {
    const rules = await lab.iptablesSave('cli', { table: 'nat' });
    expect(rules).toMatch(/-A rxshuttle-\d+ -d 10\.98\.0\.4\/32 .*-j RETURN/);

    const [five, four, fourHttp] = await Promise.all([
      echoOnce(lab, 'cli', LAB.target5, LAB.echoPort, 10_000),
      echoOnce(lab, 'cli', LAB.target4, LAB.echoPort, 3_000),
      curl(lab, 'cli', `http://${LAB.target4}:${LAB.echoPort}/`, ['--connect-timeout', '3'], 5),
    ]);
    expect(five.ok, JSON.stringify(five)).toBe(1);
    // .4 goes the normal way, to srv, which does not forward: nothing answers.
    expect(four.ok, JSON.stringify(four)).toBe(0);
    expect(fourHttp.code).not.toBe(0);
    expect((await rx.acceptsAtLeast(1, LAB.target5)).length).toBeGreaterThanOrEqual(1);
    expect(rx.accepts(LAB.target4)).toEqual([]);
    expect(rx.output).not.toMatch(/-> 10\.98\.0\.4:/);
  });
});
