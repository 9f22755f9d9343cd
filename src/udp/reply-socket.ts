/**
 * Answers a captured UDP flow so the program sees the reply come from the address it wrote to:
 * a transparent socket bound to that (non-local) original destination. One per flow, kept while
 * the flow lives (sshuttle opens and closes one per reply datagram).
 *
 * The socket stays unconnected on purpose: TPROXY's first lookup takes a *connected* socket that
 * matches a packet's four addresses, so a connected reply socket would receive the program's
 * next datagrams instead of the listener. For the same reason the firewall must not divert UDP
 * with `-m socket` (nft `socket transparent`): that match also finds this bound socket.
 *
 * Sends are non-blocking and synchronous (sendto with MSG_DONTWAIT): when the kernel has no room
 * the datagram is dropped and counted — nothing is queued in the process.
 */
import { constants } from 'node:os';
import koffi from 'koffi';
import { errnoName } from '../os/libc.js';
import { UdpSocketError } from './errors.js';
import { encodeSockaddr, type UdpEndpoint, type UdpFamily } from './sockaddr.js';
import { formatEndpoint, MSG_DONTWAIT, openTransparentSocket, udpLibc } from './udp-libc.js';

const EAGAIN = constants.errno.EAGAIN;
const ENOBUFS = constants.errno.ENOBUFS;
const EINTR = constants.errno.EINTR;

export class ReplySocket {
  #fd: number;
  #dropped = 0;
  /** The last destination's sockaddr: a flow answers the same program every time. */
  #lastTo: { address: string; port: number; sockaddr: Buffer } | undefined;

  private constructor(
    readonly family: UdpFamily,
    readonly from: UdpEndpoint,
    fd: number,
  ) {
    this.#fd = fd;
  }

  /** A socket that sends from `from` (an original destination). Throws a UdpSocketError. */
  static open(family: UdpFamily, from: UdpEndpoint): ReplySocket {
    // Port 0 would bind an ephemeral port: the reply would come from the wrong place.
    if (from.port === 0) throw new UdpSocketError('bind', 'EINVAL', `cannot answer from ${formatEndpoint(from)}: port 0`);
    return new ReplySocket(family, from, openTransparentSocket(family, from, { kind: 'reply' }));
  }

  /** Datagrams the kernel had no room for (EAGAIN, ENOBUFS), since the socket opened. */
  get dropped(): number {
    return this.#dropped;
  }

  get closed(): boolean {
    return this.#fd < 0;
  }

  /**
   * Sends `data` as one datagram to `to`, from `from`. Returns false when the kernel had no room
   * (the datagram is dropped and counted); throws a UdpSocketError for any other failure
   * (EMSGSIZE, EPERM from a firewall rule…) and after close().
   */
  send(data: Uint8Array, to: UdpEndpoint): boolean {
    const failure = `cannot send from ${formatEndpoint(this.from)} to ${formatEndpoint(to)}`;
    if (this.#fd < 0) throw new UdpSocketError('sendto', 'EBADF', `${failure}: the reply socket is closed`);
    let last = this.#lastTo;
    if (last?.address !== to.address || last.port !== to.port) {
      last = { address: to.address, port: to.port, sockaddr: encodeSockaddr(this.family, to) };
      this.#lastTo = last;
    }
    const { sendto } = udpLibc();
    for (;;) {
      if (sendto(this.#fd, data, data.length, MSG_DONTWAIT, last.sockaddr, last.sockaddr.length) >= 0) return true;
      const errno = koffi.errno();
      if (errno === EINTR) continue;
      if (errno === EAGAIN || errno === ENOBUFS) {
        this.#dropped++;
        return false;
      }
      const code = errnoName(errno);
      throw new UdpSocketError('sendto', code, `${failure}: sendto: ${code}`);
    }
  }

  /** Closes the socket; a second call does nothing. */
  close(): void {
    if (this.#fd < 0) return;
    udpLibc().close(this.#fd);
    this.#fd = -1;
  }
}
