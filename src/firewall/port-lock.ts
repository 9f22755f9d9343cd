/**
 * One helper per port and network namespace. Before it clears leftovers of its port (chain
 * `rxshuttle-P`, hosts block `rxshuttle-P-net<N>`) the helper takes an exclusive flock(2) on
 * `/run/rxshuttle/rxshuttle-P-net<N>.lock` (`/tmp/rxshuttle` when /run is not writable; N is the
 * inode of the network namespace, whose nat table holds the chain: instances in other namespaces
 * do not meet) and holds it while it lives. A second helper for the same port would otherwise
 * take the first one's live rules for a crash's leftovers and remove them; it is refused instead,
 * with the pid the holder wrote into the file. The kernel drops a flock when its holder dies,
 * SIGKILL included, so a crashed helper never blocks the next one, whose cleanup then removes the
 * crashed one's rules.
 *
 * Nobody else may hold the lock either: flock(2) needs no more than a read-only open, so a file
 * another user can open (a 0644 file in /run, left by a killed helper) could be locked by that
 * user, and every later helper for the port would refuse while the leftover rules stay (issue 17,
 * finding 11). So the files live in a directory of root's (mode 0700; created if missing, refused
 * if it is anything else), and are 0600.
 *
 * The holder removes the file when it ends, while still holding the lock. A helper that opened
 * the old file just before may then win the lock on a file that no longer has a name: after
 * locking, the file must still be the one at the path, or the helper starts over.
 *
 * The file is opened without following a symbolic link, and only a regular file of our own user
 * with a single link is used.
 */
import { chmodSync, closeSync, constants, fchmodSync, fstatSync, ftruncateSync, lstatSync, mkdirSync, openSync, readSync, unlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import createDebug from 'debug';
import { tryLock } from './flock.js';
import { netnsTag } from './netns.js';

const log = createDebug('rxshuttle:fw');

/** Where lock files go: the first of these that can be created or is there (root's, 0700). */
export const LOCK_DIRS: readonly string[] = ['/run/rxshuttle', '/tmp/rxshuttle'];
/** Errors of mkdir(2)/open(2) that mean "not this directory, try the next". */
const UNUSABLE_DIR = new Set(['EACCES', 'EPERM', 'EROFS', 'ENOENT']);
const ATTEMPTS = 5;
/** How long to wait for the holder's pid when it has just taken the lock and not written it yet. */
const PID_WAIT_MS = 200;

/** Another live helper holds the port. */
export class PortInUseError extends Error {
  override name = 'PortInUseError';
  constructor(
    readonly port: number,
    readonly pid: number | null,
  ) {
    super(`port ${port} is already used by another rxshuttle${pid === null ? '' : ` (pid ${pid})`}`);
  }
}

export interface PortLock {
  readonly path: string;
  /** Removes the file and drops the lock. Idempotent; never throws. */
  release(): void;
}

/** `rxshuttle-P-net<N>.lock`, N the inode of our network namespace (netns.ts). */
export function lockFileName(port: number): string {
  return `rxshuttle-${port}-${netnsTag()}.lock`;
}

/**
 * Takes the lock of `port`. Throws PortInUseError when a live helper holds it, an Error when no
 * lock file can be used; null when flock(2) is not available here (then there is no lock).
 */
export async function lockPort(port: number, dirs: readonly string[] = LOCK_DIRS): Promise<PortLock | null> {
  const { fd, path } = openLockFileIn(dirs, lockFileName(port), `the lock file of port ${port}`);
  return lockAt(fd, path, port);
}

/**
 * Opens (creating it, 0600) the lock file `name` in the first of `dirs` that can be used, a
 * directory of root's that nobody else can enter (see lockDirectory). Also the lock of the hosts
 * file (hosts-file.ts), which must be out of other users' reach for the same reason. `what`
 * names the file in errors.
 */
export function openLockFileIn(dirs: readonly string[], name: string, what: string): { fd: number; path: string } {
  const problems: string[] = [];
  for (const dir of dirs) {
    const path = join(dir, name);
    try {
      lockDirectory(dir);
      return { fd: openLockFile(path), path };
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === undefined) throw e; // ours: the directory or the file is not fit
      if (!UNUSABLE_DIR.has(code)) throw new Error(`cannot open ${what}: ${(e as Error).message}`);
      problems.push(`${path}: ${(e as Error).message}`);
    }
  }
  throw new Error(`cannot create ${what}: ${problems.join('; ')}`);
}

/**
 * Creates `dir` (0700) if it is missing; then it must be a directory (not a link to one) of our
 * user (root) that nobody else can enter. Errors with a `code` are the system's (for some, the
 * next directory is tried); one without is ours: the directory is there but unfit.
 */
function lockDirectory(dir: string): void {
  try {
    mkdirSync(dir, { mode: 0o700 });
    chmodSync(dir, 0o700); // whatever the umask
    log('created %s', dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
  }
  const st = lstatSync(dir);
  const uid = process.geteuid?.();
  if (!st.isDirectory() || (uid !== undefined && st.uid !== uid) || (st.mode & 0o777) !== 0o700) {
    const what = st.isSymbolicLink() ? 'a symbolic link' : st.isDirectory() ? `owned by uid ${st.uid}, mode ${(st.mode & 0o7777).toString(8).padStart(4, '0')}` : 'not a directory';
    throw new Error(`${dir} must be a directory of ${uid === 0 ? 'root' : `uid ${uid}`} with mode 0700 (it is ${what}); remove it`);
  }
}

function openLockFile(path: string): number {
  // Node opens with O_CLOEXEC: the iptables programs we start never inherit (and keep) the lock.
  const fd = openSync(path, constants.O_RDWR | constants.O_CREAT | constants.O_NOFOLLOW, 0o600);
  const st = fstatSync(fd);
  const uid = process.geteuid?.();
  if (!st.isFile() || st.nlink !== 1 || (uid !== undefined && st.uid !== uid)) {
    closeSync(fd);
    throw new Error(`${path} is not a lock file of rxshuttle (not a regular file of this user with one link); remove it`);
  }
  try {
    if ((st.mode & 0o077) !== 0) fchmodSync(fd, 0o600); // a file of an older version, or an odd umask
  } catch (e) {
    closeSync(fd);
    throw e;
  }
  return fd;
}

async function lockAt(first: number, path: string, port: number): Promise<PortLock | null> {
  let fd = first;
  for (let attempt = 1; ; attempt++) {
    let locked: boolean | null;
    try {
      locked = tryLock(fd);
      if (locked === false) throw new PortInUseError(port, await holderPid(fd));
    } catch (e) {
      closeSync(fd);
      throw e;
    }
    if (locked === null) {
      log('no flock(2): port %d is not locked', port);
      closeSync(fd);
      return null;
    }
    if (isAtPath(fd, path)) break;
    // The holder removed it between our open and our lock: take the new file at the path.
    closeSync(fd);
    if (attempt >= ATTEMPTS) throw new Error(`the lock file ${path} keeps changing`);
    fd = openLockFile(path);
  }
  try {
    ftruncateSync(fd, 0);
    writeSync(fd, `${process.pid}\n`, 0);
  } catch (e) {
    log('cannot write our pid into %s: %s', path, (e as Error).message); // the lock holds all the same
  }
  log('holding %s', path);
  let held = true;
  return {
    path,
    release() {
      if (!held) return;
      held = false;
      try {
        // Still under the lock: nobody else can have replaced the file.
        if (isAtPath(fd, path)) unlinkSync(path);
      } catch (e) {
        log('cannot remove %s: %s', path, (e as Error).message);
      }
      closeSync(fd); // drops the lock
    },
  };
}

function isAtPath(fd: number, path: string): boolean {
  try {
    const there = lstatSync(path);
    const ours = fstatSync(fd);
    return there.ino === ours.ino && there.dev === ours.dev;
  } catch {
    return false;
  }
}

/** The pid the holder wrote into the file; null if it has not (yet) or the content is not one. */
async function holderPid(fd: number): Promise<number | null> {
  const deadline = Date.now() + PID_WAIT_MS;
  for (;;) {
    const buffer = Buffer.alloc(32);
    const n = readSync(fd, buffer, 0, buffer.length, 0);
    const m = /^(\d{1,10})\n$/.exec(buffer.subarray(0, n).toString('latin1'));
    if (m) return Number(m[1]);
    if (Date.now() > deadline) return null;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
