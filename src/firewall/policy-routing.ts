/**
 * The tproxy method's policy routing (tproxy.ts): packets that carry the instance's mark are
 * routed to this host itself, where mangle PREROUTING's TPROXY hands them to the client's
 * transparent sockets. Per address family, for listening port P and mark M (--tmark):
 *
 *   ip -4 rule add fwmark M/M lookup T priority R
 *   ip -4 route add local 0.0.0.0/0 dev lo table T        (ip -6 … local ::/0 … for IPv6)
 *
 * T, the instance's own route table: 0x72780000 + P ("rx" in the high half: 1920466944 + P).
 * Route table ids are 32-bit; what people and software use are small numbers (255 local, 254
 * main, 253 default, strongSwan's 220, Tailscale's 52, wg-quick's 51820, Cilium's 2004, the
 * sshuttle manual's 100), so this range is ours alone, and the port makes it one per instance
 * (one helper per port: port-lock.ts). Nothing else is ever put in it.
 *
 * R = 120, one priority for every instance: rules may share a priority, and ours are told apart
 * by their table. The rule matches only packets carrying the mark, which our own mangle chains set
 * on what the instance captures, so it can come before the rules of other software without
 * changing their traffic, and it must: catch-all rules of VPN software (strongSwan's 220,
 * Tailscale's 5270 `lookup 52`, wg-quick's `not fwmark … lookup 51820` placed just before the
 * main table's 32766) would otherwise send these packets out through their tunnels instead of to
 * lo. It stays after the local table's rule (0, or 100 where software moves it there), which
 * must see every packet first. A --tmark that other software also sets on its packets is the
 * one thing this cannot tell apart: choose one nobody else uses.
 *
 * Removal never trusts memory: it lists `ip rule show table T` and deletes each rule listed, by
 * priority and table (every rule pointing at T is ours, whatever mark or priority an earlier
 * version or instance gave it), and flushes table T; then both must be empty. The user's own
 * rules and routes point elsewhere and are never read for anything else, nor touched.
 */
import createDebug from 'debug';
import { CommandNotFoundError, type RunCommand } from './iptables.js';
import type { IpFamily } from './types.js';

const log = createDebug('rxshuttle:fw');

/** First route table id of the range (the port is added): "rx" = 0x72 0x78. */
export const ROUTE_TABLE_BASE = 0x7278_0000;
/** The priority of every instance's rule (see above). */
export const RULE_PRIORITY = 120;
/** What a user has to do when ip is missing. */
export const IP_NOT_FOUND = 'ip not found: install iproute2';

/** The instance's route table for listening port P. */
export function routeTable(port: number): number {
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`policy routing: not a port: ${String(port)}`);
  return ROUTE_TABLE_BASE + port;
}

/** A firewall mark as ip and iptables write it: `0x…`. Guards against a value that is not one. */
export function markText(mark: number): string {
  if (!Number.isInteger(mark) || mark < 1 || mark > 0xffff_ffff) throw new Error(`policy routing: not a mark: ${String(mark)}`);
  return `0x${mark.toString(16)}`;
}

const familyFlag = (family: IpFamily) => (family === 4 ? '-4' : '-6');
const everywhere = (family: IpFamily) => (family === 4 ? '0.0.0.0/0' : '::/0');

async function ip(run: RunCommand, args: readonly string[]): Promise<string> {
  try {
    return await run('ip', args);
  } catch (e) {
    if (e instanceof CommandNotFoundError) throw new Error(IP_NOT_FOUND);
    throw e;
  }
}

/** The argv (after `ip`) that install one family's policy routing: the route first, then the rule that leads to it. */
export function policyRoutingCommands(family: IpFamily, port: number, mark: number): string[][] {
  const table = String(routeTable(port));
  const m = markText(mark);
  return [
    [familyFlag(family), 'route', 'add', 'local', everywhere(family), 'dev', 'lo', 'table', table],
    [familyFlag(family), 'rule', 'add', 'fwmark', `${m}/${m}`, 'lookup', table, 'priority', String(RULE_PRIORITY)],
  ];
}

/** Installs one family's policy routing. On failure what was added stays: the caller removes it (removePolicyRouting). */
export async function addPolicyRouting(run: RunCommand, family: IpFamily, port: number, mark: number): Promise<void> {
  for (const args of policyRoutingCommands(family, port, mark)) {
    log('ip %s', args.join(' '));
    await ip(run, args);
  }
}

/** The priorities of the rules that point at the instance's table, one per rule. */
export async function rulesOf(run: RunCommand, family: IpFamily, port: number): Promise<number[]> {
  const out = await ip(run, [familyFlag(family), 'rule', 'show', 'table', String(routeTable(port))]);
  const priorities: number[] = [];
  for (const line of out.split('\n')) {
    if (line.trim() === '') continue;
    const m = /^(\d{1,10}):/.exec(line);
    const priority = Number(m?.[1]);
    // A line we cannot read is not skipped: removal must not report "nothing left" past it.
    if (m === null || priority > 0xffff_ffff) throw new Error(`ip rule show: unexpected line: ${line.slice(0, 80)}`);
    priorities.push(priority);
  }
  return priorities;
}

/** The routes in the instance's table, as `ip route show` lists them (none when the kernel has no such table). */
export async function routesOf(run: RunCommand, family: IpFamily, port: number): Promise<string[]> {
  try {
    const out = await ip(run, [familyFlag(family), 'route', 'show', 'table', String(routeTable(port))]);
    return out.split('\n').filter((line) => line.trim() !== '');
  } catch (e) {
    // A table is created by its first route; a kernel that checks dumps strictly says so.
    if (/FIB table does not exist/.test((e as Error).message)) return [];
    throw e;
  }
}

/**
 * Removes every rule that points at the instance's table, and every route in it, for one family;
 * false when there was none. Throws if anything is left afterwards.
 */
export async function removePolicyRouting(run: RunCommand, family: IpFamily, port: number): Promise<boolean> {
  const table = String(routeTable(port));
  const rules = await rulesOf(run, family, port);
  for (const priority of rules) {
    const args = [familyFlag(family), 'rule', 'del', 'priority', String(priority), 'table', table];
    log('ip %s', args.join(' '));
    await ip(run, args);
  }
  const routes = await routesOf(run, family, port);
  if (routes.length > 0) {
    const args = [familyFlag(family), 'route', 'flush', 'table', table];
    log('ip %s', args.join(' '));
    await ip(run, args);
  }
  if (rules.length === 0 && routes.length === 0) return false;
  if ((await rulesOf(run, family, port)).length > 0 || (await routesOf(run, family, port)).length > 0) {
    throw new Error(`ip ${familyFlag(family)}: the rules or routes of table ${table} are still present after removal`);
  }
  return true;
}
