import { ProtocolError } from '../shared/errors.js';
import { formatIp, parseIp } from '../shared/ip.js';
import type { Destination } from './frame.js';

/** OPEN payload: u8 family (4 or 6), u16 port, then 4 or 16 address bytes. */
export function encodeDestination(dst: Destination): Buffer {
  const address = addressBytes(dst.family, dst.address);
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
  return { family: family as 4 | 6, port, address: formatIp(payload.subarray(3)) };
}

/** The 4 or 16 bytes of an address in text form (throws TypeError when it is not of that family). */
export function addressBytes(family: 4 | 6, address: string): Buffer {
  const parsed = parseIp(address);
  if (parsed?.family !== family) throw new TypeError(`not an IPv${family} address: ${address}`);
  return Buffer.from(parsed.bytes.buffer, parsed.bytes.byteOffset, parsed.bytes.length);
}

/** Text of 4 or 16 address bytes: dotted quad, or RFC 5952 IPv6. */
export const formatAddress = formatIp;

export const formatDestination = (dst: Destination): string =>
  dst.family === 6 ? `[${dst.address}]:${dst.port}` : `${dst.address}:${dst.port}`;

/** `address:port` of a socket's peer, IPv6 in brackets; `?` parts when the socket is gone. */
export const formatPeer = (address: string | undefined, port: number | undefined): string =>
  address?.includes(':') ? `[${address}]:${port ?? '?'}` : `${address ?? '?'}:${port ?? '?'}`;
