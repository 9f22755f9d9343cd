/**
 * The client's half of UDP through the tunnel (docs/protocol.md, "UDP"): captured datagrams in,
 * frames and reply datagrams out. Pure: the transparent sockets that receive the datagrams and
 * send the replies, and the session that carries the frames, are the caller's.
 */
import createDebug from 'debug';
import { asyncScheduler, Observable, type OperatorFunction, type SchedulerLike, Subscription } from 'rxjs';
import { ProtocolError } from '../shared/errors.js';
import { DatagramQueues, type QueueRefusal } from './datagram-queues.js';
import type { Destination, Frame } from './frame.js';
import { DNS_PORT, encodeUdpClose, encodeUdpData, encodeUdpOpen, MAX_UDP_DATAGRAM, type UdpLimits, type UdpMessage, udpLimits } from './udp.js';

const debug = createDebug('rxshuttle:udp');

/** A datagram a local program sent, captured with its original destination. */
export interface LocalDatagram {
  /** The program's address and port. */
  readonly source: Destination;
  /** Where the program sent it (before the firewall diverted it). */
  readonly destination: Destination;
  readonly data: Buffer;
}

/** Why a flow ended, in the client's words. */
export type UdpCloseReason =
  /** No datagram either way for the idle time. */
  | 'idle'
  /** Closed to make room: the flow limit was reached and this flow had been quiet the longest. */
  | 'evicted'
  /** The server closed it; `detail` says why (an errno name such as ECONNREFUSED, or `idle`). */
  | 'peer'
  /** The operator stopped: the session or the local datagrams ended. */
  | 'ended';

/** Why a datagram was dropped instead of sent. */
export type UdpDropReason = QueueRefusal | 'too-large';

/**
 * What -v can show of UDP, as TCP has 'accept' and 'close'. A flow drops datagrams in episodes:
 * 'udp-drop' comes with the first of each episode (which ends when one of its datagrams is
 * queued again), so a flood costs one event, not one per datagram; 'udp-close' has the total.
 */
export type UdpFlowEvent =
  | { readonly kind: 'udp-open'; readonly id: number; readonly source: Destination; readonly destination: Destination }
  | {
      readonly kind: 'udp-close';
      readonly id: number;
      readonly source: Destination;
      readonly destination: Destination;
      readonly reason: UdpCloseReason;
      readonly detail?: string;
      readonly datagramsSent: number;
      readonly bytesSent: number;
      readonly datagramsReceived: number;
      readonly bytesReceived: number;
      readonly datagramsDropped: number;
    }
  | {
      readonly kind: 'udp-drop';
      readonly id: number;
      readonly source: Destination;
      readonly destination: Destination;
      readonly reason: UdpDropReason;
      /** This flow's drops so far, this one included. */
      readonly datagramsDropped: number;
    };

export type UdpFlowOutput =
  /** To the server, on the control channel. */
  | { readonly kind: 'frame'; readonly frame: Frame }
  /**
   * A datagram for the local program: send `data` to `destination` from `source` (the flow's
   * original destination). `flow` is stable for the flow's life, for keeping a reply socket.
   */
  | { readonly kind: 'reply'; readonly flow: number; readonly source: Destination; readonly destination: Destination; readonly data: Buffer }
  | UdpFlowEvent;

export interface UdpFlowsConfig {
  /** The server's UDP_DATA and UDP_CLOSE, decoded. The flows end when this completes (the session did). */
  readonly fromServer$: Observable<UdpMessage>;
  /** Whether the transport takes more now; datagrams wait (bounded) while it does not. Assumed true until told. */
  readonly writable$: Observable<boolean>;
  readonly limits?: Partial<UdpLimits>;
  readonly scheduler?: SchedulerLike;
}

interface Flow {
  readonly id: number;
  readonly key: string;
  readonly source: Destination;
  readonly destination: Destination;
  readonly idleMs: number;
  lastActive: number;
  /** Encoded when the flow is made, so a destination that cannot be encoded fails there. */
  readonly openFrame: Frame;
  openSent: boolean;
  /** Dropping since its last queued datagram: the next drop is not news. */
  dropping: boolean;
  timer: Subscription;
  datagramsSent: number;
  bytesSent: number;
  datagramsReceived: number;
  bytesReceived: number;
  datagramsDropped: number;
}

const flowKey = (source: Destination, destination: Destination) =>
  `${source.family} ${source.address} ${source.port} ${destination.address} ${destination.port}`;

const MAX_FLOW_ID = 0xffff_ffff;

/**
 * Local datagrams → flows. One flow per (source, destination): its first datagram opens it with
 * UDP_OPEN, every datagram goes out as one UDP_DATA, replies come back as 'reply' outputs.
 *
 * Bounded: at most `maxFlows` flows (a new one closes the flow quiet the longest, see below);
 * while the transport is not writable datagrams wait, per flow and in total within the limits,
 * and are served round-robin when it is; one that does not fit is dropped and counted. UDP_CLOSE
 * frames go first, then UDP_OPENs in id order, then datagrams.
 *
 * At the flow limit the least recently active flow is closed rather than the new datagram
 * dropped: UDP has no other sign of life than traffic, so the quietest flow is the likeliest to be
 * dead (a DNS query from a random port, answered long ago), while refusing new flows would let a
 * table full of such leftovers block every new conversation until they expire. A flow closed this
 * way that speaks again simply opens anew.
 *
 * Flow ids count up from 1 and are never reused: a frame from the server for a flow that has
 * ended is dropped; one for an id whose UDP_OPEN was never sent is a ProtocolError.
 */
export function udpFlows(config: UdpFlowsConfig): OperatorFunction<LocalDatagram, UdpFlowOutput> {
  const limits = udpLimits(config.limits);
  const scheduler = config.scheduler ?? asyncScheduler;
  return (local$) =>
    new Observable<UdpFlowOutput>((out) => {
      /** Every flow, least recently active first (touching one moves it to the end). */
      const byKey = new Map<string, Flow>();
      const byId = new Map<number, Flow>();
      const queues = new DatagramQueues(limits.maxFlowQueuedBytes, limits.maxQueuedBytes);
      /** Flows whose UDP_OPEN has not gone out, in id order (a Set: a flow that closes first leaves it at once). */
      const opens = new Set<Flow>();
      const closes: Frame[] = [];
      let nextId = 1;
      let highestOpenSent = 0;
      let writable = true;
      let pumping = false;

      const pump = () => {
        if (pumping) return;
        pumping = true;
        try {
          while (writable && !out.closed) {
            const close = closes.shift();
            if (close) {
              out.next({ kind: 'frame', frame: close });
              continue;
            }
            const opening = opens.values().next().value;
            if (opening) {
              opens.delete(opening);
              opening.openSent = true;
              highestOpenSent = opening.id;
              out.next({ kind: 'frame', frame: opening.openFrame });
              continue;
            }
            const next = queues.take();
            if (!next) break;
            const flow = byId.get(next.flow) as Flow;
            flow.datagramsSent++;
            flow.bytesSent += next.datagram.length;
            out.next({ kind: 'frame', frame: encodeUdpData(flow.id, next.datagram) });
          }
        } finally {
          pumping = false;
        }
      };

      const touch = (flow: Flow) => {
        flow.lastActive = scheduler.now();
        byKey.delete(flow.key);
        byKey.set(flow.key, flow);
      };

      /** Checks once per idle period, not per datagram: the timer is moved only when it fires early. */
      const watchIdle = (flow: Flow, delay: number) => {
        flow.timer = scheduler.schedule(() => {
          const quiet = scheduler.now() - flow.lastActive;
          if (quiet < flow.idleMs) return watchIdle(flow, flow.idleMs - quiet);
          close(flow, 'idle', { tellServer: 'idle' });
          pump();
        }, delay);
      };

      const close = (flow: Flow, reason: UdpCloseReason, how: { tellServer?: string; detail?: string }) => {
        opens.delete(flow);
        byKey.delete(flow.key);
        byId.delete(flow.id);
        flow.timer.unsubscribe();
        flow.datagramsDropped += queues.discard(flow.id);
        // A flow whose UDP_OPEN was still waiting (it left `opens` above) the server never heard of: nothing to tell.
        if (how.tellServer !== undefined && flow.openSent) closes.push(encodeUdpClose(flow.id, how.tellServer));
        const { id, source, destination, datagramsSent, bytesSent, datagramsReceived, bytesReceived, datagramsDropped } = flow;
        const event = { kind: 'udp-close', id, source, destination, reason, datagramsSent, bytesSent, datagramsReceived, bytesReceived, datagramsDropped } as const;
        out.next(how.detail === undefined ? event : { ...event, detail: how.detail });
      };

      const open = (datagram: LocalDatagram, key: string): Flow | undefined => {
        if (nextId > MAX_FLOW_ID) {
          // Four billion flows in one session: a reconnect starts the ids afresh.
          out.error(new ProtocolError('UDP flow ids used up; the session must start again'));
          return undefined;
        }
        const { source, destination } = datagram;
        const openFrame = encodeUdpOpen(nextId, destination);
        if (byKey.size >= limits.maxFlows) {
          const quietest = byKey.values().next().value as Flow;
          close(quietest, 'evicted', { tellServer: 'evicted' });
        }
        const flow: Flow = {
          id: nextId++,
          key,
          source,
          destination,
          openFrame,
          idleMs: destination.port === DNS_PORT ? limits.dnsIdleMs : limits.idleMs,
          lastActive: scheduler.now(),
          openSent: false,
          dropping: false,
          timer: Subscription.EMPTY,
          datagramsSent: 0,
          bytesSent: 0,
          datagramsReceived: 0,
          bytesReceived: 0,
          datagramsDropped: 0,
        };
        byKey.set(key, flow);
        byId.set(flow.id, flow);
        opens.add(flow);
        out.next({ kind: 'udp-open', id: flow.id, source, destination });
        watchIdle(flow, flow.idleMs);
        return flow;
      };

      const drop = (flow: Flow, reason: UdpDropReason) => {
        flow.datagramsDropped++;
        if (flow.dropping) return;
        flow.dropping = true;
        const { id, source, destination, datagramsDropped } = flow;
        out.next({ kind: 'udp-drop', id, source, destination, reason, datagramsDropped });
      };

      const onLocal = (datagram: LocalDatagram) => {
        const key = flowKey(datagram.source, datagram.destination);
        let flow = byKey.get(key);
        if (flow) touch(flow);
        else flow = open(datagram, key);
        if (!flow) return;
        if (datagram.data.length > MAX_UDP_DATAGRAM) drop(flow, 'too-large');
        else {
          const refusal = queues.offer(flow.id, datagram.data);
          if (refusal) drop(flow, refusal);
          else flow.dropping = false;
        }
        pump();
      };

      const onServer = (message: UdpMessage) => {
        if (message.kind === 'open') return out.error(new ProtocolError('unexpected UDP_OPEN from the server'));
        if (message.flow > highestOpenSent) {
          return out.error(new ProtocolError(`UDP_${message.kind.toUpperCase()} for flow ${message.flow}, which was never opened`));
        }
        const flow = byId.get(message.flow);
        if (!flow) return debug('dropping UDP_%s for finished flow %d', message.kind.toUpperCase(), message.flow);
        if (message.kind === 'close') return close(flow, 'peer', { detail: message.reason });
        touch(flow);
        flow.datagramsReceived++;
        flow.bytesReceived += message.data.length;
        out.next({ kind: 'reply', flow: flow.id, source: flow.destination, destination: flow.source, data: message.data });
      };

      /** Closes every flow; `tellServer`: with a UDP_CLOSE each, sent even if the transport is full (one small frame per flow). */
      const closeAll = (detail: string, tellServer: boolean) => {
        for (const flow of [...byKey.values()]) close(flow, 'ended', tellServer ? { tellServer: 'closed', detail } : { detail });
        if (tellServer) for (const frame of closes.splice(0)) out.next({ kind: 'frame', frame });
        out.complete();
      };

      const subscriptions = new Subscription();
      subscriptions.add(() => {
        for (const flow of byKey.values()) flow.timer.unsubscribe();
      });
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
        config.fromServer$.subscribe({
          next: onServer,
          error: (err: unknown) => out.error(err),
          complete: () => closeAll('session ended', false),
        }),
      );
      subscriptions.add(
        local$.subscribe({
          // A datagram whose addresses do not fit their family is the OS layer's bug: say so loudly.
          next: (datagram) => {
            try {
              onLocal(datagram);
            } catch (err) {
              out.error(err);
            }
          },
          error: (err: unknown) => out.error(err),
          complete: () => closeAll('no more local datagrams', true),
        }),
      );
      return subscriptions;
    });
}
