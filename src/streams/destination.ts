import { isIPv4, isIPv6 } from 'node:net';
import { ProtocolError } from '../errors.js';
import type { Destination } from './frame.js';

/** OPEN payload: u8 family (4 or 6), u16 port, then 4 or 16 address bytes. */
export function encodeDestination(dst: Destination): Buffer {
  const address = dst.family === 4 ? ipv4Bytes(dst.address) : ipv6Bytes(dst.address);
  const out = Buffer.allocUnsafe(3 + address.length);
  out.writeUInt8(dst.family, 0);
  out.writeUInt16BE(dst.port, 1);
  address.copy(out, 3);
  return out;
}

export function decodeDestination(payload: Buffer): Destination {
  const family = payload.length > 0 ? payload.readUInt8(0) : 0;
  const expected = family === 4 ? 7 : family === 6 ? 19 : -1;
  if (expected < 0 || payload.length !== expected) {
    throw new ProtocolError(`malformed OPEN: family ${family}, ${payload.length} bytes`);
  }
  const port = payload.readUInt16BE(1);
  const bytes = payload.subarray(3);
  const address = family === 4 ? [...bytes].join('.') : formatIpv6(bytes);
  return { family: family as 4 | 6, port, address };
}

/** The 4 or 16 bytes of an address in text form (throws TypeError when it is not of that family). */
export const addressBytes = (family: 4 | 6, address: string): Buffer =>
  family === 4 ? ipv4Bytes(address) : ipv6Bytes(address);

/** Text of 4 or 16 address bytes: dotted quad, or RFC 5952 IPv6. */
export const formatAddress = (bytes: Buffer): string => (bytes.length === 4 ? [...bytes].join('.') : formatIpv6(bytes));

export const formatDestination = (dst: Destination): string =>
  dst.family === 6 ? `[${dst.address}]:${dst.port}` : `${dst.address}:${dst.port}`;

function ipv4Bytes(address: string): Buffer {
  if (!isIPv4(address)) throw new TypeError(`not an IPv4 address: ${address}`);
  return Buffer.from(address.split('.').map(Number));
}

function ipv6Bytes(address: string): Buffer {
  if (!isIPv6(address)) throw new TypeError(`not an IPv6 address: ${address}`);
  let text = address;
  // An embedded IPv4 tail (::ffff:1.2.3.4) becomes two hex groups.
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4?.[1]) {
    const [a, b, c, d] = v4[1].split('.').map(Number) as [number, number, number, number];
    text = `${text.slice(0, -v4[1].length)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head = '', tail] = text.split('::');
  const headGroups = head ? head.split(':') : [];
  const tailGroups = tail ? tail.split(':') : [];
  const zeros = tail === undefined ? [] : new Array<string>(8 - headGroups.length - tailGroups.length).fill('0');
  const groups = [...headGroups, ...zeros, ...tailGroups];
  const out = Buffer.alloc(16);
  groups.forEach((group, i) => out.writeUInt16BE(Number.parseInt(group, 16), i * 2));
  return out;
}

function formatIpv6(bytes: Buffer): string {
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(bytes.readUInt16BE(i));
  // Compress the longest run of zero groups (RFC 5952).
  let bestStart = -1;
  let bestLength = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLength) {
      bestStart = i;
      bestLength = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLength).join(':')}`;
}
