import { createServer, type Server, type Socket } from 'node:net';
import createDebug from 'debug';
import { Observable } from 'rxjs';
import { errorMessage, ListenError } from './errors.js';
import type { ListenSpec } from './options.js';
import { DEFAULT_LISTEN_PORT } from './options.js';
import type { Destination } from './streams/frame.js';
import type { AcceptedConnection } from './streams/mux.js';
import { socketEnd } from './streams/socket-end.js';

const debug = createDebug('rxshuttle:listen');

/** Big enough that a burst of new connections never waits for the kernel's SYN retry (1 s). */
const BACKLOG = 4096;
const PORT_SEARCH = 100;

export interface Listener {
  readonly server: Server;
  readonly host: string;
  readonly port: number;
}

function tryListen(host: string, port: number): Promise<Server> {
  return new Promise((resolve, reject) => {
    const server = createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true });
    server.once('error', reject);
    server.listen({ host, port, backlog: BACKLOG }, () => {
      server.off('error', reject);
      resolve(server);
    });
  });
}

/** Listens on spec; port 0 takes the first free port from 12300 upwards, as sshuttle does. */
export async function listen(spec: ListenSpec): Promise<Listener> {
  const candidates =
    spec.port === 0 ? Array.from({ length: PORT_SEARCH }, (_, i) => DEFAULT_LISTEN_PORT + i) : [spec.port];
  let lastError: unknown;
  for (const port of candidates) {
    try {
      const server = await tryListen(spec.host, port);
      // Until the tunnel carries them, nobody owns accepted sockets: drop them.
      server.on('connection', (socket: Socket) => {
        if (server.listenerCount('connection') === 1) socket.destroy();
      });
      return { server, host: spec.host, port };
    } catch (err) {
      lastError = err;
      if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE') break;
    }
  }
  throw new ListenError(`cannot listen on ${spec.host}:${spec.port || DEFAULT_LISTEN_PORT}: ${errorMessage(lastError)}`);
}

/**
 * Redirected sockets as connections to carry. `originalDestination` asks the kernel where each was
 * going; a socket without one (someone connected to the port directly) is dropped.
 */
export function accepted$(
  listener: Listener,
  originalDestination: (socket: Socket) => Destination,
  blocked$: Observable<boolean>,
): Observable<AcceptedConnection> {
  return new Observable<AcceptedConnection>((subscriber) => {
    const onConnection = (socket: Socket) => {
      socket.on('error', () => {});
      let destination: Destination;
      try {
        destination = originalDestination(socket);
      } catch (err) {
        debug('no original destination for %s:%d: %s', socket.remoteAddress, socket.remotePort, errorMessage(err));
        socket.destroy();
        return;
      }
      if (destination.port === listener.port && destination.address === socket.localAddress) {
        debug('direct connection to the listener from %s:%d dropped', socket.remoteAddress, socket.remotePort);
        socket.destroy();
        return;
      }
      const source = `${socket.remoteAddress}:${socket.remotePort}`;
      subscriber.next({ ...socketEnd(socket, blocked$), destination, source });
    };
    listener.server.on('connection', onConnection);
    return () => listener.server.off('connection', onConnection);
  });
}
