import createDebug from 'debug';
import { defer, EMPTY, finalize, ignoreElements, mergeMap, type Observable, of, tap } from 'rxjs';
import type { TunnelEvent } from './events.js';
import type { Redirected } from './listener.js';
import { ControlPool, handOff$ } from './transport/control-master.js';

const debug = createDebug('rxshuttle:direct');

/** After this many hand-offs in a row that ssh refused, stop trying (it probably forbids forwarding). */
const MAX_REFUSED_IN_A_ROW = 5;

/**
 * Where each redirected TCP connection goes: to the ssh ControlMaster when there is one (ssh then
 * carries it in a channel of its own, as `ssh -L` would), otherwise, or when ssh refuses it, to
 * our own mux (`toMux`), which also gives a refused destination its RST. Emits accept/close events
 * for the connections ssh carries; the mux reports its own.
 */
export function routeRedirected(
  redirected$: Observable<Redirected>,
  controlPath: string | null,
  toMux: (redirected: Redirected) => void,
  /** Connections ssh may carry at once (its descriptors); beyond, new ones go to the mux. */
  maxHandOffs = Number.POSITIVE_INFINITY,
): Observable<TunnelEvent> {
  if (controlPath === null) return redirected$.pipe(tap(toMux), ignoreElements());
  return defer(() => {
    const pool = new ControlPool(controlPath);
    return handOffAll(redirected$, controlPath, pool, toMux, maxHandOffs).pipe(finalize(() => pool.close()));
  });
}

function handOffAll(
  redirected$: Observable<Redirected>,
  controlPath: string,
  pool: ControlPool,
  toMux: (redirected: Redirected) => void,
  maxHandOffs: number,
): Observable<TunnelEvent> {
  let active = 0;
  let refusedInARow = 0;
  let everOpened = false;
  let enabled = true;
  let nextId = 1;
  return redirected$.pipe(
    mergeMap((redirected) => {
      if (!enabled || active >= maxHandOffs) {
        toMux(redirected);
        return EMPTY;
      }
      active++;
      const id = nextId++;
      const { socket, destination, source } = redirected;
      let handedOff = false;
      return handOff$(controlPath, socket, destination, pool.take()).pipe(
        mergeMap((result): Observable<TunnelEvent> => {
          switch (result.kind) {
            case 'opened':
              handedOff = true;
              everOpened = true;
              refusedInARow = 0;
              return of({ kind: 'accept', id, source, destination, via: 'ssh' });
            case 'closed':
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
        finalize(() => {
          active--;
          if (handedOff) socket.destroy();
        }),
      );
    }),
  );
}
