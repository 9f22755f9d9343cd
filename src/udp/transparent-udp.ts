/**
 * The UDP side of `--method tproxy`: a transparent listener on the TPROXY on-port that hands out
 * every datagram with its source and its original destination (IP_RECVORIGDSTADDR).
 *
 * How it reads without blocking the event loop or the thread pool
 * ---------------------------------------------------------------
 * Node's dgram reads with recvmmsg/recvmsg but throws the control messages away, so it cannot
 * learn the original destination, and no public Node API waits for readiness of a descriptor it
 * did not create. koffi (3.x) has one: `koffi.node.poll(fd)`, a libuv uv_poll_t on Node's own
 * loop — the same epoll that serves every Node socket. So: the socket is opened through libc
 * (udp-libc.ts), the loop reports it readable, and the callback drains it with non-blocking
 * recvmsg calls (datagram-reader.ts), at most READS_PER_WAKE per turn; epoll is level-triggered,
 * so what is left is reported again on the next turn, after the loop's other work. No thread is
 * involved, no datagram is queued in the process, and closing is two synchronous calls (the
 * poll handle leaves epoll in uv_close, then close(2)).
 *
 * Measured (2-CPU VM shared with other jobs, Node 20.20, through TPROXY in a namespace; see
 * test/udp/transparent.netns.test.ts): one 64 B datagram at a time, echoed by a ReplySocket,
 * p50 30–46 µs and 7 000–17 000 round trips/s, where two plain dgram sockets (no TPROXY) get
 * p50 27–49 µs and 9 000–23 000/s; tails (p99 0.1–2.5 ms) follow the machine's load for both.
 * 65 000 B at a time: p50 83–114 µs. A 512 B burst of 20 000 from another process, at whatever
 * the sender managed (28 000–71 000/s): all received, or the rest dropped by the kernel and
 * counted (150 in one run of six); 6.9–9.2 µs of process CPU per datagram (dgram: 7.0–10 µs).
 * A full kernel queue is emptied at 65 000–119 000 datagrams/s.
 *
 * Rejected:
 * - dgram with setsockopt on its descriptor: the datagrams arrive, their original destination
 *   does not (libuv's recvmsg passes no control buffer). Asking conntrack afterwards cannot tell
 *   which of a source port's destinations a datagram was for: one socket may talk to many.
 * - koffi `.async` blocking recvmsg: it runs on libuv's thread pool (napi async work) and holds a
 *   pool thread for as long as no datagram comes, i.e. for ever. Measured: with four such
 *   listeners (UDP and DNS, two families each) fs.readFile waited until they were released
 *   (over 2 s; with three it took 2 ms). close(2) does not wake a blocked recvmsg (shutdown(2)
 *   does), and a process that called process.exit() with one stuck on a closed descriptor was
 *   still hanging ten minutes later. Round trips were no faster than with uv_poll.
 * - a worker_thread owning a blocking loop: measured 12 MiB more RSS and 320 ms before it could
 *   read; a datagram per postMessage (or a SharedArrayBuffer ring) on top; and while it sits in a
 *   native recvmsg neither process.exit() (still hanging after 5 s) nor worker.terminate() (not
 *   resolved after 2 s) gets it out: every path would have to wake it first.
 * - O_ASYNC/SIGIO (not built): no thread, but a process-wide signal per datagram, and Node's
 *   signal handles do not keep the process alive, so something else would have to.
 *
 * koffi calls its poll API not yet documented and liable to change (CHANGELOG, 2.15.0): it is
 * what 3.3.4 ships, the typing below follows its source, and the tests here exercise it.
 *
 * Bounded memory: the only queue is the socket's kernel receive queue (receiveBufferBytes). When
 * the consumer falls behind — a busy loop, or `paused$` saying stop — the kernel drops what does
 * not fit and counts it; each datagram carries that running count (`dropped`).
 *
 * Sockets need CAP_NET_ADMIN (IP_TRANSPARENT); the firewall's TPROXY rule should name the
 * listener's address (`--on-ip 127.0.0.1`, nft `tproxy ip to 127.0.0.1:port`), since a listener
 * bound to loopback is only found for traffic arriving on other interfaces that way. A datagram
 * sent straight to the listener's own address arrives with that address as its destination.
 */
import koffi from 'koffi';
import { Observable } from 'rxjs';
import { errnoName } from '../os/libc.js';
import { DatagramReader, type TransparentDatagram } from './datagram-reader.js';
import { UdpSocketError } from './errors.js';
import type { UdpEndpoint, UdpFamily } from './sockaddr.js';
import { formatEndpoint, openTransparentSocket, udpLibc } from './udp-libc.js';

export type { TransparentDatagram } from './datagram-reader.js';
export type { UdpEndpoint, UdpFamily } from './sockaddr.js';

export interface TransparentUdpOptions {
  /** The address to bind; loopback (127.0.0.1, ::1) unless given. */
  address?: string;
  /**
   * The kernel receive queue (SO_RCVBUF, which the kernel doubles for bookkeeping): what a burst
   * may hold before datagrams are dropped. 4 MiB unless given.
   */
  receiveBufferBytes?: number;
  /**
   * While the latest value is true the socket is not read: datagrams wait in the kernel queue
   * and, once it is full, are dropped and counted. The consumer's credit drives this. While
   * paused, the listener does not keep the process alive.
   */
  paused$?: Observable<boolean>;
}

/** Datagrams read per readiness report before the loop gets a turn. */
const READS_PER_WAKE = 64;
const DEFAULT_RECEIVE_BUFFER = 4 * 1024 * 1024;

/**
 * koffi's typings declare the callback as `(events) => void`; the native code (koffi 3.3.4
 * src/koffi/src/uv.cc, PollHandle::OnPoll) calls it with libuv's status first.
 */
type PollCallback = (status: number, events: { readable: boolean }) => void;
interface PollHandle {
  start(options: { readable: boolean }, callback: PollCallback): void;
  stop(): void;
  close(): void;
}
const pollReadable = koffi.node.poll as unknown as (fd: number, options: { readable: boolean }, callback: PollCallback) => PollHandle;

/**
 * The datagrams arriving at the TPROXY on-port `port`, each with its original destination.
 * Opens the socket on subscribe (an open failure is the stream's error: a UdpSocketError) and
 * closes it on unsubscribe, error or completion. It never completes by itself.
 */
export function transparentUdp$(family: UdpFamily, port: number, options: TransparentUdpOptions = {}): Observable<TransparentDatagram> {
  const bound: UdpEndpoint = { address: options.address ?? (family === 4 ? '127.0.0.1' : '::1'), port };
  const receiveBufferBytes = options.receiveBufferBytes ?? DEFAULT_RECEIVE_BUFFER;
  return new Observable<TransparentDatagram>((subscriber) => {
    let fd: number;
    try {
      fd = openTransparentSocket(family, bound, { kind: 'listener', receiveBufferBytes });
    } catch (error) {
      subscriber.error(error);
      return;
    }
    let reader: DatagramReader;
    try {
      reader = new DatagramReader(fd, bound);
    } catch (error) {
      udpLibc().close(fd);
      subscriber.error(error);
      return;
    }
    let paused = false;

    const onReadable: PollCallback = (status) => {
      if (status < 0) {
        const code = errnoName(-status);
        subscriber.error(new UdpSocketError('poll', code, `cannot wait for ${formatEndpoint(bound)}: ${code}`));
        return;
      }
      // next() may unsubscribe (which frees the reader) or pause: check before every read.
      for (let reads = 0; reads < READS_PER_WAKE && !subscriber.closed && !paused; reads++) {
        let datagram: TransparentDatagram | null;
        try {
          datagram = reader.read();
        } catch (error) {
          subscriber.error(error);
          return;
        }
        if (datagram === null) return;
        subscriber.next(datagram);
      }
    };

    let poll: PollHandle;
    try {
      poll = pollReadable(fd, { readable: true }, onReadable);
    } catch (error) {
      udpLibc().close(fd);
      reader.free();
      subscriber.error(error);
      return;
    }
    const pausing = options.paused$?.subscribe({
      next: (pause) => {
        paused = pause;
        if (pause) poll.stop();
        else poll.start({ readable: true }, onReadable);
      },
      error: (error: unknown) => subscriber.error(error),
    });

    return () => {
      pausing?.unsubscribe();
      // uv_close takes the descriptor out of epoll at once, so closing it next is safe.
      poll.close();
      udpLibc().close(fd);
      reader.free();
    };
  });
}
