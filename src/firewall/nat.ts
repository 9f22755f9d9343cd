/**
 * The `nat` method: install an instance's rules in both address families, and remove them.
 * Removal is computed from what the table holds (iptables-save), not from what we believe we
 * installed, so it also clears what a crashed earlier instance with the same port left behind.
 */
import createDebug from 'debug';
import { type NatTable, type RunCommand, natTable } from './iptables.js';
import { natCleanupScript, natRules } from './rules.js';
import type { FirewallSetup } from './types.js';

const log = createDebug('rxshuttle:fw');

export interface InstalledNat {
  /** Removes every rule of this instance's port, in both families. Throws if anything stays. */
  remove(): Promise<void>;
}

/**
 * Removes leftovers of an earlier instance with the same port, then installs the rules (only
 * `ownerUid`'s traffic, when given: the restricted mode).
 * On failure nothing of this instance stays installed and the error is thrown.
 */
export async function installNat(setup: FirewallSetup, run: RunCommand, ownerUid?: number): Promise<InstalledNat> {
  const scripts = natRules(setup, ownerUid);
  const v4 = natTable(4, run);
  const v6 = natTable(6, run);
  const plan: Array<[NatTable, string | null]> = [
    [v4, scripts.v4],
    [v6, scripts.v6],
  ];

  // IPv4 cleanup must work (it is also the check that iptables is there at all); IPv6 cleanup
  // may fail harmlessly when this setup does not need IPv6 (no ip6tables, no IPv6 in the kernel).
  for (const [table, script] of plan) {
    if (table.family === 4 || script !== null) await removeChain(table, setup.port);
    else await removeChain(table, setup.port).catch((e: Error) => log('ignoring %s cleanup: %s', table.tool, e.message));
  }

  const touched: NatTable[] = [];
  try {
    for (const [table, script] of plan) {
      if (script === null) continue;
      touched.push(table);
      log('%s-restore --noflush:\n%s', table.tool, script);
      await table.restore(script);
    }
  } catch (e) {
    for (const table of touched) {
      await removeChain(table, setup.port).catch((u: Error) => log('undo failed: %s', u.message));
    }
    throw e;
  }

  return {
    async remove() {
      const problems: string[] = [];
      for (const [table, script] of plan) {
        try {
          await removeChain(table, setup.port);
        } catch (e) {
          // A family we never touched may legitimately be unusable; one we touched may not.
          if (script !== null || table.family === 4) problems.push((e as Error).message);
          else log('ignoring %s cleanup: %s', table.tool, (e as Error).message);
        }
      }
      if (problems.length > 0) throw new Error(problems.join('; '));
    },
  };
}

/** Deletes chain `rxshuttle-<port>` and every jump to it from one family's nat table; false when there was none. */
export async function removeChain(table: NatTable, port: number): Promise<boolean> {
  const script = natCleanupScript(await table.save(), port);
  if (script === null) return false;
  log('%s-restore --noflush (cleanup):\n%s', table.tool, script);
  await table.restore(script);
  if (natCleanupScript(await table.save(), port) !== null) {
    throw new Error(`${table.tool}: rules of port ${port} are still present after removal`);
  }
  return true;
}
