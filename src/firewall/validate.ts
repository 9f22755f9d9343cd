/**
 * Validation of the setup the firewall helper receives. The helper runs as root and the line
 * comes from an unprivileged process, so everything is checked: exact keys, types, ranges,
 * canonical addresses without host bits. Only values that passed here reach `natRules`, whose
 * text then contains nothing but numbers, fixed words and re-checked address literals.
 * Error messages name the field, never echo the value: they travel back on a one-line protocol.
 */
import { isIP } from 'node:net';
import { hasHostBits, isCanonicalIp, parseIp } from '../shared/ip.js';
import type { HostAddressRefusal, TunneledSubnets } from './host-address.js';
import { RULES_PREFIX } from './protocol.js';
import type { FirewallSetup, HostsEntry, SubnetRule } from './types.js';

/**
 * Subnets a user may give (command line, -s, -x, -X, each rule counted): a -s file of 10 000
 * /128s, as sshuttle takes, fits. options.ts refuses more before anything starts.
 */
export const MAX_SUBNETS = 10_000;
/** Rules the client adds to the user's: the ssh server's addresses (excluded), -N's routes. */
export const MAX_DERIVED_RULES = 10_000;
/**
 * Rules of a setup: the user's and what the client adds. Bounds the work a hostile client can
 * cause, and the setup line (MAX_LINE_BYTES).
 */
export const MAX_RULES = MAX_SUBNETS + MAX_DERIVED_RULES;
/** Group ids 0 (root) and 2^32-1 ((gid_t)-1, "no group") make no sense as a bypass group. */
export const MAX_GID = 2 ** 32 - 2;

export class SetupValidationError extends Error {
  override name = 'SetupValidationError';
}

const SETUP_KEYS = ['version', 'method', 'port', 'routerMode', 'rules', 'bypassGid', 'dnsPort', 'dnsServers', 'hosts', 'killSwitch', 'user', 'group', 'udpPort', 'tmark'] as const;
/** resolv.conf names at most 3; --ns-hosts may name a few more. */
export const MAX_DNS_SERVERS = 32;
const SETUP_REQUIRED = ['version', 'method', 'port', 'routerMode', 'rules'] as const;
const RULE_KEYS = ['family', 'address', 'prefix', 'portLow', 'portHigh', 'exclude'] as const;

/** Parses and validates one setup line. Throws `SetupValidationError` with a one-line message. */
export function parseSetupLine(line: string, maxRules: number = MAX_RULES): FirewallSetup {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    throw new SetupValidationError('setup is not valid JSON');
  }
  return validateSetup(value, maxRules);
}

/**
 * `maxRules`: the watchdog's kill switch carries a RULES line's rules too (MAX_RULES +
 * MAX_EXTRA_RULES); a setup line, MAX_RULES.
 */
export function validateSetup(value: unknown, maxRules: number = MAX_RULES): FirewallSetup {
  const obj = record(value, 'setup');
  exactKeys(obj, 'setup', SETUP_KEYS, SETUP_REQUIRED);
  if (obj.version !== 1) fail('version', 'must be 1 (helper protocol version)');
  if (obj.method !== 'nat' && obj.method !== 'nft' && obj.method !== 'tproxy') fail('method', 'must be "nat", "nft" or "tproxy"');
  const port = integer(obj.port, 'port', 1, 65535);
  if (typeof obj.routerMode !== 'boolean') fail('routerMode', 'must be a boolean');
  if (!Array.isArray(obj.rules)) fail('rules', 'must be an array');
  if (obj.rules.length > maxRules) fail('rules', `must have at most ${maxRules} entries`);
  const rules = obj.rules.map((r: unknown, i: number) => validateRule(r, `rules[${i}]`));
  const setup: FirewallSetup = { version: 1, method: obj.method, port, routerMode: obj.routerMode, rules };
  if (Object.hasOwn(obj, 'bypassGid')) setup.bypassGid = integer(obj.bypassGid, 'bypassGid', 1, MAX_GID);
  if (Object.hasOwn(obj, 'dnsPort') !== Object.hasOwn(obj, 'dnsServers')) fail('dnsPort', 'and dnsServers go together');
  if (Object.hasOwn(obj, 'dnsPort')) {
    const dnsPort = integer(obj.dnsPort, 'dnsPort', 1, 65535);
    if (dnsPort === port) fail('dnsPort', 'must differ from port');
    const servers = obj.dnsServers;
    if (!Array.isArray(servers) || servers.length === 0 || servers.length > MAX_DNS_SERVERS) {
      fail('dnsServers', `must be an array of 1..${MAX_DNS_SERVERS} addresses`);
    }
    const dnsServers = servers.map((a: unknown, i: number) => canonicalAddress(a, `dnsServers[${i}]`));
    if (new Set(dnsServers).size !== dnsServers.length) fail('dnsServers', 'has duplicates');
    setup.dnsPort = dnsPort;
    setup.dnsServers = dnsServers;
  }
  // root (0) is a user like any other here: --user root captures root's traffic only.
  if (Object.hasOwn(obj, 'user')) setup.user = integer(obj.user, 'user', 0, MAX_GID);
  if (Object.hasOwn(obj, 'group')) setup.group = integer(obj.group, 'group', 0, MAX_GID);
  if (Object.hasOwn(obj, 'udpPort') || Object.hasOwn(obj, 'tmark')) {
    if (obj.method !== 'tproxy') fail('udpPort', 'and tmark are for the tproxy method only');
  }
  if (Object.hasOwn(obj, 'udpPort')) {
    const udpPort = integer(obj.udpPort, 'udpPort', 1, 65535);
    // The same number as `port` is fine: TCP's and UDP's ports are apart. dnsPort is UDP too.
    if (udpPort === setup.dnsPort) fail('udpPort', 'must differ from dnsPort');
    setup.udpPort = udpPort;
  }
  if (Object.hasOwn(obj, 'tmark')) setup.tmark = integer(obj.tmark, 'tmark', 1, 2 ** 32 - 1);
  if (obj.method === 'tproxy' && setup.tmark === undefined) fail('tmark', 'is required by the tproxy method');
  if (Object.hasOwn(obj, 'killSwitch')) {
    if (typeof obj.killSwitch !== 'boolean') fail('killSwitch', 'must be a boolean');
    setup.killSwitch = obj.killSwitch;
  }
  if (Object.hasOwn(obj, 'hosts')) {
    if (typeof obj.hosts !== 'boolean') fail('hosts', 'must be a boolean');
    setup.hosts = obj.hosts;
  }
  return setup;
}

function validateRule(value: unknown, path: string): SubnetRule {
  const obj = record(value, path);
  exactKeys(obj, path, RULE_KEYS, RULE_KEYS);
  const family = obj.family;
  if (family !== 4 && family !== 6) fail(`${path}.family`, 'must be 4 or 6');
  const prefix = integer(obj.prefix, `${path}.prefix`, 0, family === 4 ? 32 : 128);
  if (typeof obj.address !== 'string') fail(`${path}.address`, 'must be a string');
  const address = obj.address;
  // Two independent checks: our own strict parser, and Node's.
  if (!isCanonicalIp(address, family) || isIP(address) !== family) {
    fail(`${path}.address`, `must be a canonical IPv${family} address`);
  }
  const parsed = parseIp(address);
  if (!parsed || hasHostBits(parsed.bytes, prefix)) {
    fail(`${path}.address`, `has host bits set beyond /${prefix}`);
  }
  const portLow = integer(obj.portLow, `${path}.portLow`, 0, 65535);
  const portHigh = integer(obj.portHigh, `${path}.portHigh`, 0, 65535);
  const allPorts = portLow === 0 && portHigh === 0;
  if (!allPorts && (portLow < 1 || portLow > portHigh)) {
    fail(`${path}.portLow`, 'ports must be 0..0 (all) or 1 <= portLow <= portHigh <= 65535');
  }
  if (typeof obj.exclude !== 'boolean') fail(`${path}.exclude`, 'must be a boolean');
  return { family, address, prefix, portLow, portHigh, exclude: obj.exclude };
}

/**
 * Rules a RULES line may carry, at most: host names as subnets (at most 128, options.ts) with a
 * few addresses each. Their line then stays under MAX_RULES_LINE_BYTES.
 */
export const MAX_EXTRA_RULES = 1024;
/** Longest RULES line: MAX_EXTRA_RULES IPv6 rules at their longest (test/firewall/validate.test.ts checks). */
export const MAX_RULES_LINE_BYTES = 128 * 1024;

/** Parses `RULES <json>` (the prefix included): the rules beyond the setup's own. Throws SetupValidationError. */
export function parseRulesLine(line: string): SubnetRule[] {
  let value: unknown;
  try {
    value = JSON.parse(line.slice(RULES_PREFIX.length));
  } catch {
    throw new SetupValidationError('invalid RULES line: not valid JSON');
  }
  if (!Array.isArray(value)) throw new SetupValidationError('invalid RULES line: expected an array of rules');
  if (value.length > MAX_EXTRA_RULES) throw new SetupValidationError(`invalid RULES line: at most ${MAX_EXTRA_RULES} rules`);
  try {
    return value.map((r: unknown, i: number) => validateRule(r, `rules[${i}]`));
  } catch (e) {
    throw new SetupValidationError((e as Error).message.replace(/^invalid setup: /, 'invalid RULES line: '));
  }
}

/** A single address (no prefix) in its canonical spelling. */
function canonicalAddress(value: unknown, path: string): string {
  if (typeof value !== 'string') fail(path, 'must be a string');
  const family = isIP(value);
  if ((family !== 4 && family !== 6) || !isCanonicalIp(value, family)) fail(path, 'must be a canonical IP address');
  return value;
}

const HOST_LINE = /^HOST ([0-9a-f.:]{2,39}) ([A-Za-z0-9._-]{1,253})$/;
const HOST_LABEL = /^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$/;
/**
 * Names a tunnel must never take over, whatever the server says: localhost and its subdomains,
 * the names systemd's nss-myhostname and resolved answer locally (`_gateway`, `_outbound`,
 * `_localdnsstub`, `_localdnsproxy`), and the usual IPv6 and BSD loopback aliases.
 */
const RESERVED_NAME = /^(localhost|localhost\..*|.*\.localhost|ip6-.*|broadcasthost|_gateway|_outbound|_localdnsstub|_localdnsproxy)$/i;

const ADDRESS_REFUSED: { readonly [R in HostAddressRefusal]: string } = {
  invalid: 'the address is not a canonical IP address',
  local: 'the address is loopback, unspecified, link-local or multicast',
  outside: 'the address is outside the tunneled subnets',
};

export class HostLineError extends Error {
  override name = 'HostLineError';
}

/**
 * Parses `HOST <address> <name>`: a canonical address that the tunnel carries (`tunneled`, from
 * the setup's rules: inside an included subnet, not in a more specific exclude, and, after
 * normalising IPv4-mapped, compatible, NAT64, 6to4 and Teredo forms, not loopback, unspecified,
 * link-local or multicast: host-address.ts) and a plain host name (letters, digits, '-', '_' in
 * dot-separated labels; no address look-alike, no localhost or other locally answered name).
 * Throws HostLineError.
 */
export function parseHostLine(line: string, tunneled: TunneledSubnets): HostsEntry {
  const m = HOST_LINE.exec(line);
  if (!m) throw new HostLineError('invalid HOST line: expected HOST <address> <name>');
  const address = m[1] as string;
  const name = m[2] as string;
  const family = isIP(address);
  if ((family !== 4 && family !== 6) || !isCanonicalIp(address, family)) {
    throw new HostLineError('invalid HOST line: the address is not a canonical IP address');
  }
  const refusal = tunneled.refusal(address);
  if (refusal !== null) throw new HostLineError(`invalid HOST line: ${ADDRESS_REFUSED[refusal]}`);
  if (/^[\d.]+$/.test(name) || RESERVED_NAME.test(name) || !name.split('.').every((label) => HOST_LABEL.test(label))) {
    throw new HostLineError('invalid HOST line: not an acceptable host name');
  }
  return { address, name };
}

function record(value: unknown, path: string): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) fail(path, 'must be an object');
  const proto = Object.getPrototypeOf(value);
  if (proto !== Object.prototype && proto !== null) fail(path, 'must be a plain object');
  return value as Record<string, unknown>;
}

function exactKeys(
  obj: Record<string, unknown>,
  path: string,
  allowed: readonly string[],
  required: readonly string[],
): void {
  // Object.keys sees an own "__proto__" key from JSON.parse too, so it is refused like any other.
  for (const key of Object.keys(obj)) {
    if (!allowed.includes(key)) fail(path, 'has an unknown key');
  }
  for (const key of required) {
    if (!Object.hasOwn(obj, key)) fail(path, `is missing "${key}"`);
  }
}

function integer(value: unknown, path: string, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    fail(path, `must be an integer ${min}..${max}`);
  }
  return value;
}

function fail(path: string, problem: string): never {
  throw new SetupValidationError(`invalid setup: ${path} ${problem}`);
}
