import { Socket, type SocketConstructorOpts } from 'node:net';
import { Observable } from 'rxjs';

/** Reads of this size cut relay CPU by 15–35 % against Node's fixed 64 KiB (DESIGN.md). */
const READ_SIZE = 256 * 1024;
/**
 * Reads smaller than this are copied out, so the big buffer is reused instead of pinned: a
 * payload sliced from a read keeps its whole buffer alive while it waits in a slow socket.
 */
const COPY_BELOW = READ_SIZE / 2;
const ignore = () => {};

export interface FdSocket {
  readonly socket: Socket;
  /** What the fd delivers, in reads of up to 256 KiB; completes at EOF, errors on a read error. */
  readonly bytes$: Observable<Buffer>;
}

/**
 * A pipe or socket file descriptor as a Node socket that reads in large chunks (`onread` with
 * buffers we own, since Node otherwise reads 64 KiB at a time). Used for the mux's byte stream
 * only; the many per-connection sockets keep Node's defaults to save memory.
 */
export function fdSocket(fd: number, mode: { readable: boolean; writable: boolean }): FdSocket {
  let deliver: ((chunk: Buffer) => void) | null = null;
  const early: Buffer[] = [];
  let buffer = Buffer.allocUnsafe(READ_SIZE);
  const socket = new Socket({
    fd,
    readable: mode.readable,
    writable: mode.writable,
    allowHalfOpen: true,
    onread: {
      buffer: () => buffer,
      callback: (n: number, buf: Uint8Array) => {
        let chunk: Buffer;
        if (n < COPY_BELOW) {
          chunk = Buffer.from(buf.subarray(0, n));
        } else {
          chunk = Buffer.from(buf.buffer, buf.byteOffset, n);
          buffer = Buffer.allocUnsafe(READ_SIZE);
        }
        if (deliver) deliver(chunk);
        else early.push(chunk);
        return true;
      },
    },
    // Node reads `onread` in the constructor too, though its types list it for connect() only.
  } as SocketConstructorOpts);
  // Permanent: a late EPIPE must not crash the process.
  socket.on('error', ignore);
  const bytes$ = new Observable<Buffer>((subscriber) => {
    const mine = (chunk: Buffer) => subscriber.next(chunk);
    deliver = mine;
    for (const chunk of early.splice(0)) subscriber.next(chunk);
    const onEnd = () => subscriber.complete();
    // Subscribed again after an earlier reader stopped (the start-up probe): EOF may have come meanwhile.
    if (socket.readableEnded) {
      onEnd();
      return;
    }
    const onError = (err: Error) => subscriber.error(err);
    socket.once('end', onEnd);
    socket.once('error', onError);
    // Flowing mode, so that EOF turns into 'end' (the chunks themselves go through onread).
    socket.resume();
    return () => {
      socket.off('end', onEnd);
      socket.off('error', onError);
      // A new reader may already have taken over (one reader hands the stream to the next).
      if (deliver !== mine) return;
      // Nobody reads any more: stop reading rather than pile chunks up in `early`.
      deliver = null;
      socket.pause();
    };
  });
  return { socket, bytes$ };
}
