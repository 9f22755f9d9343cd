/**
 * Reads datagrams with their original destination from a transparent UDP listener: one
 * non-blocking recvmsg per datagram into native memory that holds the msghdr, its iovec, the
 * source sockaddr, the control messages and a 64 KiB data area. The msghdr's pointers are written
 * once, so a read is a single FFI call with three plain arguments and no struct marshalling;
 * the datagram is copied out (the area is reused by the next read).
 */
import { constants } from 'node:os';
import koffi from 'koffi';
import { decodeSockaddr, SOCKADDR_IN6_SIZE, type UdpEndpoint } from './sockaddr.js';
import {
  formatEndpoint,
  IP_RECVORIGDSTADDR,
  IPV6_RECVORIGDSTADDR,
  lastError,
  MSG_DONTWAIT,
  MSG_TRUNC,
  SO_RXQ_OVFL,
  SOL_IP,
  SOL_IPV6,
  SOL_SOCKET,
  udpLibc,
} from './udp-libc.js';

export interface TransparentDatagram {
  data: Buffer;
  /** The program that sent it. */
  source: UdpEndpoint;
  /** Where the program sent it: the original destination, before TPROXY diverted it to us. */
  destination: UdpEndpoint;
  /**
   * Datagrams this listener has lost since it opened: dropped by the kernel because the receive
   * queue was full (SO_RXQ_OVFL: the count as of when this datagram was queued, so drops show up
   * on the first datagram that arrives after them), plus any read but unusable (truncated, or
   * without an original destination). A running total; take differences for losses per interval.
   */
  dropped: number;
}

// struct msghdr on 64-bit Linux (udpLibc() refuses anything else).
const MSG_NAME = 0;
const MSG_NAMELEN = 8;
const MSG_IOV = 16;
const MSG_IOVLEN = 24;
const MSG_CONTROL = 32;
const MSG_CONTROLLEN = 40;
const MSG_FLAGS = 48;
const IOVEC = 56;
const NAME = 72;
const NAME_SPACE = 32;
const CONTROL = 104;
/** IPV6_ORIGDSTADDR (CMSG_SPACE(28) = 48) and SO_RXQ_OVFL (CMSG_SPACE(4) = 24), with room to spare. */
const CONTROL_SPACE = 152;
const DATA = 256;
/** More than the largest UDP payload (65 507 bytes over IPv4, 65 527 over IPv6 without jumbograms). */
const DATA_SPACE = 65_536;
const BLOCK_SIZE = DATA + DATA_SPACE;
const CMSG_HEADER = 16;

const EAGAIN = constants.errno.EAGAIN;
const EINTR = constants.errno.EINTR;

export class DatagramReader {
  readonly #fd: number;
  readonly #what: string;
  #pointer: bigint | null;
  /** The native block, seen from JS without a copy. Must not be touched once freed. */
  readonly #memory: Buffer;
  #kernelDrops = 0;
  #discarded = 0;

  constructor(fd: number, bound: UdpEndpoint) {
    this.#fd = fd;
    this.#what = `the transparent UDP listener on ${formatEndpoint(bound)}`;
    const pointer = koffi.alloc('uint8_t', BLOCK_SIZE) as bigint;
    this.#pointer = pointer;
    this.#memory = Buffer.from(koffi.view(pointer, BLOCK_SIZE));
    const memory = this.#memory;
    memory.fill(0, 0, DATA);
    memory.writeBigUInt64LE(pointer + BigInt(NAME), MSG_NAME);
    memory.writeBigUInt64LE(pointer + BigInt(IOVEC), MSG_IOV);
    memory.writeBigUInt64LE(1n, MSG_IOVLEN);
    memory.writeBigUInt64LE(pointer + BigInt(CONTROL), MSG_CONTROL);
    memory.writeBigUInt64LE(pointer + BigInt(DATA), IOVEC);
    memory.writeBigUInt64LE(BigInt(DATA_SPACE), IOVEC + 8);
  }

  /** The losses counted so far (see TransparentDatagram.dropped). */
  get dropped(): number {
    return this.#kernelDrops + this.#discarded;
  }

  /**
   * The next waiting datagram, or null when none waits. Throws a UdpSocketError when the socket
   * fails (anything but EAGAIN); unusable datagrams are counted and skipped.
   */
  read(): TransparentDatagram | null {
    if (this.#pointer === null) throw new Error('DatagramReader: read after free');
    const { recvmsg } = udpLibc();
    const memory = this.#memory;
    for (;;) {
      // The kernel writes back how much of each area it used: give the whole areas again.
      memory.writeUInt32LE(NAME_SPACE, MSG_NAMELEN);
      memory.writeBigUInt64LE(BigInt(CONTROL_SPACE), MSG_CONTROLLEN);
      const length = recvmsg(this.#fd, this.#pointer, MSG_DONTWAIT);
      if (length < 0) {
        const errno = koffi.errno();
        if (errno === EAGAIN) return null;
        if (errno === EINTR) continue;
        throw lastError('recvmsg', `cannot read from ${this.#what}`);
      }
      const destination = this.#parseControl(Number(memory.readBigUInt64LE(MSG_CONTROLLEN)));
      const source = decodeSockaddr(memory, NAME, Math.min(memory.readUInt32LE(MSG_NAMELEN), SOCKADDR_IN6_SIZE));
      if ((memory.readInt32LE(MSG_FLAGS) & MSG_TRUNC) !== 0 || destination === null || source === null) {
        this.#discarded++;
        continue;
      }
      return {
        data: Buffer.from(memory.subarray(DATA, DATA + length)),
        source: { address: source.address, port: source.port },
        destination,
        dropped: this.dropped,
      };
    }
  }

  /** Walks the control messages: the original destination, and the kernel's drop counter if present. */
  #parseControl(controlLength: number): UdpEndpoint | null {
    const memory = this.#memory;
    const end = CONTROL + Math.min(controlLength, CONTROL_SPACE);
    let destination: UdpEndpoint | null = null;
    for (let at = CONTROL; at + CMSG_HEADER <= end; ) {
      const length = Number(memory.readBigUInt64LE(at));
      if (length < CMSG_HEADER || at + length > end) break;
      const level = memory.readInt32LE(at + 8);
      const type = memory.readInt32LE(at + 12);
      if ((level === SOL_IP && type === IP_RECVORIGDSTADDR) || (level === SOL_IPV6 && type === IPV6_RECVORIGDSTADDR)) {
        const found = decodeSockaddr(memory, at + CMSG_HEADER, length - CMSG_HEADER);
        if (found) destination = { address: found.address, port: found.port };
      } else if (level === SOL_SOCKET && type === SO_RXQ_OVFL && length >= CMSG_HEADER + 4) {
        // The kernel's count is a running total (a u32): it arrives only once it is non-zero.
        this.#kernelDrops = memory.readUInt32LE(at + CMSG_HEADER);
      }
      at += (length + 7) & ~7;
    }
    return destination;
  }

  /** Releases the native block. The socket is the caller's to close. */
  free(): void {
    if (this.#pointer === null) return;
    koffi.free(this.#pointer);
    this.#pointer = null;
  }
}
