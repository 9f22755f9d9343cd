/**
 * The server's half of UDP through the tunnel (docs/protocol.md, "UDP"): a UDP_OPEN becomes a
 * dgram socket of our own, connected to the flow's destination; the client's UDP_DATA are sent
 * from it, what the destination answers goes back as UDP_DATA, and a flow that idles or fails
 * ends with UDP_CLOSE and the reason. Runs on the remote host: Node built-ins only.
 *
 * Connected sockets, one per flow, because:
 * - the kernel reports ICMP errors (port or host unreachable) only to a connected UDP socket, as
 *   ECONNREFUSED / EHOSTUNREACH on its next receive: that is how a flow learns its destination is
 *   not there, at once instead of after the idle time;
 * - only the destination's datagrams arrive, so nothing from elsewhere can be passed off as a
 *   reply (the client sends every reply from the flow's destination address anyway);
 * - each flow has a port of its own, as a NAT would give it, so the destination can tell flows
 *   apart and answers reach the right one.
 */
import { createSocket, type Socket } from 'node:dgram';
import createDebug from 'debug';
import { asyncScheduler, Observable, type SchedulerLike, Subscription } from 'rxjs';
import { ProtocolError } from '../shared/errors.js';
import { DatagramQueues } from '../streams/datagram-queues.js';
import type { Destination, Frame } from '../streams/frame.js';
import { DEFAULT_UDP_LIMITS, DNS_PORT, encodeUdpClose, encodeUdpData, QUEUED_DATAGRAM_OVERHEAD, type UdpLimits, type UdpMessage, udpLimits } from '../streams/udp.js';

const debug = createDebug('rxshuttle:udp-relay');

/**
 * The client decides when a flow is idle (it sees both directions first-hand and closes with
 * UDP_CLOSE); the server waits twice as long, so its timer only reclaims flows a client left open.
 */
export const SERVER_UDP_LIMITS: UdpLimits = {
  ...DEFAULT_UDP_LIMITS,
  idleMs: 2 * DEFAULT_UDP_LIMITS.idleMs,
  dnsIdleMs: 2 * DEFAULT_UDP_LIMITS.dnsIdleMs,
};

/**
 * Send errors that lose one datagram but say nothing about the flow: too large for the path
 * (an IPv4 destination and a datagram over 65 507 bytes), or no buffer space just now.
 */
const DATAGRAM_ERRORS = new Set(['EMSGSIZE', 'ENOBUFS', 'EAGAIN', 'EWOULDBLOCK']);

export interface UdpRelayConfig {
  /** The client's UDP_OPEN, UDP_DATA and UDP_CLOSE, decoded. Every flow ends when this completes. */
  readonly messages$: Observable<UdpMessage>;
  /** Whether the transport to the client takes more; replies wait (bounded) while it does not. */
  readonly writable$: Observable<boolean>;
  readonly limits?: Partial<UdpLimits>;
  readonly scheduler?: SchedulerLike;
}

interface RelayFlow {
  readonly id: number;
  readonly destination: Destination;
  readonly socket: Socket;
  readonly idleMs: number;
  lastActive: number;
  timer: Subscription;
  /** Datagrams that came before the socket was connected (a connecting socket cannot send). */
  early: Buffer[] | undefined;
  /** Bytes waiting to be sent: in `early`, or queued in libuv because the kernel had no room. */
  unsent: number;
  closed: boolean;
}

const errnoCode = (err: unknown): string => (err as NodeJS.ErrnoException | undefined)?.code ?? 'EIO';
const sendCost = (data: Buffer) => data.length + QUEUED_DATAGRAM_OVERHEAD;

/**
 * Frames for the client: UDP_DATA with replies, UDP_CLOSE for flows that ended here. Errors with
 * a ProtocolError when the client breaks the flow-id rules: a UDP_OPEN must use an id above every
 * one before it; UDP_DATA or UDP_CLOSE for a finished flow is dropped, for an id never opened an
 * error. Completes when `messages$` does, with every socket closed.
 *
 * Bounded like the client: at most `maxFlows` sockets (a UDP_OPEN beyond is answered with
 * UDP_CLOSE: the client, which keeps the same limit, decides which flow to give up); bytes not yet
 * sent to destinations, and replies waiting for the transport, each within the per-flow and total
 * limits; anything beyond is dropped.
 */
export function udpRelay(config: UdpRelayConfig): Observable<Frame> {
  const limits = udpLimits({ ...SERVER_UDP_LIMITS, ...config.limits });
  const scheduler = config.scheduler ?? asyncScheduler;
  return new Observable<Frame>((out) => {
    const flows = new Map<number, RelayFlow>();
    const replies = new DatagramQueues(limits.maxFlowQueuedBytes, limits.maxQueuedBytes);
    const closes: Frame[] = [];
    let highestId = 0;
    let unsentTotal = 0;
    let writable = true;
    let pumping = false;

    const pump = () => {
      if (pumping) return;
      pumping = true;
      try {
        while (writable && !out.closed) {
          const close = closes.shift();
          if (close) {
            out.next(close);
            continue;
          }
          const next = replies.take();
          if (!next) break;
          out.next(encodeUdpData(next.flow, next.datagram));
        }
      } finally {
        pumping = false;
      }
    };

    const tellClient = (id: number, reason: string) => {
      // Closes pile up only while the client does not read. Past one per possible flow the rest
      // are left out: such a flow ends on the client when it idles, and what it sends meanwhile
      // is dropped here as a frame for a finished flow.
      if (closes.length >= limits.maxFlows) return debug('dropping UDP_CLOSE for flow %d: too many waiting', id);
      closes.push(encodeUdpClose(id, reason));
      pump();
    };

    /** Ends a flow here; `reason`: tell the client why (absent when the client closed it). */
    const close = (flow: RelayFlow, reason?: string) => {
      if (flow.closed) return;
      flow.closed = true;
      flows.delete(flow.id);
      flow.timer.unsubscribe();
      unsentTotal -= flow.unsent;
      replies.discard(flow.id);
      try {
        flow.socket.close();
      } catch (err) {
        // Node refuses to close a socket twice; that it is gone is all we wanted.
        debug('flow %d: closing its socket: %s', flow.id, errnoCode(err));
      }
      debug('flow %d closed: %s', flow.id, reason ?? 'by the client');
      if (reason !== undefined) tellClient(flow.id, reason);
    };

    const watchIdle = (flow: RelayFlow, delay: number) => {
      flow.timer = scheduler.schedule(() => {
        const quiet = scheduler.now() - flow.lastActive;
        if (quiet >= flow.idleMs) close(flow, 'idle');
        else watchIdle(flow, flow.idleMs - quiet);
      }, delay);
    };

    const account = (flow: RelayFlow, bytes: number) => {
      flow.unsent += bytes;
      unsentTotal += bytes;
    };

    /**
     * Hands a datagram to the socket. Node first tries to send at once; only what the kernel had
     * no room for waits in libuv's queue (getSendQueueCount goes up), and only that counts
     * against the bounds, so a burst the kernel takes is never dropped here. A node without
     * getSendQueueCount (older than 16.19) makes us count every datagram until its callback.
     */
    const transmit = (flow: RelayFlow, data: Buffer) => {
      const { socket } = flow;
      const countable = typeof socket.getSendQueueCount === 'function';
      const before = countable ? socket.getSendQueueCount() : 0;
      let waits = false;
      try {
        socket.send(data, (err) => {
          if (flow.closed) return;
          if (waits) account(flow, -sendCost(data));
          if (!err) return;
          if (DATAGRAM_ERRORS.has(errnoCode(err))) debug('flow %d: a datagram of %d bytes lost: %s', flow.id, data.length, errnoCode(err));
          else close(flow, errnoCode(err));
        });
      } catch (err) {
        return close(flow, errnoCode(err));
      }
      waits = !countable || socket.getSendQueueCount() > before;
      if (waits) account(flow, sendCost(data));
    };

    const open = (id: number, destination: Destination) => {
      if (id <= highestId) return out.error(new ProtocolError(`UDP_OPEN for flow ${id}: ids must go up (the last was ${highestId})`));
      highestId = id;
      if (flows.size >= limits.maxFlows) return tellClient(id, `the server has ${limits.maxFlows} UDP flows open`);
      let socket: Socket;
      try {
        socket = createSocket(destination.family === 6 ? 'udp6' : 'udp4');
      } catch (err) {
        return tellClient(id, errnoCode(err));
      }
      const flow: RelayFlow = {
        id,
        destination,
        socket,
        idleMs: destination.port === DNS_PORT ? limits.dnsIdleMs : limits.idleMs,
        lastActive: scheduler.now(),
        timer: Subscription.EMPTY,
        early: [],
        unsent: 0,
        closed: false,
      };
      flows.set(id, flow);
      socket.on('message', (data) => {
        if (flow.closed) return;
        flow.lastActive = scheduler.now();
        const refusal = replies.offer(id, data);
        if (refusal) debug('flow %d: reply of %d bytes dropped (%s)', id, data.length, refusal);
        else pump();
      });
      // ICMP unreachable and the like arrive here (connected socket): the flow is over.
      socket.on('error', (err) => close(flow, errnoCode(err)));
      socket.connect(destination.port, destination.address, (err?: unknown) => {
        if (flow.closed) return;
        if (err) return close(flow, errnoCode(err));
        const early = flow.early ?? [];
        flow.early = undefined;
        for (const data of early) {
          if (flow.closed) break;
          account(flow, -sendCost(data));
          transmit(flow, data);
        }
      });
      watchIdle(flow, flow.idleMs);
    };

    const onData = (flow: RelayFlow, data: Buffer) => {
      flow.lastActive = scheduler.now();
      const cost = sendCost(data);
      if (flow.unsent + cost > limits.maxFlowQueuedBytes || unsentTotal + cost > limits.maxQueuedBytes) {
        return debug('flow %d: datagram of %d bytes dropped (%d bytes wait to be sent)', flow.id, data.length, flow.unsent);
      }
      if (!flow.early) return transmit(flow, data);
      flow.early.push(data);
      account(flow, cost);
    };

    const onMessage = (message: UdpMessage) => {
      if (message.kind === 'open') return open(message.flow, message.destination);
      const flow = flows.get(message.flow);
      if (!flow) {
        if (message.flow > highestId) {
          return out.error(new ProtocolError(`UDP_${message.kind.toUpperCase()} for flow ${message.flow}, which was never opened`));
        }
        return debug('dropping UDP_%s for finished flow %d', message.kind.toUpperCase(), message.flow);
      }
      if (message.kind === 'close') close(flow);
      else onData(flow, message.data);
    };

    const closeAll = () => {
      for (const flow of [...flows.values()]) close(flow);
    };

    const subscriptions = new Subscription();
    subscriptions.add(closeAll);
    subscriptions.add(
      config.writable$.subscribe({
        next: (value) => {
          writable = value;
          pump();
        },
        error: (err: unknown) => out.error(err),
      }),
    );
    subscriptions.add(
      config.messages$.subscribe({
        next: onMessage,
        error: (err: unknown) => out.error(err),
        complete: () => {
          closeAll();
          out.complete();
        },
      }),
    );
    return subscriptions;
  });
}
