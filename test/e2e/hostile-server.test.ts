// The real client against a malicious server (issue 17, findings 7–10), at the level where they
// were found: dist/cli.js in cli, through the lab's real sshd with `-e <lab ssh> --transport ssh`
// (the ssh binary), against a fake server that misbehaves.
//
// How the fake gets in: `--remote-node PATH`. Through the ssh binary the client's one remote
// command is the start-up probe, which runs `PATH --version` (node 16+ means the node server),
// then `exec PATH -e STUB` with the upload on stdin. Each test writes a small wrapper script into
// the lab's state dir (srv shares the filesystem) that prints `v20.11.0` for `--version` and
// otherwise execs fixtures/hostile/fake-server.ts — bundled here with esbuild into one .cjs,
// since node 20 cannot run .ts — with the scenario as JSON. The fake reads the upload as the real
// stub does, sends a hello with the project's own encoders (src/streams) and then floods or lies;
// it reports what it did in a status file the test polls. Everything else is real: ssh, sshd,
// the firewall helper, iptables, cli's hosts file (/etc/netns/<cli>/hosts, bind-mounted by
// `ip netns exec`, as in auto-hosts.test.ts: the machine's /etc/hosts is never touched).
//
// Every flood is bounded in size and time, and each test ends by checking that no rxshuttle
// process (client, helper, ssh; the fake on srv), firewall rule or hosts line is left.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { afterEach, describe, expect, it } from 'vitest';
import { waitUntil } from '../support/wait-until.js';
import type { Config, Scenario } from './fixtures/hostile/fake-server.js';
import { LAB, type Lab } from './lab.js';
import {
  argvOf,
  isGone,
  Rxshuttle,
  remoteNodePids,
  runRxshuttle,
  rxshuttleProcessesIn,
  rxshuttleRules,
  useLab,
  waitFast,
} from './tunnel-helpers.js';

const FAKE_SOURCE = fileURLToPath(new URL('./fixtures/hostile/fake-server.ts', import.meta.url));
const DNS_ASK = fileURLToPath(new URL('./fixtures/hostile/dns-ask.mjs', import.meta.url));
const MiB = 1024 * 1024;

/** What the fake claims to be when the probe asks. */
const FAKE_NODE_VERSION = 'v20.11.0';
/** No fake lives longer than this, whatever happens to the test. */
const FAKE_LIFETIME_MS = 90_000;

/**
 * Peak RSS the client may reach under any flood here. Measured on the 2-core lab machine with the
 * fixes (each test prints its figure): 118 MiB under the PINGs, 160 MiB under the HOST frames,
 * 110 MiB under the stderr flood. With the fix of each reverted: 708 MiB (every PONG kept) and
 * 688 MiB (every HOST line kept for the helper), growing with the flood.
 */
const CLIENT_RSS_CEILING_KIB = 300 * 1024;

let lab: Lab;
let fakeDir: string;
let fakeBundle: string;
let hostsPath: string;
let originalHosts: Buffer;
/** sha256 of the machine's own /etc/hosts: nothing here may change it. */
let machineHosts: string;

const sha256 = (file: string) => createHash('sha256').update(fs.readFileSync(file)).digest('hex');

// Registered before useLab: after-hooks run last-registered first, so these follow its stop of the clients.
afterEach(async () => {
  if (!lab) return;
  // A fake that outlived its test (it should end with its session): ours, by pid.
  for (const pid of await fakePids()) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone already
    }
  }
  if (!fs.readFileSync(hostsPath).equals(originalHosts)) fs.writeFileSync(hostsPath, originalHosts);
});

useLab({ ipv6: true, noNodeSshd: false, targetServices: false }, async (up) => {
  lab = up;
  hostsPath = `/etc/netns/${lab.ns.cli}/hosts`;
  originalHosts = fs.readFileSync(hostsPath);
  machineHosts = sha256('/etc/hosts');
  fakeDir = path.join(lab.stateDir, 'hostile');
  fs.mkdirSync(fakeDir, { mode: 0o755 });
  fakeBundle = path.join(fakeDir, 'fake-server.cjs');
  await build({
    entryPoints: [FAKE_SOURCE],
    outfile: fakeBundle,
    bundle: true,
    platform: 'node',
    format: 'cjs',
    target: 'node20',
    logLevel: 'silent',
  });
});

// ---------------------------------------------------------------------------
// The fake server

interface Fake {
  /** The wrapper to pass as --remote-node. */
  readonly node: string;
  readonly statusFile: string;
}

interface FakeStatus {
  phase: string;
  [key: string]: unknown;
}

let fakes = 0;

/** A wrapper script that is the fake with this scenario as far as the probe can tell. */
function fakeServer(scenario: Scenario): Fake {
  const n = ++fakes;
  const statusFile = path.join(fakeDir, `status-${n}.json`);
  const config: Config = { ...scenario, status: statusFile, maxLifetimeMs: FAKE_LIFETIME_MS };
  const json = JSON.stringify(config);
  if (json.includes("'")) throw new Error('scenario JSON must not contain a single quote (it is quoted for sh)');
  const node = path.join(fakeDir, `node-${n}-${scenario.scenario}`);
  fs.writeFileSync(
    node,
    [
      '#!/bin/sh',
      `if [ "$1" = --version ]; then echo ${FAKE_NODE_VERSION}; exit 0; fi`,
      `exec ${lab.nodePath} ${fakeBundle} '${json}'`,
      '',
    ].join('\n'),
    { mode: 0o755 },
  );
  return { node, statusFile };
}

function readStatus(fake: Fake): FakeStatus | undefined {
  try {
    return JSON.parse(fs.readFileSync(fake.statusFile, 'utf8')) as FakeStatus;
  } catch {
    return undefined;
  }
}

/** Waits until the fake's status satisfies `ok`; fails early (with the client's output) if the client exits first. */
async function waitForFake(fake: Fake, rx: Rxshuttle | null, ok: (s: FakeStatus) => boolean, timeoutMs: number, what: string): Promise<FakeStatus> {
  const okStatus = () => {
    const status = readStatus(fake);
    return status && ok(status) ? status : undefined;
  };
  const ended = await waitUntil(() => okStatus() ?? (rx && !rx.running ? 'client gone' : undefined), {
    timeoutMs,
    intervalMs: 50,
    what: () => `${what}; fake: ${JSON.stringify(readStatus(fake))}; output:\n${rx?.output ?? ''}`,
  });
  if (ended !== 'client gone') return ended;
  // The client exited: the fake may still be writing what it saw last.
  const last = await waitUntil(okStatus, { timeoutMs: 500, intervalMs: 50 }).catch(() => undefined);
  if (last) return last;
  throw new Error(`rxshuttle exited (${rx?.child.exitCode ?? rx?.child.signalCode}) before ${what}; fake: ${JSON.stringify(readStatus(fake))}; output:\n${rx?.output}`);
}

/** Pids of fakes still running on srv (any scenario of this file: their argv names our bundle). */
async function fakePids(): Promise<number[]> {
  const out: number[] = [];
  for (const pid of await lab.pids('srv')) if (!isGone(pid) && argvOf(pid).includes(fakeBundle)) out.push(pid);
  return out;
}

/** Options that make a fake the server: the ssh binary (Rxshuttle.remote adds -r and -e), the fake as the remote node. */
// --no-reconnect: a server that says EXIT (or dies) ends the tunnel, as these tests expect, instead of being started again.
const fakeArgs = (fake: Fake, extra: readonly string[]): string[] => ['--transport', 'ssh', '--no-reconnect', '--remote-node', fake.node, ...extra];

/** The client's whole argv for a fake, at the default verbosity. */
const clientArgs = (fake: Fake, extra: readonly string[]): string[] => ['-r', lab.sshHost, '-e', lab.sshCommand, ...fakeArgs(fake, extra)];

// ---------------------------------------------------------------------------
// The client's memory and CPU

const kib = (status: string, field: string): number | undefined => {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status);
  return m?.[1] === undefined ? undefined : Number(m[1]);
};

const CLOCK_TICKS = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/** User + system CPU seconds of a process so far. */
function cpuSeconds(pid: number): number | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
  } catch {
    return undefined;
  }
}

/** Samples a process's memory every 100 ms: the kernel's high-water mark (VmHWM) and the largest VmRSS seen. */
function memoryWatch(pid: number) {
  let hwm = 0;
  let peakRss = 0;
  const sample = () => {
    try {
      const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
      hwm = Math.max(hwm, kib(status, 'VmHWM') ?? 0);
      peakRss = Math.max(peakRss, kib(status, 'VmRSS') ?? 0);
    } catch {
      // gone: the last sample stands
    }
  };
  sample();
  const timer = setInterval(sample, 100);
  return {
    /** The peak so far in KiB (VmHWM, read once more now if the process is alive). */
    peak(): number {
      sample();
      return Math.max(hwm, peakRss);
    },
    stop(): number {
      sample();
      clearInterval(timer);
      return Math.max(hwm, peakRss);
    },
  };
}

const mib = (k: number) => `${(k / 1024).toFixed(0)} MiB`;

// ---------------------------------------------------------------------------
// Nothing left

/** Lines of cli's hosts file inside rxshuttle blocks (all instances: one runs at a time here). */
function blockLines(): number {
  let inside = false;
  let count = 0;
  for (const line of fs.readFileSync(hostsPath, 'latin1').split('\n')) {
    if (line.startsWith('# BEGIN rxshuttle-')) inside = true;
    else if (line.startsWith('# END rxshuttle-')) inside = false;
    else if (inside && line.trim() !== '') count++;
  }
  return count;
}

async function allRules(): Promise<string[]> {
  const v6 = (await lab.iptablesSave('cli', { ipv6: true })).split('\n').filter((l) => /rxshuttle/i.test(l));
  return [...(await rxshuttleRules(lab)), ...v6];
}

/** After the client has ended: no rule (v4 or v6), no process in cli, no fake or server on srv, cli's hosts file as it was. */
async function expectNothingLeft(): Promise<void> {
  await waitFast(async () => (await allRules()).length === 0, 3_000, 'no rxshuttle rule in cli').catch(async (e: unknown) => {
    throw new Error(`${(e as Error).message}: ${JSON.stringify(await allRules())}`);
  });
  await waitFast(async () => (await rxshuttleProcessesIn(lab, 'cli')).length === 0, 5_000, 'no rxshuttle process in cli').catch(
    async (e: unknown) => {
      throw new Error(`${(e as Error).message}: ${JSON.stringify(await rxshuttleProcessesIn(lab, 'cli'))}`);
    },
  );
  await waitFast(async () => (await fakePids()).length === 0 && (await remoteNodePids(lab)).length === 0, 5_000, 'no server left on srv');
  await waitFast(() => fs.readFileSync(hostsPath).equals(originalHosts), 3_000, `${hostsPath} as before the test`);
  expect(sha256('/etc/hosts'), "the machine's own /etc/hosts").toBe(machineHosts);
}

/** The client ran through a flood: still running (then SIGTERM ends it with 0) or gone with one clear line. */
async function expectAliveOrOneLine(rx: Rxshuttle): Promise<string> {
  if (rx.running) {
    const end = await rx.stop('SIGTERM', 5_000);
    expect(end, rx.output).toEqual({ code: 0, signal: null, killed: false });
    return 'alive; SIGTERM: exit 0';
  }
  const exit = await rx.exited;
  expect(exit.signal, rx.output).toBeNull();
  expect(exit.code, rx.output).toBe(1);
  const lines = rx.output.split('\n').filter((l) => l.trim() !== '' && !/^rxshuttle: warning: /.test(l));
  expect(lines, rx.output).toHaveLength(1);
  expect(lines[0]).toMatch(/^rxshuttle: \S/);
  expect((lines[0] ?? '').length).toBeLessThan(1_000);
  return `exited 1: ${lines[0]}`;
}

// ---------------------------------------------------------------------------

describe('finding 7: a server cannot exhaust the client', () => {
  it('7a: 512 MiB of 64 KiB PINGs to a client whose answers are never read: bounded RSS, the client lives on', async () => {
    const totalBytes = 512 * MiB;
    const fake = fakeServer({ scenario: 'ping-flood', totalBytes });
    const rx = new Rxshuttle(lab, 'cli', clientArgs(fake, [LAB.targetSubnet]));
    const memory = memoryWatch(rx.pid);
    const t0 = Date.now();
    const done = await waitForFake(fake, rx, (s) => s.phase === 'flood-done' || s.phase === 'session-gone', 60_000, 'the PING flood');
    // The last PINGs may still be on their way: a moment for the client to take them.
    await sleep(500);
    const peak = memory.stop();
    console.log(
      `7a PING flood: ${done.phase}, ${((done['sentBytes'] as number) / MiB).toFixed(0)} MiB in ${done['floodMs'] ?? Date.now() - t0} ms; ` +
        `client peak RSS ${mib(peak)}, CPU ${cpuSeconds(rx.pid)?.toFixed(1)} s`,
    );
    expect(done.phase, 'the flood went through whole (the client kept reading)').toBe('flood-done');
    expect(peak, `client peak RSS ${mib(peak)}`).toBeLessThan(CLIENT_RSS_CEILING_KIB);
    console.log(`7a: ${await expectAliveOrOneLine(rx)}`);
    await expectNothingLeft();
  });

  it('7b: a flood of HOST frames with -H: bounded RSS, the hosts block never above 10 000 names, removed at the end', async () => {
    // 12 000 names (the client keeps 10 000), then 1.5 M frames that move them between addresses of the tunneled subnet.
    const flips = 1_500_000;
    const fake = fakeServer({ scenario: 'host-flood', distinct: 12_000, flips, nameLength: 48 });
    // Default verbosity: -v would print a line per frame.
    const rx = new Rxshuttle(lab, 'cli', clientArgs(fake, ['-H', LAB.targetSubnet]));
    const memory = memoryWatch(rx.pid);
    await waitForFake(fake, rx, (s) => s.phase === 'hosts-request' || s.phase === 'flooding' || s.phase === 'flood-done', 30_000, 'HOSTS_REQUEST');
    let maxBlock = 0;
    let done: FakeStatus | undefined;
    const deadline = Date.now() + 60_000;
    while (!done && Date.now() < deadline) {
      maxBlock = Math.max(maxBlock, blockLines());
      const status = readStatus(fake);
      if (status?.phase === 'flood-done' || status?.phase === 'session-gone' || !rx.running) done = status;
      else await sleep(100);
    }
    expect(done, `the HOST flood ended within 60 s; fake: ${JSON.stringify(readStatus(fake))}`).toBeDefined();
    // The helper catches up with what waits (at most one entry per name).
    let last = -1;
    for (let i = 0; i < 30 && rx.running; i++) {
      await sleep(200);
      const now = blockLines();
      maxBlock = Math.max(maxBlock, now);
      if (now === last && now > 0) break;
      last = now;
    }
    const peak = memory.stop();
    console.log(
      `7b HOST flood: ${done?.phase}, ${done?.['frames']} frames (${(((done?.['sentBytes'] as number) ?? 0) / MiB).toFixed(0)} MiB) in ${done?.['floodMs']} ms; ` +
        `client peak RSS ${mib(peak)}, CPU ${cpuSeconds(rx.pid)?.toFixed(1)} s; hosts block at most ${maxBlock} names, ${blockLines()} at the end`,
    );
    expect(done?.phase).toBe('flood-done');
    expect(maxBlock).toBeGreaterThan(0);
    expect(maxBlock).toBeLessThanOrEqual(10_000);
    expect(peak, `client peak RSS ${mib(peak)}`).toBeLessThan(CLIENT_RSS_CEILING_KIB);
    // A few warnings at most (names dropped, the helper's cap), not a line per frame.
    expect(rx.output.split('\n').filter((l) => l !== '').length, rx.output).toBeLessThanOrEqual(5);
    console.log(`7b: ${await expectAliveOrOneLine(rx)}`);
    await expectNothingLeft();
  });

  it('7c: 200 MiB on stderr without a newline: consumed in seconds, bounded RSS and CPU', async () => {
    const totalBytes = 200 * MiB;
    const fake = fakeServer({ scenario: 'stderr-flood', totalBytes });
    const rx = new Rxshuttle(lab, 'cli', clientArgs(fake, [LAB.targetSubnet]));
    const memory = memoryWatch(rx.pid);
    const started = await waitForFake(fake, rx, (s) => s.phase !== 'started' && s.phase !== 'uploaded', 30_000, 'the stderr flood to start');
    const cpuBefore = cpuSeconds(rx.pid) ?? 0;
    const t0 = Date.now();
    // Before the fix, splitting `partial + text` made this quadratic: 154 MiB took 120 s of CPU.
    const done = await waitForFake(fake, rx, (s) => s.phase === 'flood-done' || s.phase === 'session-gone', 30_000, 'the stderr flood');
    await sleep(300);
    const cpu = (cpuSeconds(rx.pid) ?? 0) - cpuBefore;
    const peak = memory.stop();
    console.log(
      `7c stderr flood: ${started.phase} → ${done.phase}, ${((done['sentBytes'] as number) / MiB).toFixed(0)} MiB in ${Date.now() - t0} ms; ` +
        `client CPU ${cpu.toFixed(1)} s for it, peak RSS ${mib(peak)}`,
    );
    expect(done.phase).toBe('flood-done');
    expect(cpu).toBeLessThan(10);
    expect(peak, `client peak RSS ${mib(peak)}`).toBeLessThan(CLIENT_RSS_CEILING_KIB);
    // None of it was printed at the default verbosity.
    expect(rx.output.length).toBeLessThan(10_000);
    console.log(`7c: ${await expectAliveOrOneLine(rx)}`);
    await expectNothingLeft();
  });
});

describe('finding 8: -N and routes that would take the whole machine', () => {
  const routes: Extract<Scenario, { scenario: 'routes' }>['routes'] = [
    { family: 4, address: '0.0.0.0', prefix: 1 },
    { family: 4, address: '128.0.0.0', prefix: 1 },
    { family: 6, address: '::', prefix: 1 },
    { family: 4, address: '10.98.0.0', prefix: 24 },
  ];
  // An IPv6 subnet on the command line: the client listens on IPv6 too, so ::/1 is a candidate.
  const args = ['-N', LAB.targetSubnet6];
  const wide = /-A rxshuttle-\d+ -d (0\.0\.0\.0\/1|128\.0\.0\.0\/1|::\/1) /;

  it('0.0.0.0/1, 128.0.0.0/1 and ::/1 from the server are ignored, with one warning that names them', async () => {
    const fake = fakeServer({ scenario: 'routes', routes });
    const rx = await Rxshuttle.remote(lab, fakeArgs(fake, args));
    const nat = await lab.iptablesSave('cli', { table: 'nat' });
    const nat6 = await lab.iptablesSave('cli', { table: 'nat', ipv6: true });
    expect(nat).toMatch(/-A rxshuttle-\d+ -d 10\.98\.0\.0\/24 -p tcp -j REDIRECT/);
    expect(nat6).toMatch(/-A rxshuttle-\d+ -d fd00:98::\/64 -p tcp -j REDIRECT/);
    expect(nat).not.toMatch(wide);
    expect(nat6).not.toMatch(wide);
    const warnings = rx.output.split('\n').filter((l) => /^rxshuttle: warning: -N: ignored routes wider/.test(l));
    expect(warnings, rx.output).toHaveLength(1);
    for (const r of ['0.0.0.0/1', '128.0.0.0/1', '::/1']) expect(warnings[0]).toContain(r);
    expect(warnings[0]).toContain('--auto-nets-wide');
    expect(await rx.stop()).toEqual({ code: 0, signal: null, killed: false });
    await expectNothingLeft();
  });

  it('with --auto-nets-wide they are taken', async () => {
    const fake = fakeServer({ scenario: 'routes', routes });
    const rx = await Rxshuttle.remote(lab, fakeArgs(fake, ['--auto-nets-wide', ...args]));
    const nat = await lab.iptablesSave('cli', { table: 'nat' });
    const nat6 = await lab.iptablesSave('cli', { table: 'nat', ipv6: true });
    expect(nat).toMatch(/-A rxshuttle-\d+ -d 0\.0\.0\.0\/1 -p tcp -j REDIRECT/);
    expect(nat).toMatch(/-A rxshuttle-\d+ -d 128\.0\.0\.0\/1 -p tcp -j REDIRECT/);
    expect(nat6).toMatch(/-A rxshuttle-\d+ -d ::\/1 -p tcp -j REDIRECT/);
    // the ssh server itself stays out
    expect(nat).toMatch(/-A rxshuttle-\d+ -d 10\.99\.0\.2\/32 -p tcp -j RETURN/);
    expect(rx.output).not.toMatch(/ignored routes wider/);
    expect(await rx.stop()).toEqual({ code: 0, signal: null, killed: false });
    await expectNothingLeft();
  });
});

describe('finding 9: terminal escapes from the server are printed escaped', () => {
  // Clear screen, home, retitle the window (OSC 0, BEL), a hyperlink (OSC 8, ST), a C1 CSI,
  // a right-to-left override, and a newline that would start a line of ours.
  const evil =
    '\x1b[2J\x1b[H\x1b]0;pwned\x07\x1b]8;;http://evil.example/\x1b\\click\x1b]8;;\x1b\\ \u009b31m red \u202eexe.txt\u202c\r\nrxshuttle: forged line';
  const raw = /[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]/u;

  const check = (stderr: string) => {
    expect(stderr, 'no raw control or bidi character').not.toMatch(raw);
    expect(stderr).toContain('\\x1b[2J');
    expect(stderr).toContain('\\x1b]0;pwned\\x07');
    expect(stderr).toContain('\\u202e');
    for (const line of stderr.split('\n').filter((l) => l !== '')) {
      expect(line).toMatch(/^rxshuttle: /);
      expect(line).not.toMatch(/^rxshuttle: forged line/);
    }
  };

  it('an EXIT reason, at the default verbosity', async () => {
    const fake = fakeServer({ scenario: 'exit', stderr: '', exitReason: evil });
    const r = await runRxshuttle(lab, 'cli', clientArgs(fake, [LAB.targetSubnet]), 30_000);
    expect(r.timedOut).toBe(false);
    expect(r.code, r.stderr).toBe(1);
    expect(r.stdout).toBe('');
    check(r.stderr);
    expect(r.stderr).toMatch(/stopped: /);
    console.log(`9 EXIT: ${JSON.stringify(r.stderr)}`);
    await expectNothingLeft();
  });

  it('the stderr line that explains an exit, at the default verbosity', async () => {
    const fake = fakeServer({ scenario: 'exit', stderr: `fatal error: ${evil.replace('\r\n', ' ')}\n` });
    const r = await runRxshuttle(lab, 'cli', clientArgs(fake, [LAB.targetSubnet]), 30_000);
    expect(r.timedOut).toBe(false);
    expect(r.code, r.stderr).toBe(1);
    check(r.stderr);
    expect(r.stderr).toContain('fatal error: ');
    console.log(`9 stderr: ${JSON.stringify(r.stderr)}`);
    await expectNothingLeft();
  });
});

describe('finding 10: DNS answers from the server are checked', () => {
  interface Asked {
    name: string;
    rcode?: string;
    idMatches?: boolean;
    questions?: string[];
    answers?: { name: string; type: string; data: string }[];
    authorities?: { name: string; type: string; data: string }[];
    additionals?: { name: string; type: string; data: string }[];
    timedOut?: boolean;
    error?: string;
  }

  it('another question or id is SERVFAIL; records about www.bank.example never reach the asker', async () => {
    const fake = fakeServer({ scenario: 'dns-lies' });
    const rx = await Rxshuttle.remote(lab, fakeArgs(fake, ['--ns-hosts', LAB.target, LAB.targetSubnet]));
    const names = ['foo.example', 'other-question.foo.example', 'wrong-id.foo.example', 'extra-answer.foo.example', 'extra-additional.foo.example'];
    const r = await lab.exec('cli', [lab.nodePath, DNS_ASK, JSON.stringify({ server: LAB.target, names, timeoutMs: 3_000 })], { timeoutMs: 30_000 });
    expect(r.code, r.stderr).toBe(0);
    const results = JSON.parse(r.stdout.trim().split('\n').pop() ?? '[]') as Asked[];
    const by = new Map(results.map((a) => [a.name, a]));
    console.log(`10 DNS: ${r.stdout.trim()}`);
    expect(readStatus(fake)?.['asked'], 'every query reached the fake').toBe(names.length);
    // Nothing about the bank, in any answer, in any section.
    expect(r.stdout).not.toMatch(/bank|6\.6\.6\./);

    const right = (name: string) => [{ name, type: 'A', data: '10.98.0.3' }];
    for (const name of ['foo.example', 'extra-answer.foo.example', 'extra-additional.foo.example']) {
      expect(by.get(name), name).toMatchObject({ rcode: 'NOERROR', idMatches: true, questions: [`${name} A`], answers: right(name), authorities: [], additionals: [] });
    }
    for (const name of ['other-question.foo.example', 'wrong-id.foo.example']) {
      expect(by.get(name), name).toMatchObject({ rcode: 'SERVFAIL', idMatches: true, answers: [] });
    }
    await rx.waitFor(/DNS: .* asked foo\.example A \(udp\): answered, NOERROR, \d+ bytes, \d+ records dropped/, 5_000);
    await rx.waitFor(/DNS: .* asked other-question\.foo\.example A \(udp\): failed/, 5_000);
    expect(await rx.stop()).toEqual({ code: 0, signal: null, killed: false });
    await expectNothingLeft();
  });
});
