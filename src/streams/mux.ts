import createDebug from 'debug';
import { EMPTY, map, merge, Observable, Subject, Subscription, takeUntil } from 'rxjs';
import { ProtocolError } from '../shared/errors.js';
import {
  type ChannelInput,
  type ChannelOutput,
  type CloseReason,
  channelMachine,
  type LocalAction,
  type LocalEvent,
  openDestination,
} from './channel.js';
import { SESSION_CREDIT_BATCH } from './defaults.js';
import { decodeHost, decodeHostsRequest, decodeRoutes, type HostEntry, type Route } from './discovery.js';
import { type DnsReply, type DnsRequest, decodeDnsReply, decodeDnsRequest } from './dns.js';
import { CONTROL_CHANNEL, Command, commandName, type Destination, type Frame, frame } from './frame.js';
import { decodeUdpMessage, isUdpCommand, type UdpMessage } from './udp.js';

const debug = createDebug('rxshuttle:mux');

/** The I/O edge of a channel: a socket seen as events in and actions out. */
export interface LocalEnd {
  readonly events$: Observable<LocalEvent>;
  perform(action: LocalAction): void;
}

/** A redirected socket the client accepted, with where it was going. */
export interface AcceptedConnection extends LocalEnd {
  readonly destination: Destination;
  readonly source: string;
}

export type MuxEvent =
  | { readonly kind: 'open'; readonly id: number; readonly destination: Destination; readonly source?: string }
  | {
      readonly kind: 'close';
      readonly id: number;
      readonly destination: Destination;
      readonly reason: CloseReason;
      readonly detail?: string;
      readonly bytesSent: number;
      readonly bytesReceived: number;
    }
  | { readonly kind: 'pong'; readonly payload: Buffer }
  /** The peer has received this many more DATA bytes (session-level credit, CREDIT on channel 0). */
  | { readonly kind: 'session-credit'; readonly bytes: number }
  | { readonly kind: 'exit'; readonly reason: string }
  /** Server: the client asks for a DNS query (--dns). */
  | { readonly kind: 'dns-request'; readonly request: DnsRequest }
  /** Client: the answer to a DNS query, or why there is none. */
  | DnsReply
  /** Server: the client asks for the routing table (-N). */
  | { readonly kind: 'routes-request' }
  /** Client: the server's routes. */
  | { readonly kind: 'routes'; readonly routes: readonly Route[] }
  /** Server: the client asks for host discovery (-H), starting from these names. */
  | { readonly kind: 'hosts-request'; readonly seeds: readonly string[] }
  /** Client: a host the server found. */
  | { readonly kind: 'host'; readonly host: HostEntry }
  /**
   * A UDP frame (server: UDP_OPEN, UDP_DATA, UDP_CLOSE; client: UDP_DATA, UDP_CLOSE), decoded.
   * Which flow ids exist is for the UDP layer to judge (udp-flows.ts, remote/udp.ts), not the mux.
   */
  | { readonly kind: 'udp'; readonly message: UdpMessage };

export type MuxOutput = { readonly kind: 'frame'; readonly frame: Frame } | MuxEvent;

export interface MuxConfig {
  readonly role: 'client' | 'server';
  /** Frames from the peer, already decoded. The session ends when this completes. */
  readonly inbound$: Observable<Frame>;
  /** Client: redirected sockets to carry. */
  readonly accepted$?: Observable<AcceptedConnection>;
  /** Server: opens the real connection for an OPEN. */
  readonly dial?: (destination: Destination) => LocalEnd;
  /** Frames to send on the control channel (ping, exit). */
  readonly control$?: Observable<Frame>;
  /** The peer's receive window (from its hello) and ours. */
  readonly sendWindow: number;
  readonly recvWindow: number;
}

/**
 * The multiplexer: every channel's frames merged into one outbound stream, inbound frames routed to
 * their channel by id. Channel ids are chosen by the client, start at 1 and are never reused, so a
 * frame for a finished channel (still in flight when it ended) is recognised and dropped; a frame
 * for a channel that never existed is a protocol violation.
 */
export function runMux(config: MuxConfig): Observable<MuxOutput> {
  return new Observable<MuxOutput>((out) => {
    const { role, sendWindow, recvWindow } = config;
    const channels = new Map<number, Subject<ChannelInput>>();
    const subscriptions = new Subscription();
    let highestId = 0;
    const sessionEnd = new Subject<void>();

    const startChannel = (id: number, end: LocalEnd, destination: Destination, source?: string) => {
      const peerInput = new Subject<ChannelInput>();
      channels.set(id, peerInput);
      highestId = Math.max(highestId, id);
      out.next(source === undefined ? { kind: 'open', id, destination } : { kind: 'open', id, destination, source });
      let bytesSent = 0;
      let bytesReceived = 0;
      const local$ = end.events$.pipe(map((event): ChannelInput => ({ from: 'local', event })));
      const machine = channelMachine({
        id,
        role: role === 'client' ? 'opener' : 'acceptor',
        sendWindow,
        recvWindow,
        destination,
      });
      const route = (output: ChannelOutput) => {
        if (output.to === 'peer') {
          if (output.frame.command === Command.DATA) bytesSent += output.frame.payload.length;
          out.next({ kind: 'frame', frame: output.frame });
        } else if (output.to === 'local') {
          if (output.action.kind === 'write') bytesReceived += output.action.chunk.length;
          end.perform(output.action);
        } else {
          channels.delete(id);
          const close = { kind: 'close', id, destination, reason: output.reason, bytesSent, bytesReceived } as const;
          out.next(output.detail === undefined ? close : { ...close, detail: output.detail });
        }
      };
      let subscription: Subscription | undefined;
      subscription = merge(local$, peerInput)
        // eslint-disable-next-line rxjs-x/no-unsafe-takeuntil -- deliberate: the machine resets and reports its channel when its input ends.
        .pipe(takeUntil(sessionEnd), machine)
        .subscribe({
          next: route,
          error: (err: unknown) => out.error(err),
          // May run inside subscribe(), before `subscription` is assigned: then it is never added.
          complete: () => subscription && subscriptions.remove(subscription),
        });
      if (!subscription.closed) subscriptions.add(subscription);
    };

    const onControl = (f: Frame) => {
      switch (f.command) {
        case Command.PING:
          return out.next({ kind: 'frame', frame: frame(CONTROL_CHANNEL, Command.PONG, f.payload) });
        case Command.PONG:
          return out.next({ kind: 'pong', payload: f.payload });
        case Command.CREDIT:
          if (f.payload.length !== 4) return out.error(new ProtocolError('malformed session CREDIT'));
          return out.next({ kind: 'session-credit', bytes: f.payload.readUInt32BE(0) });
        case Command.EXIT:
          out.next({ kind: 'exit', reason: f.payload.toString('utf8') });
          return endSession();
        // Discovery, DNS and UDP_OPEN: each goes one way only; the other way is a violation.
        case Command.DNS_REQUEST:
          if (role !== 'server') break;
          return out.next({ kind: 'dns-request', request: decodeDnsRequest(f.payload) });
        case Command.DNS_RESPONSE:
        case Command.DNS_FAILED:
          if (role !== 'client') break;
          return out.next(decodeDnsReply(f));
        case Command.ROUTES_REQUEST:
          if (role !== 'server') break;
          return out.next({ kind: 'routes-request' });
        case Command.ROUTES:
          if (role !== 'client') break;
          return out.next({ kind: 'routes', routes: decodeRoutes(f.payload) });
        case Command.HOSTS_REQUEST:
          if (role !== 'server') break;
          return out.next({ kind: 'hosts-request', seeds: decodeHostsRequest(f.payload) });
        case Command.HOST:
          if (role !== 'client') break;
          return out.next({ kind: 'host', host: decodeHost(f.payload) });
        case Command.UDP_OPEN:
          if (role !== 'server') break;
          return out.next({ kind: 'udp', message: decodeUdpMessage(f) });
        case Command.UDP_DATA:
        case Command.UDP_CLOSE:
          return out.next({ kind: 'udp', message: decodeUdpMessage(f) });
      }
      out.error(new ProtocolError(`unexpected ${commandName(f.command)} on the control channel`));
    };

    let received = 0;
    /** Returns session credit for DATA as it arrives, so the peer's scheduler may send more. */
    const countReceived = (bytes: number) => {
      received += bytes;
      if (received < SESSION_CREDIT_BATCH) return;
      const payload = Buffer.allocUnsafe(4);
      payload.writeUInt32BE(received, 0);
      received = 0;
      out.next({ kind: 'frame', frame: frame(CONTROL_CHANNEL, Command.CREDIT, payload) });
    };

    /** Lets every open channel see the end of its input: it resets its socket and reports its close. */
    const endSession = () => {
      sessionEnd.next();
      out.complete();
    };

    const onFrame = (f: Frame) => {
      if (f.channel === CONTROL_CHANNEL) return onControl(f);
      // Flows are not channels: their id is in the payload, and a channel id here is a mistake.
      if (isUdpCommand(f.command)) return out.error(new ProtocolError(`${commandName(f.command)} on channel ${f.channel}: UDP uses the control channel`));
      if (f.command === Command.DATA) countReceived(f.payload.length);
      const channel = channels.get(f.channel);
      if (channel) return channel.next({ from: 'peer', frame: f });
      if (role === 'server' && f.command === Command.OPEN) {
        if (f.channel <= highestId) return out.error(new ProtocolError(`OPEN reuses channel id ${f.channel}`));
        const destination = openDestination(f);
        if (!config.dial) throw new TypeError('a server mux needs dial()');
        return startChannel(f.channel, config.dial(destination), destination);
      }
      if (f.channel <= highestId) return debug('dropping %s for finished channel %d', commandName(f.command), f.channel);
      out.error(new ProtocolError(`${commandName(f.command)} for unknown channel ${f.channel}`));
    };

    subscriptions.add(
      config.inbound$.subscribe({
        next: (f) => {
          try {
            onFrame(f);
          } catch (err) {
            out.error(err);
          }
        },
        error: (err: unknown) => out.error(err),
        complete: endSession,
      }),
    );
    let nextId = 1;
    subscriptions.add(
      (config.accepted$ ?? EMPTY).subscribe({
        next: (connection) => startChannel(nextId++, connection, connection.destination, connection.source),
        error: (err: unknown) => out.error(err),
      }),
    );
    subscriptions.add(
      (config.control$ ?? EMPTY).subscribe({
        next: (f) => out.next({ kind: 'frame', frame: f }),
        error: (err: unknown) => out.error(err),
      }),
    );
    return subscriptions;
  });
}
