import createDebug from 'debug';
import { getrlimit, libcFunction } from './libc.js';

const debug = createDebug('rxshuttle:limits');
const RLIMIT_NOFILE = 7;

/** [soft, hard] open-file limits of this process, or null when they cannot be read. */
function fileLimits(): [bigint, bigint] | null {
  const limits = [0n, 0n];
  if (getrlimit()(RLIMIT_NOFILE, limits) !== 0) return null;
  return [limits[0] ?? 0n, limits[1] ?? 0n];
}

/**
 * Raises this process's open-file limit to its hard limit: every tunneled connection costs a
 * descriptor, and the usual soft limit of 1024 would cap the tunnel near a thousand. Best effort.
 */
export function raiseFileLimit(): void {
  try {
    const limits = fileLimits();
    if (!limits) return;
    const [soft, hard] = limits;
    if (soft >= hard) return;
    const setrlimit = libcFunction<(r: number, value: bigint[]) => number>('int setrlimit(int resource, uint64_t *rlim)');
    if (setrlimit(RLIMIT_NOFILE, [hard, hard]) === 0) debug('open-file limit raised from %s to %s', soft, hard);
  } catch (err) {
    debug('cannot raise the open-file limit: %s', (err as Error).message);
  }
}

/** The soft open-file limit of this process, or undefined when it cannot be read (or is unlimited). */
export function openFileLimit(): number | undefined {
  try {
    const soft = fileLimits()?.[0] ?? 0n;
    return soft > 0n && soft < BigInt(Number.MAX_SAFE_INTEGER) ? Number(soft) : undefined;
  } catch (err) {
    debug('cannot read the open-file limit: %s', (err as Error).message);
    return undefined;
  }
}
