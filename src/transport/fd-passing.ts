import koffi from 'koffi';
import { getsockopt, libcFunction } from '../os/libc.js';

const SOL_SOCKET = 1;
const SCM_RIGHTS = 1;
const IPPROTO_TCP = 6;
const TCP_INFO = 11;
/** Offsets of tcpi_bytes_acked and tcpi_bytes_received in Linux's struct tcp_info (since 4.2). */
const BYTES_ACKED = 120;
const BYTES_RECEIVED = 128;
const TCP_INFO_SIZE = 232;
/** TCP states (tcpi_state) after the peer's FIN: TIME_WAIT, CLOSE_WAIT, LAST_ACK, CLOSING. */
const PEER_FIN_STATES = new Set([6, 8, 9, 11]);
/** States in which our own FIN has been acknowledged: FIN_WAIT2, TIME_WAIT. */
const OUR_FIN_ACKED_STATES = new Set([5, 6]);

interface Libc {
  sendmsg: (fd: number, msg: object, flags: number) => number;
}
let libc: Libc | undefined;

function load(): Libc {
  if (!libc) {
    const iovec = koffi.struct('rxs_iovec', { iov_base: 'void *', iov_len: 'size_t' });
    // Registered by name: the sendmsg prototype below refers to rxs_msghdr.
    koffi.struct('rxs_msghdr', {
      msg_name: 'void *',
      msg_namelen: 'uint32_t',
      msg_iov: koffi.pointer(iovec),
      msg_iovlen: 'size_t',
      msg_control: 'void *',
      msg_controllen: 'size_t',
      msg_flags: 'int',
    });
    libc = {
      sendmsg: libcFunction<Libc['sendmsg']>('intptr_t sendmsg(int fd, const rxs_msghdr *msg, int flags)'),
    };
  }
  return libc;
}

/**
 * Sends `fd` over the Unix socket `via` (SCM_RIGHTS, with one zero byte as OpenSSH's
 * mm_send_fd does). Node has no API for it. Returns false when the kernel refused.
 */
export function sendFd(via: number, fd: number): boolean {
  const { sendmsg } = load();
  const control = Buffer.alloc(24); // CMSG_SPACE(sizeof(int))
  control.writeBigUInt64LE(20n, 0); // CMSG_LEN(sizeof(int))
  control.writeInt32LE(SOL_SOCKET, 8);
  control.writeInt32LE(SCM_RIGHTS, 12);
  control.writeInt32LE(fd, 16);
  const byte = Buffer.alloc(1);
  const message = {
    msg_name: null,
    msg_namelen: 0,
    msg_iov: [{ iov_base: byte, iov_len: 1 }],
    msg_iovlen: 1,
    msg_control: control,
    msg_controllen: control.length,
    msg_flags: 0,
  };
  for (let attempt = 0; attempt < 100; attempt++) {
    if (sendmsg(via, message, 0) === 1) return true;
    if (koffi.errno() !== 11 /* EAGAIN */) return false;
  }
  return false;
}

/** Bytes a TCP socket has had acknowledged (sent) and received, from TCP_INFO; null if unknown. */
export function tcpByteCounts(fd: number): { sent: number; received: number } | null {
  try {
    const info = Buffer.alloc(TCP_INFO_SIZE);
    const length = [TCP_INFO_SIZE];
    if (getsockopt()(fd, IPPROTO_TCP, TCP_INFO, info, length) !== 0 || (length[0] ?? 0) < BYTES_RECEIVED + 8) return null;
    // A FIN takes a sequence number too: leave it out of the byte counts.
    const state = info.readUInt8(0);
    const peerFinReceived = PEER_FIN_STATES.has(state) ? 1 : 0;
    const ourFinAcked = OUR_FIN_ACKED_STATES.has(state) ? 1 : 0;
    return {
      sent: Math.max(0, Number(info.readBigUInt64LE(BYTES_ACKED)) - ourFinAcked),
      received: Math.max(0, Number(info.readBigUInt64LE(BYTES_RECEIVED)) - peerFinReceived),
    };
  } catch {
    return null;
  }
}
