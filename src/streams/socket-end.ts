import type { Socket } from 'node:net';
import { type Observable as Obs, Observable } from 'rxjs';
import type { LocalAction, LocalEvent } from './channel.js';
import type { LocalEnd } from './mux.js';

const ignore = () => {};

/**
 * A TCP socket as a channel's local end. The socket is paused while the channel is out of credit or
 * while `blocked$` (the transport's own backpressure) says so. Unsubscribing destroys a socket that
 * has not finished both directions; a finished one is left to close by itself.
 * Sockets must be created with allowHalfOpen, so EOF in one direction keeps the other open.
 */
export function socketEnd(socket: Socket, blocked$?: Obs<boolean>): LocalEnd {
  // Permanent: a late EPIPE after the channel has ended must not crash the process.
  socket.on('error', ignore);
  socket.setNoDelay(true);
  let emit: ((event: LocalEvent) => void) | null = null;
  let creditPaused = false;
  let transportBlocked = false;
  const applyFlow = () => {
    if (socket.destroyed) return;
    if (creditPaused || transportBlocked) socket.pause();
    else socket.resume();
  };

  const events$ = new Observable<LocalEvent>((subscriber) => {
    emit = (event) => subscriber.next(event);
    const onData = (chunk: Buffer) => subscriber.next({ kind: 'data', chunk });
    const onEnd = () => subscriber.next({ kind: 'eof' });
    const onError = (err: NodeJS.ErrnoException) => subscriber.next({ kind: 'error', code: err.code ?? 'EIO' });
    const onConnect = () => subscriber.next({ kind: 'connected' });
    socket.on('data', onData);
    socket.once('end', onEnd);
    socket.once('error', onError);
    socket.once('connect', onConnect);
    const blockedSubscription = blocked$?.subscribe({
      next: (blocked) => {
        transportBlocked = blocked;
        applyFlow();
      },
      error: (err: unknown) => subscriber.error(err),
    });
    applyFlow();
    return () => {
      emit = null;
      blockedSubscription?.unsubscribe();
      socket.off('data', onData);
      socket.off('end', onEnd);
      socket.off('error', onError);
      socket.off('connect', onConnect);
      // Cut off while data could still flow to the program (the tunnel died): a reset, never an
      // orderly end that leaves it waiting (issue 14). After our end, what we sent still goes out.
      if (!socket.writableEnded) resetSocket(socket);
      else if (!socket.readableEnded) socket.destroy();
    };
  });

  const perform = (action: LocalAction) => {
    switch (action.kind) {
      case 'write': {
        const bytes = action.chunk.length;
        socket.write(action.chunk, (err) => {
          if (!err) emit?.({ kind: 'written', bytes });
        });
        return;
      }
      case 'end':
        socket.end();
        return;
      case 'reset':
        resetSocket(socket);
        return;
      case 'pause':
      case 'resume':
        creditPaused = action.kind === 'pause';
        applyFlow();
        return;
    }
  };
  return { events$, perform };
}

/** Close with RST, so the program on the other side sees a reset rather than an orderly end. */
export function resetSocket(socket: Socket): void {
  if (socket.destroyed) return;
  try {
    socket.resetAndDestroy();
  } catch {
    socket.destroy();
  }
}
