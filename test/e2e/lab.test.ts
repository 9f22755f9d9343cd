// Tests of the e2e lab itself (test/e2e/lab.ts): the topology is right, the
// target is reachable only from srv, the node-less sshd really lacks node,
// and down() leaves nothing behind.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  LAB,
  type Lab,
  labBytes,
  labBytesSha256,
  PAGE_MARKER,
  requireProgram,
  startLab,
  sweepStaleLabs,
  TestLab,
  waitForOutput,
} from './lab.js';

let lab: Lab;
let other: Lab;

beforeAll(async () => {
  // Two labs at once, as two test files would: names must not clash.
  [lab, other] = await Promise.all([startLab({ dns: true, ipv6: true }), startLab({ hideNodeWith: 'bind', targetServices: false })]);
});

afterAll(async () => {
  await Promise.all([lab?.down(), other?.down()]);
});

const ssh = (host: string, ...cmd: string[]) => lab.exec('cli', [...lab.sshArgv(host), ...cmd], { timeoutMs: 20_000 });

describe('topology', () => {
  it('uses unique, valid names', () => {
    expect(lab.prefix).not.toBe(other.prefix);
    for (const v of Object.values(lab.veth)) expect(v.length).toBeLessThanOrEqual(15);
    const list = execFileSync('ip', ['netns', 'list']).toString();
    for (const n of [...Object.values(lab.ns), ...Object.values(other.ns)]) expect(list).toContain(n);
    expect(fs.readFileSync(lab.sshConfigPath, 'utf8')).toMatch(/Host lab\n\s+HostName 10\.99\.0\.2/);
  });

  it('srv does not forward', async () => {
    const r = await lab.execOk('srv', ['sysctl', '-n', 'net.ipv4.ip_forward']);
    expect(r.stdout.trim()).toBe('0');
  });

  it('from cli, the target is NOT reachable (only a tunnel can reach it)', async () => {
    const t0 = Date.now();
    const [http, echo, http6] = await Promise.all([
      lab.exec('cli', ['curl', '-sS', '--max-time', '3', `http://${LAB.target}/`], { timeoutMs: 10_000 }),
      lab.exec('cli', ['socat', '-T3', '-', `TCP:${LAB.target4}:${LAB.echoPort},connect-timeout=3`], {
        input: 'x',
        timeoutMs: 10_000,
      }),
      lab.exec('cli', ['curl', '-sS', '--max-time', '3', `http://[${LAB.target6}]/`], { timeoutMs: 10_000 }),
    ]);
    expect(Date.now() - t0).toBeLessThan(8_000);
    expect(http.code).not.toBe(0);
    expect(http.stdout).not.toContain(PAGE_MARKER);
    expect(echo.code).not.toBe(0);
    expect(http6.code).not.toBe(0);
  });

  it('from cli, srv is reachable', async () => {
    const r = await lab.execOk('cli', ['bash', '-c', `exec 3<>/dev/tcp/${LAB.srv}/${LAB.sshPort} && head -c 4 <&3`], {
      timeoutMs: 5_000,
    });
    expect(r.stdout).toBe('SSH-');
  });
});

describe('sshd', () => {
  it('port 22: key auth from cli works and node is on PATH', async () => {
    const r = await ssh(lab.sshHost, 'node', '-v');
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout.trim()).toMatch(/^v\d+\.\d+\.\d+$/);
    const who = await ssh(lab.sshHost, 'id', '-u');
    expect(who.stdout.trim()).toBe('0');
    // sshd's SetEnv puts the lab's node on PATH (CI may keep node outside /usr/bin)
    const p = await ssh(lab.sshHost, 'echo', '$PATH');
    expect(p.stdout.trim().split(':')).toContain(path.dirname(fs.realpathSync(lab.nodePath)));
  });

  it('port 22 works over IPv6 and in the second lab', async () => {
    expect((await ssh(lab.sshHost6, 'echo', 'ok6')).stdout.trim()).toBe('ok6');
    const r = await other.exec('cli', [...other.sshArgv(), 'node', '-v']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^v\d+/);
  });

  it('port 2222: the session works but node is not there', async () => {
    expect(lab.noNodeMethod).toBeDefined();
    const ok = await ssh(lab.sshHostNoNode, 'echo', 'shell-ok');
    expect(ok.code).toBe(0);
    expect(ok.stdout.trim()).toBe('shell-ok');

    const node = await ssh(lab.sshHostNoNode, 'node', '-v');
    expect(node.stdout).not.toMatch(/^v\d+/);
    // 127 = not found (overlay whiteout); 126 = not executable (/dev/null bind fallback, bash)
    if (lab.noNodeMethod === 'overlay') expect(node.code).toBe(127);
    else expect([126, 127]).toContain(node.code);

    const abs = await ssh(lab.sshHostNoNode, lab.nodePath, '-v');
    expect(abs.code).not.toBe(0);
    expect(abs.stdout).not.toMatch(/^v\d+/);
    for (const name of ['node', 'nodejs']) {
      const cv = await ssh(lab.sshHostNoNode, 'sh', '-c', `'command -v ${name} || echo none'`);
      if (lab.noNodeMethod === 'overlay') expect(cv.stdout.trim()).toBe('none');
    }
    // The fallback (/dev/null bound over node) hides it too.
    expect(other.noNodeMethod).toBe('bind');
    const b = await other.exec('cli', [...other.sshArgv(other.sshHostNoNode), 'node', '-v']);
    expect([126, 127]).toContain(b.code);
    expect(b.stdout).not.toMatch(/^v\d+/);
    // …while the same sshd host on port 22 still has it (the hiding is private to port 2222).
    expect((await ssh(lab.sshHost, 'node', '-v')).code).toBe(0);
    expect(fs.existsSync(lab.nodePath)).toBe(true);
  });
});

describe('target services (from srv)', () => {
  it('serves the known page, also on IPv6', async () => {
    const r = await lab.execOk('srv', ['curl', '-sS', '--max-time', '5', `http://${LAB.target}/`]);
    expect(r.stdout).toContain(PAGE_MARKER);
    const r6 = await lab.execOk('srv', ['curl', '-sS', '--max-time', '5', `http://[${LAB.target6}]/`]);
    expect(r6.stdout).toContain(PAGE_MARKER);
  });

  it('serves deterministic bytes', async () => {
    const n = 3_000_017;
    const r = await lab.execOk('srv', ['curl', '-sS', '--max-time', '20', `http://${LAB.target}/bytes/${n}`]);
    expect(r.stdoutBuffer.length).toBe(n);
    expect(r.stdoutBuffer.equals(labBytes(n))).toBe(true);
    const s = await lab.execOk('srv', ['sh', '-c', `curl -sS http://${LAB.target}/bytes/${n}?seed=abc | sha256sum`]);
    expect(s.stdout.split(' ')[0]).toBe(labBytesSha256(n, 'abc'));
  });

  it('answers the sha256 of an upload', async () => {
    const body = labBytes(1_000_000, 'up');
    const r = await lab.execOk(
      'srv',
      ['curl', '-sS', '--max-time', '20', '--data-binary', '@-', '-H', 'content-type: application/octet-stream', `http://${LAB.target}/sha256`],
      { input: body },
    );
    expect(r.stdout).toBe(labBytesSha256(1_000_000, 'up'));
  });

  it('sees srv as the client (/whoami)', async () => {
    const r = await lab.execOk('srv', ['curl', '-sS', '--max-time', '5', `http://${LAB.target}/whoami`]);
    expect(JSON.parse(r.stdout)).toMatchObject({ remoteAddress: LAB.srvTargetSide, localAddress: LAB.target, localPort: 80 });
  });

  it('echoes TCP on .3, .4, .5 and UDP on .3', async () => {
    for (const addr of [LAB.target, LAB.target4, LAB.target5, `[${LAB.target6}]`]) {
      const r = await lab.execOk('srv', ['socat', '-T5', '-', `TCP:${addr}:${LAB.echoPort}`], { input: `hello ${addr}\n` });
      expect(r.stdout).toBe(`hello ${addr}\n`);
    }
    const u = await lab.execOk('srv', ['socat', '-T2', '-', `UDP:${LAB.target}:${LAB.echoPort}`], { input: 'udp-ping' });
    expect(u.stdout).toBe('udp-ping');
  });

  it('refuses port 81 at once', async () => {
    const t0 = Date.now();
    const r = await lab.exec('srv', ['socat', '-T2', '-', `TCP:${LAB.target}:${LAB.closedPort}`], { input: 'x' });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/Connection refused/);
    expect(Date.now() - t0).toBeLessThan(3_000);
  });

  it('resolves lab names through dnsmasq (srv and cli resolv.conf point at it)', async () => {
    const js = "require('dns').promises.resolve4('target.lab').then(a=>console.log(a.join()))";
    const r = await lab.execOk('srv', [lab.nodePath, '-e', js]);
    expect(r.stdout.trim()).toBe(LAB.target);
    const conf = await lab.execOk('cli', ['cat', '/etc/resolv.conf']);
    expect(conf.stdout).toContain(`nameserver ${LAB.target}`);
  });
});

describe('harness', () => {
  it('exec times out', async () => {
    const t0 = Date.now();
    const r = await lab.exec('cli', ['sleep', '30'], { timeoutMs: 300 });
    expect(r.timedOut).toBe(true);
    expect(r.code).toBeNull();
    expect(Date.now() - t0).toBeLessThan(5_000);
  });

  it('iptablesSave shows the cli rules', async () => {
    await lab.execOk('cli', ['iptables', '-t', 'nat', '-N', 'lab-probe']);
    expect(await lab.iptablesSave('cli', { table: 'nat' })).toContain(':lab-probe');
    await lab.execOk('cli', ['iptables', '-t', 'nat', '-X', 'lab-probe']);
    expect(await lab.iptablesSave()).not.toContain('lab-probe');
  });

  it('a missing program names its package', () => {
    expect(() => requireProgram('rxs-no-such-program', 'rxs-pkg')).toThrow(/rxs-no-such-program.*apt-get install -y rxs-pkg/);
  });

  it('sweeps the namespaces of a dead owner', async () => {
    const stale = 'rxsdea0';
    execFileSync('ip', ['netns', 'add', `${stale}-cli`]);
    fs.mkdirSync('/run/rxshuttle-lab', { recursive: true });
    // pid 2^22+1 is above pid_max's default range on most systems: never alive
    fs.writeFileSync(`/run/rxshuttle-lab/${stale}.owner`, JSON.stringify({ pid: 4194305, start: 'x', stateDir: '/nonexistent/x' }));
    expect(sweepStaleLabs()).toContain(stale);
    expect(execFileSync('ip', ['netns', 'list']).toString()).not.toContain(stale);
    // live labs are untouched
    expect(execFileSync('ip', ['netns', 'list']).toString()).toContain(lab.ns.cli);
  });

  it('down() kills what it started and leaves no namespace, process or file', async () => {
    const sleeper = other.spawn('cli', ['sh', '-c', 'echo started; exec sleep 1000']);
    await waitForOutput(sleeper, 'started');
    const orphan = await other.execOk('srv', ['sh', '-c', 'sleep 1000 >/dev/null 2>&1 & echo $!']);
    const orphanPid = Number(orphan.stdout.trim());
    const sshdPid = Number(fs.readFileSync(`${other.stateDir}/sshd.pid`, 'utf8'));
    const inside = [...(await other.pids('cli')), ...(await other.pids('srv')), ...(await other.pids('tgt'))];
    expect(inside).toContain(orphanPid);
    expect(inside).toContain(sshdPid);
    expect(inside).toContain(sleeper.pid);

    await other.down();
    await other.down(); // idempotent

    expect(sleeper.exitCode !== null || sleeper.signalCode !== null).toBe(true);
    const gone = (pid: number) => {
      try {
        process.kill(pid, 0);
        return false;
      } catch {
        return true;
      }
    };
    for (const pid of inside) expect(gone(pid), `pid ${pid}`).toBe(true);
    const list = execFileSync('ip', ['netns', 'list']).toString();
    for (const n of Object.values(other.ns)) expect(list).not.toContain(n);
    expect(fs.existsSync(other.stateDir)).toBe(false);
    expect(fs.existsSync(`/etc/netns/${other.ns.cli}`)).toBe(false);
    expect(fs.existsSync(`/run/rxshuttle-lab/${other.prefix}.owner`)).toBe(false);
    expect(() => other.exec('cli', ['true'])).toThrow(/not up/);
    // a lab that never came up can be downed too
    await new TestLab().down();
  });
});
