/**
 * Running iptables-save / iptables-restore (and the ip6tables twins). Always execFile with an
 * argv array, never a shell; the rules travel on stdin. The runner is injectable so the
 * helper's protocol can be tested without touching any real table.
 */
import { execFile } from 'node:child_process';
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

export const runCommand: RunCommand = (file, args, input) =>
  new Promise((resolve, reject) => {
    const child = execFile(
      file,
      [...args],
      {
        encoding: 'utf8',
        timeout: 60_000,
        maxBuffer: 64 * 1024 * 1024,
        // LC_ALL=C: messages we pass on are the ones users can search for.
        env: { ...process.env, PATH: commandPath(), LC_ALL: 'C' },
      },
      (error, stdout, stderr) => {
        if (!error) return resolve(stdout);
        if ((error as NodeJS.ErrnoException).code === 'ENOENT') return reject(new CommandNotFoundError(file));
        const detail = stderr.split('\n').map((l) => l.trim()).filter(Boolean).join(' / ');
        const status = error.killed ? 'timed out' : `exit ${String(error.code ?? error.signal)}`;
        reject(new Error(`${file} ${args.join(' ')} failed (${status})${detail ? `: ${detail}` : ''}`));
      },
    );
    // The program may exit before reading all of stdin; its exit status tells what happened.
    child.stdin?.on('error', (e) => log('stdin of %s: %s', file, e.message));
    child.stdin?.end(input ?? '');
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
