/**
 * sockaddr_in / sockaddr_in6 <-> { address, port }, for the UDP sockets that libc serves us
 * through koffi. Linux layout: the family in host order (these machines are little-endian; see
 * udp-libc.ts), the port in network order, then the address (sockaddr_in6 has a 4-byte flow
 * label before it and a scope id after it).
 */
import { formatIp, parseIp } from '../shared/ip.js';

export type UdpFamily = 4 | 6;

export interface UdpEndpoint {
  address: string;
  port: number;
}

export const AF_INET = 2;
export const AF_INET6 = 10;
export const SOCKADDR_IN_SIZE = 16;
export const SOCKADDR_IN6_SIZE = 28;

export const sockaddrSize = (family: UdpFamily): number => (family === 4 ? SOCKADDR_IN_SIZE : SOCKADDR_IN6_SIZE);

/** The sockaddr for `endpoint`; throws a RangeError for an address not of `family` or a bad port. */
export function encodeSockaddr(family: UdpFamily, endpoint: UdpEndpoint): Buffer {
  const ip = parseIp(endpoint.address);
  if (ip === null || ip.family !== family) throw new RangeError(`not an IPv${family} address: ${endpoint.address}`);
  if (!Number.isInteger(endpoint.port) || endpoint.port < 0 || endpoint.port > 0xffff) {
    throw new RangeError(`not a port: ${endpoint.port}`);
  }
  const sockaddr = Buffer.alloc(sockaddrSize(family));
  sockaddr.writeUInt16LE(family === 4 ? AF_INET : AF_INET6, 0);
  sockaddr.writeUInt16BE(endpoint.port, 2);
  sockaddr.set(ip.bytes, family === 4 ? 4 : 8);
  return sockaddr;
}

/**
 * The endpoint in the sockaddr at `offset` of `memory`, or null when it is neither AF_INET nor
 * AF_INET6 or does not fit. Reads in place: the hot path calls this twice per datagram.
 */
export function decodeSockaddr(memory: Buffer, offset: number, length: number): (UdpEndpoint & { family: UdpFamily }) | null {
  if (length < SOCKADDR_IN_SIZE || offset + length > memory.length) return null;
  const family = memory.readUInt16LE(offset);
  const port = memory.readUInt16BE(offset + 2);
  if (family === AF_INET) {
    const at = offset + 4;
    return { family: 4, address: `${memory[at]}.${memory[at + 1]}.${memory[at + 2]}.${memory[at + 3]}`, port };
  }
  if (family === AF_INET6 && length >= SOCKADDR_IN6_SIZE) {
    return { family: 6, address: formatIp(memory.subarray(offset + 8, offset + 24)), port };
  }
  return null;
}
