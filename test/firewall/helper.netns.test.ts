/**
 * The real helper against the real iptables, inside throwaway namespaces (never the host's
 * tables). Lab: `client` (10.123.0.2, fd00:123::2) runs the helper and the probes; `target`
 * (10.123.0.1, 10.123.1.1, fd00:123::1) answers "direct …" on ports 80 and 81, so a reply
 * tells whether a connection was redirected or went where it was addressed.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { firstValueFrom } from 'rxjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FirewallSetup, SubnetRule } from '../../src/firewall/types.js';
import { firewall$ } from '../../src/tunnel/firewall-client.js';
import { skipBecause } from '../support/skip.js';
import { unexpectedError } from '../support/unexpected-error.js';
import { waitUntil } from '../support/wait-until.js';
import { type Bundle, bundleFixture } from './support/bundle.js';
import { HelperProcess, watchdogsOf } from './support/helper-process.js';
import { createLab, type Netns, netnsSkip } from './support/netns.js';
import { runProbe, startServerProbe } from './support/probe.js';

const BYPASS_GID = 4242;

function subnet(address: string, prefix: number, exclude = false, ports: [number, number] = [0, 0]): SubnetRule {
  return { family: address.includes(':') ? 6 : 4, address, prefix, portLow: ports[0], portHigh: ports[1], exclude };
}

function labSetup(port: number, extra: Partial<FirewallSetup> = {}): FirewallSetup {
  return {
    version: 1,
    method: 'nat',
    port,
    routerMode: false,
    bypassGid: BYPASS_GID,
    rules: [
      subnet('10.123.0.0', 16),
      subnet('10.123.1.0', 24, true),
      subnet('10.123.1.1', 32, false, [81, 81]),
      subnet('fd00:123::', 64),
    ],
    ...extra,
  };
}

/** The lock files of `port` (in /run/rxshuttle; before issue 17, in /run itself). */
function lockFilesOf(port: number): string[] {
  const found: string[] = [];
  for (const dir of ['/run/rxshuttle', '/run']) {
    if (!existsSync(dir)) continue;
    for (const name of readdirSync(dir)) if (name.startsWith(`rxshuttle-${port}-net`)) found.push(join(dir, name));
  }
  return found;
}

describe('firewall helper in a namespace', skipBecause(netnsSkip()), () => {
  let lab: Awaited<ReturnType<typeof createLab>> | undefined;
  let helperBundle: Bundle | undefined;
  let probe: Bundle | undefined;
  let targetServer: ChildProcess | undefined;
  let client: Netns;
  let nextPort = 20_000 + Math.floor(Math.random() * 10_000);
  const usedPorts: number[] = [];
  const freshPort = () => {
    usedPorts.push(nextPort);
    return nextPort++;
  };

  const saveBoth = async () => `${await client.natSave(4)}${await client.natSave(6)}`;
  const rxshuttleLines = async () => (await saveBoth()).split('\n').filter((l) => l.includes('rxshuttle'));
  /** What the client sees when connecting to these targets, with a redirect listener on `port`. */
  const probeFrom = (port: number, connect: Array<{ host: string; port: number; gid?: number }>) =>
    runProbe(client, probe!, {
      listen: [
        { host: '127.0.0.1', port, label: 'redirect' },
        { host: '::1', port, label: 'redirect' },
        { host: '10.123.0.2', port: 80, label: 'local' },
      ],
      connect,
    });

  beforeAll(async () => {
    [helperBundle, probe] = await Promise.all([bundleFixture('helper-main'), bundleFixture('probe-main')]);
    lab = await createLab();
    client = lab.client;
    targetServer = await startServerProbe(lab.target, probe, {
      listen: [
        { host: '::', port: 80, label: 'direct' },
        { host: '::', port: 81, label: 'direct' },
      ],
    });
  }, 30_000);

  afterAll(async () => {
    targetServer?.kill('SIGKILL');
    // A test that killed a helper and its watchdog on purpose (or failed) may leave a port's lock file.
    for (const port of usedPorts) for (const file of lockFilesOf(port)) rmSync(file, { force: true });
    await lab?.delete();
    helperBundle?.remove();
    probe?.remove();
  });

  it('installs the chain, redirects included traffic only, and removes everything when stdin closes', async () => {
    const port = freshPort();
    const helper = new HelperProcess(client, helperBundle!);
    expect(await helper.setup(labSetup(port))).toBe('READY');

    const v4 = await client.natSave(4);
    expect(v4).toContain(`:rxshuttle-${port} - [0:0]`);
    expect(v4).toContain(`-A OUTPUT -p tcp -m owner ! --gid-owner ${BYPASS_GID} -j rxshuttle-${port}`);
    expect(v4).toContain(`-A rxshuttle-${port} -m addrtype --dst-type LOCAL -j RETURN`);
    expect(v4).toContain(`-A rxshuttle-${port} -d 10.123.1.1/32 -p tcp -m tcp --dport 81 -j REDIRECT --to-ports ${port}`);
    expect(v4).toContain(`-A rxshuttle-${port} -d 10.123.1.0/24 -p tcp -j RETURN`);
    expect(v4).toContain(`-A rxshuttle-${port} -d 10.123.0.0/16 -p tcp -j REDIRECT --to-ports ${port}`);
    expect(v4).not.toContain('PREROUTING -p tcp');
    expect(await client.natSave(6)).toContain(`-A rxshuttle-${port} -d fd00:123::/64 -p tcp -j REDIRECT --to-ports ${port}`);

    const results = await probeFrom(port, [
      { host: '10.123.0.1', port: 80 },
      { host: '10.123.1.1', port: 80 },
      { host: '10.123.1.1', port: 81 },
      { host: '10.123.0.2', port: 80 },
      { host: 'fd00:123::1', port: 80 },
      { host: '10.123.0.1', port: 80, gid: BYPASS_GID },
    ]);
    expect(results.map((r) => r.reply ?? r.error)).toEqual([
      'redirect 10.123.0.1:80 v4', // included
      expect.stringMatching(/^direct /), // excluded /24
      'redirect 10.123.1.1:81 v4', // the /32 port-81 include beats the /24 exclude
      expect.stringMatching(/^local /), // a local address is never redirected
      'redirect [fd00:123::1]:80 v6', // IPv6 include
      expect.stringMatching(/^direct /), // the bypass group is never redirected
    ]);

    helper.send('SOMETHING else');
    expect(await helper.nextLine()).toBe('ERROR unknown command (rules stay in place)');
    expect((await rxshuttleLines()).length).toBeGreaterThan(0);

    helper.closeInput();
    await waitUntil(async () => (await rxshuttleLines()).length === 0, { timeoutMs: 2000, intervalMs: 50, what: 'no rxshuttle rule left' });
    expect(await helper.exited).toEqual({ code: 0, signal: null });
    const after = await probeFrom(port, [{ host: '10.123.0.1', port: 80 }]);
    expect(after[0]?.reply).toMatch(/^direct /);
  });

  it('removes everything and exits 0 on SIGTERM', async () => {
    const port = freshPort();
    const helper = new HelperProcess(client, helperBundle!);
    expect(await helper.setup(labSetup(port))).toBe('READY');
    expect((await rxshuttleLines()).length).toBeGreaterThan(0);
    helper.child.kill('SIGTERM');
    await waitUntil(async () => (await rxshuttleLines()).length === 0, { timeoutMs: 2000, intervalMs: 50, what: 'no rxshuttle rule left' });
    expect(await helper.exited).toEqual({ code: 0, signal: null });
  });

  // Issue 17, finding 1: whatever kills the helper, its rules, hosts block and lock must not stay.
  it('SIGKILL of the helper at random moments (starting, installing, ready, amid HOST lines): its watchdog removes everything', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'rxs-killhosts-'));
    const hostsFile = join(dir, 'hosts');
    const original = '127.0.0.1\tlocalhost\n';
    writeFileSync(hostsFile, original);
    const bundle = { ...helperBundle!, env: { ...helperBundle!.env, RXS_TEST_HOSTS_FILE: hostsFile } };
    const seed = Number(process.env['RXS_FUZZ_SEED'] ?? Date.now() % 100_000);
    let state = seed;
    const random = () => ((state = (state * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    const moments: string[] = [];
    try {
      for (let round = 0; round < 8; round++) {
        const port = freshPort();
        const helper = new HelperProcess(client, bundle);
        const setup = labSetup(port, { hosts: true, dnsPort: port + 5000, dnsServers: ['10.123.0.53'] });
        const when = Math.floor(random() * 4);
        if (when >= 1) {
          const hello = await helper.nextLine();
          expect(hello).toBe('HELLO rxshuttle-fw 1');
          helper.send(JSON.stringify(setup));
        }
        if (when >= 2) expect(await helper.nextLine()).toBe('READY');
        if (when >= 3) for (let i = 0; i < 200; i++) helper.send(`HOST 10.123.0.${i % 250} host${i}.lab`);
        const delay = Math.floor(random() * 150);
        await new Promise((r) => setTimeout(r, delay));
        moments.push(`${['starting', 'setup sent', 'ready', 'HOST lines'][when]} +${delay} ms`);
        helper.child.kill('SIGKILL');
        await helper.exited;
        // (the hosts file's lock may be held a while by other tests' helpers: the watchdog waits for it)
        await waitUntil(async () => (await rxshuttleLines()).length === 0, { timeoutMs: 20_000, intervalMs: 50, what: 'no rxshuttle rule left' });
        await waitUntil(async () => readFileSync(hostsFile, 'utf8') === original, { timeoutMs: 20_000, intervalMs: 50, what: 'the hosts file as it was' });
        await waitUntil(async () => lockFilesOf(port).length === 0 && watchdogsOf(-1, helperBundle!.file).length === 0, { timeoutMs: 20_000, intervalMs: 50, what: 'no lock file or watchdog left' });
      }
    } catch (e) {
      throw new Error(`seed ${seed}, moments ${moments.join(', ')}: ${(e as Error).message}`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  // Issue 14: --kill-switch. The client dies: the subnets are refused instead of going direct.
  it('--kill-switch: the client dies → the subnets are refused, not direct; the helper killed too → its watchdog does the same; --flush lifts both', async () => {
    const filterLines = async () =>
      `${await client.exec(['iptables-save', '-t', 'filter'])}${await client.exec(['ip6tables-save', '-t', 'filter'])}`.split('\n').filter((l) => l.includes('rxshuttle-ks'));
    const flush = () => client.exec([...helperBundle!.argv, '--flush'], helperBundle!.env);
    try {
      const port = freshPort();
      const helper = new HelperProcess(client, helperBundle!);
      expect(await helper.setup(labSetup(port, { killSwitch: true }))).toBe('READY');
      expect(await filterLines()).toEqual([]);
      helper.closeInput(); // no QUIT: the client died
      expect((await helper.exited).code).toBe(0);
      expect(await rxshuttleLines()).toEqual([]);
      expect(await filterLines()).toContain(`-A OUTPUT -j rxshuttle-ks-${port}`);
      const blocked = await probeFrom(port, [
        { host: '10.123.0.1', port: 80 },
        { host: '10.123.1.1', port: 80 },
        { host: 'fd00:123::1', port: 80 },
      ]);
      expect(blocked.map((r) => r.reply ?? r.error)).toEqual([
        expect.stringMatching(/ECONNREFUSED/), // tunneled: refused, not direct
        expect.stringMatching(/^direct /), // excluded: direct as ever
        expect.stringMatching(/ECONNREFUSED/),
      ]);

      // The helper itself SIGKILLed: its watchdog puts the kill switch in place.
      const port2 = freshPort();
      const killed = new HelperProcess(client, helperBundle!);
      expect(await killed.setup(labSetup(port2, { killSwitch: true }))).toBe('READY');
      await waitUntil(async () => killed.watchdogPid() !== undefined, { timeoutMs: 5_000, intervalMs: 50 });
      killed.child.kill('SIGKILL');
      await killed.exited;
      await waitUntil(async () => (await rxshuttleLines()).length === 0 && (await filterLines()).some((l) => l.includes(`rxshuttle-ks-${port2}`)), { timeoutMs: 10_000, intervalMs: 50 });

      expect(await flush()).toBe('');
      expect(await filterLines()).toEqual([]);
      const after = await probeFrom(port, [{ host: '10.123.0.1', port: 80 }]);
      expect(after[0]?.reply).toMatch(/^direct /);
    } finally {
      await flush().catch(() => undefined);
    }
  });

  it('clears the leftovers of a SIGKILLed helper (and watchdog) with the same port before installing', async () => {
    const port = freshPort();
    const crashed = new HelperProcess(client, helperBundle!);
    expect(await crashed.setup(labSetup(port, { routerMode: true, rules: [subnet('10.99.0.0', 16)] }))).toBe('READY');
    await crashed.killWithWatchdog();
    const left = await rxshuttleLines();
    expect(left.some((l) => l.includes('10.99.0.0/16'))).toBe(true);
    expect(left.some((l) => l.startsWith('-A PREROUTING'))).toBe(true);

    const helper = new HelperProcess(client, helperBundle!);
    expect(await helper.setup(labSetup(port))).toBe('READY');
    const lines = await rxshuttleLines();
    expect(lines.some((l) => l.includes('10.99.0.0/16'))).toBe(false);
    expect(lines.filter((l) => l.startsWith('-A PREROUTING'))).toEqual([]);
    expect(lines.filter((l) => l.startsWith('-A OUTPUT'))).toHaveLength(2); // one per family
    const results = await probeFrom(port, [{ host: '10.123.0.1', port: 80 }]);
    expect(results[0]?.reply).toBe('redirect 10.123.0.1:80 v4');

    helper.closeInput();
    await waitUntil(async () => (await rxshuttleLines()).length === 0, { timeoutMs: 2000, intervalMs: 50, what: 'no rxshuttle rule left' });
    expect((await helper.exited).code).toBe(0);
  });

  // Issue 16, finding 1: why listener.ts also listens on 127.0.0.1 (::1) whatever -l says, and so
  // why a second instance with the same port on another address fails at once, before ssh.
  it("delivers this machine's connections to 127.0.0.1 and ::1 whatever the instance listens on: a listener on 127.0.0.2 alone hears none", async () => {
    const port = freshPort();
    const helper = new HelperProcess(client, helperBundle!);
    expect(await helper.setup(labSetup(port))).toBe('READY');
    const targets = [
      { host: '10.123.0.1', port: 80 },
      { host: 'fd00:123::1', port: 80 },
    ];
    const alone = await runProbe(client, probe!, { listen: [{ host: '127.0.0.2', port, label: 'two' }], connect: targets });
    expect(alone.map((r) => r.reply ?? r.error)).toEqual(['ECONNREFUSED', 'ECONNREFUSED']);
    const both = await runProbe(client, probe!, {
      listen: [
        { host: '127.0.0.2', port, label: 'two' },
        { host: '127.0.0.1', port, label: 'one' },
        { host: '::1', port, label: 'one' },
      ],
      connect: targets,
    });
    expect(both.map((r) => r.reply ?? r.error)).toEqual(['one 10.123.0.1:80 v4', 'one [fd00:123::1]:80 v6']);
    helper.closeInput();
    await waitUntil(async () => (await rxshuttleLines()).length === 0, { timeoutMs: 2000, what: 'the helper to remove its rules' });
    expect((await helper.exited).code).toBe(0);
  });

  it('refuses a second helper for a port in use (a listener on another address), leaving the first one working', async () => {
    const port = freshPort();
    const lockFiles = () => lockFilesOf(port);
    const first = new HelperProcess(client, helperBundle!);
    expect(await first.setup(labSetup(port, { rules: [subnet('10.123.0.0', 16)] }))).toBe('READY');
    expect(lockFiles()).toHaveLength(1);
    const installed = await saveBoth();

    const second = new HelperProcess(client, helperBundle!);
    const reply = await second.setup(labSetup(port, { routerMode: true, rules: [subnet('10.99.0.0', 16)] }));
    expect(reply).toBe(`ERROR port ${port} is already used by another rxshuttle (pid ${first.child.pid})`);
    expect(await second.exited).toEqual({ code: 1, signal: null });
    const strip = (t: string) => t.replace(/^#.*$/gm, '');
    expect(strip(await saveBoth())).toBe(strip(installed));
    const results = await probeFrom(port, [{ host: '10.123.0.1', port: 80 }]);
    expect(results[0]?.reply).toBe('redirect 10.123.0.1:80 v4');

    first.child.kill('SIGTERM');
    await waitUntil(async () => (await rxshuttleLines()).length === 0, { timeoutMs: 2000, intervalMs: 50, what: 'no rxshuttle rule left' });
    expect(await first.exited).toEqual({ code: 0, signal: null });
    expect(lockFiles()).toEqual([]);

    const third = new HelperProcess(client, helperBundle!);
    expect(await third.setup(labSetup(port))).toBe('READY');
    third.closeInput();
    await waitUntil(async () => (await rxshuttleLines()).length === 0, { timeoutMs: 2000, intervalMs: 50, what: 'no rxshuttle rule left' });
    expect((await third.exited).code).toBe(0);
    expect(lockFiles()).toEqual([]);
  });

  it('runs iptables from the system directories only: programs planted earlier on PATH never run (issue 17, finding 2)', async () => {
    // A sudoers policy without secure_path leaves the caller's PATH to the helper.
    const plant = mkdtempSync(join(tmpdir(), 'rxs-plant-'));
    chmodSync(plant, 0o755);
    const marker = join(plant, 'ran');
    try {
      for (const name of ['iptables-save', 'iptables-restore', 'ip6tables-save', 'ip6tables-restore', 'resolvectl', 'systemd-resolve']) {
        writeFileSync(join(plant, name), `#!/bin/sh\necho "$0 $*" >> ${marker}\nexit 1\n`, { mode: 0o755 });
      }
      const planted = { ...helperBundle!, env: { ...helperBundle!.env, PATH: `${plant}:${process.env.PATH ?? '/usr/bin:/bin'}` } };
      const port = freshPort();
      const helper = new HelperProcess(client, planted);
      expect(await helper.setup(labSetup(port, { rules: [subnet('10.123.0.0', 16)] }))).toBe('READY');
      expect(await client.natSave(4)).toContain(`-A rxshuttle-${port} -d 10.123.0.0/16 -p tcp -j REDIRECT --to-ports ${port}`);
      helper.closeInput();
      await waitUntil(async () => (await rxshuttleLines()).length === 0, { timeoutMs: 2000, intervalMs: 50, what: 'no rxshuttle rule left' });
      expect(await helper.exited).toEqual({ code: 0, signal: null });
      expect(existsSync(marker) ? readFileSync(marker, 'utf8') : 'nothing planted ran').toBe('nothing planted ran');
    } finally {
      rmSync(plant, { recursive: true, force: true });
    }
  });

  it("a SIGKILLed helper's lock file is out of other users' reach: the next helper for that port starts and clears up (issue 17, finding 11)", async () => {
    const port = freshPort();
    const crashed = new HelperProcess(client, helperBundle!);
    expect(await crashed.setup(labSetup(port, { rules: [subnet('10.99.0.0', 16)] }))).toBe('READY');
    await crashed.killWithWatchdog();
    const [file, ...more] = lockFilesOf(port);
    expect(file, 'the lock file the crashed helper left').toBeDefined();
    expect(more).toEqual([]);
    expect(statSync(file!).mode & 0o777).toBe(0o600);
    expect(statSync(dirname(file!)).mode & 0o777).toBe(0o700);
    expect(statSync(dirname(file!)).uid).toBe(0);

    // Another user tries to hold it, as a stale 0644 file in /run allowed (flock needs only a read-only open).
    const holder = spawn('flock', ['--nonblock', file!, '-c', 'echo held; exec sleep 60'], { uid: 65534, gid: 65534, stdio: ['ignore', 'pipe', 'pipe'] });
    const exited = once(holder, 'exit');
    let stderr = '';
    holder.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    await Promise.race([once(holder.stdout, 'data'), exited]);
    try {
      expect(holder.exitCode, 'another user could lock the file').not.toBeNull();
      expect(stderr).toMatch(/Permission denied/);
      const helper = new HelperProcess(client, helperBundle!);
      expect(await helper.setup(labSetup(port))).toBe('READY');
      expect((await rxshuttleLines()).some((l) => l.includes('10.99.0.0/16'))).toBe(false);
      helper.closeInput();
      await waitUntil(async () => (await rxshuttleLines()).length === 0, { timeoutMs: 2000, intervalMs: 50, what: 'no rxshuttle rule left' });
      expect((await helper.exited).code).toBe(0);
      expect(lockFilesOf(port)).toEqual([]);
    } finally {
      holder.kill('SIGKILL');
    }
  });

  it('instances with the same port in different network namespaces keep their own hosts blocks (issue 17, finding 11)', async () => {
    // One hosts file for both, as two namespaces without /etc/netns/<ns>/hosts share /etc/hosts.
    const dir = mkdtempSync(join(tmpdir(), 'rxs-nshosts-'));
    const hostsFile = join(dir, 'hosts');
    const original = '127.0.0.1\tlocalhost\n';
    writeFileSync(hostsFile, original);
    const shared = { ...helperBundle!, env: { ...helperBundle!.env, RXS_TEST_HOSTS_FILE: hostsFile } };
    const port = freshPort();
    const hosts = () => readFileSync(hostsFile, 'utf8');
    try {
      const a = new HelperProcess(client, shared);
      expect(await a.setup(labSetup(port, { hosts: true }))).toBe('READY');
      a.send('HOST 10.123.0.5 alpha.lab');
      expect(await a.nextLine()).toBe('OK');
      expect(hosts()).toContain('10.123.0.5\talpha.lab\n');

      const b = new HelperProcess(lab!.target, shared);
      expect(await b.setup(labSetup(port, { hosts: true }))).toBe('READY');
      expect(hosts(), "the other namespace's helper took a's block for leftovers").toContain('10.123.0.5\talpha.lab\n');
      b.send('HOST 10.123.0.6 beta.lab');
      expect(await b.nextLine()).toBe('OK');
      expect(hosts()).toContain('10.123.0.6\tbeta.lab\n');
      expect(hosts().match(/^# BEGIN rxshuttle-\S+/gm)).toHaveLength(2);

      b.closeInput();
      expect((await b.exited).code).toBe(0);
      expect(hosts()).toContain('10.123.0.5\talpha.lab\n');
      expect(hosts()).not.toContain('beta.lab');
      a.closeInput();
      expect((await a.exited).code).toBe(0);
      expect(hosts()).toBe(original);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("another user's flock on the hosts file neither stops -H nor keeps a block; rxshuttle's own lock is out of that user's reach (issue 17, finding 4)", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'rxs-nshostslock-'));
    chmodSync(dir, 0o755); // the user may read the hosts file, as /etc/hosts
    const hostsFile = join(dir, 'hosts');
    const original = '127.0.0.1\tlocalhost\n';
    writeFileSync(hostsFile, original, { mode: 0o644 });
    const shared = { ...helperBundle!, env: { ...helperBundle!.env, RXS_TEST_HOSTS_FILE: hostsFile } };
    const hosts = () => readFileSync(hostsFile, 'utf8');
    // As uid 65534: a read-only open suffices for flock(2). Before, the block stayed, and every -H helper failed.
    const asNobody = (file: string) =>
      spawn('flock', ['--shared', '--nonblock', file, '-c', 'echo held; exec sleep 60'], { uid: 65534, gid: 65534, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    const holder = asNobody(hostsFile);
    await once(holder.stdout!, 'data');
    try {
      const [portA, portB] = [freshPort(), freshPort()];
      const a = new HelperProcess(client, shared);
      expect(await a.setup(labSetup(portA, { hosts: true }))).toBe('READY');
      a.send('HOST 10.123.0.5 alpha.lab');
      expect(await a.nextLine(3000)).toBe('OK');
      const b = new HelperProcess(client, shared);
      expect(await b.setup(labSetup(portB, { hosts: true }))).toBe('READY');
      b.send('HOST 10.123.0.6 beta.lab');
      expect(await b.nextLine(3000)).toBe('OK');
      expect(hosts()).toContain('10.123.0.5\talpha.lab\n');
      expect(hosts()).toContain('10.123.0.6\tbeta.lab\n');

      // rxshuttle's own lock: root's, where that user cannot open it, so cannot hold it.
      const lockFile = '/run/rxshuttle/hosts.lock';
      expect(statSync(lockFile).mode & 0o777).toBe(0o600);
      expect(statSync(dirname(lockFile)).mode & 0o777).toBe(0o700);
      const denied = asNobody(lockFile);
      let stderr = '';
      denied.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
      expect((await once(denied, 'exit'))[0]).not.toBe(0);
      expect(stderr).toMatch(/Permission denied/);

      a.send('QUIT');
      expect((await a.exited).code).toBe(0);
      expect(hosts()).not.toContain('alpha.lab');
      expect(hosts()).toContain('beta.lab');
      b.closeInput();
      expect((await b.exited).code).toBe(0);
      expect(hosts()).toBe(original);
    } finally {
      try {
        process.kill(-holder.pid!, 'SIGKILL');
      } catch {
        // gone
      }
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("never removes another tool's rule that only mentions the chain's name in a comment", async () => {
    const port = freshPort();
    const foreign = [
      `-A OUTPUT -p tcp -m comment --comment rxshuttle-${port} -j ACCEPT`,
      `-A OUTPUT -p tcp -m comment --comment "keep -j rxshuttle-${port} here" -j RETURN`,
    ];
    await client.natRestore(`*nat\n${foreign.join('\n')}\nCOMMIT\n`);
    try {
      const foreignLines = async () => (await client.natSave(4)).split('\n').filter((l) => l.includes('--comment'));
      expect(await foreignLines()).toEqual(foreign); // how iptables-save spells them
      const helper = new HelperProcess(client, helperBundle!);
      expect(await helper.setup(labSetup(port))).toBe('READY');
      expect(await foreignLines()).toEqual(foreign);
      helper.closeInput();
      expect((await helper.exited).code).toBe(0);
      expect(await foreignLines()).toEqual(foreign);
      expect(await client.natSave(4)).not.toMatch(new RegExp(`-j rxshuttle-${port}$|^:rxshuttle-${port} `, 'm'));
    } finally {
      await client.natRestore(`*nat\n${foreign.map((l) => l.replace('-A', '-D')).join('\n')}\nCOMMIT\n`);
    }
  });

  it('leaves another instance (other port) untouched', async () => {
    const [portA, portB] = [freshPort(), freshPort()];
    const a = new HelperProcess(client, helperBundle!);
    const b = new HelperProcess(client, helperBundle!);
    expect(await a.setup(labSetup(portA, { rules: [subnet('10.123.0.1', 32)] }))).toBe('READY');
    expect(await b.setup(labSetup(portB, { rules: [subnet('10.123.0.0', 16)] }))).toBe('READY');
    a.closeInput();
    await waitUntil(async () => !(await rxshuttleLines()).some((l) => l.includes(`rxshuttle-${portA}`)), { timeoutMs: 2000, intervalMs: 50 });
    expect((await a.exited).code).toBe(0);
    expect(await client.natSave(4)).toContain(`-A rxshuttle-${portB} -d 10.123.0.0/16 -p tcp -j REDIRECT --to-ports ${portB}`);
    const results = await probeFrom(portB, [{ host: '10.123.0.1', port: 80 }]);
    expect(results[0]?.reply).toBe('redirect 10.123.0.1:80 v4');
    b.closeInput();
    await waitUntil(async () => (await rxshuttleLines()).length === 0, { timeoutMs: 2000, intervalMs: 50, what: 'no rxshuttle rule left' });
  });

  it('router mode: the bypass rule is accepted with a PREROUTING jump, and forwarded traffic is redirected', async () => {
    const port = freshPort();
    const helper = new HelperProcess(client, helperBundle!);
    expect(await helper.setup(labSetup(port, { routerMode: true, rules: [subnet('10.124.0.0', 16)] }))).toBe('READY');
    const v4 = await client.natSave(4);
    expect(v4).toContain(`-A PREROUTING -p tcp -j rxshuttle-${port}`);
    expect(v4).toContain(`-A OUTPUT -p tcp -m owner ! --gid-owner ${BYPASS_GID} -j rxshuttle-${port}`);

    // The target namespace uses the client as its gateway to 10.124.0.0/16; the client listens
    // beyond loopback, as a router-mode client does.
    await lab!.target.ip('route', 'add', '10.124.0.0/16', 'via', '10.123.0.2');
    const listener = await startServerProbe(client, probe!, { listen: [{ host: '0.0.0.0', port, label: 'redirect' }] });
    try {
      const results = await runProbe(lab!.target, probe!, { connect: [{ host: '10.124.0.9', port: 443 }] });
      expect(results[0]?.reply).toBe('redirect 10.124.0.9:443 v4');
    } finally {
      listener.kill('SIGKILL');
      await lab!.target.ip('route', 'del', '10.124.0.0/16');
    }
    helper.closeInput();
    await waitUntil(async () => (await rxshuttleLines()).length === 0, { timeoutMs: 2000, intervalMs: 50, what: 'no rxshuttle rule left' });
  });

  it('installs and removes a large setup (2 001 rules) in one transaction', async () => {
    const port = freshPort();
    const rules = Array.from({ length: 2000 }, (_, i) => subnet(`10.${100 + (i >> 8)}.${i & 255}.0`, 24, i % 2 === 0));
    const helper = new HelperProcess(client, helperBundle!);
    expect(await helper.setup(labSetup(port, { rules: [...rules, subnet('10.0.0.0', 8)] }))).toBe('READY');
    expect((await client.natSave(4)).split('\n').filter((l) => l.startsWith(`-A rxshuttle-${port} -d`))).toHaveLength(2001);
    helper.closeInput();
    await waitUntil(async () => (await rxshuttleLines()).length === 0, { timeoutMs: 5000, intervalMs: 50 });
    expect((await helper.exited).code).toBe(0);
  });

  it('answers ERROR to an invalid setup and exits 1 without touching the tables', async () => {
    const before = await saveBoth();
    const helper = new HelperProcess(client, helperBundle!);
    const reply = await helper.setup({ ...labSetup(freshPort()), port: '80; iptables -F' });
    expect(reply).toBe('ERROR invalid setup: port must be an integer 1..65535');
    expect(await helper.exited).toEqual({ code: 1, signal: null });
    const strip = (t: string) => t.replace(/^#.*$/gm, '');
    expect(strip(await saveBoth())).toBe(strip(before));
  });

  it('says what to install when iptables is missing', async () => {
    // A private mount namespace hides /usr/sbin (and /sbin, a link to it) from the helper only.
    const hidden = {
      ...helperBundle!,
      argv: ['unshare', '-m', '--propagation', 'private', 'sh', '-c', 'mount -t tmpfs none /usr/sbin && exec "$0" "$@"', ...helperBundle!.argv],
    };
    const helper = new HelperProcess(client, hidden);
    expect(await helper.setup(labSetup(freshPort()))).toBe('ERROR iptables not found: install iptables');
    expect((await helper.exited).code).toBe(1);
  });

  it('works through firewall$: ready, rules in place, removed after unsubscribe', async () => {
    const port = freshPort();
    // firewall$ passes its own environment on: the bundle's (NODE_PATH, to find koffi) goes through env(1).
    const env = Object.entries(helperBundle!.env).map(([k, v]) => `${k}=${v}`);
    const argv = ['ip', 'netns', 'exec', client.name, 'env', ...env, ...helperBundle!.argv];
    const rules$ = firewall$(labSetup(port), { helperArgv: argv });
    let ready = false;
    const sub = rules$.subscribe({ next: () => (ready = true), error: unexpectedError });
    await waitUntil(async () => ready, { timeoutMs: 10_000, intervalMs: 50 });
    expect(await client.natSave(4)).toContain(`:rxshuttle-${port} - [0:0]`);
    sub.unsubscribe();
    await waitUntil(async () => (await rxshuttleLines()).length === 0, { timeoutMs: 2000, intervalMs: 50, what: 'no rxshuttle rule left' });
    // and the one-shot form
    await expect(firstValueFrom(firewall$(labSetup(port), { helperArgv: argv }))).resolves.toBe('ready');
    await waitUntil(async () => (await rxshuttleLines()).length === 0, { timeoutMs: 2000, intervalMs: 50, what: 'no rxshuttle rule left' });
  });
});
