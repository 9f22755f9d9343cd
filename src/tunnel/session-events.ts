import { concat, EMPTY, from, mergeMap, type Observable, type OperatorFunction, of, throwError } from 'rxjs';
import { TransportError } from '../shared/errors.js';
import { channelEvent, type Renumbering, type TunnelEvent } from '../shared/events.js';
import { printable, printableLines } from '../shared/printable.js';
import type { Hello } from '../streams/handshake.js';
import type { SessionEvent } from '../streams/session.js';
import type { UdpMessage } from '../streams/udp.js';

/** What a client session's events turn into; each handler is the tunnel's side of one kind. */
export interface SessionHandlers {
  /** The remote host, for messages. */
  readonly where: string;
  /** The mux's channel ids (from 1 in each session) as the tunnel's connection ids. */
  readonly channels: Renumbering;
  /** Starts what needs a greeted server: the firewall, routing connections, UDP flows. */
  readonly afterHello: (hello: Hello) => Observable<TunnelEvent>;
  /** A UDP message from the server (--method tproxy). */
  readonly onUdp: (message: UdpMessage) => void;
  /** The control channel's conversations (-N, -H, --dns); null: not one of theirs. */
  readonly onOther: (event: SessionEvent) => Observable<TunnelEvent> | null;
}

/**
 * A client session's events as the tunnel's: a login banner's noise as remote output, the server's
 * hello as 'connected' followed by what needs the server, channel opens and closes as accept and
 * close, the server's EXIT as the error that ends the session.
 */
export const sessionEvents = (handlers: SessionHandlers): OperatorFunction<SessionEvent, TunnelEvent> =>
  mergeMap((event): Observable<TunnelEvent> => {
    switch (event.kind) {
      case 'noise':
        return from(printableLines(event.text).map((line): TunnelEvent => ({ kind: 'remote-output', line })));
      case 'hello':
        return concat(of<TunnelEvent>({ kind: 'connected', remote: handlers.where, window: event.hello.window }), handlers.afterHello(event.hello));
      case 'open':
      case 'close':
        return of(channelEvent(event, handlers.channels));
      case 'exit':
        return serverStopped(event.reason, handlers.where);
      case 'pong':
        return EMPTY;
      case 'udp':
        handlers.onUdp(event.message);
        return EMPTY;
      default:
        return handlers.onOther(event) ?? EMPTY;
    }
  });

/** The server said EXIT: its reason (remote text, so made printable) as an event, then as the error that ends the tunnel. */
export function serverStopped(reason: string, where: string): Observable<TunnelEvent> {
  const said = printable(reason);
  return concat(
    of<TunnelEvent>({ kind: 'remote-exit', reason: said }),
    throwError(() => new TransportError('RXS_ERR_REMOTE_EXIT', `server on ${where} stopped: ${said}`)),
  );
}
