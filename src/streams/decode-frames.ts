import { Observable, type OperatorFunction } from 'rxjs';
import { ProtocolError } from '../shared/errors.js';
import { commandName, type Frame, HEADER_SIZE, isCommand, MAX_PAYLOAD } from './frame.js';

/**
 * Bytes → frames. Keeps a list of received chunks and slices payloads out of them, so a payload
 * that lies inside one chunk is a view, not a copy. Anything malformed errors the stream.
 */
export function decodeFrames(maxPayload = MAX_PAYLOAD): OperatorFunction<Buffer, Frame> {
  return (source) =>
    new Observable<Frame>((subscriber) => {
      const chunks: Buffer[] = [];
      let buffered = 0;

      /** Removes and returns the first n buffered bytes (n <= buffered). */
      const take = (n: number): Buffer => {
        const first = chunks[0] as Buffer;
        if (first.length === n) {
          chunks.shift();
          buffered -= n;
          return first;
        }
        if (first.length > n) {
          chunks[0] = first.subarray(n);
          buffered -= n;
          return first.subarray(0, n);
        }
        const out = Buffer.allocUnsafe(n);
        let filled = 0;
        while (filled < n) {
          const head = chunks[0] as Buffer;
          const part = Math.min(head.length, n - filled);
          head.copy(out, filled, 0, part);
          filled += part;
          if (part === head.length) chunks.shift();
          else chunks[0] = head.subarray(part);
        }
        buffered -= n;
        return out;
      };

      /** Peeks the 8-byte header without consuming it. */
      const peekHeader = (): Buffer => {
        const first = chunks[0] as Buffer;
        if (first.length >= HEADER_SIZE) return first;
        const header = take(HEADER_SIZE);
        chunks.unshift(header);
        buffered += HEADER_SIZE;
        return header;
      };

      return source.subscribe({
        next(chunk) {
          if (chunk.length === 0) return;
          chunks.push(chunk);
          buffered += chunk.length;
          while (buffered >= HEADER_SIZE && !subscriber.closed) {
            const header = peekHeader();
            const channel = header.readUInt32BE(0);
            const word = header.readUInt32BE(4);
            const command = word >>> 24;
            const length = word & 0xffffff;
            if (!isCommand(command)) {
              subscriber.error(new ProtocolError(`malformed frame: unknown command ${commandName(command)} on channel ${channel}`));
              return;
            }
            if (length > maxPayload) {
              subscriber.error(
                new ProtocolError(`malformed frame: ${commandName(command)} payload of ${length} bytes exceeds ${maxPayload}`),
              );
              return;
            }
            if (buffered < HEADER_SIZE + length) return;
            take(HEADER_SIZE);
            const payload = length === 0 ? Buffer.alloc(0) : take(length);
            subscriber.next({ channel, command, payload });
          }
        },
        error: (err: unknown) => subscriber.error(err),
        complete() {
          if (buffered > 0) subscriber.error(new ProtocolError(`stream ended inside a frame (${buffered} bytes left over)`));
          else subscriber.complete();
        },
      });
    });
}
