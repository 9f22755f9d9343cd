import { BehaviorSubject, map, Observable as Obs, type Observable, Subject, Subscription } from 'rxjs';
import { decodeFrames } from './decode-frames.js';
import { BULK_QUEUE, FLAG_NO_LATENCY_CONTROL, SCHEDULER_MAX_QUEUED, SESSION_WINDOW } from './defaults.js';
import type { Destination, Frame } from './frame.js';
import type { FrameWriter } from './frame-writer.js';
import { awaitHello, encodeHello, type Hello, PROTOCOL_VERSION } from './handshake.js';
import { type AcceptedConnection, type LocalEnd, type MuxEvent, runMux } from './mux.js';
import { schedule } from './scheduler.js';

export type SessionEvent =
  | { readonly kind: 'noise'; readonly text: string }
  | { readonly kind: 'hello'; readonly hello: Hello }
  | Exclude<MuxEvent, { kind: 'session-credit' }>;

export interface SessionConfig {
  readonly role: 'client' | 'server';
  /** Our receive window per channel, announced in our hello. */
  readonly recvWindow: number;
  /** Raw bytes from the peer, hello included. */
  readonly bytes$: Observable<Buffer>;
  /** Raw bytes to the peer (for the hello) and frames after it. */
  readonly sendRaw: (bytes: Buffer) => void;
  readonly writer: FrameWriter;
  /** Client: redirected sockets; they pause while `readersBlocked$` says so. */
  readonly accepted$?: (readersBlocked$: Observable<boolean>) => Observable<AcceptedConnection>;
  /** Server: opens the real connection for an OPEN. */
  readonly dial?: (destination: Destination, readersBlocked$: Observable<boolean>) => LocalEnd;
  readonly control$?: Observable<Frame>;
  /** Bytes of foreign output tolerated before the hello (a login banner); 0 on the server. */
  readonly maxNoise?: number;
  /** Capability flags for our hello. */
  readonly flags?: number;
}

/**
 * One protocol session over a byte stream: hello exchange, then the mux, whose frames go through
 * the fair scheduler to the writer. The server says hello first, so the client can tell its
 * greeting from whatever a login shell printed before it; the client answers only once it has
 * seen it. Latency control is on unless either hello carries FLAG_NO_LATENCY_CONTROL. Completes
 * when the peer's byte stream ends.
 */
export function session(config: SessionConfig): Observable<SessionEvent> {
  return new Obs<SessionEvent>((out) => {
    const { role, recvWindow, writer } = config;
    const ourFlags = config.flags ?? 0;
    const subscriptions = new Subscription();
    const afterHello = new Subject<Buffer>();
    const readersBlocked = new BehaviorSubject(false);
    const ourHello = encodeHello({ version: PROTOCOL_VERSION, window: recvWindow, flags: ourFlags });
    if (role === 'server') config.sendRaw(ourHello);

    const startMux = (hello: Hello) => {
      if (role === 'client') config.sendRaw(ourHello);
      const latencyControl = ((ourFlags | hello.flags) & FLAG_NO_LATENCY_CONTROL) === 0;
      if (!latencyControl) writer.setMaxQueued(BULK_QUEUE);
      const { accepted$, dial } = config;
      const muxFrames = new Subject<Frame>();
      const sessionCredit = new Subject<number>();
      const mux$ = runMux({
        role,
        inbound$: afterHello.pipe(decodeFrames()),
        sendWindow: hello.window,
        recvWindow,
        ...(accepted$ ? { accepted$: accepted$(readersBlocked) } : {}),
        ...(dial ? { dial: (destination: Destination) => dial(destination, readersBlocked) } : {}),
        ...(config.control$ ? { control$: config.control$ } : {}),
      });
      subscriptions.add(
        schedule(
          { sessionWindow: latencyControl ? SESSION_WINDOW : Number.POSITIVE_INFINITY, maxQueued: SCHEDULER_MAX_QUEUED },
          { frames$: muxFrames, writable$: writer.blocked$.pipe(map((blocked) => !blocked)), credit$: sessionCredit },
        ).subscribe({
          next: (output) => (output.kind === 'frame' ? writer.write(output.frame) : readersBlocked.next(output.blocked)),
          error: (err: unknown) => out.error(err),
        }),
      );
      subscriptions.add(
        mux$.subscribe({
          next: (output) => {
            if (output.kind === 'frame') muxFrames.next(output.frame);
            else if (output.kind === 'session-credit') sessionCredit.next(output.bytes);
            else out.next(output);
          },
          error: (err: unknown) => out.error(err),
          complete: () => out.complete(),
        }),
      );
      // Last: whoever answers the hello may send control frames at once (a DNS query for a host
      // name given as a subnet), and the mux must be listening to control$ by then.
      out.next({ kind: 'hello', hello });
    };

    subscriptions.add(
      config.bytes$.pipe(awaitHello(config.maxNoise ?? 0)).subscribe({
        next: (item) => {
          if (item.kind === 'data') afterHello.next(item.chunk);
          else if (item.kind === 'hello') startMux(item.hello);
          else out.next(item);
        },
        error: (err: unknown) => out.error(err),
        complete: () => afterHello.complete(),
      }),
    );
    return subscriptions;
  });
}
