/**
 * The programs the root helper runs — iptables-save/-restore, the ip6tables twins, nft, ip, resolvectl —
 * found once when it starts, and run by absolute path with a fixed environment.
 *
 * The helper runs as root but with its caller's environment: under a sudoers policy without
 * secure_path, PATH is whatever the user set, and a program found by name there ran as root
 * (issue 17, finding 2). So a program is looked up only in PROGRAM_DIRS, never in $PATH, and taken
 * only when nobody but root can change what runs: the file, and every directory on the way to it,
 * owned by root and not writable by group or others. Symbolic links are followed one at a time
 * (`/sbin` → `usr/sbin` on a merged /usr, `iptables-save` → `/etc/alternatives/iptables-save` →
 * `xtables-nft-multi`), so the directories a link leads through are checked too. Sticky
 * directories (/tmp) are not trusted. The program gets PROGRAM_ENV and nothing of ours.
 *
 * It is run by the path where it was found, not by the file a link leads to: a multi-call binary
 * (xtables-nft-multi) tells what to do from the name it was started by.
 */
import { spawn } from 'node:child_process';
import { lstatSync, readdirSync, readlinkSync, type Stats, statSync } from 'node:fs';
import { isAbsolute, join } from 'node:path';
import createDebug from 'debug';
import { CommandNotFoundError, type RunCommand } from './iptables.js';

const log = createDebug('rxshuttle:fw');

/** Where the helper looks for programs, in this order. Never $PATH. */
export const PROGRAM_DIRS: readonly string[] = ['/usr/sbin', '/sbin', '/usr/bin', '/bin'];

/** The whole environment of every program the helper runs. */
export const PROGRAM_ENV: Readonly<Record<string, string>> = Object.freeze({ PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' });

/** Every program the helper may run. */
export const HELPER_PROGRAMS: readonly string[] = [
  'iptables-save',
  'iptables-restore',
  'ip6tables-save',
  'ip6tables-restore',
  // the nft method's one table per instance (nft.ts)
  'nft',
  // the tproxy method's policy routing: ip rule / ip route of the instance's table (policy-routing.ts)
  'ip',
  'resolvectl',
  'systemd-resolve',
  // ends the programs' side of redirected connections when the client died (redirected.ts)
  'ss',
];

/** Where a program was found; `refused` says why it must not run as root. */
export type Program = { readonly path: string; readonly refused?: string };
/** Program name → where it was found. A name that is absent was found nowhere. */
export type Programs = ReadonlyMap<string, Program>;

/** The program exists, but others than root could change it: it is not run. */
export class UntrustedProgramError extends Error {
  override name = 'UntrustedProgramError';
  constructor(
    readonly command: string,
    readonly path: string,
    readonly reason: string,
  ) {
    super(`refusing to run ${path} as root: ${reason}`);
  }
}

const PROGRAM_NAME = /^[A-Za-z0-9._+-]+$/;
/** As the kernel's limit on links followed in one path lookup. */
const MAX_LINKS = 40;

/**
 * Looks each name up in `dirs` (the first directory that has it decides, as in a PATH search):
 * where it is, and whether it may run as root. A name found nowhere is left out.
 */
export function findPrograms(names: readonly string[], dirs: readonly string[] = PROGRAM_DIRS): Programs {
  const found = new Map<string, Program>();
  for (const name of names) {
    if (!PROGRAM_NAME.test(name) || name === '.' || name === '..') throw new Error(`not a program name: ${JSON.stringify(name)}`);
    for (const dir of dirs) {
      const path = join(dir, name);
      try {
        statSync(path);
      } catch {
        continue; // not here (or a dangling link): look further
      }
      const refused = untrustedReason(path);
      found.set(name, refused === null ? { path } : { path, refused });
      log(refused === null ? '%s: %s' : '%s: %s refused: %s', name, path, refused);
      break;
    }
  }
  return found;
}

/**
 * Why `file` is not safe to run as root, or null when it is: it, and every directory from / down
 * to it with every symbolic link on the way resolved, must be owned by root and not writable by
 * group or others, and it must be an executable regular file.
 */
export function untrustedReason(file: string, what: 'program' | 'file' | 'directory' = 'program'): string | null {
  if (!isAbsolute(file)) return `${file} is not an absolute path`;
  let pending = file.split('/').filter((part) => part !== '' && part !== '.');
  let current = '/'; // resolved so far: no link in it, every directory checked
  let links = 0;
  const rootProblem = problemOf('/', lstat('/'));
  if (rootProblem) return rootProblem;
  while (pending.length > 0) {
    const [part, ...rest] = pending as [string, ...string[]];
    pending = rest;
    if (part === '..') {
      current = join(current, '..'); // lexical is right: `current` holds no link
      continue;
    }
    const path = join(current, part);
    const st = lstat(path);
    if (typeof st === 'string') return st;
    if (st.isSymbolicLink()) {
      if (++links > MAX_LINKS) return `${file}: too many levels of symbolic links`;
      const target = readlinkSync(path);
      if (isAbsolute(target)) current = '/';
      pending = [...target.split('/').filter((p) => p !== '' && p !== '.'), ...pending];
      continue;
    }
    const problem = problemOf(path, st);
    if (problem) return problem;
    current = path;
  }
  const st = lstat(current);
  if (typeof st === 'string') return st;
  if (what === 'directory') return st.isDirectory() ? null : `${current} is not a directory`;
  if (!st.isFile()) return `${current} is not a regular file`;
  if (what === 'program' && (st.mode & 0o111) === 0) return `${current} is not executable`;
  return null;
}

/**
 * Why some entry below directory `dir` (itself checked with untrustedReason) could be changed by
 * others than root, or null: every file and directory in it owned by root and not writable by
 * group or others, and no symbolic link (a link could lead anywhere). At most `limit` entries.
 */
export function untrustedTreeReason(dir: string, limit = 20_000): string | null {
  const top = untrustedReason(dir, 'directory');
  if (top !== null) return top;
  const pending = [dir];
  let seen = 0;
  for (let next = pending.pop(); next !== undefined; next = pending.pop()) {
    for (const entry of readdirSync(next, { withFileTypes: true })) {
      if (++seen > limit) return `${dir} has more than ${limit} entries`;
      const path = join(next, entry.name);
      const st = lstat(path);
      if (typeof st !== 'string' && st.isSymbolicLink()) return `${path} is a symbolic link`;
      const problem = problemOf(path, st);
      if (problem) return problem;
      if (entry.isDirectory()) pending.push(path);
    }
  }
  return null;
}

function lstat(path: string): Stats | string {
  try {
    return lstatSync(path);
  } catch (e) {
    return `${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`;
  }
}

function problemOf(path: string, st: Stats | string): string | null {
  if (typeof st === 'string') return st;
  if (st.uid !== 0) return `${path} is owned by uid ${st.uid}, not root`;
  if ((st.mode & 0o002) !== 0) return `${path} is writable by others`;
  if ((st.mode & 0o020) !== 0) return `${path} is writable by its group`;
  return null;
}

/**
 * Runs programs of `programs` by name: a name found nowhere rejects with CommandNotFoundError
 * (so callers say what to install), a refused one with UntrustedProgramError; neither runs.
 */
export function programRunner(programs: Programs): RunCommand {
  return (name, args, input) => {
    const program = programs.get(name);
    if (program === undefined) return Promise.reject(new CommandNotFoundError(name));
    if (program.refused !== undefined) return Promise.reject(new UntrustedProgramError(name, program.path, program.refused));
    return runProgram(name, program.path, args, input);
  };
}

const TIMEOUT_MS = 60_000;
const MAX_OUTPUT = 64 * 1024 * 1024;

/**
 * Runs `path args…` with `input` on stdin, PROGRAM_ENV as its whole environment, in `/`; resolves
 * with stdout, rejects with a one-line Error that names the program as `name`. Never a shell.
 */
export function runProgram(name: string, path: string, args: readonly string[], input?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    // spawn rather than execFile, which cannot start a process group of its own (`detached`): a
    // Ctrl-C at the terminal must never kill the iptables-restore that is removing the rules. (The
    // helper leaves the client's process group too; this also covers a helper started otherwise.)
    const child = spawn(path, [...args], {
      stdio: ['pipe', 'pipe', 'pipe'],
      detached: true,
      cwd: '/',
      // LC_ALL=C: messages we pass on are the ones users can search for.
      env: { ...PROGRAM_ENV },
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
      // Gone since the helper started (a package removed meanwhile).
      if (failure?.code === 'ENOENT') return reject(new CommandNotFoundError(name));
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
      reject(new Error(`${name} ${args.join(' ')} failed (${status})${detail ? `: ${detail}` : ''}`));
    });
    // The program may exit before reading all of stdin; its exit status tells what happened.
    child.stdin.on('error', (e) => log('stdin of %s: %s', name, e.message));
    child.stdin.end(input ?? '');
  });
}
