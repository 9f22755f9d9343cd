/**
 * The client's side of -N, -H and --dns, kept out of tunnel.ts, which only hands it the session
 * events that are its business and lets it start the firewall:
 *
 *   -N     ROUTES_REQUEST goes out right after the hello; the firewall waits for the server's
 *          routes and tunnels them as if they had been given on the command line (without the
 *          default route, without what -x or the ssh server's address exclude, and without
 *          routes wider than /8 or /16 unless --auto-nets-wide: those are reported).
 *   --dns  DNS sockets are bound before the firewall starts (their port goes into its setup);
 *          once the rules are in place, each captured query becomes a DNS_REQUEST.
 *   -H     once the rules are in place, HOSTS_REQUEST (with the seed hosts) goes out; every HOST
 *          that comes back goes to the firewall helper for /etc/hosts, if the rules given to the
 *          firewall tunnel its address (firewall/host-address.ts): the server must not point
 *          names at hosts outside the tunnel, nor at this machine. Refused names are debug lines
 *          and one warning that counts them.
 */
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { isIPv4, isIPv6 } from 'node:net';
import createDebug from 'debug';
import {
  BehaviorSubject,
  catchError,
  combineLatest,
  concat,
  defer,
  EMPTY,
  finalize,
  from,
  map,
  merge,
  mergeMap,
  type Observable,
  of,
  ReplaySubject,
  Subject,
  switchMap,
  take,
  throwError,
  timer,
} from 'rxjs';
import { type HostAddressRefusal, TunneledSubnets } from '../firewall/host-address.js';
import type { FirewallSetup, HostsEntry, SubnetRule } from '../firewall/types.js';
import { MAX_RULES } from '../firewall/validate.js';
import { errorMessage, UsageError } from '../shared/errors.js';
import type { TunnelEvent } from '../shared/events.js';
import { inPrefix, isLoopbackHost, parseIp } from '../shared/ip.js';
import type { TunnelOptions } from '../shared/options.js';
import { encodeHostsRequest, type HostEntry, type Route } from '../streams/discovery.js';
import { DnsIds, type DnsReply, dnsQuery } from '../streams/dns.js';
import { CONTROL_CHANNEL, Command, type Frame, frame } from '../streams/frame.js';
import type { SessionEvent } from '../streams/session.js';
import { type DnsSockets, dnsCapture$, dnsSockets$, resolvConfNameservers } from './dns-capture.js';
import type { FirewallEvent } from './firewall-client.js';
import { type Listener, LOCAL_DELIVERY } from './listener.js';
import { addressLists, type NameAnswer, type NameEvent, namedRules, resolveNames$, startEvents, watchNames$ } from './name-rules.js';

/** How long a captured query waits for the server (which itself gives up after 12 s). */
export const DNS_QUERY_TIMEOUT_MS = 15_000;
/** Host names the client passes on to the helper, at most. */
const MAX_HOSTS = 10_000;
/**
 * -H: the warning about names refused for their address comes this long after the first one, and
 * counts the names refused until then (a scan of the server sends its names in a burst).
 */
export const REFUSED_HOSTS_WARNING_MS = 2_000;

const debug = createDebug('rxshuttle:hosts');
const REFUSAL_REASON: { readonly [R in HostAddressRefusal]: string } = {
  invalid: 'not an IP address',
  local: 'loopback, unspecified, link-local or multicast, after normalising',
  outside: 'outside the tunneled subnets',
};

/**
 * Starts the firewall helper with a setup (and, for -H, the hosts entries to send it; for host
 * names as subnets, the rules they resolve to, each time as a whole list).
 */
export type StartFirewall = (
  setup: FirewallSetup,
  hosts$?: Observable<HostsEntry>,
  extraRules$?: Observable<readonly SubnetRule[]>,
) => Observable<FirewallEvent>;

export interface Discovery {
  /** The firewall and what hangs on it: waits for routes (-N), binds the DNS sockets, starts the helper; then -H and DNS capture. */
  firewall$(base: FirewallSetup, start: StartFirewall): Observable<TunnelEvent>;
}

const ruleContains = (outer: SubnetRule, route: Route): boolean => {
  if (outer.family !== route.family || outer.prefix > route.prefix) return false;
  const a = parseIp(outer.address)?.bytes;
  const b = parseIp(route.address)?.bytes;
  return a !== undefined && b !== undefined && inPrefix(b, a, outer.prefix);
};

/**
 * The narrowest prefix of a server's route that -N takes without --auto-nets-wide: a server that
 * names 0.0.0.0/1 and 128.0.0.0/1 must not capture all of the machine's traffic.
 */
export const AUTO_NET_MIN_PREFIX: { readonly [F in 4 | 6]: number } = { 4: 8, 6: 16 };

/** A route wider than -N takes without --auto-nets-wide (shorter than /8 for IPv4, /16 for IPv6). */
export const isWideRoute = (route: Route | SubnetRule): boolean => route.prefix < AUTO_NET_MIN_PREFIX[route.family];

/** Routes listed in the warning about wide routes, at most; the rest are counted. */
const MAX_LISTED_WIDE = 16;

/**
 * The routes -N tunnels: every route the server named, except default routes, IPv6 ones when
 * we do not listen on IPv6, those inside an exclude (-x, or the ssh server's own address),
 * those already tunneled, and, unless `wide` (--auto-nets-wide), those wider than /8 (IPv4) or
 * /16 (IPv6).
 */
export function autoNetRules(routes: readonly Route[], rules: readonly SubnetRule[], ipv6: boolean, wide = false): SubnetRule[] {
  const out: SubnetRule[] = [];
  const same = (r: SubnetRule) => (route: Route) => r.family === route.family && r.address === route.address && r.prefix === route.prefix;
  for (const route of routes) {
    if (route.prefix === 0 || (route.family === 6 && !ipv6) || (!wide && isWideRoute(route))) continue;
    const allPorts = (r: SubnetRule) => r.portLow === 0 && r.portHigh === 0;
    if (rules.some((r) => r.exclude && allPorts(r) && ruleContains(r, route))) continue;
    if (rules.some((r) => !r.exclude && allPorts(r) && same(r)(route)) || out.some((r) => same(r)(route))) continue;
    out.push({ family: route.family, address: route.address, prefix: route.prefix, portLow: 0, portHigh: 0, exclude: false });
  }
  return out;
}

export const listensOnIpv6 = (listener: Listener): boolean =>
  listener.servers.some((server) => (server.address() as AddressInfo | null)?.family === 'IPv6');

/**
 * Where REDIRECT sends DNS: this machine's queries to 127.0.0.1 and ::1 whatever the listen
 * address (LOCAL_DELIVERY: a DNS socket on 127.0.0.2 would hear none); forwarded ones (router
 * mode) to the address they came to, which a wildcard listen address covers.
 */
export function dnsHosts(listenHost: string): { v4: string[]; v6: string[] } {
  const local = (family: 4 | 6, own: boolean, wildcard: string): string[] =>
    listenHost === wildcard ? [wildcard] : own && !isLoopbackHost(listenHost) ? [listenHost, LOCAL_DELIVERY[family]] : [LOCAL_DELIVERY[family]];
  const v4 = local(4, isIPv4(listenHost), '0.0.0.0');
  // 0.0.0.0 (router mode) takes IPv6's forwarded queries on :: too.
  const v6 = listenHost === '0.0.0.0' ? ['::'] : local(6, isIPv6(listenHost), '::');
  return { v4, v6 };
}

/**
 * Where -N, -H and --dns get their answers: the node server over the session's control channel
 * (sessionDiscovery), or in stock-sshd mode commands and DNS over TCP through ssh (tunnel/stock/).
 */
export interface DiscoverySource {
  /** -N: the remote's routes, once. */
  readonly routes$: Observable<readonly Route[]>;
  /** -H: the hosts the remote finds, starting from the seeds; subscribed once the firewall is ready. */
  hosts$(seeds: readonly string[]): Observable<HostEntry>;
  /** --dns: one captured query's answer (errors with DnsError FAILED for SERVFAIL). */
  ask(message: Buffer): Observable<Buffer>;
}

/** The node server's side of discovery: frames for the control channel, and the session events that answer them. */
export function sessionDiscovery(options: TunnelOptions): {
  readonly source: DiscoverySource;
  readonly control$: Observable<Frame>;
  onSessionEvent(event: SessionEvent): Observable<TunnelEvent> | null;
} {
  const control = new Subject<Frame>();
  const routes = new ReplaySubject<readonly Route[]>(1);
  const replies = new Subject<DnsReply>();
  const hosts = new Subject<HostEntry>();
  const ids = new DnsIds();
  const toNs = options.dns?.toNs;
  const source: DiscoverySource = {
    routes$: routes.pipe(take(1)),
    hosts$: (seeds) =>
      merge(
        hosts,
        defer(() => {
          control.next(encodeHostsRequest(seeds));
          return EMPTY;
        }),
      ),
    ask: (message) =>
      defer(() => {
        const id = ids.take();
        return dnsQuery(
          { id, message, ...(toNs ? { target: toNs } : {}) },
          { send: (f) => control.next(f), replies$: replies, timeoutMs: DNS_QUERY_TIMEOUT_MS },
        ).pipe(finalize(() => ids.release(id)));
      }),
  };
  return {
    source,
    control$: merge(options.autoNets ? of(frame(CONTROL_CHANNEL, Command.ROUTES_REQUEST)) : EMPTY, control),
    onSessionEvent(event) {
      switch (event.kind) {
        case 'routes':
          routes.next(event.routes);
          return EMPTY;
        case 'dns-response':
        case 'dns-failed':
          replies.next(event);
          return EMPTY;
        case 'host':
          hosts.next(event.host);
          return EMPTY;
        case 'dns-request':
        case 'routes-request':
        case 'hosts-request':
          return EMPTY; // server-bound: the mux never lets them reach a client
        default:
          return null;
      }
    },
  };
}

/**
 * `bindDns` binds the DNS sockets (default: for this session alone); a tunnel that reconnects
 * gives one that keeps them across sessions, so that queries are answered while it is down.
 */
export function discoveryClient(
  options: TunnelOptions,
  listener: Listener,
  source: DiscoverySource,
  bindDns: typeof dnsSockets$ = dnsSockets$,
  knownNames: Map<string, NameAnswer> = new Map(),
): Discovery {
  const hosts = new Subject<HostsEntry>();
  const known = new Map<string, string>();
  /** `name address` of the names refused for their address (each counted and logged once). */
  const refused = new Set<string>();
  const dns = options.dns;

  /** The DNS sockets and the nameservers they serve; v6 ones are left out (with a warning) where IPv6 cannot be bound. */
  const dnsSetup$ = (): Observable<{ sockets: DnsSockets; nameservers: string[]; warning?: string } | null> => {
    if (!dns) return of(null);
    return defer(() => {
      const nameservers = (dns.nameservers ? [...dns.nameservers] : resolvConfNameservers(readLocalResolvConf())).filter(
        (ns) => !(options.disableIpv6 && isIPv6(ns)),
      );
      if (nameservers.length === 0) {
        return throwError(() => new UsageError('--dns: /etc/resolv.conf names no nameserver to capture; name them with --ns-hosts'));
      }
      const where = dnsHosts(listener.host);
      const v4 = nameservers.filter((ns) => isIPv4(ns));
      const hostsFor = (servers: string[]) => [
        ...(servers.some((ns) => isIPv4(ns)) ? where.v4 : []),
        ...(servers.some((ns) => isIPv6(ns)) ? where.v6 : []),
      ];
      return bindDns(hostsFor(nameservers), listener.port + 1, listener.port).pipe(
        map((sockets) => ({ sockets, nameservers })),
        catchError((err: unknown) => {
          if (v4.length === 0 || v4.length === nameservers.length) return throwError(() => err);
          const warning = `--dns: not capturing the IPv6 nameservers (${errorMessage(err)})`;
          return bindDns(hostsFor(v4), listener.port + 1, listener.port).pipe(map((sockets) => ({ sockets, nameservers: v4, warning })));
        }),
      );
    });
  };

  /**
   * A found host goes to the helper (once per name and address, bounded) and is reported, if the
   * firewall's rules tunnel its address; otherwise it is a debug line, and the first such name
   * starts the one warning that says how many were refused.
   */
  const foundHost = (tunneled: TunneledSubnets, { name, address }: HostEntry): Observable<TunnelEvent> => {
    if (known.get(name) === address || (!known.has(name) && known.size >= MAX_HOSTS)) return EMPTY;
    const refusal = tunneled.refusal(address);
    if (refusal !== null) {
      const key = `${name} ${address}`;
      if (refused.has(key) || refused.size >= MAX_HOSTS) return EMPTY;
      refused.add(key);
      debug('-H: refused %s: %s (%s)', name, address, REFUSAL_REASON[refusal]);
      if (refused.size > 1) return EMPTY;
      return timer(REFUSED_HOSTS_WARNING_MS).pipe(map((): TunnelEvent => ({ kind: 'warning', message: refusedHostsWarning(refused.size) })));
    }
    known.set(name, address);
    hosts.next({ address, name });
    return of<TunnelEvent>({ kind: 'host', name, address });
  };

  /** What starts once the rules are in place; `rules` are those the firewall got (with -N's routes and the names' addresses). */
  const afterReady$ = (sockets: DnsSockets | null, rules: readonly SubnetRule[], names$: Observable<TunnelEvent>): Observable<TunnelEvent> => {
    const tunneled = new TunneledSubnets(rules);
    return merge(
      names$,
      options.autoHosts ? source.hosts$(options.autoHosts.seeds).pipe(mergeMap((host) => foundHost(tunneled, host))) : EMPTY,
      sockets ? dnsCapture$(sockets, (message) => source.ask(message)) : EMPTY,
    );
  };

  return {
    firewall$(base, start) {
      const auto$: Observable<{ list: readonly Route[]; chosen: SubnetRule[]; ignored: SubnetRule[]; overflow: number } | null> = options.autoNets
        ? source.routes$.pipe(
            take(1),
            map((list) => {
              // What -N would take with --auto-nets-wide; without it, the wide ones are left out and named.
              const all = autoNetRules(list, base.rules, listensOnIpv6(listener), true);
              const taken = options.autoNetsWide ? all : all.filter((r) => !isWideRoute(r));
              // The helper takes MAX_RULES rules in all: the routes beyond are left out (and counted).
              const room = Math.max(0, MAX_RULES - base.rules.length);
              return { list, chosen: taken.slice(0, room), ignored: options.autoNetsWide ? [] : all.filter(isWideRoute), overflow: Math.max(0, taken.length - room) };
            }),
          )
        : of(null);
      const ipv6 = listensOnIpv6(listener);
      const names$ =
        options.names.length > 0 ? resolveNames$(options.names, source.ask, { ipv6, known: knownNames }) : of(null);
      return combineLatest([auto$, names$]).pipe(
        take(1),
        switchMap(([auto, named]) => {
          const rules = [...base.rules, ...(auto?.chosen ?? [])];
          for (const [name, answer] of named ?? []) knownNames.set(name, answer);
          // Host names as subnets: their rules go to the helper apart (RULES lines), so that new
          // answers replace them in place.
          const extraRules = new BehaviorSubject<readonly SubnetRule[]>(named ? namedRules(options.names, addressLists(named)) : []);
          const nameEvents$ = named
            ? concat(
                from(startEvents(options.names, named)),
                watchNames$(options.names, source.ask, named, { ipv6, onAnswer: (name, answer) => knownNames.set(name, answer) }),
              ).pipe(mergeMap((event) => nameEvent(event, extraRules)))
            : EMPTY;
          const reported: TunnelEvent[] = auto ? [{ kind: 'routes', routes: auto.list, tunneled: auto.chosen.length }] : [];
          if (auto && auto.ignored.length > 0) reported.push({ kind: 'warning', message: wideRoutesIgnored(auto.ignored) });
          if (auto && auto.overflow > 0) {
            reported.push({ kind: 'warning', message: `-N: ${auto.overflow} of the server's routes left out: the firewall takes at most ${MAX_RULES} rules` });
          }
          if (auto && !rules.some((r) => !r.exclude) && !extraRules.value.some((r) => !r.exclude) && !dns) {
            reported.push({ kind: 'warning', message: '-N: the server named no route to tunnel' });
          }
          return concat(
            of(...reported),
            dnsSetup$().pipe(
              switchMap((captured) => {
                const setup: FirewallSetup = {
                  ...base,
                  rules,
                  ...(captured ? { dnsPort: captured.sockets.port, dnsServers: captured.nameservers } : {}),
                  ...(options.autoHosts ? { hosts: true } : {}),
                };
                const ready: TunnelEvent = {
                  kind: 'firewall-ready',
                  method: setup.method,
                  port: setup.port,
                  rules: [...setup.rules, ...extraRules.value],
                  ...(captured ? { dns: { port: captured.sockets.port, nameservers: captured.nameservers } } : {}),
                };
                const warning: TunnelEvent[] = captured?.warning ? [{ kind: 'warning', message: captured.warning }] : [];
                // A hosts file that cannot be written refuses every HOST line: say so once.
                const said = new Set<string>();
                const warnOnce = (message: string): Observable<TunnelEvent> => {
                  if (said.has(message) || said.size >= 100) return EMPTY;
                  said.add(message);
                  return of({ kind: 'warning', message });
                };
                return concat(
                  of(...warning),
                  start(setup, options.autoHosts ? hosts : undefined, named ? extraRules : undefined).pipe(
                    mergeMap((event) =>
                      event === 'ready'
                        ? concat(of(ready), afterReady$(captured?.sockets ?? null, ready.rules, nameEvents$))
                        : warnOnce(event.message),
                    ),
                  ),
                );
              }),
            ),
          );
        }),
      );
    },
  };
}

/** A host name's news as tunnel events; new rules go to the helper instead. */
function nameEvent(event: NameEvent, extraRules: BehaviorSubject<readonly SubnetRule[]>): Observable<TunnelEvent> {
  switch (event.kind) {
    case 'rules':
      extraRules.next(event.rules);
      return EMPTY;
    case 'resolved':
      return of({ kind: 'name', name: event.name, addresses: event.addresses, ttlS: event.ttlS });
    case 'stale':
      return of({
        kind: 'notice',
        message: `${event.name}: asking the remote's resolver again failed (${event.reason}); its addresses stay, next try in ${event.retryS} s`,
      });
  }
}

/** -H: the warning that says how many names from the server were refused for their address. */
export function refusedHostsWarning(count: number): string {
  return count === 1
    ? '-H: 1 name from the server was refused (its address is outside the tunneled subnets)'
    : `-H: ${count} names from the server were refused (addresses outside the tunneled subnets)`;
}

/** The warning that names the routes -N left out for being wider than /8 or /16. */
export function wideRoutesIgnored(ignored: readonly SubnetRule[]): string {
  const listed = ignored.slice(0, MAX_LISTED_WIDE).map((r) => `${r.address}/${r.prefix}`);
  const more = ignored.length > MAX_LISTED_WIDE ? ` and ${ignored.length - MAX_LISTED_WIDE} more` : '';
  return `-N: ignored routes wider than /8 (IPv4) or /16 (IPv6) from the server: ${listed.join(', ')}${more} (--auto-nets-wide takes them)`;
}

function readLocalResolvConf(): string {
  try {
    return readFileSync('/etc/resolv.conf', 'utf8');
  } catch {
    return '';
  }
}
