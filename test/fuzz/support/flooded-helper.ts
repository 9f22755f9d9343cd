/**
 * The real firewall helper (bundled fixture, in a namespace) driven by a flooding client: writes
 * with backpressure and a deadline, reading of its answers that can be paused (a client that does
 * not read), answers tallied instead of kept (a flood gets a million of them), and its memory
 * (VmHWM, VmRSS of /proc/<pid>/status) polled all along, with a ceiling past which the flood stops
 * and one past which the helper is killed (so a leaking helper cannot take the machine with it).
 */

import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { HELPER_NODE_OPTIONS } from '../../../src/firewall/protocol.js';
import type { Bundle } from '../../firewall/support/bundle.js';
import type { Netns } from '../../firewall/support/netns.js';
import { waitUntil } from '../../support/wait-until.js';

export const KiB = 1024;
export const MiB = 1024 * KiB;

export interface Memory {
  /** Peak resident set size (VmHWM), KiB. */
  hwmKiB: number;
  /** Resident set size now (VmRSS), KiB. */
  rssKiB: number;
}

/** VmHWM and VmRSS of `pid`, or null when it is gone (or a zombie, which has none). */
export function readMemory(pid: number): Memory | null {
  let status: string;
  try {
    status = readFileSync(`/proc/${pid}/status`, 'latin1');
  } catch {
    return null;
  }
  const hwm = /^VmHWM:\s+(\d+) kB$/m.exec(status)?.[1];
  const rss = /^VmRSS:\s+(\d+) kB$/m.exec(status)?.[1];
  if (hwm === undefined || rss === undefined) return null;
  return { hwmKiB: Number(hwm), rssKiB: Number(rss) };
}

export interface FloodLimits {
  /** RSS past which writers stop flooding (the test has failed by then; the helper may still clean up). */
  stopFloodKiB: number;
  /** RSS past which the helper is killed with SIGKILL (its watchdog, or the namespace's deletion, cleans up). */
  killKiB: number;
}

/** How many distinct answers are tallied one by one; the rest are counted together. */
const MAX_DISTINCT = 200;
const OTHER = '(other distinct answers)';
/** Answers kept for `next()` and for failure messages. */
const RECENT = 1000;
/** An answer line longer than this is a protocol violation (docs/firewall-helper.md: a reason is at most 500 characters). */
const MAX_ANSWER = 600;
/** Control characters, which an answer never contains (what the helper sends is printable). */
const CONTROL = /[\u0000-\u001f\u007f]/;

export class FloodedHelper {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  /** Answers received so far (lines the helper wrote on stdout). */
  answers = 0;
  /** Each distinct answer and how often it came. */
  readonly tally = new Map<string, number>();
  /** Answers that break the protocol's form (too long, control characters, unterminated megabytes). */
  readonly malformed: string[] = [];
  /** Peak of VmHWM and VmRSS seen by the poller. */
  readonly peak: Memory = { hwmKiB: 0, rssKiB: 0 };
  /** The last sample the poller took while the helper lived. */
  last: Memory | null = null;
  /** Set once RSS passed `stopFloodKiB`. */
  overCeiling = false;
  /** Set when the helper was killed for passing `killKiB`. */
  killedForMemory = false;
  /** The end of what the helper wrote on stderr. */
  stderrTail = '';
  readonly #recent: Array<string | undefined> = new Array(RECENT);
  #taken = 0;
  #partial = '';
  readonly #poll: NodeJS.Timeout;

  constructor(ns: Netns, bundle: Bundle, env: NodeJS.ProcessEnv, readonly limits: FloodLimits) {
    // With node's options as the client starts it (HELPER_NODE_OPTIONS): the memory measured is the real helper's.
    const [node, ...script] = bundle.argv;
    this.child = ns.spawn([node as string, ...HELPER_NODE_OPTIONS, ...script], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, ...bundle.env, ...env } });
    if (this.child.pid === undefined) throw new Error('the helper did not start');
    this.pid = this.child.pid;
    this.child.stdin!.on('error', () => undefined);
    this.child.stdout!.on('data', (chunk: Buffer) => this.#onData(chunk));
    this.child.stderr!.on('data', (chunk: Buffer) => {
      this.stderrTail = (this.stderrTail + chunk.toString('utf8')).slice(-4000);
    });
    this.exited = new Promise((resolve) => {
      this.child.on('exit', (code, signal) => {
        this.exit = { code, signal };
        clearInterval(this.#poll);
        resolve(this.exit);
      });
    });
    this.#poll = setInterval(() => this.sample(), 20);
    this.#poll.unref();
  }

  /** Takes a memory sample now (also done every 20 ms). */
  sample(): Memory | null {
    if (this.exit) return null;
    const m = readMemory(this.pid);
    if (!m) return null;
    this.last = m;
    this.peak.hwmKiB = Math.max(this.peak.hwmKiB, m.hwmKiB);
    this.peak.rssKiB = Math.max(this.peak.rssKiB, m.rssKiB);
    if (m.rssKiB > this.limits.stopFloodKiB) this.overCeiling = true;
    if (m.rssKiB > this.limits.killKiB && !this.killedForMemory) {
      this.killedForMemory = true;
      this.child.kill('SIGKILL');
    }
    return m;
  }

  /** Stops reading the helper's stdout: its answers pile up in the pipe, then in the helper. */
  pauseReading(): void {
    this.child.stdout!.pause();
  }

  resumeReading(): void {
    this.child.stdout!.resume();
  }

  /** One line, without waiting for the pipe (for the few lines around a flood). */
  send(line: string): void {
    this.child.stdin!.write(`${line}\n`);
  }

  /**
   * Writes `chunk`, then waits while the pipe is full: true once it drained; false when the
   * deadline passed first, the helper exited or passed the memory ceiling (the chunk stays
   * queued and goes when the helper reads again).
   */
  async write(chunk: Buffer, deadline: number): Promise<boolean> {
    if (this.exit || this.overCeiling) return false;
    if (this.child.stdin!.write(chunk)) return true;
    const stdin = this.child.stdin!;
    return new Promise<boolean>((resolve) => {
      const done = (drained: boolean) => {
        clearTimeout(timer);
        clearInterval(check);
        stdin.off('drain', onDrain);
        resolve(drained);
      };
      const onDrain = () => done(true);
      stdin.on('drain', onDrain);
      const timer = setTimeout(() => done(false), Math.max(0, deadline - Date.now()));
      const check = setInterval(() => {
        if (this.exit || this.overCeiling) done(false);
      }, 20);
    });
  }

  /** Ends the helper's stdin. */
  closeInput(): void {
    this.child.stdin!.end();
  }

  /** The next answer not yet taken (among the last RECENT ones). */
  async next(ms = 10_000): Promise<string> {
    await this.waitForAnswers(this.#taken + 1, ms);
    if (this.answers - this.#taken > RECENT) throw new Error('next(): that answer is no longer kept (skip() past a flood first)');
    return this.#recent[this.#taken++ % RECENT] as string;
  }

  /** Takes every answer received so far without looking at them (they are in the tally). */
  skip(): void {
    this.#taken = this.answers;
  }

  /** The last answers received, for failure messages. */
  recent(count = 10): string[] {
    const out: string[] = [];
    for (let i = Math.max(0, this.answers - Math.min(count, RECENT)); i < this.answers; i++) out.push(this.#recent[i % RECENT] as string);
    return out;
  }

  /** Waits until `count` answers have come in all; rejects after `ms` or when the helper exits short of them. */
  async waitForAnswers(count: number, ms: number): Promise<void> {
    await waitUntil(() => this.answers >= count || this.exit !== undefined, {
      timeoutMs: ms,
      what: () => `${count} answers (${this.answers} came; last: ${JSON.stringify(this.recent(3))})`,
    });
    if (this.answers < count) throw new Error(`the helper exited (${JSON.stringify(this.exit)}) after ${this.answers} of ${count} answers`);
  }

  /** Waits for the exit, at most `ms`; undefined if it has not exited by then. */
  async exitWithin(ms: number): Promise<{ code: number | null; signal: NodeJS.Signals | null } | undefined> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<undefined>((resolve) => {
      timer = setTimeout(() => resolve(undefined), ms);
    });
    try {
      return await Promise.race([this.exited, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** The tally as a plain object (for assertions and reports). */
  tallied(): Record<string, number> {
    return Object.fromEntries(this.tally);
  }

  #onData(chunk: Buffer): void {
    const text = this.#partial + chunk.toString('latin1');
    let start = 0;
    for (;;) {
      const nl = text.indexOf('\n', start);
      if (nl < 0) break;
      this.#answer(text.slice(start, nl));
      start = nl + 1;
    }
    this.#partial = text.slice(start);
    if (this.#partial.length > MiB) {
      this.malformed.push(`an unterminated answer of more than 1 MiB: ${JSON.stringify(this.#partial.slice(0, 80))}…`);
      this.#partial = '';
    }
  }

  #answer(line: string): void {
    this.#recent[this.answers % RECENT] = line.length > MAX_ANSWER ? `${line.slice(0, MAX_ANSWER)}…` : line;
    this.answers++;
    if (line.length > MAX_ANSWER || CONTROL.test(line)) {
      if (this.malformed.length < 20) this.malformed.push(JSON.stringify(line.slice(0, 200)));
      return;
    }
    const key = this.tally.has(line) || this.tally.size < MAX_DISTINCT ? line : OTHER;
    this.tally.set(key, (this.tally.get(key) ?? 0) + 1);
  }
}

/** A source of flood chunks: each call gives the next chunk and how many complete lines it holds, or null when done. */
export type Source = () => { chunk: Buffer; lines: number } | null;

export interface FloodResult {
  bytes: number;
  lines: number;
  ms: number;
  /** Why it stopped: 'done' (the source ran out), 'bytes', 'time', 'ceiling' (memory), 'exit' (the helper ended). */
  stoppedBy: 'done' | 'bytes' | 'time' | 'ceiling' | 'exit';
  /** How long the writes waited for the pipe in all. */
  stalledMs: number;
}

/**
 * Floods the helper from `source` for at most `maxBytes` and `maxMs`, not reading its answers
 * for the first `noReadMs` (reading resumes when the flood ends, at the latest).
 */
export async function flood(
  helper: FloodedHelper,
  source: Source,
  { maxBytes, maxMs, noReadMs }: { maxBytes: number; maxMs: number; noReadMs: number },
): Promise<FloodResult> {
  const start = Date.now();
  const deadline = start + maxMs;
  let bytes = 0;
  let lines = 0;
  let stalledMs = 0;
  let stoppedBy: FloodResult['stoppedBy'] = 'done';
  helper.pauseReading();
  const resume = setTimeout(() => helper.resumeReading(), noReadMs);
  try {
    for (;;) {
      if (bytes >= maxBytes) {
        stoppedBy = 'bytes';
        break;
      }
      if (Date.now() >= deadline) {
        stoppedBy = 'time';
        break;
      }
      if (helper.overCeiling) {
        stoppedBy = 'ceiling';
        break;
      }
      if (helper.exit) {
        stoppedBy = 'exit';
        break;
      }
      const next = source();
      if (next === null) break;
      bytes += next.chunk.length;
      lines += next.lines;
      const before = Date.now();
      const drained = await helper.write(next.chunk, deadline);
      stalledMs += Date.now() - before;
      if (!drained) stoppedBy = helper.exit ? 'exit' : helper.overCeiling ? 'ceiling' : 'time';
      if (!drained) break;
    }
  } finally {
    clearTimeout(resume);
    helper.resumeReading();
  }
  return { bytes, lines, ms: Date.now() - start, stoppedBy, stalledMs };
}

/** Chunks of about `size` bytes made of whole copies of `lines` (each ends with '\n'), `total` lines at most (a multiple of lines.length). */
export function repeating(lines: readonly string[], total: number, size = 64 * KiB): Source {
  const unit = Buffer.from(lines.map((l) => `${l}\n`).join(''), 'latin1');
  const copies = Math.max(1, Math.floor(size / unit.length));
  const full = Buffer.concat(new Array<Buffer>(copies).fill(unit));
  let left = Math.floor(total / lines.length);
  return () => {
    if (left <= 0) return null;
    const n = Math.min(copies, left);
    left -= n;
    return { chunk: n === copies ? full : full.subarray(0, n * unit.length), lines: n * lines.length };
  };
}

/** Newlines in `b`. */
export function countNewlines(b: Buffer): number {
  let n = 0;
  for (let i = b.indexOf(0x0a); i >= 0; i = b.indexOf(0x0a, i + 1)) n++;
  return n;
}

/** Chunks of `size` pseudo-random bytes (xorshift32 from `seed`; every byte value, '\n' among them). */
export function randomBytesFrom(seed: number, size = 64 * KiB): Source {
  let state = seed >>> 0 || 0x9e3779b9;
  return () => {
    const words = new Uint32Array(size / 4);
    for (let i = 0; i < words.length; i++) {
      state ^= state << 13;
      state >>>= 0;
      state ^= state >>> 17;
      state ^= state << 5;
      state >>>= 0;
      words[i] = state;
    }
    const chunk = Buffer.from(words.buffer);
    return { chunk, lines: countNewlines(chunk) };
  };
}
