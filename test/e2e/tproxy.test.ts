// --method tproxy (issue 13) in the e2e lab: TCP and UDP through the tunnel, the policy routing set
// up and removed by the firewall helper. UDP: datagrams one at a time, 1 B to 65 000 B, to the echo
// servers behind the remote (IPv4 and IPv6), two flows interleaved, the echo coming back from the
// address the program sent to; a DNS query over plain UDP to the lab's nameserver without --dns.
// Nothing of the instance is left after a stop or a SIGKILL of the client, and an ip rule of the
// user's own, there before, stays.
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { LAB, type Lab, labBytesSha256, PAGE_MARKER } from './lab.js';
import { curl, expectNothingLeft, isGone, Rxshuttle, rxshuttleRules, useLab, waitFast } from './tunnel-helpers.js';

const UDP_ECHO = fileURLToPath(new URL('./udp-echo.mjs', import.meta.url));
const MB20 = 20_000_000;
/** An ip rule of the user's own, in cli before any tunnel: it must outlive every one of them. */
const USER_RULE = ['rule', 'add', 'fwmark', '0x1', 'lookup', '100', 'priority', '100'];

let lab: Lab;
useLab({ dns: true, ipv6: true }, async (up) => {
  lab = up;
  await lab.execOk('cli', ['ip', ...USER_RULE]);
});

interface EchoResult {
  count: number;
  ok: number;
  lost: number;
  wrong: number;
  fromElsewhere: number;
  elapsedMs: number;
  firstProblems: string[];
}

async function udpEcho(config: Record<string, unknown>): Promise<EchoResult> {
  const r = await lab.exec('cli', [lab.nodePath, UDP_ECHO, JSON.stringify(config)], { timeoutMs: 120_000 });
  const line = r.stdout.trim().split('\n').pop() ?? '';
  if (!line.startsWith('{')) throw new Error(`udp-echo said nothing useful (exit ${r.code}): ${r.stderr}`);
  return JSON.parse(line) as EchoResult;
}

/** Every rule, route and ip rule of the instance: iptables (all tables), nft tables, ip rules and routes not of the user's. */
async function leftovers(port: number): Promise<string[]> {
  const rules = await rxshuttleRules(lab);
  const ipRules: string[] = [];
  for (const family of ['-4', '-6']) {
    const text = (await lab.execOk('cli', ['ip', family, 'rule', 'show'])).stdout;
    ipRules.push(...text.split('\n').filter((l) => l.trim() !== '' && !/^(0|32766|32767|100):/.test(l.trim())));
  }
  return [...rules, ...ipRules.map((l) => `ip rule: ${l}`), ...(rules.length === 0 && ipRules.length === 0 ? [] : [`(port ${port})`])];
}

const userRuleThere = async () => (await lab.execOk('cli', ['ip', 'rule', 'show'])).stdout.includes('100:\tfrom all fwmark 0x1 lookup 100');

describe('--method tproxy', () => {
  it('TCP: a 20 MB download byte-identical and IPv6; UDP: 500 datagrams 1 B..65 000 B echoed intact from where they were sent, IPv4 and IPv6', async () => {
    const rx = await Rxshuttle.remote(lab, ['--method', 'tproxy', LAB.targetSubnet, LAB.targetSubnet6]);
    expect(rx.output).toMatch(/Firewall ready: /);
    const r = await lab.exec('cli', ['bash', '-c', `set -o pipefail; curl -sS --fail --max-time 60 http://${LAB.target}/bytes/${MB20} | sha256sum`], { timeoutMs: 70_000 });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.split(' ')[0]).toBe(labBytesSha256(MB20));
    expect((await curl(lab, 'cli', `http://[${LAB.target6}]/`)).stdout).toContain(PAGE_MARKER);

    for (const target of [`${LAB.target}:${LAB.echoPort}`, `[${LAB.target6}]:${LAB.echoPort}`]) {
      const echo = await udpEcho({ targets: [target], count: 500, minBytes: 1, maxBytes: 65_000 });
      console.log(`tproxy UDP ${target}: ${JSON.stringify(echo)}`);
      expect(echo.firstProblems).toEqual([]);
      expect(echo.ok).toBe(500);
    }
    expect(rx.output).toMatch(/^rxshuttle: UDP: 10\.99\.0\.1:\d+ -> 10\.98\.0\.3:7\.$/m);
    await rx.stop();
    await expectNothingLeft(lab);
    expect(await leftovers(rx.port)).toEqual([]);
    expect(await userRuleThere()).toBe(true);
  });

  it('two flows interleaved, and DNS over plain UDP to a nameserver behind the remote without --dns', async () => {
    const rx = await Rxshuttle.remote(lab, ['--method', 'tproxy', LAB.targetSubnet]);
    const echo = await udpEcho({ targets: [`${LAB.target}:${LAB.echoPort}`, `${LAB.target4}:${LAB.echoPort}`], count: 200, minBytes: 1, maxBytes: 9000 });
    expect(echo.firstProblems).toEqual([]);
    expect(echo.ok).toBe(200);
    const dig = await lab.exec('cli', ['dig', '+time=3', '+tries=1', '+notcp', `@${LAB.target}`, 'target.lab'], { timeoutMs: 15_000 });
    expect(dig.stdout).toMatch(/status: NOERROR/);
    expect(dig.stdout).toMatch(/^target\.lab\.\s+\d+\s+IN\s+A\s+10\.98\.0\.3$/m);
    // dig checks that the answer came from the server it asked.
    expect(dig.stdout).toContain(`SERVER: ${LAB.target}#53(${LAB.target}) (UDP)`);
    await rx.stop();
    await expectNothingLeft(lab);
  });

  it('SIGKILL of the client mid-transfer: no rule, table, ip rule or route of the instance is left; the user\'s ip rule stays', async () => {
    for (const round of [0, 1, 2]) {
      const rx = await Rxshuttle.remote(lab, ['--method', 'tproxy', '--no-reconnect', LAB.targetSubnet]);
      // UDP and TCP in flight when it dies; the kill comes at a different moment each round.
      // Bounded: once the tunnel is gone each datagram waits 50 ms for nothing (100 at most: 5 s), curl 3 s.
      const udp = udpEcho({ targets: [`${LAB.target}:${LAB.echoPort}`], count: 100, minBytes: 1, maxBytes: 30_000, waitMs: 50 });
      const tcp = curl(lab, 'cli', `http://${LAB.target}/bytes/${MB20}`, ['-o', '/dev/null', '--limit-rate', '2M'], 3);
      await new Promise((resolve) => setTimeout(resolve, 100 + round * 150));
      const procs = rx.processes();
      process.kill(procs.main, 'SIGKILL');
      await waitFast(async () => (await leftovers(rx.port)).length === 0, 5_000, `nothing left after SIGKILL (round ${round})`).catch(async (e: unknown) => {
        throw new Error(`${(e as Error).message}: ${JSON.stringify(await leftovers(rx.port))}\n${rx.output}`);
      });
      await Promise.all([udp.catch(() => undefined), tcp]);
      await waitFast(() => [procs.main, ...procs.all].every(isGone), 5_000, 'every process of the instance gone');
    }
    expect(await userRuleThere()).toBe(true);
    await expectNothingLeft(lab);
  });

  it("--user: nobody's TCP and UDP are tunneled, root's are not", async () => {
    const rx = await Rxshuttle.remote(lab, ['--method', 'tproxy', '--user', 'nobody', LAB.targetSubnet]);
    const as = (user: 'root' | 'nobody', argv: string[]) =>
      lab.exec('cli', [...(user === 'nobody' ? ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups'] : []), ...argv], { timeoutMs: 20_000 });
    const dig = ['dig', '+time=2', '+tries=1', '+notcp', `@${LAB.target}`, 'target.lab'];
    const page = ['curl', '-sS', '--max-time', '3', `http://${LAB.target}/`];
    expect((await as('nobody', dig)).stdout).toMatch(/status: NOERROR/);
    expect((await as('nobody', page)).stdout).toContain(PAGE_MARKER);
    expect((await as('root', dig)).stdout).not.toMatch(/status: NOERROR/);
    expect((await as('root', page)).stdout).not.toContain(PAGE_MARKER);
    await rx.stop();
    await expectNothingLeft(lab);
  });

  it('stock-sshd mode (no node on the remote): one line saying UDP needs node, nothing left', async () => {
    const r = await lab.exec('cli', [process.execPath, fileURLToPath(new URL('../../dist/cli.js', import.meta.url)), '-r', lab.sshHostNoNode, '-e', lab.sshCommand, '--method', 'tproxy', LAB.targetSubnet], {
      timeoutMs: 60_000,
    });
    expect(r.code).toBe(2);
    expect(r.stderr.trim()).toMatch(/^rxshuttle: --method tproxy carries UDP, which needs node on lab-nonode/);
    await expectNothingLeft(lab);
    expect(await leftovers(0)).toEqual([]);
  });
});
