import type { Socket } from 'node:net';
import { constants } from 'node:os';
import koffi from 'koffi';
import { descriptorOf, errnoName, recv } from '../os/libc.js';

const MSG_DONTWAIT = 0x40;

/**
 * Makes an accepted socket read into `buffer` (shared by any number of sockets) and hand each
 * read to `onRead` instead of emitting 'data'. This is what Node's `onread` option does for
 * sockets it connects; accepted sockets have no such option, so this sets the same private
 * fields (found by their symbols' descriptions) and calls the handle's `useUserBuffer`. Returns
 * false, changing nothing, if Node's internals are not as expected or the socket already reads.
 *
 * Why: Node otherwise allocates a fresh 64 KiB buffer for every read, and in a bulk upload that
 * external memory makes V8 run a full mark-compact many times a second.
 *
 * The buffer is overwritten by the next read of any socket sharing it: `onRead` must be done
 * with the bytes when it returns (or copy them). Returning false pauses the socket, as with
 * `onread`. EOF, errors, 'end', 'close', pause() and resume() work as before.
 */
export function readIntoSharedBuffer(socket: Socket, buffer: Buffer, onRead: (bytes: number, buffer: Buffer) => boolean): boolean {
  const symbols = Object.getOwnPropertySymbols(socket);
  const named = (description: string) => symbols.find((symbol) => symbol.description === description);
  const kBuffer = named('kBuffer');
  const kBufferCb = named('kBufferCb');
  const kBufferGen = named('kBufferGen');
  const handle = (socket as unknown as { _handle?: { reading?: boolean; useUserBuffer?: (buffer: Uint8Array) => void } })._handle;
  // Not for a socket that reads, is about to (flowing: resume() starts it on the next tick) or
  // holds what it read: those bytes would go to 'data' listeners, not to onRead.
  if (!kBuffer || !kBufferCb || !kBufferGen || typeof handle?.useUserBuffer !== 'function') return false;
  if (handle.reading || socket.readableFlowing === true || socket.readableLength > 0) return false;
  const fields = socket as unknown as Record<symbol, unknown>;
  // Node's own checks: all three unset (null) on a socket made without `onread`.
  if (fields[kBuffer] !== null || fields[kBufferCb] !== null || fields[kBufferGen] !== null) return false;
  fields[kBuffer] = buffer;
  fields[kBufferCb] = onRead;
  handle.useUserBuffer(buffer);
  return true;
}

/**
 * Reads what already waits in a paused socket's receive queue into `buffer`, now, without a turn
 * of the event loop (a non-blocking recv on its descriptor). Returns the bytes read; 0 when nothing
 * waits, at EOF (Node's own next read finds it again) or when the descriptor is not reachable.
 * An error (a reset) is given to the socket as Node would (destroy with it): recv consumed it.
 *
 * Why: a program that connects and sends at once (HTTP, the probe) has its first bytes waiting by
 * the time the tunnel is open; resume() would read them only after another poll of the loop.
 * Bytes read here are not in `socket.bytesRead`.
 */
export function readWaiting(socket: Socket, buffer: Buffer): number {
  const fd = descriptorOf(socket);
  if (fd === undefined || socket.destroyed) return 0;
  const bytes = recv()(fd, buffer, buffer.length, MSG_DONTWAIT);
  if (bytes >= 0) return bytes;
  const errno = koffi.errno();
  if (errno === constants.errno.EAGAIN || errno === constants.errno.EINTR) return 0;
  const code = errnoName(errno);
  socket.destroy(Object.assign(new Error(`read ${code}`), { errno: -errno, code, syscall: 'read' }));
  return 0;
}
