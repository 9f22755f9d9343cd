/**
 * -N in stock-sshd mode, where the remote host has no /proc/net/route: its routing table from the
 * text of plain commands run there, parsed here.
 *
 *   parseIpRoute        `ip -4 route show table main; ip -6 route show table main` (iproute2, busybox)
 *   parseNetstatRoutes  `netstat -rn`: Linux net-tools and busybox (IPv4 `Genmask` and IPv6
 *                       `Next Hop` tables), macOS and the BSDs (`Internet:` / `Internet6:` sections)
 *
 * The text comes from the remote host and is not trusted: what is not recognised is skipped,
 * nothing throws, and the work is linear in the input (of a long line only the head is read).
 * Both return what `worthTunneling` keeps, each network once, in input order; addresses are
 * canonical (RFC 5952 for IPv6) with no bits set after the prefix.
 */

import { uniqueRoutes, worthTunneling } from '../../remote/routes.js';
import { formatIp, networkOf, parseIp, prefixOfMask } from '../../shared/ip.js';
import type { Route } from '../../streams/discovery.js';

/** Real lines reach every column read here (destination to interface) well within this. */
const HEAD = 512;

/** Whitespace-separated fields of a line's first HEAD characters; a field cut off there is left out. */
function fields(line: string): string[] {
  const cut = line.length > HEAD;
  const out = (cut ? line.slice(0, HEAD) : line).split(/\s+/).filter((field) => field !== '');
  if (cut && /\S\S/.test(line.slice(HEAD - 1, HEAD + 1))) out.pop();
  return out;
}

/** `n` of `/n`, at most `bits`; `bits` (a host) when there is no `/n`. Null when out of range or not a number. */
function prefixOf(text: string | undefined, bits: number): number | null {
  if (text === undefined) return bits;
  if (!/^\d{1,3}$/.test(text)) return null;
  const prefix = Number(text);
  return prefix <= bits ? prefix : null;
}

/** The network `bytes`/`prefix` is in: bits after the prefix cleared, canonical text. */
function network(family: 4 | 6, bytes: Uint8Array, prefix: number): Route {
  return { family, address: formatIp(networkOf(bytes, prefix)), prefix };
}

/** `address[/prefix]` in full (dotted quad or IPv6), optionally of one family. */
function parseNetwork(text: string, family?: 4 | 6): Route | null {
  const slash = text.indexOf('/');
  const ip = parseIp(slash < 0 ? text : text.slice(0, slash));
  if (ip === null || (family !== undefined && ip.family !== family)) return null;
  const prefix = prefixOf(slash < 0 ? undefined : text.slice(slash + 1), ip.bytes.length * 8);
  return prefix === null ? null : network(ip.family, ip.bytes, prefix);
}

/** Each worthwhile network once, in order. */
const keep = (candidates: Iterable<Route>): Route[] => uniqueRoutes([...candidates].filter(worthTunneling));

/**
 * `ip route` lines: `[type] destination [attribute value]…`, where the destination is `default`,
 * an address (a host: /32 or /128) or `address/prefix`. The type is printed only when it is not
 * `unicast` (`unreachable`, `blackhole`, `prohibit`, `throw`, `local`, `broadcast`, `multicast`,
 * `anycast`, `nat`, or a number for an unknown one): those lines are skipped, since their first
 * field is no address. Indented lines continue the previous route (`nexthop …` of a multipath
 * route) and are skipped; `linkdown` and `dead` routes are kept (the route is in the table).
 */
export function parseIpRoute(text: string): Route[] {
  return keep(ipRouteCandidates(text));
}

function* ipRouteCandidates(text: string): Generator<Route> {
  for (const line of text.split('\n')) {
    if (/^\s/.test(line)) continue;
    const [first, second] = fields(line);
    const destination = first === 'unicast' ? second : first;
    const route = destination === undefined ? null : parseNetwork(destination);
    if (route !== null) yield route;
  }
}

/** Where a `netstat -rn` table's columns are, from its header line. */
interface Layout {
  readonly kind: 'linux4' | 'linux6' | 'bsd';
  readonly flags: number;
  /** Linux IPv4 only: the Genmask column. */
  readonly mask: number;
  /** -1 when the header names no interface column. */
  readonly iface: number;
}

/** Flags that make a route unusable or no network route, per table kind (they differ between systems). */
const REJECTED: Record<Layout['kind'], RegExp> = {
  // net-tools: ! reject, R reinstate (obsolete; skipped like BSD's R).
  linux4: /[!R]/,
  // net-tools: ! reject, C cache (a clone of another route).
  linux6: /[!C]/,
  // R reject, B blackhole, W cloned, L link-layer (ARP/NDP) entry, b broadcast, l local (Open/NetBSD).
  bsd: /[RBWLbl]/,
};

/** A header line (`Destination Gateway …`); null when it is no table header we know. */
function layoutOf(header: readonly string[]): Layout | null {
  // Linux IPv6's "Next Hop" is one column of two words.
  const names = header.join(' ').replace('Next Hop', 'NextHop').split(' ');
  const find = (...candidates: string[]) => names.findIndex((name) => candidates.includes(name));
  const flags = find('Flags', 'Flag');
  const iface = find('Iface', 'Netif', 'Interface', 'If');
  const mask = find('Genmask');
  if (flags < 0) return null;
  if (mask >= 0) return { kind: 'linux4', flags, mask, iface };
  return { kind: names.includes('NextHop') ? 'linux6' : 'bsd', flags, mask: -1, iface };
}

/** BSD section titles: `Internet:`, `Internet6:`, and others (`Netgraph:`, `AppleTalk:`…) whose rows are skipped. */
const SECTION = /^[A-Za-z][\w-]*:$/;

/**
 * `netstat -rn` tables. Linux (net-tools, busybox): destinations in full, the prefix from the
 * Genmask column (IPv4, must be contiguous) or `/n` (IPv6). macOS and the BSDs: destinations
 * `default`, `10/8`, `10.0.0/8`, `192.168.1` (missing octets are zero; without `/n` the prefix is
 * 8 × the octets given), `fe80::%lo0/64` (the zone is dropped), `2001:db8::1` (a host).
 * Only rows with U (up) in Flags, and none of the flags in REJECTED, are read. Rows out of a
 * loopback interface are skipped: they lead back to the host itself (its own addresses, as
 * `parseProcIpv6Route` skips `lo`; discard routes).
 */
export function parseNetstatRoutes(text: string): Route[] {
  return keep(netstatCandidates(text));
}

function* netstatCandidates(text: string): Generator<Route> {
  let layout: Layout | null = null;
  /** BSD: the family of the section; null before any section title (Linux). */
  let section: 4 | 6 | 'other' | null = null;
  for (const line of text.split('\n')) {
    const row = fields(line);
    const [first] = row;
    if (first === undefined) continue;
    if (row.length === 1 && SECTION.test(first)) {
      section = first === 'Internet:' ? 4 : first === 'Internet6:' ? 6 : 'other';
      layout = null;
      continue;
    }
    if (first === 'Destination') {
      layout = layoutOf(row);
      continue;
    }
    if (layout === null || section === 'other') continue;
    const flags = row[layout.flags];
    const iface = layout.iface < 0 ? undefined : row[layout.iface];
    if (flags === undefined || !/^[!\w]{1,32}$/.test(flags) || !flags.includes('U') || REJECTED[layout.kind].test(flags)) continue;
    if (iface !== undefined && /^lo\d*$/.test(iface)) continue;
    const route = netstatDestination(layout, row, section);
    if (route !== null) yield route;
  }
}

function netstatDestination(layout: Layout, row: readonly string[], section: 4 | 6 | null): Route | null {
  const destination = row[0] ?? '';
  switch (layout.kind) {
    case 'linux4': {
      const ip = parseIp(destination);
      const mask = parseIp(row[layout.mask] ?? '');
      const prefix = mask?.family === 4 ? prefixOfMask(mask.bytes) : null;
      return ip?.family === 4 && prefix !== null ? network(4, ip.bytes, prefix) : null;
    }
    case 'linux6':
      return destination.includes('/') ? parseNetwork(destination, 6) : null;
    case 'bsd': {
      const family = section ?? (destination.includes(':') ? 6 : 4);
      return family === 4 ? bsdV4(destination) : parseNetwork(destination.replace(/%[^/]*/, ''), 6);
    }
  }
}

const ABBREVIATED_V4 = /^(\d{1,3}(?:\.\d{1,3}){0,3})(?:\/(\d{1,3}))?$/;

/** BSD IPv4 destination: `10`, `10/8`, `10.0.0/8`, `192.168.1`, `192.168.1.1/32`. */
function bsdV4(text: string): Route | null {
  const match = ABBREVIATED_V4.exec(text);
  if (match === null) return null;
  const octets = (match[1] ?? '').split('.').map(Number);
  if (octets.some((octet) => octet > 255)) return null;
  const prefix = prefixOf(match[2], 32);
  if (prefix === null) return null;
  const bytes = new Uint8Array(4);
  bytes.set(octets);
  return network(4, bytes, match[2] === undefined ? 8 * octets.length : prefix);
}
