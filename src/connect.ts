import { isIPv4 } from 'node:net';
import { fileURLToPath } from 'node:url';
import createDebug from 'debug';
import {
  BehaviorSubject,
  catchError,
  concat,
  defer,
  EMPTY,
  finalize,
  from,
  ignoreElements,
  map,
  merge,
  mergeMap,
  Observable,
  of,
  Subject,
  switchMap,
  tap,
  throwError,
} from 'rxjs';
import { descriptorBudget, guardDescriptors, openFileLimit } from './descriptor-guard.js';
import { routeRedirected } from './direct.js';
import { discoveryClient, listensOnIpv6, type StartFirewall, sessionDiscovery } from './discovery-client.js';
import { type DnsKeeper, dnsKeeper } from './dns-keeper.js';
import { errorMessage, TransportError, UsageError } from './errors.js';
import { ConnectionIds, channelEvent, flowEvent, type TunnelEvent } from './events.js';
import { chooseMethod, firewall$, helperCommand } from './firewall/client.js';
import { originalDestination } from './firewall/original-dst.js';
import type { FirewallSetup, SubnetRule } from './firewall/types.js';
import { firewallKeeper } from './firewall-keeper.js';
import { asAccepted, type Listener, listener$, type Redirected, redirected$ } from './listener.js';
import type { NameAnswer } from './name-rules.js';
import { wakeOrRouteChange$ } from './nudges.js';
import { type ConnectOptions, DEFAULT_TMARK, KEEPALIVE_MISSES, resolveOptions, type TunnelOptions } from './options.js';
import { printable, printableLines } from './printable.js';
import { isServerLink, isStockLink, keepaliveLost, type ServerLink, type StockRemote, serverLink$ } from './server-link.js';
import { stockDiscovery } from './stock/discovery.js';
import { DEFAULT_WINDOW, FLAG_NO_LATENCY_CONTROL } from './streams/defaults.js';
import type { Frame } from './streams/frame.js';
import { keepalive } from './streams/keepalive.js';
import { backoffMs, holdWhileDown, withReconnect } from './streams/reconnect.js';
import { session } from './streams/session.js';
import { resetSocket } from './streams/socket-end.js';
import type { UdpMessage } from './streams/udp.js';
import { type LocalDatagram, udpFlows } from './streams/udp-flows.js';
import { ServerExit } from './transport/server-process.js';
import { type SshHostInfo, sshHostInfo } from './transport/ssh.js';
import { MIN_REMOTE_NODE_MAJOR, NODE_TOO_OLD_EXIT } from './transport/stub.js';
import { capturedDatagrams$, localDestination, makeListenersTransparent, ReplySockets } from './udp/tproxy-client.js';

const debug = createDebug('rxshuttle:connect');

/** Local mode: the server child runs with this group (plus the port), and the firewall lets its sockets pass. */
const BYPASS_GID_BASE = 1_000_000_000;
/** Login banners and .bashrc chatter tolerated before the server's hello. */
const MAX_NOISE = 64 * 1024;

const hostRule = (address: string): SubnetRule => ({
  family: isIPv4(address) ? 4 : 6,
  address,
  prefix: isIPv4(address) ? 32 : 128,
  portLow: 0,
  portHigh: 0,
  exclude: true,
});

/**
 * Starts a tunnel: listener, server (over ssh or local), session, firewall rules. The Observable
 * reports what happens; unsubscribing takes it all down again (rules removed, children ended).
 * It errors with an RxshuttleError when the tunnel cannot start or breaks.
 */
export function connect(input: ConnectOptions | TunnelOptions): Observable<TunnelEvent> {
  let options: TunnelOptions;
  try {
    options = resolveOptions(input, () => helperCommand(fileURLToPath(new URL('./cli.js', import.meta.url))));
  } catch (err) {
    return throwError(() => err);
  }
  if (options.method === 'tproxy' && process.getuid?.() !== 0) {
    // sshuttle's tproxy asks the same: a socket TPROXY may hand packets to must be transparent.
    return throwError(() => new UsageError('--method tproxy needs root: its transparent sockets (IP_TRANSPARENT) need CAP_NET_ADMIN'));
  }
  if (options.remote === undefined && process.getuid?.() !== 0) {
    // The local server's own connections escape the rules only by its group id, which only root
    // can give it; as anyone else they would be caught again and loop.
    return throwError(() => new UsageError('local mode (no -r) needs root: run it as root, or tunnel through -r HOST'));
  }
  const ipv6 = options.disableIpv6
    ? false
    : options.subnets.some((rule) => rule.family === 6 && !rule.exclude) || (options.names.some((n) => !n.exclude) ? 'if-available' : false);
  const fileLimit = openFileLimit();
  const budget =
    fileLimit === undefined
      ? undefined
      : descriptorBudget(fileLimit, options.remote !== undefined && options.sshForward);
  return listener$(options.listen, ipv6).pipe(
    // TPROXY hands connections only to transparent listeners.
    tap((listener) => {
      if (options.method === 'tproxy') makeListenersTransparent(listener.servers);
    }),
    switchMap((listener) =>
      concat(
        of<TunnelEvent>({ kind: 'listening', host: listener.host, port: listener.port }),
        // Only the ControlMaster spends descriptors of its own on a connection; ssh2 channels do not.
        tunnel(options, listener, options.sshForward ? (budget?.handOffs ?? Number.POSITIVE_INFINITY) : Number.POSITIVE_INFINITY).pipe(
          guardDescriptors(listener.servers, { fileLimit, connections: budget?.connections }),
        ),
      ),
    ),
  );
}

/** New connections wait at most this many, and this long each, for a lost session to come back. */
const HOLD_MAX = 1_000;
const HOLD_MS = 20_000;

/**
 * `maxHandOffs`: connections ssh may carry at once before new ones go to our mux (descriptors).
 *
 * One tunnel is one listener, one firewall and a run of sessions: with `reconnect`, a session
 * lost after it was up is started again (streams/reconnect.ts) while the rules stay
 * (firewall-keeper.ts) and new connections wait for it (holdWhileDown); those open at the loss
 * were reset when their session ended.
 */
function tunnel(options: TunnelOptions, listener: Listener, maxHandOffs: number): Observable<TunnelEvent> {
  const { remote } = options;
  const where = remote ? remote.host : 'the local server';
  const local = remote === undefined;
  const bypassGid = local ? BYPASS_GID_BASE + listener.port : undefined;
  const hostInfo$: Observable<SshHostInfo> = remote
    ? from(sshHostInfo(options.sshCommand, remote))
    : of({ addresses: [], openssh: false });

  return hostInfo$.pipe(
    switchMap((host) => {
      const method = chooseMethod(options.method);
      const setup: FirewallSetup = {
        version: 1,
        method,
        // UDP's ports are apart from TCP's: the transparent UDP listener takes the same number.
        ...(method === 'tproxy' ? { tmark: options.tmark ?? DEFAULT_TMARK, udpPort: listener.port } : {}),
        port: listener.port,
        routerMode: !isLoopback(listener.host),
        rules: [...host.addresses.filter((a) => !(options.disableIpv6 && !isIPv4(a))).map(hostRule), ...options.subnets],
        ...(options.user === undefined ? {} : { user: options.user }),
        ...(options.group === undefined ? {} : { group: options.group }),
        ...(bypassGid === undefined ? {} : { bypassGid }),
        ...(options.killSwitch ? { killSwitch: true } : {}),
      };
      debug('firewall setup %o', setup);
      const keeper = firewallKeeper(startFirewall(options));
      const dns = dnsKeeper();
      // Whether a session takes new connections now; while not, they wait (bounded), then are reset.
      const up$ = new BehaviorSubject(false);
      const incoming = new Subject<Redirected>();
      const datagrams = new Subject<LocalDatagram>();
      // Datagrams that come while no session carries them are lost, as the network could lose them.
      const captured$ =
        method === 'tproxy'
          ? capturedDatagrams$(listener.port, listensOnIpv6(listener)).pipe(
              tap((d) => datagrams.next(d)),
              ignoreElements(),
            )
          : EMPTY;
      const held$ = redirected$(listener, method === 'tproxy' ? localDestination : originalDestination).pipe(
        holdWhileDown(up$, {
          max: HOLD_MAX,
          maxWaitMs: HOLD_MS,
          drop: (r, why) => {
            debug('connection from %s reset: %s while the session is down', r.source, why);
            resetSocket(r.socket);
          },
        }),
        tap((r) => incoming.next(r)),
        ignoreElements(),
      );
      const around: Session = {
        listener,
        // One for the tunnel's life: no two connections or flows share an id, across paths and sessions.
        ids: new ConnectionIds(),
        incoming$: incoming,
        startFirewall: keeper.start,
        bindDns: dns.bind,
        knownNames: new Map(),
        datagrams$: datagrams,
        routing: () => {
          up$.next(true);
          return () => up$.next(false);
        },
      };
      const oneSession = (): Observable<TunnelEvent> => {
        let greeted = false;
        return serverLink$(options, host, where, bypassGid).pipe(
          switchMap((link): Observable<TunnelEvent> => {
            if (isServerLink(link)) {
              return nodeTunnel(options, around, link, where, setup, maxHandOffs, () => {
                greeted = true;
              });
            }
            if (isStockLink(link)) {
              greeted = true;
              return stockTunnel(options, around, link.stock, setup, where);
            }
            return of(link);
          }),
          catchError((err: unknown) => throwError(() => explainFailure(err, greeted, where, options, local))),
        );
      };
      const sessions$: Observable<TunnelEvent> = options.reconnect
        ? withReconnect(oneSession, (e) => e.kind === 'connected', {
            delayMs: (attempt) => backoffMs(attempt),
            retriable: (err) => err instanceof TransportError,
            nudge$: wakeOrRouteChange$(),
          }).pipe(
            map((e): TunnelEvent => (e.kind === 'reconnecting' ? { kind: 'reconnecting', attempt: e.attempt, delayMs: e.delayMs, reason: errorMessage(e.reason) } : e)),
          )
        : oneSession();
      return merge(keeper.held$, dns.held$, held$, captured$, dns.whileDown$(up$), sessions$);
    }),
  );
}

/** What one session gets from the tunnel around it. */
interface Session {
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
  /** Call once this session takes connections from `incoming$`; the function it returns, when it stops. */
  readonly routing: () => () => void;
}

/** Routes the tunnel's incoming connections for as long as it is subscribed (after `route` has subscribed). */
const routing$ = (around: Session, route: Observable<TunnelEvent>): Observable<TunnelEvent> =>
  merge(
    route,
    new Observable<never>(() => around.routing()),
  );

/** Starts the firewall helper for a setup (and -H's hosts, and the rules of host names as subnets). */
const startFirewall =
  (options: TunnelOptions): StartFirewall =>
  (complete, hosts$, extraRules$) =>
    firewall$(complete, {
      helperArgv: [...options.firewallCommand],
      ...(options.firewallStderr ? { stderr: options.firewallStderr } : {}),
      ...(hosts$ ? { hosts$ } : {}),
      ...(extraRules$ ? { extraRules$ } : {}),
    });

/** The node server runs on the remote host: TCP in ssh's channels or our mux, discovery in the session. */
function nodeTunnel(
  options: TunnelOptions,
  around: Session,
  link: ServerLink,
  where: string,
  setup: FirewallSetup,
  maxHandOffs: number,
  onGreeted: () => void,
): Observable<TunnelEvent> {
  const { server } = link;
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
    mergeMap((event): Observable<TunnelEvent> => {
      switch (event.kind) {
        case 'noise':
          return from(printableLines(event.text).map((line): TunnelEvent => ({ kind: 'remote-output', line })));
        case 'hello':
          onGreeted();
          return concat(
            of<TunnelEvent>({ kind: 'connected', remote: where, window: event.hello.window }),
            merge(
              discovery.firewall$(setup, around.startFirewall),
              routing$(around, routeRedirected(around.incoming$, link.carrier(), (r) => forMux.next(r), maxHandOffs, around.ids)),
              udp.flows$,
            ),
          );
        case 'open':
        case 'close':
          return of(channelEvent(event, channels));
        case 'exit':
          return serverStopped(event.reason, where);
        case 'pong':
          return EMPTY;
        case 'udp':
          udp.fromServer(event.message);
          return EMPTY;
        default:
          return conversation.onSessionEvent(event) ?? EMPTY;
      }
    }),
  );
  return merge(remoteOutput$, session$).pipe(finalize(() => udp.end()));
}

/**
 * --method tproxy: the tunnel's captured datagrams as flows in this session (streams/udp-flows.ts):
 * their frames join the control channel, the server's answers go back to the programs through
 * reply sockets (udp/tproxy-client.ts). Without tproxy, nothing.
 */
function udpOverSession(options: TunnelOptions, around: Session, blocked$: Observable<boolean>) {
  const frames = new Subject<Frame>();
  const fromServer = new Subject<UdpMessage>();
  const flows$: Observable<TunnelEvent> =
    options.method !== 'tproxy'
      ? EMPTY
      : defer(() => {
          const replies = new ReplySockets();
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
 * through plain commands and DNS over TCP (stock/discovery.ts); ssh's keepalive watches the link.
 */
function stockTunnel(options: TunnelOptions, around: Session, remote: StockRemote, setup: FirewallSetup, where: string): Observable<TunnelEvent> {
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

/** The server said EXIT: its reason (remote text, so made printable) as an event, then as the error that ends the tunnel. */
export function serverStopped(reason: string, where: string): Observable<TunnelEvent> {
  const said = printable(reason);
  return concat(
    of<TunnelEvent>({ kind: 'remote-exit', reason: said }),
    throwError(() => new TransportError('RXS_ERR_REMOTE_EXIT', `server on ${where} stopped: ${said}`)),
  );
}

const isLoopback = (host: string) => host.startsWith('127.') || host === '::1' || host === 'localhost';

/**
 * Turns how the server process ended into a message that says what to do. The stderr lines it
 * quotes are the remote's: printable already (stderrLines), and made so again for any other maker
 * of a ServerExit.
 */
export function explainFailure(err: unknown, greeted: boolean, where: string, options: TunnelOptions, local = false): unknown {
  if (!(err instanceof ServerExit)) return err;
  const { remoteNode } = options;
  // ssh's ServerAlive gave up ("Timeout, server … not responding."): the same words as everywhere.
  if (greeted && options.keepalive > 0 && err.stderrTail.some((line) => /not responding/.test(line))) {
    return new TransportError('RXS_ERR_TRANSPORT_CLOSED', keepaliveLost(where, options.keepalive));
  }
  const telling = [...err.stderrTail].reverse().find((line) => /error|denied|not found|refused|timed out|resolve|no route|too old/i.test(line));
  const last = printable(telling ?? err.stderrTail.at(-1) ?? '');
  const said = last ? `: ${last}` : '';
  if (greeted) {
    // Nothing said why (kill -9 of ssh or of the remote server): say how the process ended.
    // Under ssh2 no ssh process runs: the exit is the remote server's, as sshd reported it.
    const program = local ? 'the local server' : err.remote ? 'the remote server' : 'ssh';
    const how = err.signal
      ? `${program} was killed by ${err.signal}`
      : err.exitCode === null
        ? 'the remote server ended its session'
        : `${program} exited with status ${err.exitCode}`;
    const server = !local && !err.remote && !err.signal && err.exitCode === 255 ? '; the remote server or the connection died' : '';
    return new TransportError('RXS_ERR_TRANSPORT_CLOSED', `connection to ${where} lost${said || `: ${how}${server}`}`);
  }
  if (err.exitCode === NODE_TOO_OLD_EXIT) {
    return new TransportError(
      'RXS_ERR_REMOTE_NODE_TOO_OLD',
      `node on ${where} is too old (need ${MIN_REMOTE_NODE_MAJOR} or newer): install a newer nodejs there or pass --remote-node PATH`,
    );
  }
  const noNode = err.exitCode === 127 || /not found|No such file/i.test(err.stderrTail.join('\n'));
  if (noNode && err.exitCode !== 255) {
    return new TransportError(
      'RXS_ERR_REMOTE_NO_NODE',
      `no "${remoteNode}" on ${where}${said}: install Node.js ${MIN_REMOTE_NODE_MAJOR}+ there (Debian: apt install nodejs) or pass --remote-node PATH`,
    );
  }
  if (err.exitCode === 255) return new TransportError('RXS_ERR_SSH', `ssh to ${where} failed${said}`);
  return new TransportError('RXS_ERR_REMOTE_EXIT', `server on ${where} exited before it started (${err.message})${said}`);
}
