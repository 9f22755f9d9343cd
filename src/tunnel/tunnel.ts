/**
 * One tunnel: one listener, one firewall and a run of sessions. With `reconnect`, a session lost
 * after it was up is started again (streams/reconnect.ts) while the rules stay (firewall-keeper.ts)
 * and new connections wait for it (holdWhileDown); those open at the loss were reset when their
 * session ended. What touches the world (ssh, the helper, the listener's sockets) comes in as
 * TunnelParts, so the wiring here is tested with fakes in virtual time (test/tunnel/tunnel.test.ts).
 */
import { isIPv4 } from 'node:net';
import createDebug from 'debug';
import {
  BehaviorSubject,
  catchError,
  concat,
  defer,
  EMPTY,
  finalize,
  ignoreElements,
  map,
  merge,
  mergeMap,
  Observable,
  of,
  Subject,
  share,
  switchMap,
  throwError,
} from 'rxjs';
import type { FirewallMethod, FirewallSetup, SubnetRule } from '../firewall/types.js';
import { errorMessage, TransportError, UsageError } from '../shared/errors.js';
import { ConnectionIds, flowEvent, type TunnelEvent } from '../shared/events.js';
import { isLoopbackHost } from '../shared/ip.js';
import { DEFAULT_TMARK, KEEPALIVE_MISSES, type TunnelOptions } from '../shared/options.js';
import { printable } from '../shared/printable.js';
import { DEFAULT_WINDOW, FLAG_NO_LATENCY_CONTROL } from '../streams/defaults.js';
import type { Frame } from '../streams/frame.js';
import { keepalive } from '../streams/keepalive.js';
import { backoffMs, holdWhileDown, withReconnect } from '../streams/reconnect.js';
import { session } from '../streams/session.js';
import { resetSocket } from '../streams/socket-end.js';
import type { UdpMessage } from '../streams/udp.js';
import { type LocalDatagram, type UdpFlowOutput, udpFlows } from '../streams/udp-flows.js';
import type { SshHostInfo } from '../transport/ssh.js';
import { discoveryClient, type StartFirewall, sessionDiscovery } from './discovery-client.js';
import { type DnsKeeper, dnsKeeper } from './dns-keeper.js';
import { explainFailure } from './explain-failure.js';
import { firewallKeeper } from './firewall-keeper.js';
import { asAccepted, type Listener, type Redirected } from './listener.js';
import type { NameAnswer } from './name-rules.js';
import { routeRedirected } from './route-connections.js';
import { isServerLink, isStockLink, keepaliveLost, type ServerLink, type StockLink, type StockRemote } from './server-link.js';
import { sessionEvents } from './session-events.js';
import { stockDiscovery } from './stock/discovery.js';

const debug = createDebug('rxshuttle:connect');

/** Local mode: the server child runs with this group (plus the port), and the firewall lets its sockets pass. */
const BYPASS_GID_BASE = 1_000_000_000;
/** Login banners and .bashrc chatter tolerated before the server's hello. */
const MAX_NOISE = 64 * 1024;
/** New connections wait at most this many, and this long each, for a lost session to come back. */
const HOLD_MAX = 1_000;
const HOLD_MS = 20_000;

/** What a tunnel is made of that touches the world; connect.ts gives the real ones. */
export interface TunnelParts {
  /** ssh -G's facts about the remote host (its addresses are kept out of the rules). */
  readonly host$: Observable<SshHostInfo>;
  /** One session's link to a server: progress events, then the link. */
  readonly link$: (host: SshHostInfo, bypassGid: number | undefined) => Observable<ServerLink | StockLink | TunnelEvent>;
  readonly startFirewall: StartFirewall;
  /** Connections the firewall redirected to the listener. */
  readonly redirected$: Observable<Redirected>;
  /** --method tproxy: the UDP datagrams the firewall diverted to us (else EMPTY). */
  readonly datagrams$: Observable<LocalDatagram>;
  /** Reasons to retry a lost session at once (wake from sleep, a route change). */
  readonly nudge$: Observable<unknown>;
  /** Reply sockets for UDP flows' answers (--method tproxy). */
  readonly replies: () => { take(output: Exclude<UdpFlowOutput, { kind: 'frame' }>): void; closeAll(): void };
}

/**
 * `maxHandOffs`: connections ssh may carry at once before new ones go to our mux (descriptors).
 */
export function tunnel(options: TunnelOptions, listener: Listener, method: FirewallMethod, maxHandOffs: number, parts: TunnelParts): Observable<TunnelEvent> {
  const bypassGid = options.remote === undefined ? BYPASS_GID_BASE + listener.port : undefined;
  return parts.host$.pipe(
    switchMap((host) => {
      const setup = firewallSetup(options, listener, method, host, bypassGid);
      debug('firewall setup %o', setup);
      return tunnelSessions(options, listener, setup, maxHandOffs, parts, () => parts.link$(host, bypassGid));
    }),
  );
}

/** What the firewall helper is asked for at the start (the rules of routes and names come later). */
export function firewallSetup(options: TunnelOptions, listener: Listener, method: FirewallMethod, host: SshHostInfo, bypassGid?: number): FirewallSetup {
  return {
    version: 1,
    method,
    // UDP's ports are apart from TCP's: the transparent UDP listener takes the same number.
    ...(method === 'tproxy' ? { tmark: options.tmark ?? DEFAULT_TMARK, udpPort: listener.port } : {}),
    port: listener.port,
    routerMode: !isLoopbackHost(listener.host),
    rules: [...host.addresses.filter((a) => !(options.disableIpv6 && !isIPv4(a))).map(hostRule), ...options.subnets],
    ...(options.user === undefined ? {} : { user: options.user }),
    ...(options.group === undefined ? {} : { group: options.group }),
    ...(bypassGid === undefined ? {} : { bypassGid }),
    ...(options.killSwitch ? { killSwitch: true } : {}),
  };
}

/** The sessions of one tunnel and what outlives each of them: the firewall, DNS sockets, held connections. */
function tunnelSessions(
  options: TunnelOptions,
  listener: Listener,
  setup: FirewallSetup,
  maxHandOffs: number,
  parts: TunnelParts,
  link$: () => Observable<ServerLink | StockLink | TunnelEvent>,
): Observable<TunnelEvent> {
  return defer(() => {
    const where = options.remote ? options.remote.host : 'the local server';
    const keeper = firewallKeeper(parts.startFirewall);
    const dns = dnsKeeper();
    // Whether a session takes new connections now; while not, they wait (bounded), then are reset.
    const up$ = new BehaviorSubject(false);
    const incoming$ = parts.redirected$.pipe(
      holdWhileDown(up$, {
        max: HOLD_MAX,
        maxWaitMs: HOLD_MS,
        drop: (r, why) => {
          debug('connection from %s reset: %s while the session is down', r.source, why);
          resetSocket(r.socket);
        },
      }),
      share(),
    );
    // Datagrams that come while no session carries them are lost, as the network could lose them.
    const datagrams$ = parts.datagrams$.pipe(share());
    const around: Around = {
      listener,
      // One for the tunnel's life: no two connections or flows share an id, across paths and sessions.
      ids: new ConnectionIds(),
      incoming$,
      startFirewall: keeper.start,
      bindDns: dns.bind,
      knownNames: new Map(),
      datagrams$,
      replies: parts.replies,
      routing: () => {
        up$.next(true);
        return () => up$.next(false);
      },
    };
    const oneSession = (): Observable<TunnelEvent> => {
      let greeted = false;
      const greet = () => {
        greeted = true;
      };
      return link$().pipe(
        switchMap((link) => sessionOver(link, options, around, setup, where, maxHandOffs, greet)),
        catchError((err: unknown) => throwError(() => explainFailure(err, greeted, where, options, options.remote === undefined))),
      );
    };
    const sessions$ = options.reconnect ? reconnecting(oneSession, parts.nudge$) : oneSession();
    return merge(keeper.held$, dns.held$, incoming$.pipe(ignoreElements()), datagrams$.pipe(ignoreElements()), dns.whileDown$(up$), sessions$);
  });
}

/** Starts a session again when it is lost after it was up, until the tunnel is unsubscribed. */
const reconnecting = (oneSession: () => Observable<TunnelEvent>, nudge$: Observable<unknown>): Observable<TunnelEvent> =>
  withReconnect(oneSession, (e) => e.kind === 'connected', {
      delayMs: (attempt) => backoffMs(attempt),
      retriable: (err) => err instanceof TransportError,
      nudge$,
    }).pipe(map((e): TunnelEvent => (e.kind === 'reconnecting' ? { kind: 'reconnecting', attempt: e.attempt, delayMs: e.delayMs, reason: errorMessage(e.reason) } : e)));

/** A session over whatever the link is: our server, stock sshd, or (not a link) an event to pass on. */
function sessionOver(
  link: ServerLink | StockLink | TunnelEvent,
  options: TunnelOptions,
  around: Around,
  setup: FirewallSetup,
  where: string,
  maxHandOffs: number,
  greet: () => void,
): Observable<TunnelEvent> {
  if (isServerLink(link)) return nodeTunnel(options, around, link, where, setup, maxHandOffs, greet);
  if (isStockLink(link)) {
    greet();
    return stockTunnel(options, around, link.stock, setup, where);
  }
  return of(link);
}

/** What one session gets from the tunnel around it. */
interface Around {
  readonly listener: Listener;
  /** Numbers every connection and flow the tunnel reports, whichever path and session carries it. */
  readonly ids: ConnectionIds;
  /** Connections the firewall redirected, once this session routes them (`routing`). */
  readonly incoming$: Observable<Redirected>;
  readonly startFirewall: StartFirewall;
  /** Binds the DNS sockets (--dns), kept across sessions. */
  readonly bindDns: DnsKeeper['bind'];
  /** Host names as subnets: their latest answers, kept for a session whose lookup fails. */
  readonly knownNames: Map<string, NameAnswer>;
  /** --method tproxy: the UDP datagrams the firewall diverted to us, for the session that carries them. */
  readonly datagrams$: Observable<LocalDatagram>;
  readonly replies: TunnelParts['replies'];
  /** Call once this session takes connections from `incoming$`; the function it returns, when it stops. */
  readonly routing: () => () => void;
}

/** Routes the tunnel's incoming connections for as long as it is subscribed (after `route` has subscribed). */
const routing$ = (around: Around, route: Observable<TunnelEvent>): Observable<TunnelEvent> =>
  merge(
    route,
    new Observable<never>(() => around.routing()),
  );

/** The node server runs on the remote host: TCP in ssh's channels or our mux, discovery in the session. */
function nodeTunnel(
  options: TunnelOptions,
  around: Around,
  link: ServerLink,
  where: string,
  setup: FirewallSetup,
  maxHandOffs: number,
  greet: () => void,
): Observable<TunnelEvent> {
  const { server } = link;
  // The mux takes what ssh's own channels do not; routing starts only once the session greeted,
  // and the session's accepted$ is made before that, so the hand-over is a Subject.
  const forMux = new Subject<Redirected>();
  // -N, -H, --dns: the control-channel conversations and what the firewall needs for them.
  const conversation = sessionDiscovery(options);
  const discovery = discoveryClient(options, around.listener, conversation.source, around.bindDns, around.knownNames);
  // Remote text is made printable where it comes in (stderrLines does it too; twice changes nothing).
  const remoteOutput$ = server.stderr$.pipe(map((line): TunnelEvent => ({ kind: 'remote-output', line: printable(line) })));
  // A server that went silent (network gone, host suspended) ends the tunnel instead of hanging it.
  const alive =
    options.keepalive > 0
      ? keepalive({
          intervalMs: options.keepalive * 1000,
          misses: KEEPALIVE_MISSES,
          timeout: () => new TransportError('RXS_ERR_TRANSPORT_CLOSED', keepaliveLost(where, options.keepalive)),
        })
      : null;
  const udp = udpOverSession(options, around, server.writer.blocked$);
  // The mux counts its channels from 1 in each session: they get the tunnel's ids.
  const channels = around.ids.renumbering();
  const session$ = session({
    role: 'client',
    recvWindow: DEFAULT_WINDOW,
    bytes$: alive ? server.bytes$.pipe(alive.heard()) : server.bytes$,
    control$: merge(alive ? merge(alive.pings$, conversation.control$) : conversation.control$, udp.frames$),
    sendRaw: server.sendRaw,
    writer: server.writer,
    accepted$: (readersBlocked$) => forMux.pipe(map((r) => asAccepted(r, readersBlocked$))),
    maxNoise: MAX_NOISE,
    flags: options.latencyControl ? 0 : FLAG_NO_LATENCY_CONTROL,
  }).pipe(
    sessionEvents({
      where,
      channels,
      afterHello: () => {
        greet();
        return merge(
          discovery.firewall$(setup, around.startFirewall),
          routing$(around, routeRedirected(around.incoming$, link.carrier(), (r) => forMux.next(r), maxHandOffs, around.ids)),
          udp.flows$,
        );
      },
      onUdp: udp.fromServer,
      onOther: conversation.onSessionEvent,
    }),
  );
  return merge(remoteOutput$, session$).pipe(finalize(() => udp.end()));
}

/**
 * --method tproxy: the tunnel's captured datagrams as flows in this session (streams/udp-flows.ts):
 * their frames join the control channel, the server's answers go back to the programs through
 * reply sockets (udp/tproxy-client.ts). The frames and the server's messages are Subjects because
 * the session that carries them is made with them. Without tproxy, nothing.
 */
function udpOverSession(options: TunnelOptions, around: Around, blocked$: Observable<boolean>) {
  const frames = new Subject<Frame>();
  const fromServer = new Subject<UdpMessage>();
  const flows$: Observable<TunnelEvent> =
    options.method !== 'tproxy'
      ? EMPTY
      : defer(() => {
          const replies = around.replies();
          // Flow ids count from 1 in each session: the events get the tunnel's ids.
          const flows = around.ids.renumbering();
          return around.datagrams$.pipe(
            udpFlows({ fromServer$: fromServer, writable$: blocked$.pipe(map((blocked) => !blocked)) }),
            mergeMap((output): Observable<TunnelEvent> => {
              if (output.kind === 'frame') {
                frames.next(output.frame);
                return EMPTY;
              }
              replies.take(output);
              return output.kind === 'reply' ? EMPTY : of(flowEvent(output, flows));
            }),
            finalize(() => replies.closeAll()),
          );
        });
  return {
    frames$: frames.asObservable(),
    flows$,
    fromServer: (message: UdpMessage) => fromServer.next(message),
    end: () => fromServer.complete(),
  };
}

/**
 * Stock-sshd mode: nothing of ours runs on the remote host. Each TCP connection is a direct-tcpip
 * channel (one sshd refuses is reset, as the destination would have); discovery and DNS go
 * through plain commands and DNS over TCP (tunnel/stock/discovery.ts); ssh's keepalive watches the link.
 */
function stockTunnel(options: TunnelOptions, around: Around, remote: StockRemote, setup: FirewallSetup, where: string): Observable<TunnelEvent> {
  if (options.method === 'tproxy') {
    return throwError(
      () =>
        new UsageError(
          `--method tproxy carries UDP, which needs node on ${where} (it has none: stock-sshd mode); install Node.js there, or use --method nat or nft for TCP alone`,
        ),
    );
  }
  return defer(() => {
    const stock = stockDiscovery(options, remote, where);
    const discovery = discoveryClient(options, around.listener, stock.source, around.bindDns, around.knownNames);
    return concat(
      of<TunnelEvent>({ kind: 'connected', remote: where, window: 0 }),
      merge(
        remote.ended$,
        stock.notices$,
        discovery.firewall$(setup, around.startFirewall),
        routing$(around, routeRedirected(around.incoming$, remote.carrier, null, Number.POSITIVE_INFINITY, around.ids)),
      ),
    ).pipe(finalize(() => stock.close()));
  });
}

const hostRule = (address: string): SubnetRule => ({
  family: isIPv4(address) ? 4 : 6,
  address,
  prefix: isIPv4(address) ? 32 : 128,
  portLow: 0,
  portHigh: 0,
  exclude: true,
});
