/**
 * Running out of file descriptors. Every tunneled connection costs the client one descriptor
 * (the accepted socket) and the server one (its outbound socket); handed to an ssh ControlMaster,
 * it costs the client two (plus the control connection) and ssh, which inherits our limit, three
 * (the control connection and the socket passed as stdin and stdout). When they run out, new
 * connections are refused with a log line and the existing ones keep working:
 *
 * - client: each listening server gets `maxConnections` a little below the open-file limit
 *   (RLIMIT_NOFILE, read after raiseFileLimit()), so a connection beyond it is closed at once by
 *   Node ('drop') while descriptors remain for pipes, ssh and the firewall helper. (At the real
 *   limit libuv would refuse connections silently.)
 * - server: its connect() fails with EMFILE/ENFILE, the channel is refused (OPEN_FAILED) and
 *   only that channel closes; the client says why.
 *
 * Both log lines are rate-limited (one per WARN_INTERVAL_MS, with a count of what was refused).
 */
import type { Server } from 'node:net';
import createDebug from 'debug';
import { type MonoTypeOperatorFunction, Observable } from 'rxjs';
import { openFileLimit } from '../os/rlimit.js';
import type { TunnelEvent } from '../shared/events.js';

const debug = createDebug('rxshuttle:limits');
/** Descriptors kept free for everything that is not a tunneled connection. */
export const FD_RESERVE = 64;
export const WARN_INTERVAL_MS = 10_000;

export { openFileLimit } from '../os/rlimit.js';

/** Connections each of `servers` listening servers may hold under an open-file limit. */
export function connectionLimit(fileLimit: number, servers: number, fdsPerConnection = 1): number {
  const reserve = Math.min(FD_RESERVE, Math.floor(fileLimit / 2));
  return Math.max(1, Math.floor((fileLimit - reserve) / Math.max(1, fdsPerConnection) / Math.max(1, servers)));
}

/**
 * How the open-file limit is shared when connections may be handed to an ssh ControlMaster: ssh
 * (which has our limit) spends three descriptors on each, so at most a third of the limit goes to
 * ssh; the client spends two on each of those (socket and control connection) and one on every
 * connection in its own mux, which takes the rest. Without hand-off, one per connection.
 */
export function descriptorBudget(fileLimit: number, handOff: boolean): { connections: number; handOffs: number } {
  const usable = fileLimit - Math.min(FD_RESERVE, Math.floor(fileLimit / 2));
  if (!handOff) return { connections: Math.max(1, usable), handOffs: 0 };
  const handOffs = Math.max(0, Math.floor(usable / 3));
  return { connections: Math.max(1, usable - handOffs), handOffs };
}

/** A rate-limited warning: the first at once, then at most one per interval, counting the rest. */
function rateLimited(emit: (count: number) => void, now: () => number): () => void {
  let last = Number.NEGATIVE_INFINITY;
  let count = 0;
  return () => {
    count++;
    if (now() - last < WARN_INTERVAL_MS) return;
    last = now();
    emit(count);
    count = 0;
  };
}

const OUT_OF_FDS = /^(EMFILE|ENFILE)$/;

/**
 * Caps the listening servers' connections below `fileLimit` while the tunnel runs, and adds a
 * warning event to the tunnel's events whenever connections are refused for want of descriptors,
 * here or on the server.
 */
export function guardDescriptors(
  servers: readonly Server[],
  options: {
    fileLimit?: number | undefined;
    fdsPerConnection?: number;
    /** Connections in all, when known better than by fdsPerConnection (see descriptorBudget). */
    connections?: number | undefined;
    now?: () => number;
  } = {},
): MonoTypeOperatorFunction<TunnelEvent> {
  const { fileLimit = openFileLimit(), fdsPerConnection = 1, now = Date.now } = options;
  return (source) =>
    new Observable<TunnelEvent>((out) => {
      const limit =
        fileLimit === undefined
          ? undefined
          : options.connections !== undefined
            ? Math.max(1, Math.floor(options.connections / Math.max(1, servers.length)))
            : connectionLimit(fileLimit, servers.length, fdsPerConnection);
      const warnLocal = rateLimited(
        (count) =>
          out.next({
            kind: 'warning',
            message: `too many open connections: refused ${count} new one(s); at most ${limit} at a time under the open-file limit of ${fileLimit} (ulimit -n); existing connections go on`,
          }),
        now,
      );
      const warnRemote = rateLimited(
        (count) =>
          out.next({
            kind: 'warning',
            message: `the server is out of file descriptors: refused ${count} new connection(s); existing connections go on`,
          }),
        now,
      );
      const previous = servers.map((server) => server.maxConnections);
      if (limit !== undefined) {
        debug('at most %d connections per listener (open-file limit %d)', limit, fileLimit);
        for (const server of servers) server.maxConnections = limit;
      }
      for (const server of servers) server.on('drop', warnLocal);
      const subscription = source.subscribe({
        next: (event) => {
          out.next(event);
          if (event.kind === 'close' && event.reason === 'refused' && OUT_OF_FDS.test(event.detail ?? '')) warnRemote();
        },
        error: (err: unknown) => out.error(err),
        complete: () => out.complete(),
      });
      return () => {
        subscription.unsubscribe();
        servers.forEach((server, i) => {
          server.off('drop', warnLocal);
          server.maxConnections = previous[i] as number;
        });
      };
    });
}
