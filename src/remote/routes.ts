/**
 * -N: the networks the remote host routes to, from its routing table (/proc/net/route and
 * /proc/net/ipv6_route on Linux), without what makes no sense to tunnel: default routes,
 * loopback, link-local, multicast, local (own address) and unreachable routes.
 * Runs on the remote host: Node built-ins only.
 */
import { readFileSync } from 'node:fs';
import { endianness } from 'node:os';
import { prefixOfMask } from '../shared/ip.js';
import { addressBytes, formatAddress } from '../streams/destination.js';
import type { Route } from '../streams/discovery.js';

const RTF_UP = 0x0001;
const RTF_REJECT = 0x0200;
/** IPv6: routes to the host's own addresses (local table) and cached clones. */
const RTF_LOCAL = 0x80000000;
const RTF_CACHE = 0x01000000;

/** Networks whose routes are never worth tunneling (they mean something on every host). */
const SKIP_V4: ReadonlyArray<readonly [number, number]> = [
  [0x00000000, 8], // 0.0.0.0/8, including the default route
  [0x7f000000, 8], // loopback
  [0xa9fe0000, 16], // link-local (and cloud metadata services: 169.254.169.254)
  [0xe0000000, 4], // multicast
  [0xf0000000, 4], // reserved, broadcast
];

function skipV4(bytes: Buffer, prefix: number): boolean {
  if (prefix === 0) return true;
  const n = bytes.readUInt32BE(0);
  return SKIP_V4.some(([net, width]) => prefix >= width && (n >>> (32 - width)) === net >>> (32 - width));
}

function skipV6(bytes: Buffer, prefix: number): boolean {
  if (prefix === 0) return true;
  const first = bytes.readUInt16BE(0);
  if (first === 0 && prefix >= 8) return true; // ::1, ::/8 (v4-mapped, unspecified)
  if ((first & 0xffc0) === 0xfe80) return true; // link-local
  if ((first & 0xff00) === 0xff00) return true; // multicast
  return false;
}

/** Whether a route means something beyond the host that has it (not default, loopback, link-local, multicast). */
export function worthTunneling(route: { readonly family: 4 | 6; readonly address: string; readonly prefix: number }): boolean {
  const bytes = addressBytes(route.family, route.address);
  return route.family === 4 ? !skipV4(bytes, route.prefix) : !skipV6(bytes, route.prefix);
}

/** /proc/net/route: Destination and Mask are u32 in host byte order, in hex. */
export function parseProcRoute(text: string, hostOrder: 'LE' | 'BE' = endianness()): Route[] {
  const routes: Route[] = [];
  for (const line of text.split('\n').slice(1)) {
    const fields = line.trim().split(/\s+/);
    if (fields.length < 8) continue;
    const [, destination = '', , flagsText = '', , , , maskText = ''] = fields;
    const flags = Number.parseInt(flagsText, 16);
    if (!(flags & RTF_UP) || flags & RTF_REJECT) continue;
    const read = (hex: string) => {
      const raw = Buffer.alloc(4);
      raw.writeUInt32BE(Number.parseInt(hex, 16) >>> 0, 0);
      return hostOrder === 'LE' ? Buffer.from(raw.reverse()) : raw;
    };
    const bytes = read(destination);
    const prefix = prefixOfMask(read(maskText));
    if (prefix === null || skipV4(bytes, prefix)) continue;
    routes.push({ family: 4, address: formatAddress(bytes), prefix });
  }
  return routes;
}

/** /proc/net/ipv6_route: dest, dest prefix, src, src prefix, next hop, metric, refs, use, flags, device. */
export function parseProcIpv6Route(text: string): Route[] {
  const routes: Route[] = [];
  for (const line of text.split('\n')) {
    const fields = line.trim().split(/\s+/);
    if (fields.length < 10) continue;
    const [destination = '', prefixText = '', , , , , , , flagsText = '', device = ''] = fields;
    if (!/^[0-9a-f]{32}$/i.test(destination)) continue;
    const flags = Number.parseInt(flagsText, 16) >>> 0;
    if (!(flags & RTF_UP) || flags & RTF_REJECT || flags & RTF_LOCAL || flags & RTF_CACHE || device === 'lo') continue;
    const prefix = Number.parseInt(prefixText, 16);
    const bytes = Buffer.from(destination, 'hex');
    if (prefix > 128 || skipV6(bytes, prefix)) continue;
    routes.push({ family: 6, address: formatAddress(bytes), prefix });
  }
  return routes;
}

const read = (path: string): string => {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
};

/** This host's routes, IPv4 then IPv6, without duplicates. Empty where /proc has no routing table. */
export function listRoutes(readFile: (path: string) => string = read): Route[] {
  return uniqueRoutes([...parseProcRoute(readFile('/proc/net/route')), ...parseProcIpv6Route(readFile('/proc/net/ipv6_route'))]);
}

/** Each network once (a table may name it on several interfaces), in the order first seen. */
export function uniqueRoutes(routes: readonly Route[]): Route[] {
  const seen = new Set<string>();
  return routes.filter((route) => {
    const key = `${route.address}/${route.prefix}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}
