/**
 * The `nft` method (nft.ts) against the real nft and kernel, inside throwaway namespaces (never
 * the host's ruleset). Lab, names `rxsnft-<pid>-…`:
 *
 *   client  10.124.0.2/16, fd00:124::2/64 on v0: runs nft and the probes, listens on the
 *           redirect port (127.0.0.1, ::1) and on 10.124.0.2:80 ("local")
 *   target  10.124.0.1, 10.124.1.1, 10.124.2.1 (/16), fd00:124::1, fd00:124::101 (/64) on v1:
 *           answers "direct …" on ports 80 and 81, so a reply tells whether a connection was
 *           redirected or went where it was addressed
 *
 * Every probe reads the original destination with originalDestination (SO_ORIGINAL_DST).
 */
import { type ChildProcess, execFile, execFileSync, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CommandNotFoundError, type RunCommand } from '../../src/firewall/iptables.js';
import { hasNftTable, installNft, nftScript, removeNftTable } from '../../src/firewall/nft.js';
import { findPrograms } from '../../src/firewall/programs.js';
import type { FirewallSetup, SubnetRule } from '../../src/firewall/types.js';
import { execWithInput } from '../support/exec-with-input.js';
import { skipBecause } from '../support/skip.js';
import type { ProbeResult, ProbeSpec } from './fixtures/probe-main.js';
import { type Bundle, bundleFixture } from './support/bundle.js';

const execFileP = promisify(execFile);
const BYPASS_GID = 4242;
const PREFIX = `rxsnft-${process.pid}`;
const CLIENT = `${PREFIX}-c`;
const TARGET = `${PREFIX}-t`;

/** Why these tests cannot run here, or null when they can. In CI a missing prerequisite fails (STYLE.md). */
function nftSkip(): string | null {
  let missing: string | null = null;
  if (process.getuid?.() !== 0) missing = 'needs root';
  else {
    try {
      execFileSync('ip', ['netns', 'list'], { stdio: 'ignore' });
      execFileSync('nft', ['--version'], { stdio: 'ignore' });
    } catch {
      missing = 'needs ip (iproute2) and nft (nftables)';
    }
  }
  if (missing && process.env.CI === 'true') throw new Error(`nft namespace tests ${missing}`);
  return missing;
}

/** Runs `argv` in namespace `ns` with `input` on stdin; resolves with stdout. */
async function inNs(ns: string, argv: readonly string[], input = ''): Promise<string> {
  return execWithInput('ip', ['netns', 'exec', ns, ...argv], input);
}

function subnet(address: string, prefix: number, exclude = false, ports: [number, number] = [0, 0]): SubnetRule {
  return { family: address.includes(':') ? 6 : 4, address, prefix, portLow: ports[0], portHigh: ports[1], exclude };
}

// `method` is not read by nft.ts; types.ts knows only 'nat' until the helper is wired.
function labSetup(port: number, extra: Partial<FirewallSetup> = {}): FirewallSetup {
  return {
    version: 1,
    method: 'nft',
    port,
    routerMode: false,
    bypassGid: BYPASS_GID,
    rules: [
      subnet('10.124.0.0', 16),
      subnet('10.124.1.0', 24, true),
      subnet('10.124.1.1', 32, false, [81, 81]),
      subnet('fd00:124::', 64),
      subnet('fd00:124::100', 120, true),
    ],
    ...extra,
  };
}

describe('nft method in a namespace', skipBecause(nftSkip()), () => {
  let probe: Bundle | undefined;
  const servers: ChildProcess[] = [];
  let nftPath = '';
  let nextPort = 20_000 + Math.floor(Math.random() * 10_000);
  const freshPort = () => nextPort++;

  /** The real nft, found as the helper finds it (trusted path), run inside the client namespace. */
  const run: RunCommand = (name, args, input) => {
    if (name !== 'nft') return Promise.reject(new CommandNotFoundError(name));
    return inNs(CLIENT, [nftPath, ...args], input);
  };
  const listTable = (port: number) => inNs(CLIENT, ['nft', 'list', 'table', 'inet', `rxshuttle-${port}`]);
  const tables = async () => (await inNs(CLIENT, ['nft', 'list', 'tables'])).trim().split('\n').filter(Boolean);

  const probeIn = async (ns: string, spec: ProbeSpec): Promise<ProbeResult[]> => {
    const out = await inNs(ns, ['env', `NODE_PATH=${probe!.env.NODE_PATH}`, ...probe!.argv, JSON.stringify(spec)]);
    return JSON.parse(out.trim().split('\n')[0] ?? '[]') as ProbeResult[];
  };
  /** Connects from the client to each target, with a redirect listener on `port`; the replies. */
  const repliesFrom = async (port: number, connect: NonNullable<ProbeSpec['connect']>) =>
    (
      await probeIn(CLIENT, {
        listen: [
          { host: '127.0.0.1', port, label: 'redirect' },
          { host: '::1', port, label: 'redirect' },
        ],
        connect,
      })
    ).map((r) => r.reply ?? `error ${r.error}`);
  const startServer = async (ns: string, spec: ProbeSpec) => {
    const child = spawn('ip', ['netns', 'exec', ns, 'env', `NODE_PATH=${probe!.env.NODE_PATH}`, ...probe!.argv, JSON.stringify({ ...spec, stay: true })], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    servers.push(child);
    await new Promise<void>((resolve, reject) => {
      let seen = '';
      child.stdout.on('data', (chunk: Buffer) => {
        seen += chunk.toString();
        if (seen.includes('listening\n')) resolve();
      });
      child.on('exit', (code) => reject(new Error(`server probe exited with ${code}`)));
    });
    return child;
  };

  const deleteNamespaces = async () => {
    for (const ns of [CLIENT, TARGET]) {
      // Only what runs inside our own namespaces, by pid.
      const pids = await execFileP('ip', ['netns', 'pids', ns]).then((r) => r.stdout.split(/\s+/).filter(Boolean), () => []);
      for (const pid of pids) {
        try {
          process.kill(Number(pid), 'SIGKILL');
        } catch {
          // gone already
        }
      }
      await execFileP('ip', ['netns', 'del', ns]).catch(() => undefined);
    }
  };

  beforeAll(async () => {
    const found = findPrograms(['nft']).get('nft');
    if (found === undefined || found.refused !== undefined) throw new Error(`nft is not usable by the helper: ${found?.refused ?? 'not found'}`);
    nftPath = found.path;
    probe = await bundleFixture('probe-main');
    await deleteNamespaces(); // a run of an earlier process with our pid, killed before its afterAll
    const ip = (ns: string, ...args: string[]) => execFileP('ip', ['-n', ns, ...args]);
    for (const ns of [CLIENT, TARGET]) {
      await execFileP('ip', ['netns', 'add', ns]);
      await ip(ns, 'link', 'set', 'lo', 'up');
    }
    await ip(CLIENT, 'link', 'add', 'v0', 'type', 'veth', 'peer', 'name', 'v1', 'netns', TARGET);
    await ip(CLIENT, 'addr', 'add', '10.124.0.2/16', 'dev', 'v0');
    await ip(CLIENT, 'addr', 'add', 'fd00:124::2/64', 'dev', 'v0', 'nodad');
    await ip(CLIENT, 'link', 'set', 'v0', 'up');
    for (const address of ['10.124.0.1/16', '10.124.1.1/16', '10.124.2.1/16']) await ip(TARGET, 'addr', 'add', address, 'dev', 'v1');
    for (const address of ['fd00:124::1/64', 'fd00:124::101/64']) await ip(TARGET, 'addr', 'add', address, 'dev', 'v1', 'nodad');
    await ip(TARGET, 'link', 'set', 'v1', 'up');
    await startServer(TARGET, {
      listen: [
        { host: '::', port: 80, label: 'direct' },
        { host: '::', port: 81, label: 'direct' },
      ],
    });
    await startServer(CLIENT, { listen: [{ host: '10.124.0.2', port: 80, label: 'local' }] });
  }, 60_000);

  afterAll(async () => {
    for (const child of servers) child.kill('SIGKILL');
    await deleteNamespaces();
    probe?.remove();
  });

  it('installs one inet table that redirects included TCP (IPv4 and IPv6) and reads the original destination back', async () => {
    const port = freshPort();
    const installed = await installNft(labSetup(port), run);
    try {
      const listed = await listTable(port);
      expect(listed).toContain(`table inet rxshuttle-${port} {`);
      expect(listed).toContain('fib daddr type local return');
      expect(listed).toContain(`ip daddr 10.124.1.1 tcp dport 81 redirect to :${port}`);
      expect(listed).toContain('ip daddr 10.124.1.0/24 meta l4proto tcp return');
      expect(listed).toContain(`ip6 daddr fd00:124::/64 meta l4proto tcp redirect to :${port}`);
      expect(listed).toContain(`meta l4proto tcp meta skgid != ${BYPASS_GID} jump capture`);
      expect(listed).not.toContain('prerouting');
      expect(await tables()).toEqual([`table inet rxshuttle-${port}`]);

      expect(
        await repliesFrom(port, [
          { host: '10.124.0.1', port: 80 },
          { host: '10.124.1.1', port: 80 },
          { host: '10.124.1.1', port: 81 },
          { host: '10.124.0.2', port: 80 },
          { host: 'fd00:124::1', port: 8443 },
          { host: 'fd00:124::101', port: 80 },
          { host: '10.124.0.1', port: 80, gid: BYPASS_GID },
          { host: 'fd00:124::1', port: 80, gid: BYPASS_GID },
        ]),
      ).toEqual([
        'redirect 10.124.0.1:80 v4',
        expect.stringMatching(/^direct none /), // excluded /24
        'redirect 10.124.1.1:81 v4', // the /32 with a port beats the /24
        expect.stringMatching(/^local /), // a local address is never redirected
        'redirect [fd00:124::1]:8443 v6',
        expect.stringMatching(/^direct none /), // excluded /120
        expect.stringMatching(/^direct none /), // the bypass group
        expect.stringMatching(/^direct none /),
      ]);
    } finally {
      await installed.remove();
    }
    expect(await tables()).toEqual([]);
  });

  it('updates the subnets in place: an added address starts being redirected, a removed one stops, the table never goes away', async () => {
    const port = freshPort();
    const setup = labSetup(port, { rules: [subnet('10.124.0.1', 32), subnet('fd00:124::1', 128)] });
    const installed = await installNft(setup, run);
    try {
      const probeAll = () =>
        repliesFrom(port, [
          { host: '10.124.0.1', port: 80 },
          { host: '10.124.2.1', port: 80 },
          { host: 'fd00:124::101', port: 80 },
        ]);
      expect(await probeAll()).toEqual(['redirect 10.124.0.1:80 v4', expect.stringMatching(/^direct none /), expect.stringMatching(/^direct none /)]);

      await installed.update([subnet('10.124.2.1', 32), subnet('fd00:124::101', 128)]);
      expect(await probeAll()).toEqual(['redirect 10.124.0.1:80 v4', 'redirect 10.124.2.1:80 v4', 'redirect [fd00:124::101]:80 v6']);
      expect(await listTable(port)).toContain(`ip daddr 10.124.2.1 meta l4proto tcp redirect to :${port}`);

      await installed.update([]);
      expect(await probeAll()).toEqual(['redirect 10.124.0.1:80 v4', expect.stringMatching(/^direct none /), expect.stringMatching(/^direct none /)]);
      expect(await listTable(port)).not.toContain('10.124.2.1');

      // While 30 updates follow each other, connections to an address that every version
      // includes are all redirected, and every look at the ruleset finds the table.
      let updating = true;
      const looks: boolean[] = [];
      const replies: string[] = [];
      const watching = (async () => {
        do {
          looks.push(await hasNftTable(run, port));
        } while (updating);
      })();
      const connecting = (async () => {
        do {
          replies.push(...(await repliesFrom(port, Array.from({ length: 20 }, () => ({ host: '10.124.0.1', port: 80 })))));
        } while (updating);
      })();
      try {
        for (let i = 0; i < 30; i++) await installed.update(i % 2 === 0 ? [subnet('10.124.2.1', 32)] : []);
      } finally {
        updating = false;
      }
      await Promise.all([watching, connecting]);
      expect(looks.every(Boolean)).toBe(true);
      expect(new Set(replies)).toEqual(new Set(['redirect 10.124.0.1:80 v4']));
    } finally {
      await installed.remove();
    }
    expect(await tables()).toEqual([]);
    expect(await repliesFrom(port, [{ host: '10.124.0.1', port: 80 }])).toEqual([expect.stringMatching(/^direct none /)]);
  });

  it('applies an update file all or nothing: a failing line leaves the capture chain as it was', async () => {
    const port = freshPort();
    const installed = await installNft(labSetup(port, { rules: [subnet('10.124.0.1', 32)] }), run);
    try {
      const before = await listTable(port);
      // What nftUpdateScript writes, with one line the kernel refuses (a jump to no chain) at the end.
      const broken = `flush chain inet rxshuttle-${port} capture\nadd rule inet rxshuttle-${port} capture ip daddr 10.124.2.1 meta l4proto tcp redirect to :${port}\nadd rule inet rxshuttle-${port} capture jump nowhere\n`;
      await expect(run('nft', ['-f', '-'], broken)).rejects.toThrow(/nowhere/);
      expect(await listTable(port)).toBe(before);
      expect(await repliesFrom(port, [{ host: '10.124.0.1', port: 80 }])).toEqual(['redirect 10.124.0.1:80 v4']);
    } finally {
      await installed.remove();
    }
  });

  it("removes an earlier instance's leftover table of the same port, and nothing of anyone else", async () => {
    const port = freshPort();
    // An earlier instance with the same port died and left its table; others have tables too.
    const leftover = nftScript(labSetup(port, { rules: [subnet('10.124.2.0', 24)] }), [subnet('10.124.2.0', 24)])!;
    await inNs(CLIENT, ['nft', '-f', '-'], leftover);
    const foreign = [`table inet rxshuttle-${port}0`, `table ip rxshuttle-${port}`, 'table inet someone-else'];
    for (const table of foreign) await inNs(CLIENT, ['nft', 'add', ...table.split(' ')]);
    try {
      const installed = await installNft(labSetup(port), run);
      const listed = await listTable(port);
      expect(listed).not.toContain('10.124.2.0/24');
      expect(listed).toContain(`ip daddr 10.124.0.0/16 meta l4proto tcp redirect to :${port}`);
      expect((await tables()).sort()).toEqual([...foreign, `table inet rxshuttle-${port}`].sort());
      await installed.remove();
      expect((await tables()).sort()).toEqual([...foreign].sort());
      expect(await removeNftTable(run, port)).toBe(false);
    } finally {
      for (const table of foreign) await inNs(CLIENT, ['nft', 'delete', ...table.split(' ')]).catch(() => undefined);
    }
  });

  it('captures DNS (udp and tcp) to the nameservers, even one on this host, and answers come from the nameserver', async () => {
    const port = freshPort();
    const dnsPort = freshPort();
    const setup = labSetup(port, { rules: [subnet('10.124.1.0', 24, true)], dnsPort, dnsServers: ['10.124.1.53', '127.0.0.53', 'fd00:124::53'] });
    const installed = await installNft(setup, run);
    try {
      const replies = await probeIn(CLIENT, {
        listen: [
          { host: '127.0.0.1', port: dnsPort, label: 'dns' },
          { host: '::1', port: dnsPort, label: 'dns' },
        ],
        connect: [
          { host: '10.124.1.53', port: 53 }, // inside an excluded subnet: DNS comes first
          { host: '127.0.0.53', port: 53 }, // local: DNS comes before the local RETURN
          { host: 'fd00:124::53', port: 53 },
          { host: '10.124.1.1', port: 80 },
        ],
      });
      expect(replies.map((r) => r.reply ?? r.error)).toEqual([
        'dns 10.124.1.53:53 v4',
        'dns 127.0.0.53:53 v4',
        'dns [fd00:124::53]:53 v6',
        expect.stringMatching(/^direct none /),
      ]);

      // UDP: a query to each nameserver reaches the listener on dnsPort, the answer comes from the nameserver's address.
      const udp = `
        const dgram = require('node:dgram');
        const results = [];
        const check = (family, listenOn, nameserver) => new Promise((resolve) => {
          const server = dgram.createSocket(family);
          server.on('message', (msg, from) => server.send(msg, from.port, from.address));
          server.bind(${dnsPort}, listenOn, () => {
            const client = dgram.createSocket(family);
            const timer = setTimeout(() => { results.push('timeout'); client.close(); server.close(); resolve(); }, 2000);
            client.on('message', (msg, from) => {
              clearTimeout(timer);
              results.push(msg + ' from ' + from.address + ':' + from.port);
              client.close(); server.close(); resolve();
            });
            client.send('query', 53, nameserver);
          });
        });
        (async () => {
          await check('udp4', '127.0.0.1', '10.124.1.53');
          await check('udp4', '127.0.0.1', '127.0.0.53');
          await check('udp6', '::1', 'fd00:124::53');
          console.log(JSON.stringify(results));
        })();`;
      const out = await inNs(CLIENT, [process.execPath, '-e', udp]);
      expect(JSON.parse(out)).toEqual(['query from 10.124.1.53:53', 'query from 127.0.0.53:53', 'query from fd00:124::53:53']);
    } finally {
      await installed.remove();
    }
    expect(await tables()).toEqual([]);
  });

  it("captures only the owner's traffic with ownerUid (the restricted mode)", async () => {
    const port = freshPort();
    const setup = labSetup(port, { rules: [subnet('10.124.0.0', 16), subnet('fd00:124::', 64)] });
    const others = await installNft(setup, run, 1000); // the probe runs as root: not uid 1000
    try {
      expect(await listTable(port)).toContain(`meta l4proto tcp meta skuid 1000 meta skgid != ${BYPASS_GID} jump capture`);
      expect(await repliesFrom(port, [{ host: '10.124.0.1', port: 80 }, { host: 'fd00:124::1', port: 80 }])).toEqual([
        expect.stringMatching(/^direct none /),
        expect.stringMatching(/^direct none /),
      ]);
    } finally {
      await others.remove();
    }
    const roots = await installNft(setup, run, 0);
    try {
      expect(await repliesFrom(port, [{ host: '10.124.0.1', port: 80 }, { host: 'fd00:124::1', port: 80 }])).toEqual([
        'redirect 10.124.0.1:80 v4',
        'redirect [fd00:124::1]:80 v6',
      ]);
    } finally {
      await roots.remove();
    }
    expect(await tables()).toEqual([]);
  });

  it('router mode: forwarded traffic (IPv4 and IPv6) is redirected too', async () => {
    const port = freshPort();
    const setup = labSetup(port, { routerMode: true, rules: [subnet('10.126.0.0', 16), subnet('fd00:126::', 64)] });
    const installed = await installNft(setup, run);
    // The target uses the client as its gateway to the tunneled subnets; the client listens
    // beyond loopback, as a router-mode client does.
    await execFileP('ip', ['-n', TARGET, 'route', 'add', '10.126.0.0/16', 'via', '10.124.0.2']);
    await execFileP('ip', ['-n', TARGET, 'route', 'add', 'fd00:126::/64', 'via', 'fd00:124::2']);
    const listener = await startServer(CLIENT, { listen: [{ host: '::', port, label: 'redirect' }] });
    try {
      expect(await listTable(port)).toContain('type nat hook prerouting priority dstnat; policy accept;');
      const replies = await probeIn(TARGET, { connect: [{ host: '10.126.0.9', port: 443 }, { host: 'fd00:126::9', port: 443 }] });
      expect(replies.map((r) => r.reply ?? r.error)).toEqual(['redirect 10.126.0.9:443 v4', 'redirect [fd00:126::9]:443 v6']);
    } finally {
      listener.kill('SIGKILL');
      await execFileP('ip', ['-n', TARGET, 'route', 'del', '10.126.0.0/16']);
      await execFileP('ip', ['-n', TARGET, '-6', 'route', 'del', 'fd00:126::/64']);
      await installed.remove();
    }
    expect(await tables()).toEqual([]);
  });

  it('loads every shape of the script the kernel may be given', async () => {
    const port = freshPort();
    const { bypassGid: _, ...withoutBypass } = labSetup(port);
    const shapes: Array<[FirewallSetup, number | undefined]> = [
      [labSetup(port), undefined],
      [labSetup(port, { routerMode: true }), undefined],
      [labSetup(port, { dnsPort: port + 1, dnsServers: ['10.0.0.53', 'fd00::53'] }), 1000],
      [{ ...withoutBypass, routerMode: true, dnsPort: port + 1, dnsServers: ['fd00::53'] }, undefined],
      [labSetup(port, { rules: [subnet('0.0.0.0', 0), subnet('::', 0), subnet('10.0.0.0', 8, true, [1, 65535]), subnet('fd00::', 8, false, [22, 22])] }), 7],
    ];
    for (const [setup, ownerUid] of shapes) {
      const installed = await installNft(setup, run, ownerUid);
      expect(await tables()).toEqual([`table inet rxshuttle-${port}`]);
      await installed.remove();
    }
    expect(await tables()).toEqual([]);
  });

  it('installs, updates and removes a large setup (2 001 rules) quickly', async () => {
    const port = freshPort();
    const rules = Array.from({ length: 2000 }, (_, i) => subnet(`10.${100 + (i >> 8)}.${i & 255}.0`, 24, i % 2 === 0));
    const started = Date.now();
    const installed = await installNft(labSetup(port, { rules: [...rules, subnet('10.0.0.0', 8)] }), run);
    await installed.update([subnet('172.16.0.0', 12)]);
    const lines = (await listTable(port)).split('\n').filter((l) => / daddr 10\.|172\.16/.test(l));
    expect(lines).toHaveLength(2002);
    await installed.remove();
    expect(await tables()).toEqual([]);
    expect(Date.now() - started).toBeLessThan(20_000);
  });
});
