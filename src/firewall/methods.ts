/**
 * The capture methods side by side: `nat` (iptables' nat table: nat.ts) and `nft` (one nftables
 * table per instance: nft.ts). The helper installs the one its setup names; before that, and in
 * the watchdog's cleanup, what the other method may have left for the same port goes too (an
 * earlier instance with that port used it and was killed with its watchdog), so switching
 * methods between runs leaves nothing behind.
 */
import createDebug from 'debug';
import { natTable, type RunCommand } from './iptables.js';
import { installNat, removeChain } from './nat.js';
import { installNft, removeNftTable } from './nft.js';
import type { FirewallMethod, FirewallSetup, SubnetRule } from './types.js';

const log = createDebug('rxshuttle:fw');

/** One method's rules of an instance, as installed. */
export interface InstalledRules {
  /**
   * Replaces the rules beyond the setup's own (host names resolved later) with `extra`, in place:
   * the setup's rules plus `extra`, in one transaction per table. On failure what was there
   * stays, and the error is thrown.
   */
  update(extra: readonly SubnetRule[]): Promise<void>;
  /** Removes every rule of this instance's port. Throws if anything stays. */
  remove(): Promise<void>;
}

/** Installs the setup's method (only `ownerUid`'s traffic when given), after the leftovers of the other one. */
export async function installRules(setup: FirewallSetup, run: RunCommand, ownerUid?: number): Promise<InstalledRules> {
  await removeOtherMethod(setup.method, run, setup.port);
  return setup.method === 'nft' ? installNft(setup, run, ownerUid) : installNat(setup, run, ownerUid);
}

/**
 * Removes what `method` did not install but another instance on `port` may have left. Its
 * failures only count as a log line: the program of a method not in use may be missing, or the
 * kernel may lack its tables, and then nothing of it can be there either.
 */
export async function removeOtherMethod(method: FirewallMethod, run: RunCommand, port: number): Promise<boolean> {
  if (method === 'nft') {
    let removed = false;
    for (const family of [4, 6] as const) {
      removed = (await removeChain(natTable(family, run), port).catch((e: Error) => log('nat cleanup: %s', e.message))) === true || removed;
    }
    return removed;
  }
  return (await removeNftTable(run, port).catch((e: Error) => log('nft cleanup: %s', e.message))) === true;
}

/**
 * The watchdog's removal: everything of the instance on `port` in `method`'s tables, then in the
 * other method's. True when anything was there. Throws what failed in `method`'s own tables.
 */
export async function removeInstanceRules(method: FirewallMethod, run: RunCommand, port: number): Promise<boolean> {
  let removed = false;
  if (method === 'nft') {
    removed = await removeNftTable(run, port);
  } else {
    for (const family of [4, 6] as const) {
      try {
        removed = (await removeChain(natTable(family, run), port)) || removed;
      } catch (e) {
        // ip6tables may be missing or IPv6 off: then there is nothing of ours in it either.
        if (family === 4) throw e;
        log('ip6tables cleanup: %s', (e as Error).message);
      }
    }
  }
  return (await removeOtherMethod(method, run, port)) || removed;
}
