/** The real helper (bundled fixture) running in a namespace, driven over its stdio. */
import type { ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { waitUntil } from '../../support/wait-until.js';
import type { Bundle } from './bundle.js';
import type { Netns } from './netns.js';

export class HelperProcess {
  readonly child: ChildProcess;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  readonly #lines: string[] = [];
  #read = 0;

  constructor(ns: Netns, bundle: Bundle) {
    this.child = ns.spawn(bundle.argv, { stdio: ['pipe', 'pipe', 'inherit'], env: { ...process.env, ...bundle.env } });
    this.child.stdin?.on('error', () => undefined);
    let buffered = '';
    this.child.stdout?.on('data', (chunk: Buffer) => {
      buffered += chunk.toString();
      const parts = buffered.split('\n');
      buffered = parts.pop() ?? '';
      this.#lines.push(...parts);
    });
    this.exited = new Promise((resolve) => {
      this.child.on('exit', (code, signal) => {
        resolve({ code, signal });
      });
    });
  }

  /** The next line the helper wrote (rejects after `ms`). */
  async nextLine(ms = 10_000): Promise<string> {
    await waitUntil(() => this.#read < this.#lines.length, { timeoutMs: ms, what: 'a new line from the helper' });
    return this.#lines[this.#read++]!;
  }

  send(line: string): void {
    this.child.stdin?.write(`${line}\n`);
  }

  /** Starts it: HELLO, setup, and the reply (READY or ERROR …). */
  async setup(setup: unknown): Promise<string> {
    const hello = await this.nextLine();
    if (hello !== 'HELLO rxshuttle-fw 1') throw new Error(`unexpected greeting ${hello}`);
    this.send(JSON.stringify(setup));
    return this.nextLine();
  }

  closeInput(): void {
    this.child.stdin?.end();
  }

  /** The pid of the helper's watchdog (its child `… --watchdog`), once started. */
  watchdogPid(): number | undefined {
    return watchdogsOf(this.child.pid ?? -1)[0];
  }

  /**
   * SIGKILL to the watchdog, then to the helper: as if both died at once, which leaves the rules
   * for the next helper of the port to clear. Waits for the helper's exit.
   */
  async killWithWatchdog(): Promise<void> {
    const watchdog = await waitUntil(() => this.watchdogPid(), { intervalMs: 20, what: "the helper's watchdog" });
    process.kill(watchdog, 'SIGKILL');
    this.child.kill('SIGKILL');
    await this.exited;
  }
}

/**
 * Watchdog processes (`… --watchdog`) whose parent is `pid`, or with `pid` -1 every one left, by
 * anyone, of the bundle `script` (other test files run bundles of their own).
 */
export function watchdogsOf(pid: number, script?: string): number[] {
  const found: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'latin1');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      const argv = readFileSync(`/proc/${name}/cmdline`, 'latin1').split('\0');
      const ours = script === undefined ? argv.some((a) => a.includes('helper-main')) : argv.includes(script);
      if ((pid === -1 || ppid === pid) && argv.includes('--watchdog') && ours) found.push(Number(name));
    } catch {
      // gone meanwhile
    }
  }
  return found;
}
