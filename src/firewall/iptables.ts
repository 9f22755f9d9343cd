/**
 * Running iptables-save / iptables-restore (and the ip6tables twins). Always spawned with an
 * argv array, never a shell; the rules travel on stdin. The runner is injectable so the
 * helper's protocol can be tested without touching any real table.
 */
import { spawn } from 'node:child_process';
import createDebug from 'debug';
import type { IpFamily } from './types.js';

const log = createDebug('rxshuttle:fw');

/** Runs `file args…` with `input` on stdin; resolves with stdout, rejects with a one-line Error. */
export type RunCommand = (file: string, args: readonly string[], input?: string) => Promise<string>;

/** Thrown when the program itself is missing (ENOENT), so callers can say what to install. */
export class CommandNotFoundError extends Error {
  override name = 'CommandNotFoundError';
  constructor(readonly command: string) {
    super(`${command} not found`);
  }
}

// Root's programs live in sbin; a root shell reached by `su` or a service manager does not
// always have those in PATH (sudo's secure_path does).
const SBIN_DIRS = ['/usr/local/sbin', '/usr/sbin', '/sbin'];

function commandPath(): string {
  const dirs = (process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin').split(':').filter(Boolean);
  for (const dir of SBIN_DIRS) if (!dirs.includes(dir)) dirs.push(dir);
  return dirs.join(':');
}

const TIMEOUT_MS = 60_000;
const MAX_OUTPUT = 64 * 1024 * 1024;

export const runCommand: RunCommand = (file, args, input) =>
  new Promise((resolve, reject) => {
    // spawn rather than execFile, which cannot start a process group of its own (`detached`): a
    // Ctrl-C at the terminal must never kill the iptables-restore that is removing the rules. (The
    // helper leaves the client's process group too; this also covers a helper started otherwise.)
    const child = spawn(file, [...args], {
      stdio: ['pipe', 'pipe', 'pipe'],
      detached: true,
      // LC_ALL=C: messages we pass on are the ones users can search for.
      env: { ...process.env, PATH: commandPath(), LC_ALL: 'C' },
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let size = 0;
    let timedOut = false;
    let tooMuch = false;
    const collect = (into: Buffer[]) => (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_OUTPUT) {
        tooMuch = true;
        child.kill('SIGKILL');
        return;
      }
      into.push(chunk);
    };
    child.stdout.on('data', collect(out));
    child.stderr.on('data', collect(err));
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, TIMEOUT_MS);
    let spawnError: NodeJS.ErrnoException | null = null;
    child.on('error', (e: NodeJS.ErrnoException) => {
      spawnError = e;
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const failure = spawnError as NodeJS.ErrnoException | null;
      if (failure?.code === 'ENOENT') return reject(new CommandNotFoundError(file));
      const stdout = Buffer.concat(out).toString('utf8');
      if (!failure && code === 0 && !tooMuch) return resolve(stdout);
      const detail = Buffer.concat(err)
        .toString('utf8')
        .split('\n')
        .map((l) => l.trim())
        .filter(Boolean)
        .join(' / ');
      const status = timedOut
        ? 'timed out'
        : tooMuch
          ? 'too much output'
          : failure
            ? failure.message
            : `exit ${String(code ?? signal)}`;
      reject(new Error(`${file} ${args.join(' ')} failed (${status})${detail ? `: ${detail}` : ''}`));
    });
    // The program may exit before reading all of stdin; its exit status tells what happened.
    child.stdin.on('error', (e) => log('stdin of %s: %s', file, e.message));
    child.stdin.end(input ?? '');
  });

/** save/restore of the nat table of one address family. */
export interface NatTable {
  family: IpFamily;
  /** `iptables` or `ip6tables`, for messages. */
  tool: string;
  save(): Promise<string>;
  /** Applies a restore script with --noflush: one atomic transaction, other rules untouched. */
  restore(script: string): Promise<void>;
}

/** Message for a missing iptables program: what the user has to do. */
export function notFoundMessage(tool: string): string {
  return `${tool} not found: install iptables`;
}

export function natTable(family: IpFamily, run: RunCommand = runCommand): NatTable {
  const tool = family === 4 ? 'iptables' : 'ip6tables';
  // Wait for the xtables lock instead of failing when another program edits rules right now
  // (ignored by the nft backend). Very old versions do not know --wait: retry without it.
  let waitArgs = ['--wait=10'];
  const named = async (file: string, args: string[], input?: string) => {
    try {
      return await run(file, args, input);
    } catch (e) {
      if (e instanceof CommandNotFoundError) throw new Error(notFoundMessage(tool));
      throw e;
    }
  };
  return {
    family,
    tool,
    save: () => named(`${tool}-save`, ['-t', 'nat']),
    async restore(script) {
      const file = `${tool}-restore`;
      try {
        await named(file, [...waitArgs, '--noflush'], script);
      } catch (e) {
        if (waitArgs.length === 0 || !/(unrecognized|invalid) option/.test(String(e))) throw e;
        log('%s does not know --wait; retrying without', file);
        waitArgs = [];
        await named(file, ['--noflush'], script);
      }
    },
  };
}
