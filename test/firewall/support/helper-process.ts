/** The real helper (bundled fixture) running in a namespace, driven over its stdio. */
import type { ChildProcess } from 'node:child_process';
import type { Bundle } from './bundle.js';
import type { Netns } from './netns.js';

export class HelperProcess {
  readonly child: ChildProcess;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  readonly #lines: string[] = [];
  #read = 0;
  #wake: (() => void) | undefined;

  constructor(ns: Netns, bundle: Bundle) {
    this.child = ns.spawn(bundle.argv, { stdio: ['pipe', 'pipe', 'inherit'], env: { ...process.env, ...bundle.env } });
    this.child.stdin?.on('error', () => undefined);
    let buffered = '';
    this.child.stdout?.on('data', (chunk: Buffer) => {
      buffered += chunk.toString();
      const parts = buffered.split('\n');
      buffered = parts.pop() ?? '';
      this.#lines.push(...parts);
      this.#wake?.();
    });
    this.exited = new Promise((resolve) => {
      this.child.on('exit', (code, signal) => {
        resolve({ code, signal });
        this.#wake?.();
      });
    });
  }

  /** The next line the helper wrote (rejects after `ms`). */
  async nextLine(ms = 10_000): Promise<string> {
    const deadline = Date.now() + ms;
    while (this.#read >= this.#lines.length) {
      if (Date.now() > deadline) throw new Error(`helper wrote nothing new within ${ms} ms`);
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
        setTimeout(resolve, 50);
      });
    }
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
}

/** Polls until `check` holds, for at most `ms`; returns how long it took. */
export async function within(ms: number, check: () => Promise<boolean>): Promise<number> {
  const start = Date.now();
  for (;;) {
    if (await check()) return Date.now() - start;
    if (Date.now() - start > ms) throw new Error(`condition not met within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
