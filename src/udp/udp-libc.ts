/**
 * The libc calls behind the transparent UDP sockets, through koffi (Node's dgram can neither set
 * IP_TRANSPARENT before bind nor hand out control messages). Sockets are opened non-blocking and
 * close-on-exec; every failure closes what was opened and throws a UdpSocketError naming the step.
 */
import { endianness } from 'node:os';
import koffi from 'koffi';
import { errnoName, libcFunction } from '../os/libc.js';
import { UdpSocketError } from './errors.js';
import { AF_INET, AF_INET6, encodeSockaddr, type UdpEndpoint, type UdpFamily } from './sockaddr.js';

const SOCK_DGRAM = 2;
const SOCK_NONBLOCK = 0o4000;
const SOCK_CLOEXEC = 0o2000000;
export const SOL_SOCKET = 1;
const SO_REUSEADDR = 2;
const SO_RCVBUF = 8;
const SO_RCVBUFFORCE = 33;
export const SO_RXQ_OVFL = 40;
export const SOL_IP = 0;
const IP_TRANSPARENT = 19;
/** Also the control message's type (IP_ORIGDSTADDR). */
export const IP_RECVORIGDSTADDR = 20;
export const SOL_IPV6 = 41;
const IPV6_V6ONLY = 26;
/** Also the control message's type (IPV6_ORIGDSTADDR). */
export const IPV6_RECVORIGDSTADDR = 74;
const IPV6_TRANSPARENT = 75;
export const MSG_DONTWAIT = 0x40;
export const MSG_TRUNC = 0x20;

export interface UdpLibc {
  socket(domain: number, type: number, protocol: number): number;
  setsockopt(fd: number, level: number, name: number, value: Buffer, length: number): number;
  bind(fd: number, address: Buffer, length: number): number;
  /** `message` is a native pointer (koffi.alloc): the msghdr is built once, not marshalled per call. */
  recvmsg(fd: number, message: bigint, flags: number): number;
  sendto(fd: number, data: Uint8Array, length: number, flags: number, address: Buffer, addressLength: number): number;
  close(fd: number): number;
}

let libc: UdpLibc | undefined;

/**
 * The msghdr and cmsghdr offsets used here (and in fd-passing.ts) are those of 64-bit
 * little-endian Linux (x64, arm64): say so instead of corrupting memory elsewhere.
 */
export function udpLibc(): UdpLibc {
  if (libc) return libc;
  if (process.platform !== 'linux' || koffi.sizeof('size_t') !== 8 || endianness() !== 'LE') {
    throw new UdpSocketError('socket', 'ENOTSUP', 'transparent UDP sockets need 64-bit little-endian Linux');
  }
  // Same signature strings as the other modules where they declare the same call, so libc.ts
  // shares one declaration.
  libc = {
    socket: libcFunction<UdpLibc['socket']>('int socket(int domain, int type, int protocol)'),
    setsockopt: libcFunction<UdpLibc['setsockopt']>('int setsockopt(int fd, int level, int name, const uint8_t *value, uint32_t len)'),
    bind: libcFunction<UdpLibc['bind']>('int bind(int fd, const uint8_t *addr, uint32_t len)'),
    recvmsg: libcFunction<UdpLibc['recvmsg']>('intptr_t recvmsg(int fd, void *msg, int flags)'),
    sendto: libcFunction<UdpLibc['sendto']>(
      'intptr_t sendto(int fd, const uint8_t *buf, uintptr_t len, int flags, const uint8_t *addr, uint32_t addrlen)',
    ),
    close: libcFunction<UdpLibc['close']>('int close(int fd)'),
  };
  return libc;
}

export type TransparentSocketRole =
  | { kind: 'listener'; receiveBufferBytes: number }
  /** A socket that only sends: SO_REUSEADDR because several flows may answer from one address. */
  | { kind: 'reply' };

/**
 * A non-blocking UDP socket with IP_TRANSPARENT (IPV6_TRANSPARENT), bound to `bindTo` — which
 * may be an address this host does not have. A listener also asks for the original destination
 * of each datagram and for the kernel's drop counter.
 */
export function openTransparentSocket(family: UdpFamily, bindTo: UdpEndpoint, role: TransparentSocketRole): number {
  const { socket, close } = udpLibc();
  const what = `${role.kind === 'listener' ? 'the transparent UDP listener' : 'a transparent UDP reply socket'} on ${formatEndpoint(bindTo)}`;
  const sockaddr = encodeSockaddr(family, bindTo);
  const fd = socket(family === 4 ? AF_INET : AF_INET6, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) throw lastError('socket', `cannot open ${what}`);
  try {
    const ip = family === 4 ? SOL_IP : SOL_IPV6;
    // Without V6ONLY an IPv6 socket on a port also claims that port for IPv4, and the IPv4
    // listener next to it fails with EADDRINUSE.
    if (family === 6) setOption(fd, SOL_IPV6, IPV6_V6ONLY, 1, what, 'IPV6_V6ONLY');
    if (role.kind === 'reply') {
      setOption(fd, SOL_SOCKET, SO_REUSEADDR, 1, what, 'SO_REUSEADDR');
      // Nothing is ever read from a reply socket: keep whatever might land in it to one datagram.
      setOption(fd, SOL_SOCKET, SO_RCVBUF, 0, what, 'SO_RCVBUF');
    }
    setOption(fd, ip, family === 4 ? IP_TRANSPARENT : IPV6_TRANSPARENT, 1, what, family === 4 ? 'IP_TRANSPARENT' : 'IPV6_TRANSPARENT');
    if (role.kind === 'listener') {
      setOption(fd, ip, family === 4 ? IP_RECVORIGDSTADDR : IPV6_RECVORIGDSTADDR, 1, what, 'RECVORIGDSTADDR');
      setOption(fd, SOL_SOCKET, SO_RXQ_OVFL, 1, what, 'SO_RXQ_OVFL');
      // The default queue (rmem_default, about 208 KiB of truesize) holds about two 64 KiB
      // datagrams (one takes some 100 KiB); a burst needs more. FORCE may exceed rmem_max and
      // needs CAP_NET_ADMIN, which IP_TRANSPARENT needs anyway; plain SO_RCVBUF (capped at
      // rmem_max) is the fallback.
      if (!trySetOption(fd, SOL_SOCKET, SO_RCVBUFFORCE, role.receiveBufferBytes)) {
        setOption(fd, SOL_SOCKET, SO_RCVBUF, role.receiveBufferBytes, what, 'SO_RCVBUF');
      }
    }
    if (udpLibc().bind(fd, sockaddr, sockaddr.length) !== 0) throw lastError('bind', `cannot open ${what}`);
  } catch (error) {
    close(fd);
    throw error;
  }
  return fd;
}

const optionValue = Buffer.alloc(4);

/**
 * IP_TRANSPARENT (IPV6_TRANSPARENT) on a socket Node opened: a TCP listener that TPROXY may hand
 * connections to (the kernel hands them only to transparent sockets). Throws a UdpSocketError
 * (EPERM without CAP_NET_ADMIN).
 */
export function setTransparent(fd: number, family: UdpFamily, what: string): void {
  setOption(fd, family === 4 ? SOL_IP : SOL_IPV6, family === 4 ? IP_TRANSPARENT : IPV6_TRANSPARENT, 1, what, family === 4 ? 'IP_TRANSPARENT' : 'IPV6_TRANSPARENT');
}

function trySetOption(fd: number, level: number, name: number, value: number): boolean {
  optionValue.writeInt32LE(value, 0);
  return udpLibc().setsockopt(fd, level, name, optionValue, 4) === 0;
}

function setOption(fd: number, level: number, name: number, value: number, what: string, option: string): void {
  if (trySetOption(fd, level, name, value)) return;
  const error = lastError(`setsockopt(${option})`, `cannot open ${what}`);
  if (error.errnoCode === 'EPERM' && option.endsWith('TRANSPARENT')) {
    throw new UdpSocketError(error.syscall, error.errnoCode, `${error.message} (${option} needs CAP_NET_ADMIN: run as root)`);
  }
  throw error;
}

/** A UdpSocketError from the errno koffi saved after the last call; `failure` says what failed. */
export function lastError(syscall: string, failure: string): UdpSocketError {
  const code = errnoName(koffi.errno());
  return new UdpSocketError(syscall, code, `${failure}: ${syscall}: ${code}`);
}

export const formatEndpoint = ({ address, port }: UdpEndpoint): string => (address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`);
