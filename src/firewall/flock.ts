/**
 * flock(2) for the helper and its watchdog: on files in root's lock directory it serializes
 * edits of the hosts file (`hosts.lock`, hosts-file.ts) and keeps one helper per port
 * (port-lock.ts); on /etc/hosts itself it is only a courtesy to other tools, waited for briefly.
 * A flock belongs to the open file: the kernel drops it when the holder closes the file or dies
 * in any way, SIGKILL included, so a crash never leaves it held.
 *
 * libc comes through koffi. Where it cannot be loaded (a libc other than glibc's libc.so.6) the
 * helper goes on without locks.
 */
import { constants } from 'node:os';
import createDebug from 'debug';
import koffi from 'koffi';
import { libcFunction } from '../os/libc.js';

const log = createDebug('rxshuttle:fw');

type Flock = (fd: number, operation: number) => number;
const LOCK_EX = 2;
const LOCK_NB = 4;

let flockFn: Flock | null | undefined;

/** flock from libc, declared on first use; null where libc cannot be loaded (then no locks). */
function libcFlock(): Flock | null {
  if (flockFn === undefined) {
    try {
      flockFn = libcFunction<Flock>('int flock(int fd, int operation)');
    } catch (e) {
      log('no flock(2): %s', (e as Error).message);
      flockFn = null;
    }
  }
  return flockFn;
}

/**
 * One attempt at an exclusive lock, without waiting: true when we hold it, false when another
 * open file holds it, null when flock(2) is not available here. Other failures throw.
 */
export function tryLock(fd: number): boolean | null {
  const flock = libcFlock();
  if (!flock) return null;
  if (flock(fd, LOCK_EX | LOCK_NB) === 0) return true;
  const errno = koffi.errno();
  if (errno === constants.errno.EWOULDBLOCK) return false;
  throw new Error(`flock failed (errno ${errno})`);
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * Waits (without blocking the event loop) for an exclusive lock, at most `ms`; then throws
 * `Error(busyMessage)`. Without flock(2) it returns at once: no lock. Other failures throw.
 */
export async function waitLock(fd: number, ms: number, busyMessage: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (tryLock(fd) === false) {
    if (Date.now() > deadline) throw new Error(busyMessage);
    await sleep(20);
  }
}
