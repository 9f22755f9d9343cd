import { createServer, isIPv4, isIPv6, type Server, type Socket } from 'node:net';
import createDebug from 'debug';
import { Observable } from 'rxjs';
import { errnoWords } from '../os/errno.js';
import { errorMessage, ListenError } from '../shared/errors.js';
import { isLoopbackHost } from '../shared/ip.js';
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
   * One server per address: those of -l (default 127.0.0.1), and those the rules deliver this
   * machine's connections to when -l does not cover them (listenHosts).
   */
  readonly servers: readonly Server[];
  /** The address that says what is caught: the first beyond loopback (router mode), else the first. */
  readonly host: string;
  readonly port: number;
}

/** `ipv6Only`: a `::` listener beside an IPv4 one must leave IPv4 to it (dual-stack, both would want 0.0.0.0's share). */
function tryListen(host: string, port: number, ipv6Only: boolean): Promise<Server> {
  return new Promise((resolve, reject) => {
    const server = createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true });
    server.once('error', reject);
    server.listen({ host, port, backlog: BACKLOG, ...(ipv6Only ? { ipv6Only } : {}) }, () => {
      server.off('error', reject);
      resolve(server);
    });
  });
}

/**
 * Where the rules deliver this machine's own connections, whatever -l says: REDIRECT (nat, nft)
 * rewrites their destination to 127.0.0.1 (::1 for IPv6), and TPROXY hands them to the listener
 * on 127.0.0.1 (::1) (firewall/tproxy.ts). Only forwarded traffic (router mode) comes to the
 * address it arrived at.
 */
export const LOCAL_DELIVERY = { 4: '127.0.0.1', 6: '::1' } as const;

/**
 * What to listen on: the addresses of -l; the IPv6 twin of the first when `ipv6` needs one and
 * -l names no IPv6 address (`::` for 0.0.0.0, else ::1); and 127.0.0.1 (and ::1 with `ipv6`)
 * unless an address already covers it, since the rules deliver this machine's connections there
 * (LOCAL_DELIVERY). That last one also makes the port ours: the rules, their chain and the
 * helper's lock are named by the port alone, so a second instance on the same port with another
 * address (`-l 127.0.0.2:12300` beside a `-l 127.0.0.1:12300`) could only be refused, or take
 * the other's connections; it fails here instead, at once, and port 0 skips the port. `optional`:
 * the addresses that may be left out when the system has no IPv6 (`ipv6` 'if-available');
 * `added`: those -l did not name.
 */
export function listenPlan(spec: ListenSpec, ipv6: boolean | 'if-available'): { hosts: string[]; added: string[]; optional: string[] } {
  const hosts = [spec.host, ...(spec.more ?? [])];
  const added: string[] = [];
  const add = (host: string) => {
    if (hosts.includes(host)) return;
    hosts.push(host);
    added.push(host);
  };
  if (ipv6 !== false && isIPv4(spec.host) && !hosts.some((host) => isIPv6(host))) add(spec.host === '0.0.0.0' ? '::' : LOCAL_DELIVERY[6]);
  // `::` takes IPv4 too only when it listens alone among IPv4 addresses (tryListen).
  const v4Covered = hosts.some((host) => host === LOCAL_DELIVERY[4] || host === '0.0.0.0' || (host === '::' && !hosts.some((h) => isIPv4(h))));
  if (!v4Covered) add(LOCAL_DELIVERY[4]);
  if (ipv6 !== false && !hosts.some((host) => host === LOCAL_DELIVERY[6] || host === '::')) add(LOCAL_DELIVERY[6]);
  return { hosts, added, optional: ipv6 === 'if-available' ? added.filter((host) => isIPv6(host)) : [] };
}

/** The addresses to listen on (listenPlan). */
export const listenHosts = (spec: ListenSpec, ipv6: boolean | 'if-available'): string[] => listenPlan(spec, ipv6).hosts;

/**
 * Listens on every address of listenPlan, all on one port: the rules redirect to one. Port 0
 * takes the first port from 12300 upwards that is free on every address, as sshuttle does.
 */
export async function listen(spec: ListenSpec, ipv6: boolean | 'if-available' = false): Promise<Listener> {
  const candidates =
    spec.port === 0 ? Array.from({ length: PORT_SEARCH }, (_, i) => DEFAULT_LISTEN_PORT + i) : [spec.port];
  const plan = listenPlan(spec, ipv6);
  let hosts = plan.hosts;
  // Router mode is decided by the listener's host (tunnel/tunnel.ts): any address beyond loopback means it.
  const host = hosts.find((h) => !isLoopbackHost(h)) ?? spec.host;
  let lastError: unknown;
  let lastPort = candidates[0] ?? DEFAULT_LISTEN_PORT;
  for (const port of candidates) {
    const servers: Server[] = [];
    lastPort = port;
    try {
      for (const address of hosts) {
        try {
          servers.push(await tryListen(address, port, address === '::' && hosts.some((h) => isIPv4(h))));
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code;
          // Host names as subnets may resolve to IPv6 addresses, or not: without IPv6 here, they take only IPv4 ones.
          if (!plan.optional.includes(address) || (code !== 'EADDRNOTAVAIL' && code !== 'EAFNOSUPPORT')) throw err;
          debug('not listening on %s: %s', address, code);
          hosts = hosts.filter((h) => h !== address);
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
  // 127.0.0.1 when -l did not name it: why it is listened on too.
  const why = plan.added.includes(LOCAL_DELIVERY[4]) ? `; ${LOCAL_DELIVERY[4]} too, where the rules deliver this machine's connections` : '';
  throw new ListenError(`cannot listen on ${where}, ${ports}: ${errnoWords(lastError)} (-l/--listen chooses another${why})`);
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
