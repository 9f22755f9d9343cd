/**
 * The `tproxy` method against the real kernel: the real helper (bundled, with the real
 * iptables, ip6tables and ip, found and trusted as in production) in throwaway namespaces, never
 * the host's tables. Lab, names `rxstp-<pid>-…`:
 *
 *   client  10.125.0.2/16, fd00:125::2/64 on v0 (plus on-link routes to 10.127.0.0/16 and
 *           fd00:127::/64, which no setup tunnels): runs the helper and the probes, which listen
 *           transparently on 127.0.0.1 / ::1 (TCP on P, transparentUdp$ on U) and plainly on the
 *           DNS port D, and on 10.125.0.2:80 ("local")
 *   target  10.125.0.1, 10.125.1.1, 10.125.1.5, 10.127.0.1 (/16), fd00:125::1, fd00:125::101,
 *           fd00:127::1 (/64) on v1: answers "direct" on TCP 80 and 81 and on UDP 7001 and 81
 *
 * So a TCP reply or a UDP outcome tells where a packet went: `captured <original destination>
 * from <program's address>` (the transparent socket got it, with the destination the program
 * wrote to), `dns …` (the nat REDIRECT of --dns), `direct`, `local`. The user has a policy
 * routing rule of their own (fwmark 0x1 → table 100, priority 100, as sshuttle's manual sets it
 * up) with a route in table 100: it must be there, untouched, after every test.
 */
import { type ChildProcess, execFile } from 'node:child_process';
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { FirewallSetup, SubnetRule } from '../../src/firewall/types.js';
import { skipBecause } from '../support/skip.js';
import { waitUntil } from '../support/wait-until.js';
import type { TproxyProbeResult, TproxyProbeSpec } from './fixtures/tproxy-probe-main.js';
import { type Bundle, bundleFixture } from './support/bundle.js';
import { HelperProcess, watchdogsOf } from './support/helper-process.js';
import { Netns, netnsSkip } from './support/netns.js';

const execFileP = promisify(execFile);
const PREFIX = `rxstp-${process.pid}`;
const BYPASS_GID = 4242;
const TMARK = 1;
const table = (port: number) => 0x7278_0000 + port;

function subnet(address: string, prefix: number, exclude = false, ports: [number, number] = [0, 0]): SubnetRule {
  return { family: address.includes(':') ? 6 : 4, address, prefix, portLow: ports[0], portHigh: ports[1], exclude };
}

/** The tproxy setup of the lab for port P (UDP on P+1, DNS on P+2). */
function labSetup(port: number, extra: Partial<FirewallSetup> = {}): FirewallSetup {
  return {
    version: 1,
    method: 'tproxy',
    port,
    routerMode: false,
    bypassGid: BYPASS_GID,
    tmark: TMARK,
    udpPort: port + 1,
    rules: [
      subnet('10.125.0.0', 16),
      subnet('10.125.1.0', 24, true),
      subnet('10.125.1.1', 32, false, [81, 81]),
      subnet('fd00:125::', 64),
      subnet('fd00:125::100', 120, true),
    ],
    ...extra,
  };
}

/** The lock files of `port` (the real helper takes its lock in /run/rxshuttle). */
function lockFilesOf(port: number): string[] {
  const dir = '/run/rxshuttle';
  return existsSync(dir) ? readdirSync(dir).filter((n) => n.startsWith(`rxshuttle-${port}-net`)).map((n) => join(dir, n)) : [];
}

describe('tproxy method in a namespace (the real helper)', skipBecause(netnsSkip()), () => {
  let client: Netns | undefined;
  let target: Netns | undefined;
  let helperBundle: Bundle | undefined;
  let probe: Bundle | undefined;
  const servers: ChildProcess[] = [];
  const usedPorts: number[] = [];
  let nextPort = 20_000 + Math.floor(Math.random() * 10_000);
  const freshPort = () => {
    const port = nextPort;
    nextPort += 3;
    usedPorts.push(port);
    return port;
  };
  /** `ip rule show` of both families before any test: the user's own rule among the kernel's. */
  let rulesBefore = '';
  /** Every helper a test starts: one that a failed test left running is ended after it, so the next test starts clean. */
  const helpers: HelperProcess[] = [];
  const startHelper = () => {
    const helper = new HelperProcess(c(), helperBundle!);
    helpers.push(helper);
    return helper;
  };

  const c = () => client!;
  const probeIn = async (ns: Netns, spec: TproxyProbeSpec): Promise<TproxyProbeResult> => {
    const out = await ns.exec([...probe!.argv, JSON.stringify(spec)], probe!.env);
    return JSON.parse(out.trim().split('\n')[0] ?? '{}') as TproxyProbeResult;
  };
  /** From the client, with the transparent, DNS and local listeners of `port` in place. */
  const probeFrom = (port: number, tcp: NonNullable<TproxyProbeSpec['tcp']>, udp: NonNullable<TproxyProbeSpec['udp']> = []) =>
    probeIn(c(), { tproxyPort: port, udpPort: port + 1, dnsPort: port + 2, plain: [{ host: '10.125.0.2', port: 80, label: 'local' }], tcp, udp });

  const save = async (tool: string, name: string) => (await c().exec([tool, '-t', name])).split('\n').filter((l) => l.includes('rxshuttle'));
  const ipOut = (args: string[]) => c().exec(['ip', ...args]).catch((e: Error) => (/FIB table does not exist/.test(e.message) ? '' : Promise.reject(e)));
  const allRules = async () => `${await ipOut(['-4', 'rule', 'show'])}${await ipOut(['-6', 'rule', 'show'])}`;
  /** Everything of the instance on `port` that the kernel holds. */
  const state = async (port: number) => ({
    mangle: [...(await save('iptables-save', 'mangle')), ...(await save('ip6tables-save', 'mangle'))].filter((l) => l.includes(`-${port}`)),
    nat: [...(await save('iptables-save', 'nat')), ...(await save('ip6tables-save', 'nat'))].filter((l) => l.includes(`rxshuttle-${port}`)),
    rules: (await allRules()).split('\n').filter((l) => l.includes(`lookup ${table(port)}`)),
    routes: [
      ...(await ipOut(['-4', 'route', 'show', 'table', String(table(port))])).split('\n'),
      ...(await ipOut(['-6', 'route', 'show', 'table', String(table(port))])).split('\n'),
    ].filter(Boolean),
  });
  const NOTHING = { mangle: [], nat: [], rules: [], routes: [] };

  const startServer = async (ns: Netns, spec: TproxyProbeSpec) => {
    const child = ns.spawn([...probe!.argv, JSON.stringify({ ...spec, stay: true })], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, ...probe!.env } });
    servers.push(child);
    const lines: string[] = [];
    await new Promise<void>((resolve, reject) => {
      let seen = '';
      child.stdout?.on('data', (chunk: Buffer) => {
        seen += chunk.toString();
        const parts = seen.split('\n');
        seen = parts.pop() ?? '';
        lines.push(...parts);
        if (lines.includes('listening')) resolve();
      });
      child.on('exit', (code) => reject(new Error(`server probe exited with ${code}`)));
    });
    return { child, lines };
  };

  const deleteNamespaces = async () => {
    for (const name of [`${PREFIX}-c`, `${PREFIX}-t`]) {
      // Only what runs inside our own namespaces, by pid.
      const pids = await execFileP('ip', ['netns', 'pids', name]).then((r) => r.stdout.split(/\s+/).filter(Boolean), () => []);
      for (const pid of pids) {
        try {
          process.kill(Number(pid), 'SIGKILL');
        } catch {
          // gone already
        }
      }
      await execFileP('ip', ['netns', 'del', name]).catch(() => undefined);
    }
  };

  beforeAll(async () => {
    [helperBundle, probe] = await Promise.all([bundleFixture('helper-main'), bundleFixture('tproxy-probe-main')]);
    await deleteNamespaces(); // an earlier process with our pid, killed before its afterAll
    client = await Netns.create(`${PREFIX}-c`);
    target = await Netns.create(`${PREFIX}-t`);
    await c().ip('link', 'add', 'v0', 'type', 'veth', 'peer', 'name', 'v1', 'netns', target.name);
    await c().ip('addr', 'add', '10.125.0.2/16', 'dev', 'v0');
    await c().ip('addr', 'add', 'fd00:125::2/64', 'dev', 'v0', 'nodad');
    await c().ip('link', 'set', 'v0', 'up');
    await c().ip('route', 'add', '10.127.0.0/16', 'dev', 'v0');
    await c().ip('-6', 'route', 'add', 'fd00:127::/64', 'dev', 'v0');
    for (const address of ['10.125.0.1/16', '10.125.1.1/16', '10.125.1.5/16', '10.127.0.1/16']) await target.ip('addr', 'add', address, 'dev', 'v1');
    for (const address of ['fd00:125::1/64', 'fd00:125::101/64', 'fd00:127::1/64']) await target.ip('addr', 'add', address, 'dev', 'v1', 'nodad');
    await target.ip('link', 'set', 'v1', 'up');
    // The user's own policy routing, there before any instance.
    for (const family of ['-4', '-6']) {
      await c().ip(family, 'rule', 'add', 'fwmark', '0x1', 'lookup', '100', 'priority', '100');
    }
    await c().ip('-4', 'route', 'add', '198.51.100.0/24', 'dev', 'v0', 'table', '100');
    await c().ip('-6', 'route', 'add', '2001:db8:100::/64', 'dev', 'v0', 'table', '100');
    rulesBefore = await allRules();
    expect(rulesBefore).toContain('100:\tfrom all fwmark 0x1 lookup 100');
    await startServer(target, {
      plain: [
        { host: '::', port: 80, label: 'direct' },
        { host: '::', port: 81, label: 'direct' },
      ],
      echo: [
        { host: '0.0.0.0', port: 7001 },
        { host: '::', port: 7001 },
        { host: '0.0.0.0', port: 81 },
        { host: '::', port: 81 },
      ],
    });
  }, 60_000);

  afterEach(async () => {
    for (const helper of helpers.splice(0)) {
      if (helper.child.exitCode !== null || helper.child.signalCode !== null) continue;
      // QUIT: an orderly end, which leaves no kill switch behind either.
      helper.send('QUIT');
      helper.closeInput();
      await helper.exited;
    }
  });

  afterAll(async () => {
    for (const child of servers) child.kill('SIGKILL');
    await client?.delete();
    await target?.delete();
    await deleteNamespaces();
    // A test that killed a helper and its watchdog on purpose (or failed, and its helper went with
    // the namespace) may leave a port's lock file: once nothing of ours runs any more.
    for (const port of usedPorts) for (const file of lockFilesOf(port)) rmSync(file, { force: true });
    helperBundle?.remove();
    probe?.remove();
    const { stdout } = await execFileP('ip', ['netns', 'list']);
    expect(stdout).not.toContain(PREFIX);
  });

  /** The user's own rule and route are as they were. */
  const expectUserRoutingIntact = async () => {
    expect(await allRules()).toBe(rulesBefore);
    expect(await ipOut(['-4', 'route', 'show', 'table', '100'])).toContain('198.51.100.0/24 dev v0');
    expect(await ipOut(['-6', 'route', 'show', 'table', '100'])).toContain('2001:db8:100::/64 dev v0');
  };

  it('captures TCP and UDP to the tunneled subnets with their original destination, IPv4 and IPv6; excluded, non-tunneled, local and bypass traffic goes its way; --dns goes to D; QUIT leaves nothing', async () => {
    const port = freshPort();
    const dnsPort = port + 2;
    const helper = startHelper();
    expect(await helper.setup(labSetup(port, { dnsPort, dnsServers: ['10.125.0.53', 'fd00:125::53'] }))).toBe('READY');

    const mangle4 = (await save('iptables-save', 'mangle')).join('\n');
    expect(mangle4).toContain(`-A PREROUTING -i lo -p tcp -m mark --mark 0x1/0x1 -j rxshuttle-tproxy-${port}`);
    expect(mangle4).toContain(`-A OUTPUT -p udp -m owner ! --gid-owner ${BYPASS_GID} -j rxshuttle-mark-${port}`);
    expect(mangle4).toContain(`-A rxshuttle-tproxy-${port} -d 10.125.0.0/16 -p udp -j TPROXY --on-port ${port + 1} --on-ip 127.0.0.1 --tproxy-mark 0x1/0x1`);
    expect(mangle4).toContain(`-A rxshuttle-mark-${port} -d 10.125.0.53/32 -p udp -m udp --dport 53 -j RETURN`);
    expect((await save('ip6tables-save', 'mangle')).join('\n')).toContain(`-A rxshuttle-tproxy-${port} -d fd00:125::/64 -p tcp -j TPROXY --on-port ${port} --on-ip ::1 --tproxy-mark 0x1/0x1`);
    const s = await state(port);
    expect(s.rules).toEqual([`120:\tfrom all fwmark 0x1/0x1 lookup ${table(port)}`, `120:\tfrom all fwmark 0x1/0x1 lookup ${table(port)}`]);
    expect(s.routes.map((r) => r.trim().split(' ').slice(0, 4).join(' '))).toEqual(['local default dev lo', 'local default dev lo']);
    expect(s.nat.some((l) => l.includes(`--to-ports ${dnsPort}`))).toBe(true);

    const r = await probeFrom(
      port,
      [
        { host: '10.125.0.1', port: 80 },
        { host: '10.125.1.1', port: 80 },
        { host: '10.125.1.1', port: 81 },
        { host: '10.125.0.2', port: 80 },
        { host: '10.127.0.1', port: 80 },
        { host: 'fd00:125::1', port: 8443 },
        { host: 'fd00:125::101', port: 80 },
        { host: 'fd00:127::1', port: 80 },
        { host: '10.125.0.1', port: 80, gid: BYPASS_GID },
        { host: 'fd00:125::1', port: 80, gid: BYPASS_GID },
        { host: '10.125.0.53', port: 53 },
        { host: 'fd00:125::53', port: 53 },
      ],
      [
        { host: '10.125.0.1', port: 7001 },
        { host: '10.125.1.5', port: 7001 },
        { host: '10.125.1.1', port: 81 },
        { host: '10.127.0.1', port: 7001 },
        { host: 'fd00:125::1', port: 7001 },
        { host: 'fd00:125::101', port: 7001 },
        { host: 'fd00:127::1', port: 7001 },
        { host: '10.125.0.1', port: 7001, gid: BYPASS_GID },
        { host: '10.125.0.53', port: 53 },
        { host: 'fd00:125::53', port: 53 },
      ],
    );
    expect(r.tcp).toEqual([
      'captured 10.125.0.1:80 from 10.125.0.2', // included: the accepted socket's local address is the original destination
      'direct', // excluded /24
      'captured 10.125.1.1:81 from 10.125.0.2', // the /32 with a port beats the /24
      'local', // a local address is never captured
      'direct', // not tunneled
      'captured [fd00:125::1]:8443 from fd00:125::2',
      'direct', // excluded /120
      'direct', // not tunneled
      'direct', // the bypass group
      'direct',
      'dns 10.125.0.53:53', // a nameserver inside a tunneled subnet: redirected to D, not captured
      'dns [fd00:125::53]:53',
    ]);
    expect(r.udp).toEqual([
      'captured 10.125.0.1:7001 from 10.125.0.2',
      'direct',
      'captured 10.125.1.1:81 from 10.125.0.2',
      'direct',
      'captured [fd00:125::1]:7001 from fd00:125::2',
      'direct',
      'direct',
      'direct', // the bypass group
      'dns from 10.125.0.2', // REDIRECTed to D (the source stays the program's)
      'dns from fd00:125::2',
    ]);

    helper.send('QUIT');
    helper.closeInput();
    expect(await helper.exited).toEqual({ code: 0, signal: null });
    expect(await state(port)).toEqual(NOTHING);
    await expectUserRoutingIntact();
    const after = await probeFrom(port, [{ host: '10.125.0.1', port: 80 }], [{ host: '10.125.0.1', port: 7001 }, { host: 'fd00:125::1', port: 7001 }]);
    expect(after).toEqual({ tcp: ['direct'], udp: ['direct', 'direct'] });
  });

  it('RULES changes what is captured (TCP and UDP) while the jumps and the policy routing stay as they are', async () => {
    const port = freshPort();
    const helper = startHelper();
    expect(await helper.setup(labSetup(port, { rules: [subnet('10.125.0.1', 32), subnet('fd00:125::1', 128)] }))).toBe('READY');
    const jumps = async () => [...(await save('iptables-save', 'mangle')), ...(await save('ip6tables-save', 'mangle'))].filter((l) => /^-A (PREROUTING|OUTPUT) /.test(l));
    const before = { jumps: await jumps(), rules: await allRules(), routes: (await state(port)).routes };
    const probeAll = async () => {
      const r = await probeFrom(
        port,
        [
          { host: '10.125.0.1', port: 80 },
          { host: '10.127.0.1', port: 80 },
        ],
        [
          { host: '10.127.0.1', port: 7001 },
          { host: 'fd00:127::1', port: 7001 },
        ],
      );
      return [...r.tcp, ...r.udp];
    };
    expect(await probeAll()).toEqual(['captured 10.125.0.1:80 from 10.125.0.2', 'direct', 'direct', 'direct']);

    helper.send(`RULES ${JSON.stringify([subnet('10.127.0.1', 32), subnet('fd00:127::1', 128)])}`);
    expect(await helper.nextLine()).toBe('OK');
    expect(await probeAll()).toEqual([
      'captured 10.125.0.1:80 from 10.125.0.2',
      'captured 10.127.0.1:80 from 10.125.0.2',
      'captured 10.127.0.1:7001 from 10.125.0.2',
      'captured [fd00:127::1]:7001 from fd00:125::2',
    ]);
    expect({ jumps: await jumps(), rules: await allRules(), routes: (await state(port)).routes }).toEqual(before);

    helper.send('RULES []');
    expect(await helper.nextLine()).toBe('OK');
    expect(await probeAll()).toEqual(['captured 10.125.0.1:80 from 10.125.0.2', 'direct', 'direct', 'direct']);
    expect({ jumps: await jumps(), rules: await allRules(), routes: (await state(port)).routes }).toEqual(before);

    helper.closeInput();
    expect(await helper.exited).toEqual({ code: 0, signal: null });
    expect(await state(port)).toEqual(NOTHING);
    await expectUserRoutingIntact();
  });

  it('SIGKILL of the helper: its watchdog removes the mangle chains, the DNS chain, the ip rules and table T', async () => {
    const port = freshPort();
    const helper = startHelper();
    expect(await helper.setup(labSetup(port, { dnsPort: port + 2, dnsServers: ['10.125.0.53'] }))).toBe('READY');
    const s = await state(port);
    expect([s.mangle.length > 0, s.nat.length > 0, s.rules.length, s.routes.length]).toEqual([true, true, 2, 2]);
    helper.child.kill('SIGKILL');
    await helper.exited;
    await waitUntil(async () => JSON.stringify(await state(port)) === JSON.stringify(NOTHING), { timeoutMs: 20_000, intervalMs: 50, what: 'no chain, ip rule or route of the port left' });
    await waitUntil(async () => lockFilesOf(port).length === 0 && watchdogsOf(-1, helperBundle!.file).length === 0, { timeoutMs: 20_000, intervalMs: 50, what: 'no lock file or watchdog left' });
    await expectUserRoutingIntact();
    expect(await probeFrom(port, [{ host: '10.125.0.1', port: 80 }], [{ host: '10.125.0.1', port: 7001 }])).toEqual({ tcp: ['direct'], udp: ['direct'] });
  });

  it("a helper killed with its watchdog leaves its rules; the next helper on the port clears them, even with method nat", async () => {
    const port = freshPort();
    const first = startHelper();
    expect(await first.setup(labSetup(port, { tmark: 0x40 }))).toBe('READY');
    await first.killWithWatchdog();
    const left = await state(port);
    expect(left.rules).toHaveLength(2);
    expect(left.mangle.length).toBeGreaterThan(0);

    const { udpPort: _u, tmark: _t, ...natSetup } = labSetup(port);
    const second = startHelper();
    expect(await second.setup({ ...natSetup, method: 'nat' })).toBe('READY');
    const now = await state(port);
    expect({ mangle: now.mangle, rules: now.rules, routes: now.routes }).toEqual({ mangle: [], rules: [], routes: [] });
    expect(now.nat.length).toBeGreaterThan(0);
    second.closeInput();
    expect(await second.exited).toEqual({ code: 0, signal: null });

    // And a tproxy helper after a killed one with another mark: only its own rule stays while it runs.
    const third = startHelper();
    expect(await third.setup(labSetup(port, { tmark: 0x40 }))).toBe('READY');
    await third.killWithWatchdog();
    const fourth = startHelper();
    expect(await fourth.setup(labSetup(port))).toBe('READY');
    expect((await state(port)).rules).toEqual([`120:\tfrom all fwmark 0x1/0x1 lookup ${table(port)}`, `120:\tfrom all fwmark 0x1/0x1 lookup ${table(port)}`]);
    fourth.closeInput();
    expect(await fourth.exited).toEqual({ code: 0, signal: null });
    expect(await state(port)).toEqual(NOTHING);
    await expectUserRoutingIntact();
  });

  it('the kernel takes every shape of the rules: with and without UDP, owner matches, router mode, port ranges, /0, the largest mark, 2 001 rules', async () => {
    const port = freshPort();
    const { udpPort: _, bypassGid: _b, ...bare } = labSetup(port);
    const many = Array.from({ length: 2000 }, (_x, i) => subnet(`10.${100 + (i >> 8)}.${i & 255}.0`, 24, i % 2 === 0));
    // Each with the number of families it captures in (one ip rule each).
    const shapes: Array<[FirewallSetup, number]> = [
      [bare, 2],
      [labSetup(port, { user: 0, group: 0, dnsPort: port + 2, dnsServers: ['10.125.0.53', '127.0.0.53', 'fd00:125::53'] }), 2],
      [labSetup(port, { routerMode: true, tmark: 0xffff_ffff, udpPort: port }), 2],
      [labSetup(port, { rules: [subnet('0.0.0.0', 0), subnet('::', 0), subnet('10.0.0.0', 8, true, [1, 65535]), subnet('fd00::', 8, false, [22, 22])] }), 2],
      [labSetup(port, { rules: [...many, subnet('10.0.0.0', 8)], killSwitch: true }), 1],
    ];
    for (const [shape, families] of shapes) {
      const helper = startHelper();
      expect(await helper.setup(shape), JSON.stringify(shape).slice(0, 200)).toBe('READY');
      expect((await state(port)).rules).toHaveLength(families);
      helper.send('QUIT');
      helper.closeInput();
      expect(await helper.exited).toEqual({ code: 0, signal: null });
      expect(await state(port)).toEqual(NOTHING);
    }
    await expectUserRoutingIntact();
  });

  it('router mode: forwarded TCP and UDP (IPv4 and IPv6) meet the TPROXY chain as they come in', async () => {
    const port = freshPort();
    const helper = startHelper();
    expect(await helper.setup(labSetup(port, { routerMode: true, rules: [subnet('10.126.0.0', 16), subnet('fd00:126::', 64)] }))).toBe('READY');
    expect((await save('iptables-save', 'mangle')).join('\n')).toContain(`-A PREROUTING -p udp -j rxshuttle-tproxy-${port}`);
    // The target uses the client as its gateway to the tunneled subnets.
    await target!.ip('route', 'add', '10.126.0.0/16', 'via', '10.125.0.2');
    await target!.ip('-6', 'route', 'add', 'fd00:126::/64', 'via', 'fd00:125::2');
    const listener = await startServer(c(), { tproxyPort: port, udpPort: port + 1 });
    try {
      const r = await probeIn(target!, {
        tcp: [
          { host: '10.126.0.9', port: 443 },
          { host: 'fd00:126::9', port: 443 },
        ],
        udp: [
          { host: '10.126.0.9', port: 5353 },
          { host: 'fd00:126::9', port: 5353 },
        ],
      });
      // (The target's source address for fd00:126::9 is its fd00:127::1: the longest common prefix.)
      expect(r.tcp).toEqual(['captured 10.126.0.9:443 from 10.125.0.1', 'captured [fd00:126::9]:443 from fd00:127::1']);
      // The listener does not answer datagrams: it says what it got.
      expect(r.udp).toEqual(['timeout', 'timeout']);
      expect(listener.lines.filter((l) => l.startsWith('udp '))).toEqual(['udp captured 10.126.0.9:5353 from 10.125.0.1', 'udp captured [fd00:126::9]:5353 from fd00:127::1']);
    } finally {
      listener.child.kill('SIGKILL');
      await target!.ip('route', 'del', '10.126.0.0/16');
      await target!.ip('-6', 'route', 'del', 'fd00:126::/64');
      helper.closeInput();
      await helper.exited;
    }
    expect(await state(port)).toEqual(NOTHING);
    await expectUserRoutingIntact();
  });
});
