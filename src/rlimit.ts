import createDebug from 'debug';
import koffi from 'koffi';

const debug = createDebug('rxshuttle:limits');
const RLIMIT_NOFILE = 7;

/**
 * Raises this process's open-file limit to its hard limit: every tunneled connection costs a
 * descriptor, and the usual soft limit of 1024 would cap the tunnel near a thousand. Best effort.
 */
export function raiseFileLimit(): void {
  try {
    const libc = koffi.load('libc.so.6');
    const getrlimit = libc.func('int getrlimit(int resource, _Out_ uint64_t *rlim)') as (r: number, out: bigint[]) => number;
    const setrlimit = libc.func('int setrlimit(int resource, uint64_t *rlim)') as (r: number, value: bigint[]) => number;
    const limits = [0n, 0n];
    if (getrlimit(RLIMIT_NOFILE, limits) !== 0) return;
    const [soft = 0n, hard = 0n] = limits;
    if (soft >= hard) return;
    if (setrlimit(RLIMIT_NOFILE, [hard, hard]) === 0) debug('open-file limit raised from %s to %s', soft, hard);
  } catch (err) {
    debug('cannot raise the open-file limit: %s', (err as Error).message);
  }
}
