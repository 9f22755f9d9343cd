/**
 * The helper leaves the client's process group. Ctrl-C at the terminal signals the foreground
 * process group (the client, sudo, ssh — and, without this, the helper and the iptables-restore
 * that it runs): a second Ctrl-C, or one that lands while a child is being forked, would
 * interrupt the removal of the rules. The helper is ended by its input closing (however the
 * client ends) or by a signal sent to it explicitly, never by the keyboard.
 */
import createDebug from 'debug';
import koffi from 'koffi';
import { libcFunction } from '../os/libc.js';

const log = createDebug('rxshuttle:fw');

/** setpgid(0, 0). Best effort: a session leader (sudo's use_pty) is already out of reach. */
export function leaveProcessGroup(): void {
  try {
    const setpgid = libcFunction<(pid: number, pgid: number) => number>('int setpgid(int pid, int pgid)');
    if (setpgid(0, 0) !== 0) log('setpgid: errno %d', koffi.errno());
  } catch (err) {
    log('setpgid: %s', (err as Error).message);
  }
}
