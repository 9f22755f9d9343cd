import type { Socket } from 'node:net';
import createDebug from 'debug';
import { defer, EMPTY, finalize, ignoreElements, mergeMap, type Observable, of, tap } from 'rxjs';
import { ConnectionIds, type TunnelEvent } from '../shared/events.js';
import type { Destination } from '../streams/frame.js';
import { resetSocket } from '../streams/socket-end.js';
import { ControlPool, type HandOff, halfCloseHandOff$, handOff$ } from '../transport/control-master.js';
import type { Redirected } from './listener.js';

const debug = createDebug('rxshuttle:direct');

/** After this many hand-offs in a row that ssh refused, stop trying (it probably forbids forwarding). */
const MAX_REFUSED_IN_A_ROW = 5;

/**
 * Gives one socket to ssh, which then carries it in a channel of its own (as `ssh -L` would):
 * the ssh binary as ControlMaster (--ssh-forward) or the in-process ssh2 connection.
 */
export interface Carrier {
  carry(socket: Socket, destination: Destination): Observable<HandOff>;
  close(): void;
}

/**
 * Hand-off by fd passing to the ssh ControlMaster listening on controlPath; with `halfClose`,
 * what comes back is copied through us so that a remote EOF reaches the program (stock-sshd mode).
 */
export function controlMasterCarrier(controlPath: string, halfClose = false): Carrier {
  const pool = new ControlPool(controlPath);
  const handOff = halfClose ? halfCloseHandOff$ : handOff$;
  return {
    carry: (socket, destination) => handOff(controlPath, socket, destination, pool.take()),
    close: () => pool.close(),
  };
}

/**
 * Where each redirected TCP connection goes: to ssh's own channels when there is a carrier,
 * otherwise, or when ssh refuses it, to our own mux (`toMux`), which also gives a refused
 * destination its RST. Emits accept/close events for the connections ssh carries; the mux reports
 * its own. Without a mux (`toMux` null: stock-sshd mode) a connection ssh refuses is reset here.
 */
export function routeRedirected(
  redirected$: Observable<Redirected>,
  carrier: (() => Carrier) | null,
  toMux: ((redirected: Redirected) => void) | null,
  /** Connections ssh may carry at once (its descriptors); beyond, new ones go to the mux. */
  maxHandOffs = Number.POSITIVE_INFINITY,
  /** The tunnel's ids (events.ts), shared with the mux's connections and the UDP flows. */
  ids: ConnectionIds = new ConnectionIds(),
): Observable<TunnelEvent> {
  if (carrier === null) {
    if (toMux === null) throw new TypeError('routeRedirected: nothing to carry the connections');
    return redirected$.pipe(tap(toMux), ignoreElements());
  }
  return defer(() => {
    const opened = carrier();
    return handOffAll(redirected$, opened, toMux, maxHandOffs, ids).pipe(finalize(() => opened.close()));
  });
}

function handOffAll(
  redirected$: Observable<Redirected>,
  carrier: Carrier,
  toMux: ((redirected: Redirected) => void) | null,
  maxHandOffs: number,
  ids: ConnectionIds,
): Observable<TunnelEvent> {
  let active = 0;
  let refusedInARow = 0;
  let everOpened = false;
  let enabled = true;
  return redirected$.pipe(
    mergeMap((redirected) => {
      if (toMux !== null && (!enabled || active >= maxHandOffs)) {
        toMux(redirected);
        return EMPTY;
      }
      active++;
      const id = ids.next();
      const { socket, destination, source } = redirected;
      // 'pending' until ssh answers; after 'refused' the socket is the mux's and must stay open.
      let owner: 'pending' | 'ssh' | 'mux' = 'pending';
      let closed = false;
      return carrier.carry(socket, destination).pipe(
        mergeMap((result): Observable<TunnelEvent> => {
          switch (result.kind) {
            case 'opened':
              owner = 'ssh';
              everOpened = true;
              refusedInARow = 0;
              return of({ kind: 'accept', id, source, destination, via: 'ssh' });
            case 'closed':
              closed = true;
              return of({
                kind: 'close',
                id,
                destination,
                reason: 'done',
                bytesSent: result.bytesSent ?? 0,
                bytesReceived: result.bytesReceived ?? 0,
                via: 'ssh',
              });
            case 'refused':
              if (toMux === null) {
                debug('ssh refused %s:%d (%s): reset', destination.address, destination.port, result.reason);
                socket.resetAndDestroy();
                return of<TunnelEvent[]>(
                  { kind: 'accept', id, source, destination, via: 'ssh' },
                  { kind: 'close', id, destination, reason: 'refused', detail: result.reason, bytesSent: 0, bytesReceived: 0, via: 'ssh' },
                );
              }
              debug('ssh refused %s:%d (%s): to the mux', destination.address, destination.port, result.reason);
              owner = 'mux';
              toMux(redirected);
              // ssh says the same for a refused destination as for forbidden forwarding: give up
              // only if it has never carried one.
              if (++refusedInARow < MAX_REFUSED_IN_A_ROW || everOpened) return EMPTY;
              enabled = false;
              debug('disabling hand-off after %d refusals', refusedInARow);
              return of({
                kind: 'warning',
                message: `ssh refused ${MAX_REFUSED_IN_A_ROW} connections in a row (${result.reason}); carrying them in rxshuttle's own channel from now on`,
              });
          }
        }),
        // Ours is only a copy of the fd once ssh has it; close it with the channel (or the tunnel).
        // Unsubscribed before ssh answered (the tunnel ends): nobody else has it, close it too.
        // Cut off before its end (the tunnel died): a reset, so the program never waits for data
        // queued in a socket whose translation is about to go (issue 14).
        finalize(() => {
          active--;
          if (owner === 'mux') return;
          if (!closed && !socket.writableEnded) resetSocket(socket);
          else socket.destroy();
        }),
      );
    }),
  );
}
