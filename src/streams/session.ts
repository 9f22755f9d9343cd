import { type Observable, Observable as Obs, Subject, Subscription } from 'rxjs';
import { decodeFrames } from './decode-frames.js';
import type { Destination, Frame } from './frame.js';
import type { FrameWriter } from './frame-writer.js';
import { awaitHello, encodeHello, type Hello, PROTOCOL_VERSION } from './handshake.js';
import { type AcceptedConnection, type LocalEnd, type MuxEvent, runMux } from './mux.js';

export type SessionEvent =
  | { readonly kind: 'noise'; readonly text: string }
  | { readonly kind: 'hello'; readonly hello: Hello }
  | MuxEvent;

export interface SessionConfig {
  readonly role: 'client' | 'server';
  /** Our receive window per channel, announced in our hello. */
  readonly recvWindow: number;
  /** Raw bytes from the peer, hello included. */
  readonly bytes$: Observable<Buffer>;
  /** Raw bytes to the peer (for the hello) and frames after it. */
  readonly sendRaw: (bytes: Buffer) => void;
  readonly writer: FrameWriter;
  readonly accepted$?: Observable<AcceptedConnection>;
  readonly dial?: (destination: Destination) => LocalEnd;
  readonly control$?: Observable<Frame>;
  /** Bytes of foreign output tolerated before the hello (a login banner); 0 on the server. */
  readonly maxNoise?: number;
  /** Capability flags for our hello. */
  readonly flags?: number;
}

/**
 * One protocol session over a byte stream: hello exchange, then the mux. The server says hello
 * first, so the client can tell its greeting from whatever a login shell printed before it; the
 * client answers only once it has seen it. Completes when the peer's byte stream ends.
 */
export function session(config: SessionConfig): Observable<SessionEvent> {
  return new Obs<SessionEvent>((out) => {
    const { role, recvWindow, writer } = config;
    const subscriptions = new Subscription();
    const afterHello = new Subject<Buffer>();
    const ourHello = encodeHello({ version: PROTOCOL_VERSION, window: recvWindow, flags: config.flags ?? 0 });
    if (role === 'server') config.sendRaw(ourHello);

    const startMux = (hello: Hello) => {
      if (role === 'client') config.sendRaw(ourHello);
      out.next({ kind: 'hello', hello });
      const mux$ = runMux({
        role,
        inbound$: afterHello.pipe(decodeFrames()),
        sendWindow: hello.window,
        recvWindow,
        ...(config.accepted$ ? { accepted$: config.accepted$ } : {}),
        ...(config.dial ? { dial: config.dial } : {}),
        ...(config.control$ ? { control$: config.control$ } : {}),
      });
      subscriptions.add(
        mux$.subscribe({
          next: (output) => (output.kind === 'frame' ? writer.write(output.frame) : out.next(output)),
          error: (err: unknown) => out.error(err),
          complete: () => out.complete(),
        }),
      );
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
