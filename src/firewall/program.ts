/**
 * The firewall helper as a program: what `sudo node dist/firewall-helper.cjs [--restricted]` runs
 * (main.ts; built into one file by scripts/bundle.mjs). It is its own entry point, not a mode of
 * the CLI, so what runs as root loads nothing but the helper's own code and koffi: no client,
 * transport, ssh2 or optional module that a lookup through other users' directories could find
 * (issue 17, finding 6).
 *
 *   (no argument)   the helper, unrestricted: for root, or an administrator through sudo
 *   --restricted    the helper for the user sudo runs it for (restricted.ts): the only command
 *                   the rule of `rxshuttle --sudoers` allows
 *   --watchdog      the watchdog the helper starts for itself (watchdog.ts)
 *   --flush         removes every kill switch (kill-switch.ts) and exits: `rxshuttle --flush`
 */
import { type FirewallHelperOptions, runFirewallHelper } from './helper.js';
import { removeKillSwitches } from './kill-switch.js';
import { leaveProcessGroup } from './process-group.js';
import { findPrograms, HELPER_PROGRAMS, programRunner } from './programs.js';
import { RESTRICTED_FLAG, restrictedUid } from './restricted.js';
import { runWatchdog, WATCHDOG_FLAG } from './watchdog.js';

/** The argument that removes every kill switch. */
export const FLUSH_FLAG = '--flush';

/** Runs the program with `argv` (after the script); resolves with its exit status. */
export async function firewallProgram(argv: readonly string[], overrides: Pick<FirewallHelperOptions, 'hostsPath' | 'lockDir'> = {}): Promise<number> {
  // The client may be gone (kill -9) while we still report on stderr: EPIPE must not stop the cleanup.
  process.stderr.on('error', () => {});
  const say = (m: string) => process.stderr.write(`rxshuttle --firewall: ${m}\n`);
  const [mode, ...rest] = argv;
  if (rest.length > 0 || (mode !== undefined && mode !== RESTRICTED_FLAG && mode !== WATCHDOG_FLAG && mode !== FLUSH_FLAG)) {
    say(`usage: firewall-helper [${RESTRICTED_FLAG}] (it is started by rxshuttle, not by hand)`);
    return 2;
  }
  if (mode === FLUSH_FLAG) {
    try {
      const removed = await removeKillSwitches(programRunner(findPrograms(HELPER_PROGRAMS)), null);
      say(removed ? 'kill switches removed' : 'no kill switch in place');
      return 0;
    } catch (e) {
      say(`cannot remove the kill switches: ${(e as Error).message}`);
      return 1;
    }
  }
  if (mode === WATCHDOG_FLAG) {
    // A session of its own already (spawned detached): no terminal signal reaches it; these would only come by hand.
    for (const signal of ['SIGINT', 'SIGHUP'] as const) process.on(signal, () => undefined);
    return runWatchdog(process.stdin, { run: programRunner(findPrograms(HELPER_PROGRAMS)) });
  }
  let ownerUid: number | undefined;
  if (mode === RESTRICTED_FLAG) {
    try {
      ownerUid = restrictedUid();
    } catch (e) {
      say((e as Error).message);
      return 2;
    }
  }
  leaveProcessGroup();
  return runFirewallHelper(process.stdin, process.stdout, { ...overrides, ...(ownerUid === undefined ? {} : { ownerUid }) });
}
