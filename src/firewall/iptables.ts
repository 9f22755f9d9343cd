/**
 * iptables-save / iptables-restore (and the ip6tables twins) for one nat table. The programs are
 * run through a RunCommand, by name: the helper runs them by the absolute path found at its
 * start, with an argv array and a fixed environment, never a shell (programs.ts); the rules travel
 * on stdin. Tests inject a fake, so the helper's protocol is tested without touching any table.
 */
import createDebug from 'debug';
import type { IpFamily } from './types.js';

const log = createDebug('rxshuttle:fw');

/** Runs program `name` with `args` and `input` on stdin; resolves with stdout, rejects with a one-line Error. */
export type RunCommand = (name: string, args: readonly string[], input?: string) => Promise<string>;

/** Thrown when the program itself is missing (found in none of the program directories), so callers can say what to install. */
export class CommandNotFoundError extends Error {
  override name = 'CommandNotFoundError';
  constructor(readonly command: string) {
    super(`${command} not found`);
  }
}

/** save/restore of the nat table (or another: iptablesTable) of one address family. */
export interface NatTable {
  family: IpFamily;
  /** `iptables` or `ip6tables`, for messages. */
  tool: string;
  save(): Promise<string>;
  /** Applies a restore script with --noflush: one atomic transaction, other rules untouched. */
  restore(script: string): Promise<void>;
}

/** Message for a missing iptables program: what the user has to do. */
export function notFoundMessage(tool: string): string {
  return `${tool} not found: install iptables`;
}

export function natTable(family: IpFamily, run: RunCommand): NatTable {
  return iptablesTable(family, run, 'nat');
}

/**
 * The same for another table: `filter` holds the kill switch (kill-switch.ts), `mangle` the
 * tproxy method's marks and TPROXY rules (tproxy.ts).
 */
export function iptablesTable(family: IpFamily, run: RunCommand, table: 'nat' | 'filter' | 'mangle'): NatTable {
  const tool = family === 4 ? 'iptables' : 'ip6tables';
  // Wait for the xtables lock instead of failing when another program edits rules right now
  // (ignored by the nft backend). Very old versions do not know --wait: retry without it.
  let waitArgs = ['--wait=10'];
  const named = async (file: string, args: string[], input?: string) => {
    try {
      return await run(file, args, input);
    } catch (e) {
      if (e instanceof CommandNotFoundError) throw new Error(notFoundMessage(tool));
      throw e;
    }
  };
  return {
    family,
    tool,
    save: () => named(`${tool}-save`, ['-t', table]),
    async restore(script) {
      const file = `${tool}-restore`;
      try {
        await named(file, [...waitArgs, '--noflush'], script);
      } catch (e) {
        if (waitArgs.length === 0 || !/(unrecognized|invalid) option/.test(String(e))) throw e;
        log('%s does not know --wait; retrying without', file);
        waitArgs = [];
        await named(file, ['--noflush'], script);
      }
    },
  };
}
