/**
 * -H: which addresses a name from the server may be given in /etc/hosts. A name there affects
 * every program on the machine, and the server is not to be trusted with that: it may only point
 * names at addresses the tunnel carries anyway (inside a subnet the firewall redirects), never at
 * some host on the internet (`deb.debian.org` → an address of its choosing, outside the tunnel)
 * nor at this machine itself.
 *
 * Pure, and free of client and stream machinery: the client filters what it sends to the
 * firewall helper with it, and the helper (root, trusting the client no more than the server)
 * checks every HOST line with it again.
 *
 * An address is first normalised (`normaliseIp` in src/shared/ip.ts): an IPv6 form that carries an IPv4
 * address (mapped, translated, compatible, NAT64, 6to4, Teredo) is judged as that IPv4 address,
 * so `::ffff:7f00:1` is 127.0.0.1 (refused as loopback) and `64:ff9b::a62:3` is 10.98.0.3.
 * Then neither form may mean this host only (loopback, unspecified, link-local, multicast), and
 * the address as it goes on the wire (an IPv4-mapped one as IPv4, NAT64 and the like as IPv6)
 * must be tunneled: the subnet rules decided as the firewall decides them
 * (rules.ts: longest prefix first, the exclude first at equal length, the first match wins), for
 * at least one TCP port.
 */
import { inPrefix, normaliseIp, type ParsedIp, parseIp } from '../shared/ip.js';
import { byPrecedence } from './rules.js';
import type { SubnetRule } from './types.js';

/** Why an address is refused: it is not an address; it means this host only; the tunnel does not carry it. */
export type HostAddressRefusal = 'invalid' | 'local' | 'outside';

/** Loopback, unspecified, link-local or multicast (and the reserved 240/4): nothing beyond this host. */
export function isLocalOnlyIp(ip: ParsedIp): boolean {
  const { bytes } = ip;
  const first = bytes[0] ?? 0;
  if (ip.family === 4) return first === 0 || first === 127 || first >= 224 || (first === 169 && bytes[1] === 254);
  const unspecifiedOrLoopback = bytes.every((b, i) => b === 0 || (i === 15 && b === 1));
  return unspecifiedOrLoopback || first === 0xff || (first === 0xfe && ((bytes[1] ?? 0) & 0xc0) === 0x80);
}

const isIpv4Mapped = (ip: ParsedIp): boolean =>
  ip.family === 6 && ip.bytes.subarray(0, 10).every((b) => b === 0) && ip.bytes[10] === 0xff && ip.bytes[11] === 0xff;

interface ParsedRule {
  readonly family: 4 | 6;
  readonly network: Uint8Array;
  readonly prefix: number;
  readonly portLow: number;
  readonly portHigh: number;
  readonly exclude: boolean;
}

/** The subnets one tunnel redirects, ready to answer "is this address tunneled?" many times. */
export class TunneledSubnets {
  readonly #rules: readonly ParsedRule[];

  constructor(rules: readonly SubnetRule[]) {
    const parsed: ParsedRule[] = [];
    for (const rule of byPrecedence(rules)) {
      const network = parseIp(rule.address);
      if (!network || network.family !== rule.family) continue;
      const allPorts = rule.portLow === 0 && rule.portHigh === 0;
      parsed.push({
        family: rule.family,
        network: network.bytes,
        prefix: rule.prefix,
        portLow: allPorts ? 1 : rule.portLow,
        portHigh: allPorts ? 65535 : rule.portHigh,
        exclude: rule.exclude,
      });
    }
    this.#rules = parsed;
  }

  /**
   * True when the firewall redirects TCP to `ip` (taken as it is: see `refusal` for the whole
   * check) on at least one port. The rules are walked in the firewall's order; each exclude takes
   * its ports away, and an include that still finds one of the ports left decides.
   */
  tunnels(ip: ParsedIp): boolean {
    let open: Array<readonly [number, number]> = [[1, 65535]];
    for (const rule of this.#rules) {
      if (rule.family !== ip.family || !inPrefix(ip.bytes, rule.network, rule.prefix)) continue;
      const { portLow: lo, portHigh: hi } = rule;
      if (!rule.exclude) {
        if (open.some(([a, b]) => a <= hi && lo <= b)) return true;
        continue;
      }
      open = open.flatMap(([a, b]): Array<readonly [number, number]> => {
        if (b < lo || a > hi) return [[a, b]];
        return [...(a < lo ? [[a, lo - 1] as const] : []), ...(b > hi ? [[hi + 1, b] as const] : [])];
      });
      if (open.length === 0) return false;
    }
    return false;
  }

  /** Why a name may not be given `address` (any spelling), after normalising; null when it may. */
  refusal(address: string): HostAddressRefusal | null {
    const parsed = parseIp(address);
    if (!parsed) return 'invalid';
    const ip = normaliseIp(parsed);
    if (isLocalOnlyIp(ip) || isLocalOnlyIp(parsed)) return 'local';
    // What goes on the wire must be tunneled: the address itself, or for an IPv4-mapped one
    // (sent as IPv4 by a dual-stack socket) its IPv4 address. NAT64, 6to4 and Teredo forms
    // travel as IPv6, so an IPv4 rule does not carry them.
    return this.tunnels(parsed) || (isIpv4Mapped(parsed) && this.tunnels(ip)) ? null : 'outside';
  }
}
