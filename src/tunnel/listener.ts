import { createServer, isIPv4, isIPv6, type Server, type Socket } from 'node:net';
import createDebug from 'debug';
import { Observable } from 'rxjs';
import { errnoWords } from '../os/errno.js';
import { errorMessage, ListenError } from '../shared/errors.js';
import type { ListenSpec } from '../shared/options.js';
import { DEFAULT_LISTEN_PORT } from '../shared/options.js';
import { formatPeer } from '../streams/destination.js';
import type { Destination } from '../streams/frame.js';
import type { AcceptedConnection } from '../streams/mux.js';
import { resource$ } from '../streams/resource.js';
import { socketEnd } from '../streams/socket-end.js';

const debug = createDebug('rxshuttle:listen');

/** Big enough that a burst of new connections never waits for the kernel's SYN retry (1 s). */
const BACKLOG = 4096;
const PORT_SEARCH = 100;

export interface Listener {
  /**
   * One server per address: those of -l (default 127.0.0.1), and the IPv6 twin of the first
   * when IPv6 subnets are tunneled and -l names no IPv6 address.
   */
  readonly servers: readonly Server[];
  /** The address that says what is caught: the first beyond loopback (router mode), else the first. */
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

/** The IPv6 twin of an IPv4 listen address: ip6tables REDIRECTs to ::1 (or any address in router mode). */
const ipv6Twin = (host: string): string => (host.startsWith('127.') ? '::1' : host === '0.0.0.0' ? '::' : host);

const isLoopback = (host: string): boolean => host.startsWith('127.') || host === '::1';

/** The addresses to listen on: those of spec, and the IPv6 twin of the first when `ipv6` needs one. */
export function listenHosts(spec: ListenSpec, ipv6: boolean | 'if-available'): string[] {
  const hosts = [spec.host, ...(spec.more ?? [])];
  const needsTwin = ipv6 !== false && isIPv4(spec.host) && !hosts.some((host) => isIPv6(host));
  return needsTwin ? [...hosts, ipv6Twin(spec.host)] : hosts;
}

/**
 * Listens on every address of spec (and the IPv6 twin when `ipv6`), all on one port: the rules
 * redirect to one. Port 0 takes the first port from 12300 upwards that is free on every address,
 * as sshuttle does.
 */
export async function listen(spec: ListenSpec, ipv6: boolean | 'if-available' = false): Promise<Listener> {
  const candidates =
    spec.port === 0 ? Array.from({ length: PORT_SEARCH }, (_, i) => DEFAULT_LISTEN_PORT + i) : [spec.port];
  let hosts = listenHosts(spec, ipv6);
  // Host names as subnets may resolve to IPv6 addresses, or not: without IPv6 here, they take only IPv4 ones.
  const twin = ipv6 === 'if-available' && hosts.length > 1 + (spec.more?.length ?? 0) ? hosts.at(-1) : undefined;
  // Router mode is decided by the listener's host (tunnel/tunnel.ts): any address beyond loopback means it.
  const host = hosts.find((h) => !isLoopback(h)) ?? spec.host;
  let lastError: unknown;
  let lastPort = candidates[0] ?? DEFAULT_LISTEN_PORT;
  for (const port of candidates) {
    const servers: Server[] = [];
    lastPort = port;
    try {
      for (const address of hosts) {
        try {
          servers.push(await tryListen(address, port));
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code;
          if (address !== twin || (code !== 'EADDRNOTAVAIL' && code !== 'EAFNOSUPPORT')) throw err;
          debug('not listening on %s: %s', address, code);
          hosts = hosts.filter((h) => h !== twin);
        }
      }
      for (const server of servers) {
        // Out of descriptors (EMFILE) shows here: libuv refuses the new connection, the
        // existing ones go on. Never let it crash the process.
        server.on('error', (err) => debug('listener error: %s', errorMessage(err)));
        // Until the tunnel carries them, nobody owns accepted sockets: drop them.
        server.on('connection', (socket: Socket) => {
          if (server.listenerCount('connection') === 1) socket.destroy();
        });
      }
      return { servers, host, port };
    } catch (err) {
      for (const server of servers) server.close();
      lastError = err;
      if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE') break;
    }
  }
  const where = hosts.map((h) => (isIPv6(h) ? `[${h}]` : h)).join(', ');
  const ports = lastPort === candidates[0] ? `port ${lastPort}` : `ports ${candidates[0]} to ${lastPort}`;
  throw new ListenError(`cannot listen on ${where}, ${ports}: ${errnoWords(lastError)} (-l/--listen chooses another)`);
}

/** A socket the firewall redirected to us, with where it was going. Still paused. */
export interface Redirected {
  readonly socket: Socket;
  readonly destination: Destination;
  readonly source: string;
}

/** A redirected socket as a connection for the mux to carry. */
export const asAccepted = (redirected: Redirected, blocked$: Observable<boolean>): AcceptedConnection => ({
  ...socketEnd(redirected.socket, blocked$),
  destination: redirected.destination,
  source: redirected.source,
});

/** Sockets the firewall redirected to us; dropped when the kernel knows no original destination. */
export function redirected$(
  listener: Listener,
  originalDestination: (socket: Socket) => Destination,
): Observable<Redirected> {
  return new Observable<Redirected>((subscriber) => {
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
        // Connected to the proxy port itself, not redirected: nothing to tunnel.
        debug('direct connection to the listener from %s:%d dropped', socket.remoteAddress, socket.remotePort);
        socket.destroy();
        return;
      }
      subscriber.next({ socket, destination, source: formatPeer(socket.remoteAddress, socket.remotePort) });
    };
    for (const server of listener.servers) server.on('connection', onConnection);
    return () => {
      for (const server of listener.servers) server.off('connection', onConnection);
    };
  });
}

/** The listener as a resource: emits it once listening; unsubscribing closes it, even mid-listen. */
export function listener$(spec: ListenSpec, ipv6: boolean | 'if-available'): Observable<Listener> {
  return resource$(
    () => listen(spec, ipv6),
    (listener) => {
      for (const server of listener.servers) server.close();
    },
  );
}
