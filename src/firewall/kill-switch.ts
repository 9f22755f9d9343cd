/**
 * --kill-switch (issue 14): when the client dies without an orderly end (SIGKILL, a crash) or the
 * helper itself dies, the tunneled subnets must not fall back to the direct path. So, instead of
 * only removing the redirect, the helper (or its watchdog) first puts in place a chain of the
 * `filter` table that rejects what the redirect carried, then removes the redirect:
 *
 *   *filter
 *   :rxshuttle-ks-P - [0:0]
 *   -A rxshuttle-ks-P -d NS -p udp --dport 53 -j REJECT                         (--dns, per nameserver)
 *   -A rxshuttle-ks-P -d NS -p tcp --dport 53 -j REJECT --reject-with tcp-reset
 *   -A rxshuttle-ks-P -m addrtype --dst-type LOCAL -j RETURN
 *   -A rxshuttle-ks-P -d NET -p tcp [--dport …] -j RETURN                       (exclude)
 *   -A rxshuttle-ks-P -d NET -p tcp [--dport …] -j REJECT --reject-with tcp-reset (include)
 *   -A rxshuttle-ks-P -d NET -p udp [--dport …] -j RETURN|REJECT                 (tproxy with udpPort: after each tcp line)
 *   -I OUTPUT 1 [-m owner --uid-owner U] -j rxshuttle-ks-P
 *   -I FORWARD 1 -j rxshuttle-ks-P                                              (router mode)
 *   COMMIT
 *
 * Programs then fail at once (connection refused) instead of talking in the clear. The chain
 * stays until an instance starts on the same port (it clears its port's leftovers, this chain
 * among them) or `rxshuttle --flush` removes every kill switch. An orderly end (QUIT, a signal
 * to the helper) leaves none.
 */
import createDebug from 'debug';
import { iptablesTable, type RunCommand } from './iptables.js';
import { byPrecedence, chainCleanupScript, ownerMatch, subnetMatch } from './rules.js';
import type { FirewallSetup, IpFamily } from './types.js';

const log = createDebug('rxshuttle:fw');

/** The kill switch's chain for port P. */
export const killSwitchChain = (port: number): string => `rxshuttle-ks-${port}`;
/** A kill switch's chain in iptables-save output: `rxshuttle-ks-` and a port (1..65535, no leading zero), nothing else. */
const KILL_SWITCH_CHAIN = /^:(rxshuttle-ks-([1-9]\d{0,4})) /;
const killSwitchChainIn = (line: string): string | null => {
  const m = KILL_SWITCH_CHAIN.exec(line);
  return m && Number(m[2]) <= 65535 ? (m[1] as string) : null;
};

/** iptables-restore input for one family, or null when nothing of that family is tunneled. */
export function killSwitchScript(setup: FirewallSetup, family: IpFamily, ownerUid?: number): string | null {
  const rules = setup.rules.filter((r) => r.family === family);
  const nameservers = (setup.dnsServers ?? []).filter((ip) => (ip.includes(':') ? 6 : 4) === family);
  if (!rules.some((r) => !r.exclude) && nameservers.length === 0) return null;
  const chain = killSwitchChain(setup.port);
  const width = family === 4 ? 32 : 128;
  const lines = ['*filter', `:${chain} - [0:0]`];
  for (const ns of setup.dnsPort === undefined ? [] : nameservers) {
    lines.push(`-A ${chain} -d ${ns}/${width} -p udp --dport 53 -j REJECT`);
    lines.push(`-A ${chain} -d ${ns}/${width} -p tcp --dport 53 -j REJECT --reject-with tcp-reset`);
  }
  lines.push(`-A ${chain} -m addrtype --dst-type LOCAL -j RETURN`);
  for (const rule of byPrecedence(rules)) {
    lines.push(`-A ${chain} ${subnetMatch(rule)} -j ${rule.exclude ? 'RETURN' : 'REJECT --reject-with tcp-reset'}`);
    // tproxy with UDP: datagrams to the subnets are refused too (ICMP port unreachable).
    if (setup.udpPort !== undefined) lines.push(`-A ${chain} ${subnetMatch(rule, 'udp')} -j ${rule.exclude ? 'RETURN' : 'REJECT'}`);
  }
  lines.push(`-I OUTPUT 1${ownerMatch(setup, ownerUid)} -j ${chain}`);
  if (setup.routerMode) lines.push(`-I FORWARD 1 -j ${chain}`);
  lines.push('COMMIT', '');
  return lines.join('\n');
}

/** Puts the kill switch of this setup in place, in both families (first removing an older one of the port). */
export async function installKillSwitch(setup: FirewallSetup, run: RunCommand, ownerUid?: number): Promise<void> {
  for (const family of [4, 6] as const) {
    const script = killSwitchScript(setup, family, ownerUid);
    if (script === null) continue;
    const table = iptablesTable(family, run, 'filter');
    await removeKillSwitch(family, run, setup.port);
    log('%s-restore --noflush (kill switch):\n%s', table.tool, script);
    await table.restore(script);
  }
}

/** Removes the kill switches of `port` (null: of every port) from both families; IPv6 may be missing. Never throws for IPv6. */
export async function removeKillSwitches(run: RunCommand, port: number | null): Promise<boolean> {
  const v4 = await removeKillSwitch(4, run, port);
  const v6 = await removeKillSwitch(6, run, port).catch((e: Error) => {
    log('ip6tables kill switch cleanup: %s', e.message);
    return false;
  });
  return v4 || v6;
}

/** Removes the kill switch of `port` (null: of every port) from one family; false when there was none. */
export async function removeKillSwitch(family: IpFamily, run: RunCommand, port: number | null): Promise<boolean> {
  const table = iptablesTable(family, run, 'filter');
  const saved = await table.save();
  const chains =
    port === null
      ? saved.split('\n').flatMap((line) => killSwitchChainIn(line) ?? [])
      : [killSwitchChain(port)];
  let removed = false;
  for (const chain of chains) {
    const script = chainCleanupScript(port === null ? saved : await table.save(), 'filter', chain);
    if (script === null) continue;
    await table.restore(script);
    removed = true;
  }
  return removed;
}
