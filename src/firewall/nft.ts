/**
 * The `nft` method: the instance's whole capture lives in one nftables table, `inet rxshuttle-P`
 * (both address families), loaded with one `nft -f` (one transaction) and removed by deleting
 * that table. Nothing of the instance sits in a chain shared with other software, so removal
 * cannot miss a rule, and no other table is ever read or written.
 *
 * Shape, for listening port P (the same capture as the `nat` method, rules.ts):
 *
 *   table inet rxshuttle-P {
 *     chain capture {
 *       ip daddr NS udp dport 53 redirect to :D                 (--dns, per nameserver; ip6 for IPv6)
 *       ip daddr NS tcp dport 53 redirect to :D
 *       fib daddr type local return
 *       ip daddr NET/LEN tcp dport LO-HI return                 (exclude; `meta l4proto tcp` without ports)
 *       ip6 daddr NET/LEN meta l4proto tcp redirect to :P       (include)
 *     }
 *     chain output {
 *       type nat hook output priority -100; policy accept;
 *       meta l4proto tcp [meta skuid U] [meta skgid != G] jump capture
 *       udp dport 53 [meta skuid U] [meta skgid != G] jump capture      (--dns)
 *     }
 *     chain prerouting {                                                (router mode only)
 *       type nat hook prerouting priority -100; policy accept;
 *       meta l4proto tcp jump capture
 *       udp dport 53 jump capture                                       (--dns)
 *     }
 *   }
 *
 * The rules that change while the instance runs (subnets resolved later) are all in `capture`,
 * and the hooks only jump to it: an update flushes and refills `capture` in one transaction, so
 * no packet ever sees the hooks gone or the chain half filled.
 *
 * The owner matches sit on the output hook's jump, as in `nat`: a socket's owner means nothing
 * for a forwarded packet, and a RETURN for the bypass group in `capture` would also be reached
 * from prerouting.
 *
 * Priority -100 is the nat hooks' usual place (iptables' nat table, `dstnat`). It is written as a
 * number because nft 1.0.6 refuses the name `dstnat` on the output hook.
 */
import createDebug from 'debug';
import { CommandNotFoundError, type RunCommand } from './iptables.js';
import type { InstalledRules } from './methods.js';
import { byPrecedence, chainName } from './rules.js';
import type { FirewallSetup, SubnetRule } from './types.js';

const log = createDebug('rxshuttle:fw');

/** The family part of every command: one table serves IPv4 and IPv6. */
const FAMILY = 'inet';
const CAPTURE_CHAIN = 'capture';
const NAT_PRIORITY = -100;

/** What a user has to do when nft is missing. */
export const NFT_NOT_FOUND = 'nft not found: install nftables';

/** The instance's table (in family inet) for listening port P: named like the `nat` method's chain. */
export function nftTableName(port: number): string {
  return chainName(integer(port));
}

/**
 * `nft -f` input that creates the instance's table capturing `rules` (setup.rules is not read:
 * the caller passes it, plus what it resolved later), or null when nothing would be captured
 * (no include, no DNS). `ownerUid`: capture only that user's traffic (the restricted mode).
 */
export function nftScript(setup: FirewallSetup, rules: readonly SubnetRule[], ownerUid?: number): string | null {
  if (!rules.some((r) => !r.exclude) && !capturesDns(setup)) return null;
  const jumps = ['meta l4proto tcp'];
  if (capturesDns(setup)) jumps.push('udp dport 53');
  const uid = ownerUid ?? setup.user;
  const owner = [
    ...(uid === undefined ? [] : [`meta skuid ${integer(uid)}`]),
    ...(setup.group === undefined ? [] : [`meta skgid ${integer(setup.group)}`]),
    ...(setup.bypassGid === undefined ? [] : [`meta skgid != ${integer(setup.bypassGid)}`]),
  ];
  const lines = [
    `table ${FAMILY} ${nftTableName(setup.port)} {`,
    ...captureChain(setup, rules),
    '\tchain output {',
    `\t\ttype nat hook output priority ${NAT_PRIORITY}; policy accept;`,
    ...jumps.map((match) => `\t\t${[match, ...owner, `jump ${CAPTURE_CHAIN}`].join(' ')}`),
    '\t}',
  ];
  if (setup.routerMode) {
    lines.push(
      '\tchain prerouting {',
      `\t\ttype nat hook prerouting priority ${NAT_PRIORITY}; policy accept;`,
      ...jumps.map((match) => `\t\t${match} jump ${CAPTURE_CHAIN}`),
      '\t}',
    );
  }
  lines.push('}', '');
  return lines.join('\n');
}

/**
 * `nft -f` input that replaces the capture rules of the installed table with `rules`, hooks
 * untouched. One file is one transaction: the flush and the new rules take effect together, and
 * if any line fails, nothing changes. Fails (changing nothing) when the table is not there.
 * With nothing left to include, `capture` keeps its RETURNs: harmless until the instance ends.
 */
export function nftUpdateScript(setup: FirewallSetup, rules: readonly SubnetRule[]): string {
  const table = nftTableName(setup.port);
  return [`flush chain ${FAMILY} ${table} ${CAPTURE_CHAIN}`, `table ${FAMILY} ${table} {`, ...captureChain(setup, rules), '}', ''].join('\n');
}

function capturesDns(setup: FirewallSetup): boolean {
  return setup.dnsPort !== undefined && (setup.dnsServers ?? []).length > 0;
}

function captureChain(setup: FirewallSetup, rules: readonly SubnetRule[]): string[] {
  const lines = [`\tchain ${CAPTURE_CHAIN} {`];
  // DNS before the local RETURN, so a nameserver on this host (127.0.0.53) is captured too, and
  // before the subnets, so one inside a tunneled subnet is still answered by the remote resolver.
  if (capturesDns(setup)) {
    for (const ns of setup.dnsServers ?? []) {
      for (const proto of ['udp', 'tcp']) {
        lines.push(`\t\t${addressMatch(ns)} ${proto} dport 53 redirect to :${integer(setup.dnsPort)}`);
      }
    }
  }
  lines.push('\t\tfib daddr type local return');
  // IPv4 before IPv6 only for readability: an `ip daddr` rule never matches an IPv6 packet.
  for (const family of [4, 6] as const) {
    for (const rule of byPrecedence(rules.filter((r) => r.family === family))) {
      lines.push(`\t\t${subnetMatch(rule)} ${rule.exclude ? 'return' : `redirect to :${integer(setup.port)}`}`);
    }
  }
  lines.push('\t}');
  return lines;
}

/** The TCP traffic a rule is about, as nft matches it. */
function subnetMatch(rule: SubnetRule): string {
  const ports =
    rule.portLow === 0 && rule.portHigh === 0
      ? 'meta l4proto tcp'
      : rule.portLow === rule.portHigh
        ? `tcp dport ${integer(rule.portLow)}`
        : `tcp dport ${integer(rule.portLow)}-${integer(rule.portHigh)}`;
  return `${addressMatch(rule.address, rule.prefix)} ${ports}`;
}

/**
 * `ip daddr A[/LEN]` or `ip6 daddr A[/LEN]`. The helper validates every address before it gets
 * here; this check only keeps a bug elsewhere from turning text into nft syntax run as root.
 */
function addressMatch(address: string, prefix?: number): string {
  if (!/^[0-9a-f.:]+$/.test(address)) throw new Error(`nft: not an address: ${JSON.stringify(address)}`);
  const ip = address.includes(':') ? 'ip6' : 'ip';
  return `${ip} daddr ${address}${prefix === undefined ? '' : `/${integer(prefix)}`}`;
}

/** The same guard for numbers. */
function integer(value: number | undefined): number {
  if (!Number.isSafeInteger(value) || (value as number) < 0) throw new Error(`nft: not a number: ${String(value)}`);
  return value as number;
}

/** Runs nft, saying what to install when it is missing. */
async function nft(run: RunCommand, args: readonly string[], input?: string): Promise<string> {
  try {
    return await run('nft', args, input);
  } catch (e) {
    if (e instanceof CommandNotFoundError) throw new Error(NFT_NOT_FOUND);
    throw e;
  }
}

/** Whether the kernel holds the instance's table. */
export async function hasNftTable(run: RunCommand, port: number): Promise<boolean> {
  const wanted = `table ${FAMILY} ${nftTableName(port)}`;
  return (await nft(run, ['list', 'tables', FAMILY])).split('\n').some((line) => line.trim() === wanted);
}

/**
 * Deletes table `inet rxshuttle-<port>`; false when there was none. Throws if it is still there
 * afterwards. Asks first rather than deleting blindly: nft before 1.0.8 has no `destroy`, and a
 * failing `delete` could not be told apart from a real failure.
 */
export async function removeNftTable(run: RunCommand, port: number): Promise<boolean> {
  if (!(await hasNftTable(run, port))) return false;
  const table = nftTableName(port);
  log('nft delete table %s %s', FAMILY, table);
  try {
    await nft(run, ['delete', 'table', FAMILY, table]);
  } catch (e) {
    // Someone else (a watchdog, an administrator) may have deleted it in between: only a table
    // that is still there is a failure.
    if (await hasNftTable(run, port)) throw e;
    return true;
  }
  if (await hasNftTable(run, port)) throw new Error(`nft: table ${FAMILY} ${table} is still present after removal`);
  return true;
}

/**
 * Removes a leftover table of an earlier instance with the same port, then installs the capture
 * of setup.rules (only `ownerUid`'s traffic, when given: the restricted mode). When there is
 * nothing to capture yet, no table is created until an update brings something.
 * On failure nothing is installed (a failed `nft -f` changes nothing) and the error is thrown.
 */
export async function installNft(setup: FirewallSetup, run: RunCommand, ownerUid?: number): Promise<InstalledRules> {
  await removeNftTable(run, setup.port);
  let installed = false;
  let removed = false;

  const load = async (rules: readonly SubnetRule[]) => {
    if (removed) throw new Error(`nft: the rules of port ${setup.port} were removed already`);
    if (installed) {
      const script = nftUpdateScript(setup, rules);
      log('nft -f (update):\n%s', script);
      await nft(run, ['-f', '-'], script);
      return;
    }
    const script = nftScript(setup, rules, ownerUid);
    if (script === null) return;
    log('nft -f:\n%s', script);
    await nft(run, ['-f', '-'], script);
    installed = true;
  };

  // One change at a time, in the order asked: an update must not overtake another, nor run
  // after the removal and bring the table back.
  let queue: Promise<unknown> = Promise.resolve();
  const inTurn = <T>(step: () => Promise<T>): Promise<T> => {
    const result = queue.then(step);
    queue = result.catch(() => undefined);
    return result;
  };

  await inTurn(() => load(setup.rules));
  return {
    update: (extra) => inTurn(() => load([...setup.rules, ...extra])),
    remove: () =>
      inTurn(async () => {
        removed = true;
        await removeNftTable(run, setup.port);
      }),
  };
}
