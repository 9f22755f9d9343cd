// -D/--daemon in the e2e lab, with a real syslog receiver: socat bound to /dev/log inside a
// private mount namespace (an overlay on /dev, so the machine's /dev is never touched), and the
// daemon started in that namespace. The command returns once the tunnel is up; the pid file
// holds the daemon's pid; the tunnel works; its log reaches syslog; `kill $(cat pidfile)`
// removes every rule and the pid file. A failure to connect is reported on the terminal with a
// non-zero exit, and a pid file of a running process stops a second instance.
import { type ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { findProgram, LAB, type Lab, PAGE_MARKER, requireProgram, startLab, stopProcess } from './lab.js';
import {
  argvOf,
  assertBuilt,
  CLI_JS,
  curl,
  isGone,
  remoteNodePids,
  rxshuttleProcessesIn,
  rxshuttleRules,
  waitFast,
} from './tunnel-helpers.js';

let lab: Lab;
let work: string;
let receiver: ChildProcess | undefined;
let syslogText = '';
const daemons = new Set<number>();

/** A private mount namespace whose /dev/log is socat, printing every datagram it receives. */
async function startSyslogReceiver(dir: string): Promise<ChildProcess> {
  const script = [
    'set -e',
    'mount -t tmpfs -o mode=0755 rxs-devlog "$D"',
    'mkdir -p "$D/u" "$D/w" "$D/orig"',
    'mount --rbind /dev "$D/orig"',
    'if [ "$FORCE_TMPFS" != 1 ] && mount -t overlay overlay -o "lowerdir=/dev,upperdir=$D/u,workdir=$D/w" /dev 2>/dev/null; then',
    '  for m in pts shm mqueue; do if mountpoint -q "$D/orig/$m"; then mount --rbind "$D/orig/$m" "/dev/$m"; fi; done',
    'else',
    // No overlayfs: a fresh /dev holding the device nodes everything here needs, bound from the real one.
    '  mount -t tmpfs -o mode=0755 rxs-dev /dev',
    '  for f in null zero full random urandom tty ptmx; do if [ -e "$D/orig/$f" ]; then touch "/dev/$f"; mount --bind "$D/orig/$f" "/dev/$f"; fi; done',
    '  for m in pts shm; do mkdir "/dev/$m"; mount --rbind "$D/orig/$m" "/dev/$m"; done',
    '  ln -s /proc/self/fd /dev/fd; ln -s fd/0 /dev/stdin; ln -s fd/1 /dev/stdout; ln -s fd/2 /dev/stderr',
    'fi',
    'rm -f /dev/log',
    'exec socat -u UNIX-RECV:/dev/log,mode=666 STDOUT',
  ].join('\n');
  const child = spawn(requireProgram('unshare'), ['-m', '--propagation', 'private', '/bin/sh', '-c', script], {
    env: { ...process.env, D: dir, FORCE_TMPFS: process.env['RXS_TEST_DEVLOG_TMPFS'] === '1' ? '1' : '0' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let err = '';
  child.stdout?.on('data', (d: Buffer) => (syslogText += d.toString('utf8')));
  child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  // /proc/<pid>/root shows the files as that process sees them.
  await waitFast(
    () => {
      if (child.exitCode !== null) throw new Error(`syslog receiver exited: ${err}`);
      try {
        return fs.statSync(`/proc/${child.pid}/root/dev/log`).isSocket();
      } catch {
        return false;
      }
    },
    10_000,
    '/dev/log in the private mount namespace',
  );
  return child;
}

interface Message {
  priority: number;
  tag: string;
  pid: number;
  text: string;
}

/** The datagrams socat printed back to back, as messages. */
function syslogMessages(): Message[] {
  const re = /<(\d{1,3})>\w{3} [ \d]\d \d\d:\d\d:\d\d ([^[\s]+)\[(\d+)\]: ([\s\S]*?)(?=<\d{1,3}>\w{3} [ \d]\d \d\d:|$)/g;
  return [...syslogText.matchAll(re)].map((m) => ({ priority: Number(m[1]), tag: m[2] ?? '', pid: Number(m[3]), text: m[4] ?? '' }));
}

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  elapsedMs: number;
}

/** `rxshuttle <args>` in the cli namespace and the receiver's mount namespace; resolves when it exits. */
function runCli(args: readonly string[], cwd: string, timeoutMs = 60_000): Promise<Run> {
  // --wd: entering a mount namespace moves to its root directory otherwise.
  const argv = ['-t', String(receiver?.pid), '-m', `--wd=${cwd}`, '--', requireProgram('ip'), 'netns', 'exec', lab.ns.cli, process.execPath, CLI_JS, ...args];
  const t0 = Date.now();
  return new Promise((resolve) => {
    const child = spawn(requireProgram('nsenter'), argv, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    // 'close': stdout and stderr closed too, so a daemon that kept them would show as a timeout.
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, elapsedMs: Date.now() - t0 });
    });
  });
}

function readPid(file: string): number | undefined {
  try {
    const text = fs.readFileSync(file, 'utf8').trim();
    return /^\d+$/.test(text) ? Number(text) : undefined;
  } catch {
    return undefined;
  }
}

/** Field `n` (1-based, as in proc(5)) of /proc/<pid>/stat. */
function statField(pid: number, n: number): string | undefined {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[n - 3];
}

beforeAll(async () => {
  assertBuilt();
  for (const p of ['nsenter', 'unshare', 'socat', 'mountpoint']) {
    if (!findProgram(p)) throw new Error(`${p} not found: apt-get install -y ${p === 'socat' ? 'socat' : 'util-linux'}`);
  }
  lab = await startLab();
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'rxs-daemon-'));
  fs.chmodSync(work, 0o755);
  fs.mkdirSync(path.join(work, 'devlog'));
  receiver = await startSyslogReceiver(path.join(work, 'devlog'));
});

afterEach(async () => {
  for (const pid of daemons) {
    if (isGone(pid)) continue;
    process.kill(pid, 'SIGTERM');
    await waitFast(() => isGone(pid), 5_000, 'daemon to stop').catch(() => process.kill(pid, 'SIGKILL'));
  }
  daemons.clear();
});

afterAll(async () => {
  if (receiver) await stopProcess(receiver, 'SIGTERM', 2_000);
  await lab?.down();
  if (work) fs.rmSync(work, { recursive: true, force: true });
});

describe('rxshuttle -D', () => {
  it('returns once the tunnel is up; pid file, working tunnel, syslog; kill $(cat pidfile) removes every rule and the pid file', async () => {
    const cwd = path.join(work, 'run1');
    fs.mkdirSync(cwd);
    const pidfile = path.join(cwd, 'rxshuttle.pid');
    // A stale pid file (its process is gone) is replaced.
    const dead = spawn(process.execPath, ['-e', '0']);
    await new Promise((r) => dead.once('exit', r));
    fs.writeFileSync(pidfile, `${dead.pid}\n`);
    const remoteBefore = new Set(await remoteNodePids(lab));

    const run = await runCli(['-D', '-v', '-r', lab.sshHost, '-e', lab.sshCommand, LAB.targetSubnet], cwd);
    expect(run.code, `${run.stderr}\n${run.stdout}`).toBe(0);
    expect(run.stdout).toBe('');
    // Until it was up, the daemon spoke on our terminal.
    expect(run.stderr).toMatch(/Connected to lab\./);
    expect(run.stderr).toMatch(/Firewall ready: chain rxshuttle-\d+/);
    console.log(`rxshuttle -D returned after ${run.elapsedMs} ms`);

    // The pid file (default name, in the directory it was started from) holds the daemon's pid.
    const pid = readPid(pidfile);
    expect(pid, 'pid in rxshuttle.pid').toBeDefined();
    expect(pid).not.toBe(dead.pid);
    const daemon = pid as number;
    daemons.add(daemon);
    expect(isGone(daemon)).toBe(false);
    expect(argvOf(daemon)).toContain(CLI_JS);
    expect(argvOf(daemon).some((a) => a.endsWith('firewall-helper.cjs'))).toBe(false);
    // Detached: a session of its own, no terminal, stdio on /dev/null, not in our directory.
    expect(statField(daemon, 6), 'session id').toBe(String(daemon));
    expect(statField(daemon, 7), 'controlling terminal').toBe('0');
    for (const fd of [0, 1, 2]) expect(fs.readlinkSync(`/proc/${daemon}/fd/${fd}`)).toBe('/dev/null');
    expect(fs.readlinkSync(`/proc/${daemon}/cwd`)).toBe('/');

    // The tunnel works right away.
    const page = await curl(lab, 'cli', `http://${LAB.target}/`);
    expect(page.code, page.stderr).toBe(0);
    expect(page.stdout).toContain(PAGE_MARKER);
    // Its log (here: -v's Accept line) reaches syslog, tagged rxshuttle[<daemon pid>], facility daemon.
    await waitFast(
      () => syslogMessages().some((m) => m.pid === daemon && /^Accept: 10\.99\.0\.1:\d+ -> 10\.98\.0\.3:80\.$/.test(m.text)),
      5_000,
      `the Accept line in syslog; received so far:\n${syslogText}`,
    );
    for (const m of syslogMessages().filter((x) => x.pid === daemon)) {
      expect(m.tag).toBe('rxshuttle');
      expect(m.priority >> 3, 'facility daemon').toBe(3);
    }

    // kill $(cat pidfile)
    const rules = await rxshuttleRules(lab);
    expect(rules.length).toBeGreaterThan(0);
    process.kill(readPid(pidfile) as number, 'SIGTERM');
    await waitFast(
      async () => isGone(daemon) && !fs.existsSync(pidfile) && (await rxshuttleRules(lab)).length === 0,
      3_000,
      'daemon, pid file and rules gone',
    ).catch(async (e: unknown) => {
      throw new Error(`${(e as Error).message}: alive ${!isGone(daemon)}, pidfile ${fs.existsSync(pidfile)}, rules ${JSON.stringify(await rxshuttleRules(lab))}`);
    });
    await waitFast(async () => (await rxshuttleProcessesIn(lab, 'cli')).length === 0, 5_000, 'no rxshuttle process in cli');
    await waitFast(async () => (await remoteNodePids(lab)).every((p) => remoteBefore.has(p)), 5_000, 'the remote server gone');
    await waitFast(() => syslogMessages().some((m) => m.pid === daemon && m.text === 'SIGTERM: shutting down.'), 3_000, 'the shutdown in syslog');
  });

  it('a failure to connect is reported on the terminal with a non-zero exit; nothing stays', async () => {
    const cwd = path.join(work, 'run2');
    fs.mkdirSync(cwd);
    const run = await runCli(['-D', '-r', lab.sshHostNoNodeNoForwarding, '-e', lab.sshCommand, LAB.targetSubnet], cwd);
    expect(run.code, run.stderr).toBe(1);
    const lines = run.stderr.trim().split('\n');
    expect(lines, run.stderr).toHaveLength(1);
    expect(lines[0]).toMatch(/^rxshuttle: lab-nonode-nofwd has no usable node .* and refuses TCP forwarding/);
    expect(fs.existsSync(path.join(cwd, 'rxshuttle.pid'))).toBe(false);
    expect(await rxshuttleRules(lab)).toEqual([]);
    await waitFast(async () => (await rxshuttleProcessesIn(lab, 'cli')).length === 0, 5_000, 'no rxshuttle process in cli');
  });

  it('a pid file of a running process is an error, before anything starts', async () => {
    const pidfile = path.join(work, 'live.pid');
    fs.writeFileSync(pidfile, `${process.pid}\n`);
    const run = await runCli(['-D', '--pidfile', pidfile, '-r', lab.sshHost, '-e', lab.sshCommand, LAB.targetSubnet], work, 20_000);
    expect(run.code).toBe(1);
    expect(run.stderr.trim()).toBe(
      `rxshuttle: pid file ${pidfile} belongs to process ${process.pid}, which is still running (another rxshuttle?): stop it, or choose another --pidfile`,
    );
    expect(run.elapsedMs).toBeLessThan(5_000);
    expect(readPid(pidfile)).toBe(process.pid);
    expect(await rxshuttleRules(lab)).toEqual([]);
  });
});
