/**
 * The `nat` method: install an instance's rules in both address families, and remove them.
 * Removal is computed from what the table holds (iptables-save), not from what we believe we
 * installed, so it also clears what a crashed earlier instance with the same port left behind.
 */
import createDebug from 'debug';
import { type NatTable, natTable, type RunCommand } from './iptables.js';
import type { InstalledRules } from './methods.js';
import { natChainUpdate, natCleanupScript, natRules } from './rules.js';
import type { FirewallSetup, IpFamily } from './types.js';

const log = createDebug('rxshuttle:fw');

/**
 * Removes leftovers of an earlier instance with the same port, then installs the rules (only
 * `ownerUid`'s traffic, when given: the restricted mode).
 * On failure nothing of this instance stays installed and the error is thrown.
 */
export async function installNat(setup: FirewallSetup, run: RunCommand, ownerUid?: number): Promise<InstalledRules> {
  const scripts = natRules(setup, ownerUid);
  const tables = [natTable(4, run), natTable(6, run)] as const;
  /** The families whose chain is in place (whose cleanup must work). */
  const installed = new Set<IpFamily>();

  // IPv4 cleanup must work (it is also the check that iptables is there at all); IPv6 cleanup
  // may fail harmlessly when this setup does not need IPv6 (no ip6tables, no IPv6 in the kernel).
  for (const table of tables) {
    if (table.family === 4 || scripts.v6 !== null) await removeChain(table, setup.port);
    else await removeChain(table, setup.port).catch((e: Error) => log('ignoring %s cleanup: %s', table.tool, e.message));
  }

  try {
    for (const table of tables) {
      const script = table.family === 4 ? scripts.v4 : scripts.v6;
      if (script === null) continue;
      installed.add(table.family);
      log('%s-restore --noflush:\n%s', table.tool, script);
      await table.restore(script);
    }
  } catch (e) {
    for (const table of tables) {
      if (installed.has(table.family)) await removeChain(table, setup.port).catch((u: Error) => log('undo failed: %s', u.message));
    }
    throw e;
  }

  return {
    async update(extra) {
      const now: FirewallSetup = { ...setup, rules: [...setup.rules, ...extra] };
      const fresh = natRules(now, ownerUid);
      for (const table of tables) {
        if (installed.has(table.family)) {
          const script = natChainUpdate(now, table.family);
          log('%s-restore --noflush (update):\n%s', table.tool, script);
          await table.restore(script);
          continue;
        }
        const script = table.family === 4 ? fresh.v4 : fresh.v6;
        if (script === null) continue;
        // A family the setup alone did not need: a chain and its jumps, as at the start.
        installed.add(table.family);
        log('%s-restore --noflush:\n%s', table.tool, script);
        await table.restore(script).catch(async (e: unknown) => {
          await removeChain(table, setup.port).catch((u: Error) => log('undo failed: %s', u.message));
          installed.delete(table.family);
          throw e;
        });
      }
    },
    async remove() {
      const problems: string[] = [];
      for (const table of tables) {
        try {
          await removeChain(table, setup.port);
        } catch (e) {
          // A family we never touched may legitimately be unusable; one we touched may not.
          if (installed.has(table.family) || table.family === 4) problems.push((e as Error).message);
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
