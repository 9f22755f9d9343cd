/**
 * --dns on a machine where systemd-resolved runs: programs ask it (127.0.0.53), and it answers
 * from its cache without asking anyone we could capture. So its cache is flushed when capture
 * starts (later answers come through the tunnel) and when it stops (answers from the tunnel do
 * not outlive it), as sshuttle does. Best effort: a failure is only logged.
 */
import { existsSync } from 'node:fs';
import createDebug from 'debug';
import type { RunCommand } from './iptables.js';

const log = createDebug('rxshuttle:fw');

/** Where systemd-resolved keeps its runtime state while it runs. */
export const RESOLVED_RUN_DIR = '/run/systemd/resolve';

export async function flushResolvedCache(run: RunCommand, running: () => boolean = () => existsSync(RESOLVED_RUN_DIR)): Promise<void> {
  if (!running()) return;
  try {
    await run('resolvectl', ['flush-caches']);
    log('flushed the systemd-resolved cache');
  } catch (e) {
    // Before systemd 239 the command was systemd-resolve.
    await run('systemd-resolve', ['--flush-caches']).then(
      () => log('flushed the systemd-resolved cache'),
      () => log('could not flush the systemd-resolved cache: %s', (e as Error).message),
    );
  }
}
