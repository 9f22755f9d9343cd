/**
 * The `nat` method's rules as `iptables-restore --noflush` text. Pure functions: the helper
 * feeds their output to iptables-restore, tests compare the text.
 *
 * Shape, per address family, for listening port P (chain `rxshuttle-P`):
 *
 *   *nat
 *   :rxshuttle-P - [0:0]
 *   -A rxshuttle-P -d NS/32 -p udp --dport 53 -j REDIRECT --to-ports D             (--dns, per nameserver)
 *   -A rxshuttle-P -d NS/32 -p tcp --dport 53 -j REDIRECT --to-ports D             (--dns, per nameserver)
 *   -A rxshuttle-P -m addrtype --dst-type LOCAL -j RETURN
 *   -A rxshuttle-P -d NET/LEN -p tcp [--dport LO:HI] -j RETURN                 (exclude)
 *   -A rxshuttle-P -d NET/LEN -p tcp [--dport LO:HI] -j REDIRECT --to-ports P  (include)
 *   -I PREROUTING 1 -p tcp -j rxshuttle-P                                      (router mode only)
 *   -I OUTPUT 1 -p tcp [-m owner --uid-owner U] [-m owner --gid-owner G] [-m owner ! --gid-owner B] -j rxshuttle-P
 *   -I PREROUTING 1 -p udp --dport 53 -j rxshuttle-P                           (--dns, router mode)
 *   -I OUTPUT 1 -p udp --dport 53 [-m owner --uid-owner U] [-m owner ! --gid-owner G] -j rxshuttle-P    (--dns)
 *   COMMIT
 *
 * DNS comes before the LOCAL RETURN, so a nameserver on this host (127.0.0.53) is captured too,
 * and before the subnets, so DNS to a nameserver inside a tunneled subnet still goes to the
 * remote resolver. Locally sent packets are REDIRECTed to 127.0.0.1 (::1); conntrack gives the
 * answers the nameserver's address back.
 *
 * The bypass group is tested on the OUTPUT jump, not inside the chain: the kernel refuses an
 * `owner` match in any chain reachable from PREROUTING ("RULE_INSERT failed (Invalid
 * argument)"), and a RETURN placed directly in OUTPUT would also skip every later OUTPUT rule
 * of other software. Local packets of that group simply never enter the chain.
 *
 * The uid match is the restricted mode's (restricted.ts) or --user's: only user U's own traffic is
 * captured; --group's gid match likewise (the socket's group: its process's primary group).
 *
 * Jumps are inserted first in their chain (as sshuttle does), so rules that other software
 * appended (docker's DOCKER jump, for instance) cannot catch the traffic before us.
 */
import type { FirewallSetup, IpFamily, SubnetRule } from './types.js';

/** Every rule of one instance lives in, or jumps to, this chain. */
export function chainName(port: number): string {
  return `rxshuttle-${port}`;
}

export interface NatScripts {
  /** iptables-restore input, or null when there is nothing to tunnel over IPv4. */
  v4: string | null;
  /** ip6tables-restore input, or null when there is no IPv6 include. */
  v6: string | null;
}

/** `ownerUid`: capture only that user's traffic (the restricted mode). */
export function natRules(setup: FirewallSetup, ownerUid?: number): NatScripts {
  return { v4: familyScript(setup, 4, ownerUid), v6: familyScript(setup, 6, ownerUid) };
}

function familyScript(setup: FirewallSetup, family: IpFamily, ownerUid: number | undefined): string | null {
  const body = chainBody(setup, family);
  if (body === null) return null;
  const { dns } = body;
  const chain = chainName(setup.port);
  const lines = ['*nat', `:${chain} - [0:0]`, ...body.lines];
  if (setup.routerMode) lines.push(`-I PREROUTING 1 -p tcp -j ${chain}`);
  const bypass = `${ownerMatch(setup, ownerUid)}${setup.bypassGid === undefined ? '' : ` -m owner ! --gid-owner ${setup.bypassGid}`}`;
  lines.push(`-I OUTPUT 1 -p tcp${bypass} -j ${chain}`);
  if (dns && setup.routerMode) lines.push(`-I PREROUTING 1 -p udp --dport 53 -j ${chain}`);
  if (dns) lines.push(`-I OUTPUT 1 -p udp --dport 53${bypass} -j ${chain}`);
  lines.push('COMMIT', '');
  return lines.join('\n');
}

/**
 * Whose local traffic is captured: the restricted mode's user (`ownerUid`, which the helper has
 * checked against --user), else --user; and --group. Empty: everyone's.
 */
export function ownerMatch(setup: FirewallSetup, ownerUid?: number): string {
  const uid = ownerUid ?? setup.user;
  return `${uid === undefined ? '' : ` -m owner --uid-owner ${uid}`}${setup.group === undefined ? '' : ` -m owner --gid-owner ${setup.group}`}`;
}

/** The chain's own rules for one family, or null when they would capture nothing (no include, no DNS). */
function chainBody(setup: FirewallSetup, family: IpFamily): { lines: string[]; dns: boolean } | null {
  const rules = setup.rules.filter((r) => r.family === family);
  const nameservers = (setup.dnsServers ?? []).filter((ip) => (ip.includes(':') ? 6 : 4) === family);
  const dns = setup.dnsPort !== undefined && nameservers.length > 0;
  // A chain of nothing but RETURNs would change nothing: leave this family's table alone.
  if (!rules.some((r) => !r.exclude) && !dns) return null;
  const chain = chainName(setup.port);
  const lines: string[] = [];
  for (const ns of dns ? nameservers : []) {
    for (const proto of ['udp', 'tcp']) {
      lines.push(`-A ${chain} -d ${ns}/${family === 4 ? 32 : 128} -p ${proto} --dport 53 -j REDIRECT --to-ports ${setup.dnsPort}`);
    }
  }
  lines.push(`-A ${chain} -m addrtype --dst-type LOCAL -j RETURN`);
  for (const rule of byPrecedence(rules)) lines.push(subnetLine(chain, rule, setup.port));
  return { lines, dns };
}

/**
 * Rewrites the chain of a family that is installed already, in one transaction: the jumps to it
 * stay, so no packet meanwhile finds the chain missing or half filled. With nothing left to
 * capture the chain keeps only its RETURN (the jumps stay until the instance ends).
 */
export function natChainUpdate(setup: FirewallSetup, family: IpFamily): string {
  const chain = chainName(setup.port);
  const body = chainBody(setup, family)?.lines ?? [`-A ${chain} -m addrtype --dst-type LOCAL -j RETURN`];
  return ['*nat', `-F ${chain}`, ...body, 'COMMIT', ''].join('\n');
}

/**
 * iptables stops at the first matching rule, so "longest prefix wins" means: longer prefixes
 * first, and at equal length the exclude first (a subnet both included and excluded is
 * excluded). The sort is stable, so otherwise the caller's order is kept.
 */
export function byPrecedence(rules: readonly SubnetRule[]): SubnetRule[] {
  return [...rules].sort((a, b) => b.prefix - a.prefix || Number(b.exclude) - Number(a.exclude));
}

function subnetLine(chain: string, rule: SubnetRule, port: number): string {
  return `-A ${chain} ${subnetMatch(rule)} -j ${rule.exclude ? 'RETURN' : `REDIRECT --to-ports ${port}`}`;
}

/**
 * The traffic a rule is about: `-d NET/LEN -p tcp [--dport LO[:HI]]` (the kill switch matches the
 * same); `-p udp` for the tproxy method's UDP (tproxy.ts), with the same ports.
 */
export function subnetMatch(rule: SubnetRule, protocol: 'tcp' | 'udp' = 'tcp'): string {
  const ports =
    rule.portLow === 0 && rule.portHigh === 0
      ? ''
      : rule.portLow === rule.portHigh
        ? ` --dport ${rule.portLow}`
        : ` --dport ${rule.portLow}:${rule.portHigh}`;
  return `-d ${rule.address}/${rule.prefix} -p ${protocol}${ports}`;
}

/**
 * The restore script that removes every trace of instance `port` from a table, computed from
 * that table's `iptables-save -t nat` output: each rule elsewhere that jumps (`-j`) or goes
 * (`-g`) to the chain is deleted by its own saved spelling (so it works whatever an earlier,
 * crashed instance or an older version installed), then the chain is flushed and deleted. Null
 * when nothing is there. Other mentions of the name are not ours: another tool's rule with
 * `--comment rxshuttle-P` stays.
 */
export function natCleanupScript(saveOutput: string, port: number): string | null {
  return chainCleanupScript(saveOutput, 'nat', chainName(port));
}

/** The iptables tables whose chains of ours are cleaned this way. */
export type CleanedTable = 'nat' | 'filter' | 'mangle';

/** natCleanupScript for any table and chain (the kill switch's is in `filter`). */
export function chainCleanupScript(saveOutput: string, table: CleanedTable, chain: string): string | null {
  return chainsCleanupScript(saveOutput, table, [chain]);
}

/**
 * The same for several chains of one table in one script (the tproxy method's two in `mangle`):
 * every rule outside them that jumps or goes to one of them is deleted, then each is flushed and
 * deleted.
 */
export function chainsCleanupScript(saveOutput: string, table: CleanedTable, chains: readonly string[]): string | null {
  const deletes: string[] = [];
  const existing = new Set<string>();
  let inTable = false;
  for (const line of saveOutput.split('\n')) {
    if (line.startsWith('*')) {
      inTable = line.trim() === `*${table}`;
      continue;
    }
    if (!inTable) continue;
    if (line.startsWith(':')) {
      const name = line.slice(1).split(' ')[0] ?? '';
      if (chains.includes(name)) existing.add(name);
    } else if (line.startsWith('-A ')) {
      const words = savedWords(line);
      // The chains' own rules go with the flush below.
      if (!chains.includes(words[1] ?? '') && chains.some((chain) => jumpsTo(words, chain))) deletes.push(`-D ${line.trim().slice(3)}`);
    }
  }
  if (existing.size === 0 && deletes.length === 0) return null;
  const lines = [`*${table}`, ...deletes];
  for (const chain of chains) if (existing.has(chain)) lines.push(`-F ${chain}`);
  for (const chain of chains) if (existing.has(chain)) lines.push(`-X ${chain}`);
  lines.push('COMMIT', '');
  return lines.join('\n');
}

/**
 * The words of a saved rule. A quoted value (iptables-save quotes a comment with spaces, with
 * backslash escapes inside) stays one word, quotes included, so its text never reads as options.
 */
function savedWords(line: string): string[] {
  return line.match(/(?:"(?:[^"\\]|\\.)*(?:"|$)|[^\s"])+/g) ?? [];
}

/**
 * Whether the rule's target is `chain`. A value is always followed by an option, never by a
 * bare name, so `-j`/`-g` followed by the name is the target even when a value reads `-j`.
 */
function jumpsTo(words: readonly string[], chain: string): boolean {
  return words.some((word, i) => (word === '-j' || word === '-g') && words[i + 1] === chain);
}
