import type { Socket } from 'node:net';
import { Observable } from 'rxjs';
import type { ClientChannel } from 'ssh2';
import { errorMessage } from '../shared/errors.js';
import { printable } from '../shared/printable.js';
import { corkForThisTick } from '../streams/cork.js';
import type { Destination } from '../streams/frame.js';
import { resetSocket } from '../streams/socket-end.js';
import type { HandOff } from './control-master.js';
import { readIntoSharedBuffer, readWaiting } from './socket-reads.js';
import type { Ssh2Connection } from './ssh2.js';
import { creditChannel, LATENCY_CONTROL_WINDOW } from './ssh2-credit.js';

const ignore = () => {};

/** Bytes queued in one channel (waiting for its window) beyond which its local reader pauses. */
const CHANNEL_QUEUE_HIGH = 256 * 1024;
/** Bytes of one read of a forwarded local socket (Node's own reads are 64 KiB). */
const UP_READ_BYTES = 256 * 1024;
let upBuffer: Buffer | undefined;
/** The read buffer all forwarded sockets share (see readIntoSharedBuffer). */
const sharedUpBuffer = (): Buffer => (upBuffer ??= Buffer.allocUnsafe(UP_READ_BYTES));

/**
 * Carries one redirected socket in a direct-tcpip channel: sshd connects to the destination and
 * each side's EOF reaches the other as a half-close. 'refused' leaves the socket untouched (the
 * caller gives it to the mux, which answers with the real errno). Unsubscribing resets both.
 */
export function ssh2Forward$(
  connection: Ssh2Connection,
  socket: Socket,
  destination: Destination,
  /** The channel's receive window under latency control (ssh2-credit.ts); null: ssh2's own. */
  receiveWindow: number | null = LATENCY_CONTROL_WINDOW,
): Observable<HandOff> {
  const { client, sendQueue, inbound, hooks } = connection;
  return new Observable<HandOff>((subscriber) => {
    let channel: ClientChannel | undefined;
    let done = false;
    let stopWaiting: (() => void) | undefined;
    const cancelWait = () => {
      stopWaiting?.();
      stopWaiting = undefined;
    };
    const origin = { host: socket.remoteAddress ?? '127.0.0.1', port: socket.remotePort ?? 0 };
    try {
      client.forwardOut(origin.host, origin.port, destination.address, destination.port, (err, opened) => {
        if (done) {
          opened?.close();
          return;
        }
        if (err) {
          // Done first: the socket now belongs to the mux, and the teardown must leave it alone.
          done = true;
          subscriber.next({ kind: 'refused', reason: printable(err.message) });
          subscriber.complete();
          return;
        }
        channel = opened;
        // ssh2's internals for this channel; without them (its public API) every chunk going up
        // is a copy, read as 'data', and the window is ssh2's own.
        const channelHooks = hooks?.channel(opened);
        channelHooks?.leaveCloseToSsh2();
        inbound.keepChunks(opened);
        const credit = receiveWindow === null || !channelHooks ? undefined : creditChannel(channelHooks, receiveWindow);
        subscriber.next({ kind: 'opened' });
        channel.on('error', ignore);
        socket.on('error', ignore);
        // Upstream: read only while both this channel and the shared connection have room; the
        // local EOF becomes the channel's EOF (half-close).
        // A reader paused by the shared queue waits for its drain (only paused readers wait, so
        // a drain costs what is paused, not every connection).
        const resumeUp = () => {
          if (opened.writableEnded || opened.writableLength >= CHANNEL_QUEUE_HIGH) return;
          if (!sendQueue.congested()) socket.resume();
          else if (!stopWaiting) {
            stopWaiting = sendQueue.whenDrained(() => {
              stopWaiting = undefined;
              resumeUp();
            });
          }
        };
        // The write callback, not 'drain' (which waits for the 2 MiB high-water mark), says a chunk left.
        const up = (chunk: Buffer) => {
          opened.write(chunk, resumeUp);
          if (sendQueue.congested() || opened.writableLength >= CHANNEL_QUEUE_HIGH) {
            socket.pause();
            resumeUp();
          }
        };
        // Reads into one buffer all forwards share (socket-reads.ts): ssh2 copies what its window
        // lets it send at once into packets; only what would wait in the channel is copied here.
        let upOpen = true;
        const upRead = (bytes: number, buffer: Buffer) => {
          if (!upOpen) return true;
          const view = buffer.subarray(0, bytes);
          up(channelHooks?.sendsAtOnce(bytes) ? view : Buffer.from(view));
          return true;
        };
        const sharedReads = channelHooks !== undefined && readIntoSharedBuffer(socket, sharedUpBuffer(), upRead);
        if (!sharedReads) socket.on('data', up);
        socket.once('end', () => opened.end());
        // What the program sent while the channel opened leaves with the next packets, not a loop turn later.
        const readAtOpen = sharedReads ? readWaiting(socket, sharedUpBuffer()) : 0;
        if (readAtOpen > 0) upRead(readAtOpen, sharedUpBuffer());
        resumeUp();
        // Downstream by hand, to send the packets one read of the ssh socket decrypted in one writev.
        // Each chunk is a view of reused memory, released once the socket wrote it; that is also
        // when its bytes go back to the server as window (credit).
        const written = (chunk: Buffer) => {
          inbound.release(chunk);
          credit?.consumed(chunk.length);
        };
        const down = (chunk: Buffer) => {
          corkForThisTick(socket);
          if (!socket.write(chunk, () => written(chunk))) opened.pause();
        };
        opened.on('data', down);
        socket.on('drain', () => opened.resume());
        // The server's EOF ends the program's socket in order; the connection's loss resets it, so
        // that the program never waits for data queued in a socket whose translation is going (issue 14).
        opened.once('end', () => (connection.lost() ? resetSocket(socket) : socket.end()));
        let socketClosed = false;
        let channelClosed = false;
        const finish = () => {
          if (!socketClosed || !channelClosed || done) return;
          done = true;
          // bytesSent: what went to the remote side, i.e. what we read from the local program.
          subscriber.next({ kind: 'closed', bytesSent: socket.bytesRead + readAtOpen, bytesReceived: socket.bytesWritten });
          subscriber.complete();
        };
        socket.once('close', () => {
          socketClosed = true;
          // ssh2 reports a channel's close only after its end: let what is still coming drain away.
          opened.off('data', down);
          opened.on('data', written);
          opened.resume();
          opened.close();
          finish();
        });
        opened.once('close', () => {
          channelClosed = true;
          // Nothing more can go up: drain what the program still sends (closing a socket with
          // unread data would reset it and could cost it the reply) until it closes its side.
          cancelWait();
          upOpen = false;
          socket.off('data', up);
          socket.resume();
          if (connection.lost()) resetSocket(socket);
          else if (!socket.writableEnded) socket.end();
          finish();
        });
      });
    } catch (err) {
      done = true;
      subscriber.next({ kind: 'refused', reason: errorMessage(err) });
      subscriber.complete();
    }
    return () => {
      cancelWait();
      if (done) return;
      done = true;
      // Unsubscribed in the middle (the tunnel ends): a reset, never an orderly end (issue 14).
      resetSocket(socket);
      channel?.close();
    };
  });
}
