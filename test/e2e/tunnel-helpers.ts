// Helpers for the rxshuttle end-to-end tests: start the built CLI
// (dist/cli.js) inside a lab namespace, read its -v log, find its processes
// (the firewall helper, ssh, the remote node), and probe the target through
// curl and echo-load.mjs. Real processes only — nothing here mocks anything.
import { type ChildProcess, execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, expect } from 'vitest';
import { waitUntil } from '../support/wait-until.js';
import { type ExecResult, LAB, type Lab, type LabOptions, type Role, startLab, stopProcess } from './lab.js';

export const CLI_JS = fileURLToPath(new URL('../../dist/cli.js', import.meta.url));
export const ECHO_LOAD = fileURLToPath(new URL('./echo-load.mjs', import.meta.url));
export const GEN_BYTES = fileURLToPath(new URL('./gen-bytes.mjs', import.meta.url));

/** Throws unless `npm run build` has produced dist/cli.js. */
export function assertBuilt(): void {
  if (!fs.existsSync(CLI_JS)) throw new Error(`${CLI_JS} not found: run \`npm run build\` before the e2e tests`);
}

// ---------------------------------------------------------------------------
// /proc

/** argv of a process joined by spaces, or undefined when it is gone. */
export function cmdline(pid: number): string | undefined {
  try {
    const raw = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    return raw.replace(/\0+$/, '').split('\0').join(' ');
  } catch {
    return undefined;
  }
}

/** argv of a process as an array ([] when gone or a zombie). */
export function argvOf(pid: number): string[] {
  try {
    const raw = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    return raw ? raw.replace(/\0$/, '').split('\0') : [];
  } catch {
    return [];
  }
}

/** True when the process no longer runs: no /proc entry, or a zombie (it has
 *  exited; only its parent's wait() is pending — orphans are reaped by init). */
export function isGone(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0];
    return state === 'Z' || state === 'X';
  } catch {
    return true;
  }
}

/** Direct children of a process (all its threads'). */
export function childrenOf(pid: number): number[] {
  const out: number[] = [];
  let tasks: string[];
  try {
    tasks = fs.readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const t of tasks) {
    try {
      const s = fs.readFileSync(`/proc/${pid}/task/${t}/children`, 'utf8').trim();
      if (s) out.push(...s.split(/\s+/).map(Number));
    } catch {
      // thread gone
    }
  }
  return out;
}

/** Every descendant of a process, depth first. */
export function descendantsOf(pid: number): number[] {
  const out: number[] = [];
  for (const c of childrenOf(pid)) out.push(c, ...descendantsOf(c));
  return out;
}

/** Pids in a lab namespace with their command lines (gone ones left out). */
export async function processesIn(lab: Lab, ns: Role): Promise<{ pid: number; cmd: string }[]> {
  const out: { pid: number; cmd: string }[] = [];
  for (const pid of await lab.pids(ns)) {
    const cmd = cmdline(pid);
    if (cmd !== undefined && !isGone(pid)) out.push({ pid, cmd });
  }
  return out;
}

/** The rxshuttle server started over ssh (`node -e '<stub>'`) or locally. */
export function isRemoteNode(argv: readonly string[]): boolean {
  const [a0, a1] = argv;
  return a0 !== undefined && /(^|\/)node(js)?$/.test(a0) && a1 === '-e';
}

/** Pids of `node -e <stub>` servers in a namespace. */
export async function remoteNodePids(lab: Lab, ns: Role = 'srv'): Promise<number[]> {
  const pids: number[] = [];
  for (const pid of await lab.pids(ns)) if (!isGone(pid) && isRemoteNode(argvOf(pid))) pids.push(pid);
  return pids;
}

/** Processes in a namespace that belong to some rxshuttle (the CLI, its
 *  firewall helper, its ssh, a local server). */
export async function rxshuttleProcessesIn(lab: Lab, ns: Role): Promise<{ pid: number; cmd: string }[]> {
  const procs = await processesIn(lab, ns);
  return procs.filter(({ pid, cmd }) => {
    const argv = argvOf(pid);
    return cmd.includes(CLI_JS) || cmd.includes('dist/cli.js') || cmd.includes('dist/firewall-helper.cjs') || /(^|\/)ssh$/.test(argv[0] ?? '') || isRemoteNode(argv);
  });
}

// ---------------------------------------------------------------------------
// iptables

/** Lines of `iptables-save` (all tables) that mention rxshuttle, and the nftables tables of the nft method. */
export async function rxshuttleRules(lab: Lab, ns: Role = 'cli'): Promise<string[]> {
  const text = `${await lab.iptablesSave(ns)}\n${await lab.nftTables(ns)}`;
  return text.split('\n').filter((l) => /rxshuttle/i.test(l));
}

// ---------------------------------------------------------------------------
// The CLI under test

const live = new Set<Rxshuttle>();
/** Every instance started since the last reportRxshuttleOnFailure() (for the failure report). */
let recent: Rxshuttle[] = [];

export interface ProcessSet {
  /** The rxshuttle CLI itself. */
  main: number;
  /** The firewall helper (dist/firewall-helper.cjs), its child (with sudo when not root). */
  helper: number[];
  /** The helper's watchdog (`firewall-helper.cjs --watchdog`). */
  watchdog: number[];
  /** Its ssh child (remote mode) or local `node -e` server (local mode). */
  transport: number[];
  /** Every descendant. */
  all: number[];
}

/** One rxshuttle CLI run in a lab namespace; every line it prints is kept. */
export class Rxshuttle {
  readonly child: ChildProcess;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private text = '';

  constructor(
    readonly lab: Lab,
    readonly ns: Role,
    readonly args: readonly string[],
    /** Runs the CLI through these (e.g. `prlimit --nofile=…`, `setpriv --reuid=…`, `setsid`), which must exec it. */
    readonly prefix: readonly string[] = [],
    env?: NodeJS.ProcessEnv,
    /** The CLI script to run (default: this checkout's dist/cli.js). */
    cli: string = CLI_JS,
  ) {
    this.child = lab.spawn(ns, [...prefix, process.execPath, cli, ...args], env ? { env } : {});
    const onData = (d: Buffer) => {
      this.text += d.toString();
    };
    this.child.stdout?.on('data', onData);
    this.child.stderr?.on('data', onData);
    this.exited = new Promise((resolve) => {
      this.child.once('exit', (code, signal) => resolve({ code, signal }));
    });
    live.add(this);
    recent.push(this);
    void this.exited.then(() => live.delete(this));
  }

  /** `rxshuttle -v -r lab -e 'ssh -F …' <args>` in cli, resolved once the
   *  firewall rules are in place. */
  static async remote(lab: Lab, args: readonly string[], ns: Role = 'cli'): Promise<Rxshuttle> {
    const rx = new Rxshuttle(lab, ns, ['-v', '-r', lab.sshHost, '-e', lab.sshCommand, ...args]);
    await rx.ready();
    return rx;
  }

  /** `rxshuttle -v <args>` (local mode: no -r) in a namespace, once ready. */
  static async local(lab: Lab, ns: Role, args: readonly string[]): Promise<Rxshuttle> {
    const rx = new Rxshuttle(lab, ns, ['-v', ...args]);
    await rx.ready();
    return rx;
  }

  /** Everything printed so far (stdout and stderr). */
  get output(): string {
    return this.text;
  }

  get pid(): number {
    if (this.child.pid === undefined) throw new Error('rxshuttle did not start');
    return this.child.pid;
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Waits until the output matches; fails fast (quoting the output) if the process exits. */
  async waitFor(pattern: RegExp | string, timeoutMs = 20_000): Promise<string> {
    const test = () => (typeof pattern === 'string' ? this.text.includes(pattern) : pattern.test(this.text));
    await waitUntil(() => test() || !this.running, {
      timeoutMs,
      intervalMs: 25,
      what: () => `${String(pattern)} from rxshuttle; output so far:\n${this.text}`,
    });
    if (test()) return this.text;
    // It exited: the last chunks may still be in the pipe.
    await waitUntil(test, { timeoutMs: 500, intervalMs: 25 }).catch(() => undefined);
    if (test()) return this.text;
    throw new Error(
      `rxshuttle ${this.args.join(' ')} exited (${this.child.exitCode ?? this.child.signalCode}) ` +
        `before printing ${String(pattern)}; output:\n${this.text}`,
    );
  }

  /** Resolves once the firewall rules are in place (`Firewall ready`). */
  ready(timeoutMs = 30_000): Promise<string> {
    return this.waitFor(/Firewall ready: (?:chain|table inet) rxshuttle-\d+/, timeoutMs);
  }

  /** The port from `Listening on <ip>:<port>.` */
  get port(): number {
    const m = /Listening on [^\s]+:(\d+)\./.exec(this.text);
    if (!m?.[1]) throw new Error(`no "Listening on" line yet; output:\n${this.text}`);
    return Number(m[1]);
  }

  /** `Accept: <src> -> <dst>.` lines, optionally only those to `dst` (ip or ip:port). */
  accepts(dst?: string): string[] {
    const lines = this.text.split('\n').filter((l) => /^rxshuttle: Accept: /.test(l));
    if (dst === undefined) return lines;
    const re = new RegExp(` -> ${dst.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}${dst.includes(':') ? '' : ':\\d+'}\\.$`);
    return lines.filter((l) => re.test(l));
  }

  /** Waits (up to timeoutMs) until at least n Accept lines to `dst` were printed — a line
   *  can reach us just after the client that caused it has finished — and returns them all. */
  async acceptsAtLeast(n: number, dst?: string, timeoutMs = 5_000): Promise<string[]> {
    await waitUntil(() => this.accepts(dst).length >= n, { timeoutMs, intervalMs: 25 }).catch(() => undefined);
    return this.accepts(dst);
  }

  /** `closed #…` lines. */
  closes(): string[] {
    return this.text.split('\n').filter((l) => /^rxshuttle: closed #\d+ /.test(l));
  }

  /** The CLI's process tree now: firewall helper, ssh/local server, all descendants. */
  processes(): ProcessSet {
    const all = descendantsOf(this.pid);
    const helperArgv = (p: number) => argvOf(p).some((a) => a.endsWith('/firewall-helper.cjs'));
    const helper = all.filter((p) => helperArgv(p) && !argvOf(p).includes('--watchdog'));
    const watchdog = all.filter((p) => helperArgv(p) && argvOf(p).includes('--watchdog'));
    const transport = all.filter((p) => {
      const argv = argvOf(p);
      return /(^|\/)ssh$/.test(argv[0] ?? '') || isRemoteNode(argv);
    });
    return { main: this.pid, helper, watchdog, transport, all };
  }

  /** Sends `signal` and waits for the exit (SIGKILL after timeoutMs). */
  stop(signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 5_000) {
    return stopProcess(this.child, signal, timeoutMs);
  }
}

/** Stops every rxshuttle the helpers started that still runs (for afterEach/afterAll). */
export async function stopAllRxshuttle(): Promise<void> {
  await Promise.all([...live].map((rx) => rx.stop('SIGTERM', 3_000).catch(() => undefined)));
}

/** For afterEach: when the test failed, prints how every rxshuttle it started ended and
 *  the tail of its output (the CLI's log is the first thing to read). */
export function reportRxshuttleOnFailure(ctx: { task: { name: string; result?: { state?: string } } }): void {
  const started = recent;
  recent = [...live];
  if (ctx.task.result?.state !== 'fail') return;
  for (const rx of started) {
    const how = rx.running ? 'still running' : `exited ${rx.child.exitCode ?? rx.child.signalCode}`;
    const tail = rx.output.split('\n').slice(-40).join('\n');
    console.error(`[${ctx.task.name}] rxshuttle ${rx.args.join(' ')} (${rx.ns}, ${how}); last output:\n${tail}`);
  }
}

/** Runs the CLI to completion (for the error cases), timing it. */
export async function runRxshuttle(
  lab: Lab,
  ns: Role,
  args: readonly string[],
  timeoutMs = 60_000,
): Promise<ExecResult & { elapsedMs: number }> {
  const t0 = Date.now();
  const r = await lab.exec(ns, [process.execPath, CLI_JS, ...args], { timeoutMs });
  return { ...r, elapsedMs: Date.now() - t0 };
}

// ---------------------------------------------------------------------------
// Probes

/** curl in a namespace; never throws. */
export function curl(lab: Lab, ns: Role, url: string, extra: readonly string[] = [], maxTimeS = 10): Promise<ExecResult> {
  return lab.exec(ns, ['curl', '-sS', '--max-time', String(maxTimeS), ...extra, url], { timeoutMs: (maxTimeS + 10) * 1000 });
}

export interface EchoSummary {
  count: number;
  ok: number;
  failed: number;
  timedOut: boolean;
  connected: number;
  peakOpen: number;
  bytes: number;
  elapsedMs: number;
  errors: Record<string, number>;
  firstFailures: { i: number; target: string; reason: string }[];
}

export interface EchoLoadConfig {
  targets: string[];
  count?: number;
  minBytes?: number;
  maxBytes?: number;
  timeoutMs?: number;
  connectTimeoutMs?: number;
  barrier?: boolean;
}

/** Runs echo-load.mjs with the lab's node in a namespace; returns its JSON summary. */
export async function echoLoad(lab: Lab, ns: Role, cfg: EchoLoadConfig): Promise<EchoSummary & { exit: number | null; stderr: string }> {
  const timeoutMs = cfg.timeoutMs ?? 60_000;
  const r = await lab.exec(ns, [lab.nodePath, ECHO_LOAD, JSON.stringify(cfg)], { timeoutMs: timeoutMs + 15_000 });
  const line = r.stdout.trim().split('\n').pop() ?? '';
  let summary: EchoSummary;
  try {
    summary = JSON.parse(line) as EchoSummary;
  } catch {
    throw new Error(`echo-load.mjs printed no summary (exit ${r.code ?? r.signal}); stdout: ${r.stdout}\nstderr: ${r.stderr}`);
  }
  return { ...summary, exit: r.code, stderr: r.stderr };
}

/** One echo round trip to host:port (short payload), bounded by timeoutMs. */
export async function echoOnce(lab: Lab, ns: Role, host: string, port: number = LAB.echoPort, timeoutMs = 5_000) {
  return echoLoad(lab, ns, { targets: [`${host}:${port}`], count: 1, minBytes: 64, maxBytes: 4096, timeoutMs, connectTimeoutMs: timeoutMs });
}

/** Waits until `fn` holds, polling fast; for the timed cleanup checks. */
export function waitFast<T>(fn: () => T | Promise<T>, timeoutMs: number, what: string | (() => string)): Promise<T> {
  return waitUntil(fn, { timeoutMs, intervalMs: 50, what });
}

// ---------------------------------------------------------------------------
// Failures: what a refused start must look like

/** stderr must be exactly one line `rxshuttle: <message>`; returns the message. */
export function oneErrorLine(stderr: string): string {
  const lines = stderr.split('\n').filter((l) => l.trim() !== '');
  expect(lines, `stderr should be one line:\n${stderr}`).toHaveLength(1);
  const line = lines[0] ?? '';
  expect(line).toMatch(/^rxshuttle: \S/);
  return line.slice('rxshuttle: '.length);
}

/** Nothing left behind: no rule in cli, no rxshuttle/ssh process in cli, no server on srv. */
export async function expectNothingLeft(lab: Lab): Promise<void> {
  expect(await rxshuttleRules(lab)).toEqual([]);
  // The CLI has exited; whatever it started must be gone too (2 s grace for a child still exiting).
  await waitFast(async () => (await rxshuttleProcessesIn(lab, 'cli')).length === 0, 2_000, 'no rxshuttle process in cli').catch(
    async (e: unknown) => {
      throw new Error(`${(e as Error).message}: ${JSON.stringify(await rxshuttleProcessesIn(lab, 'cli'))}`);
    },
  );
  expect(await remoteNodePids(lab)).toEqual([]);
}

// ---------------------------------------------------------------------------
// The lab of a test file

/**
 * The lab of a test file (or describe block): built once before its tests, after checking that
 * dist is built, and handed to `up` (which may set up more, e.g. a tunnel the tests share);
 * after each test its output is printed if it failed and, unless `stopEachTest` is false (a
 * shared tunnel), its rxshuttle processes are stopped; at the end everything is stopped and the
 * lab torn down, whatever failed.
 */
export function useLab(
  options: LabOptions,
  up: (lab: Lab) => void | Promise<void>,
  { stopEachTest = true }: { stopEachTest?: boolean } = {},
): void {
  let lab: Lab | undefined;
  beforeAll(async () => {
    assertBuilt();
    lab = await startLab(options);
    await up(lab);
  });
  afterEach(async (ctx) => {
    reportRxshuttleOnFailure(ctx);
    if (stopEachTest) await stopAllRxshuttle();
  });
  afterAll(async () => {
    await stopAllRxshuttle();
    await lab?.down();
  });
}

/** The sshd process that serves the session a remote pid runs in (walking up its parents). */
export function sshdSessionOf(pid: number): number | undefined {
  for (let p = pid, i = 0; p > 1 && i < 10; i++) {
    if (/^sshd: /.test(argvOf(p).join(' '))) return p;
    try {
      const stat = fs.readFileSync(`/proc/${p}/stat`, 'utf8');
      p = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    } catch {
      return undefined;
    }
  }
  return undefined;
}

/**
 * The kernel's default receive buffers (tcp_rmem up to 6 MiB) in the client namespace for the
 * tests of a describe block. What a program's socket has received still reaches it before an error,
 * and with this machine's buffers (up to 32 MiB) that alone can take longer than the bounds the
 * tests check at 10 MB/s: they measure a hang, not a buffer.
 */
export function defaultReceiveBuffers(lab: () => Lab): void {
  let rmem = '';
  beforeAll(async () => {
    rmem = (await lab().execOk('cli', ['sysctl', '-n', 'net.ipv4.tcp_rmem'])).stdout.trim();
    await lab().execOk('cli', ['sysctl', '-q', '-w', 'net.ipv4.tcp_rmem=4096 131072 6291456']);
  });
  afterAll(async () => {
    if (rmem) await lab().execOk('cli', ['sysctl', '-q', '-w', `net.ipv4.tcp_rmem=${rmem.split(/\s+/).join(' ')}`]);
  });
}

/** `rxshuttle status --json`'s entry for `pid` (other tests' tunnels may be listed too). */
export function statusOf(pid: number): Record<string, unknown> | undefined {
  const out = execFileSync(process.execPath, [CLI_JS, 'status', '--json'], { encoding: 'utf8' });
  return (JSON.parse(out) as { instances: Array<Record<string, unknown>> }).instances.find((i) => i.pid === pid);
}
