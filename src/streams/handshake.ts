import { Observable, type OperatorFunction } from 'rxjs';
import { ProtocolError } from '../shared/errors.js';

/**
 * The hello each side sends before any frame: magic, protocol version, the sender's receive window
 * (how many unacknowledged DATA bytes per channel it accepts) and capability flags.
 */
export const MAGIC = Buffer.from('RXSHUTL', 'latin1');
export const PROTOCOL_VERSION = 1;
export const HELLO_SIZE = MAGIC.length + 1 + 4 + 4;

export interface Hello {
  readonly version: number;
  readonly window: number;
  readonly flags: number;
}

export function encodeHello(hello: Hello): Buffer {
  const out = Buffer.allocUnsafe(HELLO_SIZE);
  MAGIC.copy(out, 0);
  out.writeUInt8(hello.version, MAGIC.length);
  out.writeUInt32BE(hello.window, MAGIC.length + 1);
  out.writeUInt32BE(hello.flags, MAGIC.length + 5);
  return out;
}

export type HandshakeItem =
  | { readonly kind: 'noise'; readonly text: string }
  | { readonly kind: 'hello'; readonly hello: Hello }
  | { readonly kind: 'data'; readonly chunk: Buffer };

/**
 * Finds the peer's hello in a byte stream. Bytes before it (a login banner, .bashrc output) are
 * reported as noise, up to `maxNoise`; after it every chunk passes through untouched.
 */
export function awaitHello(maxNoise = 64 * 1024): OperatorFunction<Buffer, HandshakeItem> {
  return (source) =>
    new Observable<HandshakeItem>((subscriber) => {
      let pending: Buffer | null = Buffer.alloc(0);
      let noise = 0;
      return source.subscribe({
        next(chunk) {
          if (pending === null) {
            subscriber.next({ kind: 'data', chunk });
            return;
          }
          pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
          const at = pending.indexOf(MAGIC);
          // Keep a possible partial magic at the end; everything before it is noise.
          const noiseEnd = at >= 0 ? at : Math.max(0, pending.length - (MAGIC.length - 1));
          if (noiseEnd > 0) {
            noise += noiseEnd;
            subscriber.next({ kind: 'noise', text: pending.subarray(0, noiseEnd).toString('utf8') });
            pending = pending.subarray(noiseEnd);
            if (noise > maxNoise) {
              subscriber.error(new ProtocolError(`no rxshuttle greeting within ${maxNoise} bytes of output`));
              return;
            }
          }
          if (at < 0 || pending.length < HELLO_SIZE) return;
          const version = pending.readUInt8(MAGIC.length);
          if (version !== PROTOCOL_VERSION) {
            subscriber.error(
              new ProtocolError(
                `protocol version mismatch: this side speaks ${PROTOCOL_VERSION}, the peer ${version}`,
                'RXS_ERR_PROTOCOL_VERSION',
              ),
            );
            return;
          }
          const hello: Hello = {
            version,
            window: pending.readUInt32BE(MAGIC.length + 1),
            flags: pending.readUInt32BE(MAGIC.length + 5),
          };
          if (hello.window < 1) {
            subscriber.error(new ProtocolError('peer announced a receive window of 0'));
            return;
          }
          const rest = pending.subarray(HELLO_SIZE);
          pending = null;
          subscriber.next({ kind: 'hello', hello });
          if (rest.length > 0) subscriber.next({ kind: 'data', chunk: rest });
        },
        error: (err: unknown) => subscriber.error(err),
        complete() {
          if (pending !== null) {
            if (pending.length > 0) subscriber.next({ kind: 'noise', text: pending.toString('utf8') });
            subscriber.error(new ProtocolError('stream ended before the peer said hello'));
          }
          else subscriber.complete();
        },
      });
    });
}
