/**
 * Where a REDIRECTed connection was originally going: netfilter keeps it in conntrack and
 * hands it out through getsockopt(fd, SOL_IP, SO_ORIGINAL_DST) (IPv6: SOL_IPV6,
 * IP6T_SO_ORIGINAL_DST, same number). Node has no binding for that, so libc is called
 * through koffi on the socket's file descriptor.
 */

import type { Socket } from 'node:net';
import { isIPv4 } from 'node:net';
import { endianness } from 'node:os';
import koffi from 'koffi';
import { descriptorOf, errnoName, getsockopt } from '../os/libc.js';
import { formatIp } from '../shared/ip.js';
import type { IpFamily } from './types.js';

export interface OriginalDestination {
  address: string;
  port: number;
  family: IpFamily;
}

const SOL_IP = 0;
const SOL_IPV6 = 41;
/** SO_ORIGINAL_DST and IP6T_SO_ORIGINAL_DST, both 80. */
const SO_ORIGINAL_DST = 80;
const SOCKADDR_IN_SIZE = 16;
const SOCKADDR_IN6_SIZE = 28;
const AF_INET = 2;
const AF_INET6 = 10;
const sockaddr = Buffer.alloc(SOCKADDR_IN6_SIZE);

/** The original destination of a socket accepted from a REDIRECT rule. Throws if there is none. */
export function originalDestination(socket: Socket): OriginalDestination {
  const fd = socketFd(socket);
  // A v4 connection accepted on a dual-stack (::) listener has a v6 socket but a v4 conntrack
  // entry; its addresses show as ::ffff:a.b.c.d. Ask the IPv4 table for those. (The peer's
  // address, not ours: Node keeps it, and it is needed anyway; ours would cost a getsockname.)
  const peer = socket.remoteAddress ?? '';
  const v4 = isIPv4(peer) || peer.toLowerCase().startsWith('::ffff:');
  const size = v4 ? SOCKADDR_IN_SIZE : SOCKADDR_IN6_SIZE;
  // One buffer for every call: parseSockaddr copies what it needs out of it.
  const buf = sockaddr.subarray(0, size);
  buf.fill(0);
  const length = [size];
  const rc = getsockopt()(fd, v4 ? SOL_IP : SOL_IPV6, SO_ORIGINAL_DST, buf, length);
  if (rc !== 0) {
    const errno = koffi.errno();
    throw new Error(`getsockopt(SO_ORIGINAL_DST) failed: ${errnoName(errno)} (was the connection redirected?)`);
  }
  return parseSockaddr(buf);
}

function socketFd(socket: Socket): number {
  const fd = descriptorOf(socket);
  if (fd === undefined) {
    throw new Error('original destination: the socket has no file descriptor (closed, or not a TCP socket)');
  }
  return fd;
}

/** Decodes a sockaddr_in or sockaddr_in6 (family in host order, port in network order). */
export function parseSockaddr(buf: Buffer): OriginalDestination {
  const family = endianness() === 'LE' ? buf.readUInt16LE(0) : buf.readUInt16BE(0);
  const port = buf.readUInt16BE(2);
  if (family === AF_INET) return { address: formatIp(buf.subarray(4, 8)), port, family: 4 };
  if (family === AF_INET6 && buf.length >= SOCKADDR_IN6_SIZE) {
    return { address: formatIp(buf.subarray(8, 24)), port, family: 6 };
  }
  throw new Error(`original destination: unexpected address family ${family}`);
}
