/**
 * The capture methods side by side: `nat` (iptables' nat table: nat.ts), `nft` (one nftables
 * table per instance: nft.ts) and `tproxy` (iptables' mangle table with TPROXY and the policy
 * routing it needs, plus nat's DNS chain for --dns: tproxy.ts). The helper installs the one its
 * setup names; before that, and in the watchdog's cleanup, what the other methods may have left
 * for the same port goes too (an earlier instance with that port used one of them and was killed
 * with its watchdog), so switching methods between runs leaves nothing behind.
 */
import createDebug from 'debug';
import { natTable, type RunCommand } from './iptables.js';
import { installNat, removeChain } from './nat.js';
import { installNft, removeNftTable } from './nft.js';
import { installTproxy, removeTproxyCapture } from './tproxy.js';
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

/** Installs the setup's method (only `ownerUid`'s traffic when given), after the leftovers of the others. */
export async function installRules(setup: FirewallSetup, run: RunCommand, ownerUid?: number): Promise<InstalledRules> {
  await removeOtherMethod(setup.method, run, setup.port);
  switch (setup.method) {
    case 'nft':
      return installNft(setup, run, ownerUid);
    case 'tproxy':
      return installTproxy(setup, run, ownerUid);
    case 'nat':
      return installNat(setup, run, ownerUid);
  }
}

/**
 * What an instance may hold, piece by piece: the nat chain `rxshuttle-P` (the nat method's, and
 * the tproxy method's for --dns), the nft table, the tproxy method's mangle chains and policy
 * routing. `strict`: a failure throws (IPv4 only: ip6tables may be missing, or IPv6 off, and then
 * nothing of ours is there either); otherwise it is only logged.
 */
type Piece = 'natChain' | 'nftTable' | 'tproxyCapture';
const PIECES_OF: { readonly [M in FirewallMethod]: readonly Piece[] } = {
  nat: ['natChain'],
  nft: ['nftTable'],
  tproxy: ['tproxyCapture', 'natChain'],
};

async function removePiece(piece: Piece, run: RunCommand, port: number, strict: boolean): Promise<boolean> {
  const lenient = (what: string) => (e: Error) => {
    log('%s cleanup: %s', what, e.message);
    return false;
  };
  if (piece === 'nftTable') {
    return strict ? removeNftTable(run, port) : removeNftTable(run, port).catch(lenient('nft'));
  }
  let removed = false;
  let failure: unknown = null;
  for (const family of [4, 6] as const) {
    const step = piece === 'natChain' ? () => removeChain(natTable(family, run), port) : () => removeTproxyCapture(run, family, port);
    const what = `${piece === 'natChain' ? 'nat' : 'tproxy'} IPv${family}`;
    if (strict && family === 4) {
      // Thrown once IPv6 has had its turn too.
      removed = (await step().catch((e: unknown) => ((failure = e), false))) || removed;
    } else {
      removed = (await step().catch(lenient(what))) || removed;
    }
  }
  if (failure !== null) throw failure;
  return removed;
}

/**
 * Removes what `method` did not install but another instance on `port` may have left. Its
 * failures only count as a log line: the program of a method not in use may be missing, or the
 * kernel may lack its tables, and then nothing of it can be there either.
 */
export async function removeOtherMethod(method: FirewallMethod, run: RunCommand, port: number): Promise<boolean> {
  let removed = false;
  for (const piece of ['natChain', 'nftTable', 'tproxyCapture'] as const) {
    if (PIECES_OF[method].includes(piece)) continue;
    removed = (await removePiece(piece, run, port, false)) || removed;
  }
  return removed;
}

/**
 * The watchdog's removal: everything of the instance on `port` in `method`'s tables, then in the
 * other methods'. True when anything was there. Throws what failed in `method`'s own tables.
 */
export async function removeInstanceRules(method: FirewallMethod, run: RunCommand, port: number): Promise<boolean> {
  let removed = false;
  const problems: string[] = [];
  for (const piece of PIECES_OF[method]) {
    try {
      removed = (await removePiece(piece, run, port, true)) || removed;
    } catch (e) {
      // The other pieces are still worth removing.
      problems.push((e as Error).message);
    }
  }
  removed = (await removeOtherMethod(method, run, port)) || removed;
  if (problems.length > 0) throw new Error(problems.join('; '));
  return removed;
}
