import type { LookupAddress } from 'node:dns';
import { isIP, type LookupFunction, connect as netConnect, type Socket } from 'node:net';
import { corkForThisTurn } from '../streams/cork.js';
import { sshRandomFill } from './random-pool.js';
import { Ssh2Inbound } from './ssh2-inbound.js';
import type { Ssh2Hooks } from './ssh2-internals.js';
import { Ssh2Outbound } from './ssh2-outbound.js';

/** Bytes read from the ssh socket in one event-loop turn before other sockets get theirs. */
const READ_BYTES_PER_TURN = 512 * 1024;
/** A read at least this large means the socket has a backlog (a bulk transfer). */
const BULK_READ_BYTES = 64 * 1024;
/** Bytes queued on the ssh connection beyond which local readers pause (see SendQueue). */
const SEND_QUEUE_HIGH = 512 * 1024;

/**
 * Whether more than SEND_QUEUE_HIGH bytes wait to go out on the ssh connection. ssh2 itself
 * writes whatever a channel's window allows, however slow the network; senders pause on this
 * instead, which bounds our memory and keeps bulk uploads from queueing ahead of keystrokes.
 */
export interface SendQueue {
  congested(): boolean;
  /** Calls `resume` once, when the queue has drained; returns a cancel. Only paused senders wait. */
  whenDrained(resume: () => void): () => void;
}

/** The ssh connection's TCP socket, the `sock` ssh2 is given, and what paces and batches its bytes. */
export interface Ssh2Socket {
  readonly socket: Socket;
  /** The socket's reads, in reused slabs (followed through ssh2 when hooked). */
  readonly inbound: Ssh2Inbound;
  /** ssh2's packets, in reused slabs (when hooked). */
  readonly outbound: Ssh2Outbound;
  readonly sendQueue: SendQueue;
  /**
   * Call right after `client.connect()`, before anything is read or written: the fast path with
   * ssh2's internals (ssh2-internals.ts), or, without them, ssh2's public API: plain copies of
   * each read pushed into the socket's stream, and ssh2's own writes and packets.
   */
  useHooks(hooks: Ssh2Hooks | undefined): void;
  /** ssh2's 'handshake': a key exchange ended. Returns ssh2's class of the new cipher, if checked. */
  keyExchangeDone(): string | undefined;
}

/**
 * Connects the socket ssh2 will speak over.
 *
 * Reads go into reused slabs (Node's `onread`) and are paced: libuv reads up to 32 times in a
 * row while the socket has data, which at 4 Gbit/s is 8 MiB to decrypt and pass on before any
 * other socket (an interactive one) gets a turn. Writes of one event-loop turn (ssh2 writes each
 * packet by itself, from all channels) leave in one writev.
 */
/**
 * `addresses`: where `host` is, as sshHostInfo found it (connected to without looking the name up
 * again); empty: net.connect looks it up.
 */
export function ssh2Socket(host: string, port: number, addresses: readonly string[] = []): Ssh2Socket {
  const inbound = new Ssh2Inbound();
  const outbound = new Ssh2Outbound(sshRandomFill);
  let hooks: Ssh2Hooks | undefined;
  /** Whether ssh2 gets views of the slabs (fast) or copies (public API); decided at the first read. */
  let viewsToSsh2: boolean | undefined;
  const feed = (view: Buffer) => hooks?.feed(view);
  const decideReads = (): boolean => {
    if (!hooks) return false;
    if (hooks.readsDataEvents()) return true;
    hooks.fallBack("ssh2 does not read its socket's 'data' events");
    return false;
  };
  let readThisTurn = 0;
  let pausedForTurn = false;
  const nextTurn = () => {
    readThisTurn = 0;
    if (!pausedForTurn) return;
    pausedForTurn = false;
    socket.resume();
  };
  const socket: Socket = netConnect({
    host,
    port,
    ...(addresses.length > 0 ? { lookup: knownAddresses(addresses) } : {}),
    onread: {
      buffer: inbound.nextBuffer,
      callback: (bytes: number) => {
        viewsToSsh2 ??= decideReads();
        let more = true;
        if (viewsToSsh2) inbound.read(bytes, feed);
        // Through the stream, as ssh2's public API expects; false: it has enough buffered.
        else more = socket.push(inbound.readCopy(bytes));
        // Small reads (no backlog) are left out: counting them would cost a setImmediate each.
        if (bytes < BULK_READ_BYTES) return more;
        if (readThisTurn === 0) setImmediate(nextTurn);
        readThisTurn += bytes;
        if (readThisTurn < READ_BYTES_PER_TURN) return more;
        pausedForTurn = true;
        return false;
      },
    },
  });
  // Channel opens are small packets answered by small packets: Nagle would hold each for an ACK.
  socket.setNoDelay(true);

  let congested = false;
  const waiting = new Set<() => void>();
  socket.on('drain', () => {
    congested = false;
    const resumes = [...waiting];
    waiting.clear();
    for (const resume of resumes) resume();
  });
  /** Once over the mark, congested until the socket drained (a write then returned false). */
  const checkCongestion = () => {
    if (socket.writableLength > SEND_QUEUE_HIGH) congested = true;
  };
  const sendQueue: SendQueue = {
    // With hooks, each packet's write checks (routeWrites); without, each question does.
    congested: () => {
      if (!hooks) checkCongestion();
      return congested;
    },
    whenDrained(resume) {
      waiting.add(resume);
      return () => waiting.delete(resume);
    },
  };

  return {
    socket,
    inbound,
    outbound,
    sendQueue,
    useHooks(found) {
      hooks = found;
      if (!found) return;
      inbound.hook(found);
      // Packets in reused slabs are released once written.
      found.routeWrites((packet, write) => {
        corkForThisTurn(socket);
        const accepted = outbound.owns(packet) ? write(packet, () => outbound.released(packet)) : write(packet);
        checkCongestion();
        return accepted;
      });
    },
    keyExchangeDone() {
      inbound.keyExchangeDone();
      const cipher = hooks?.cipher();
      if (cipher && !outbound.takeOverCipher(cipher)) hooks?.fallBack(`${cipher.implementation} lays its packets out otherwise than expected`);
      return cipher?.implementation;
    },
  };
}

/**
 * A `lookup` for net.connect that answers with addresses found already (sshHostInfo), so the
 * host name is not looked up a second time.
 */
export function knownAddresses(addresses: readonly string[]): LookupFunction {
  return (hostname, options, callback) => {
    const found = addresses.map((address) => ({ address, family: isIP(address) })).filter((a) => !options.family || a.family === options.family);
    const [first] = found;
    if (first === undefined) {
      const err: NodeJS.ErrnoException = Object.assign(new Error(`getaddrinfo ENOTFOUND ${hostname}`), { code: 'ENOTFOUND', hostname });
      callback(err, '', 0);
    } else if (options.all) {
      (callback as unknown as (err: null, all: LookupAddress[]) => void)(null, found);
    } else {
      callback(null, first.address, first.family);
    }
  };
}
