/**
 * IP address text <-> bytes, pure (no I/O): the one IP layer. Everything that parses, formats,
 * masks or compares addresses and subnets (the stream codecs for OPEN, ROUTES and HOST payloads,
 * the command line's subnets, -N's routes, the UDP sockaddrs and the firewall) does it here.
 * `parseIp` is lenient about spelling (upper case, leading zeros, an embedded dotted quad);
 * `formatIp` writes the one canonical spelling (RFC 5952 for IPv6: lower case, no leading zeros,
 * the longest run of two or more zero groups compressed, the first such run on a tie, no embedded
 * dotted quad). The firewall helper runs as root and puts addresses into iptables arguments, so it
 * accepts only text that `isCanonicalIp` passes: anything else is refused rather than normalised,
 * since a sender that means well always sends the canonical form.
 *
 * Hand-written on bytes rather than built on ip-num, which a node micro-benchmark (two runs on a
 * loaded 2-CPU VM) found 9-18x slower to parse, 22-72x to format, 27-44x for `networkOf`, 15-28x
 * for `prefixOfMask` and thousands of times for `inPrefix`. Parsing and formatting run per
 * connection and per datagram (streams/destination.ts, udp/sockaddr.ts, firewall/original-dst.ts),
 * `inPrefix` for every rule on every HOST line the root helper reads, `networkOf` for each of the
 * untrusted lines route-text.ts reads (200 000 in well under 5 s); and ip-num would add 42 KB to
 * the remote's bundle (Node built-ins only) and 137 KB to the root helper's. test/ip.test.ts
 * checks these functions against ip-num.
 */

export interface ParsedIp {
  family: 4 | 6;
  /** 4 or 16 bytes, network order. */
  bytes: Uint8Array;
}

const V4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;
const V6_GROUP = /^[0-9a-fA-F]{1,4}$/;

/** Parses an IPv4 or IPv6 literal (lenient about spelling; see `isCanonicalIp`). Null if invalid. */
export function parseIp(text: string): ParsedIp | null {
  if (text.length > 45) return null;
  return text.includes(':') ? parseV6(text) : parseV4(text);
}

function parseV4(text: string): ParsedIp | null {
  const m = V4.exec(text);
  if (!m) return null;
  const bytes = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    const n = Number(m[i + 1]);
    if (n > 255) return null;
    bytes[i] = n;
  }
  return { family: 4, bytes };
}

function parseV6(text: string): ParsedIp | null {
  const hex = withoutDottedTail(text);
  if (hex === null) return null;
  const halves = hex.split('::');
  if (halves.length > 2) return null;
  const head = splitGroups(halves[0] ?? '');
  const tail = halves.length === 2 ? splitGroups(halves[1] ?? '') : [];
  if (!head || !tail) return null;
  const compressed = halves.length === 2;
  const count = head.length + tail.length;
  if (compressed ? count > 7 : count !== 8) return null;
  const groups = [...head, ...new Array<number>(8 - count).fill(0), ...tail];
  const bytes = new Uint8Array(16);
  groups.forEach((g, i) => {
    bytes[2 * i] = g >> 8;
    bytes[2 * i + 1] = g & 0xff;
  });
  return { family: 6, bytes };
}

/** `::ffff:1.2.3.4` as `::ffff:102:304` (the tail is the last two groups); null if the quad is invalid. */
function withoutDottedTail(text: string): string | null {
  const at = text.lastIndexOf(':') + 1;
  if (!text.includes('.', at)) return text;
  const quad = parseV4(text.slice(at))?.bytes;
  if (!quad) return null;
  const group = (i: number) => (((quad[i] ?? 0) << 8) | (quad[i + 1] ?? 0)).toString(16);
  return `${text.slice(0, at)}${group(0)}:${group(2)}`;
}

function splitGroups(part: string): number[] | null {
  if (part === '') return [];
  const groups: number[] = [];
  for (const g of part.split(':')) {
    if (!V6_GROUP.test(g)) return null;
    groups.push(parseInt(g, 16));
  }
  return groups;
}

/** Canonical text of 4 or 16 address bytes (RFC 5952 for IPv6). */
export function formatIp(bytes: Uint8Array): string {
  if (bytes.length === 4) return `${bytes[0]}.${bytes[1]}.${bytes[2]}.${bytes[3]}`;
  if (bytes.length !== 16) throw new RangeError(`an IP address has 4 or 16 bytes, not ${bytes.length}`);
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i] ?? 0) << 8) | (bytes[i + 1] ?? 0));
  // Longest run of zero groups (length >= 2); the first one wins a tie.
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (gs: number[]) => gs.map((g) => g.toString(16)).join(':');
  if (bestStart < 0) return hex(groups);
  return `${hex(groups.slice(0, bestStart))}::${hex(groups.slice(bestStart + bestLen))}`;
}

/** True when `text` is exactly the canonical spelling of an address of `family`. */
export function isCanonicalIp(text: string, family: 4 | 6): boolean {
  const parsed = parseIp(text);
  return parsed !== null && parsed.family === family && formatIp(parsed.bytes) === text;
}

/** The network `bytes`/`prefix` is in: a copy with every bit after the first `prefix` bits cleared (10.98.0.7/24: 10.98.0.0). */
export function networkOf(bytes: Uint8Array, prefix: number): Uint8Array {
  const whole = prefix >> 3;
  const partial = (0xff00 >> (prefix & 7)) & 0xff;
  return bytes.map((byte, i) => byte & (i < whole ? 0xff : i === whole ? partial : 0));
}

/** True when any bit after the first `prefix` bits is set (the address is not a network address). */
export function hasHostBits(bytes: Uint8Array, prefix: number): boolean {
  return networkOf(bytes, prefix).some((byte, i) => byte !== bytes[i]);
}

/** The prefix length of a netmask (255.255.255.0: 24); null when its one bits are not contiguous from the top (255.0.255.0). */
export function prefixOfMask(mask: Uint8Array): number | null {
  let prefix = 0;
  let ended = false;
  for (const byte of mask) {
    for (let bit = 7; bit >= 0; bit--) {
      if (((byte >> bit) & 1) === 0) ended = true;
      else if (ended) return null;
      else prefix++;
    }
  }
  return prefix;
}

/**
 * The IPv4 address an IPv6 address stands for, when it is one of the forms that carry one: the
 * kernel, a translator or a relay then ends up talking to that IPv4 address, so a check of "where
 * does this go" must look at it (`::ffff:7f00:1` is 127.0.0.1 to any dual-stack socket).
 *
 *   ::ffff:a.b.c.d          IPv4-mapped (RFC 4291)
 *   ::ffff:0:a.b.c.d        IPv4-translated (RFC 2765, SIIT)
 *   ::a.b.c.d               IPv4-compatible (deprecated; not :: and ::1, which are IPv6's own)
 *   64:ff9b::a.b.c.d        NAT64 well-known prefix /96 (RFC 6052)
 *   64:ff9b:1:…:a.b.c.d     NAT64 local-use prefix 64:ff9b:1::/48 (RFC 8215), read as a /96 prefix
 *                           (the usual deployment: the IPv4 address in the last 32 bits)
 *   2002:aabb:ccdd::/48     6to4 (RFC 3056): the IPv4 address in bits 16..47
 *   2001:0:…                Teredo (RFC 4380): the client's address, inverted, in the last 32 bits
 *
 * Null for IPv4 and for every other IPv6 address.
 */
export function embeddedIpv4(bytes: Uint8Array): Uint8Array | null {
  if (bytes.length !== 16) return null;
  const b = (i: number) => bytes[i] ?? 0;
  const zero = (from: number, to: number) => bytes.subarray(from, to).every((x) => x === 0);
  const last32 = () => bytes.slice(12, 16);
  if (zero(0, 10) && b(10) === 0xff && b(11) === 0xff) return last32();
  if (zero(0, 8) && b(8) === 0xff && b(9) === 0xff && zero(10, 12)) return last32();
  if (zero(0, 12) && !(zero(12, 15) && b(15) <= 1)) return last32();
  if (b(0) === 0x00 && b(1) === 0x64 && b(2) === 0xff && b(3) === 0x9b) {
    if (zero(4, 12)) return last32();
    if (b(4) === 0x00 && b(5) === 0x01) return last32();
  }
  if (b(0) === 0x20 && b(1) === 0x02) return bytes.slice(2, 6);
  if (b(0) === 0x20 && b(1) === 0x01 && b(2) === 0x00 && b(3) === 0x00) return last32().map((x) => x ^ 0xff);
  return null;
}

/** The address as it is finally reached: the embedded IPv4 address of an IPv6 form that has one (`embeddedIpv4`), else itself. */
export function normaliseIp(ip: ParsedIp): ParsedIp {
  const v4 = ip.family === 6 ? embeddedIpv4(ip.bytes) : null;
  return v4 ? { family: 4, bytes: v4 } : ip;
}

/** True when the first `prefix` bits of `bytes` and `network` are equal (both of the same family). */
export function inPrefix(bytes: Uint8Array, network: Uint8Array, prefix: number): boolean {
  if (bytes.length !== network.length || prefix < 0 || prefix > bytes.length * 8) return false;
  const whole = prefix >> 3;
  for (let i = 0; i < whole; i++) if (bytes[i] !== network[i]) return false;
  const rest = prefix & 7;
  if (rest === 0) return true;
  const mask = (0xff << (8 - rest)) & 0xff;
  return ((bytes[whole] ?? 0) & mask) === ((network[whole] ?? 0) & mask);
}

/** A listen host on this machine's loopback: 127.0.0.0/8, ::1 (any spelling) or the name localhost. */
export function isLoopbackHost(host: string): boolean {
  if (host === 'localhost') return true;
  const ip = parseIp(host);
  if (!ip) return false;
  return ip.family === 4 ? ip.bytes[0] === 127 : ip.bytes.every((byte, i) => byte === (i === 15 ? 1 : 0));
}
