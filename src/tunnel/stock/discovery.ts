/**
 * -N, -H and --dns in stock-sshd mode, where nothing of ours runs on the remote host:
 *
 *   -N     the routing table the start-up probe read (/proc/net/route and ipv6_route; `ip route`
 *          or `netstat -rn` where /proc has none), parsed here;
 *   --dns  each query as DNS over TCP in a direct-tcpip channel to the remote's nameservers
 *          (its resolv.conf, read by the probe, or --to-ns);
 *   -H     hostwatch (the same code the node server runs) fed by one exec per scan of plain
 *          commands, with its forward and reverse lookups through the DNS channel above.
 *
 * What a remote OS does not provide is left out with one notice (shown with -v), never an error.
 */
import createDebug from 'debug';
import { defer, type Observable, of, Subject } from 'rxjs';
import { parseResolvConf } from '../../remote/dns-server.js';
import { type HostwatchSources, hostwatch$, parseHostsFile, parseIpNeigh, parseProcArp, parseProcTcp } from '../../remote/hostwatch.js';
import { parseProcIpv6Route, parseProcRoute, uniqueRoutes } from '../../remote/routes.js';
import type { TunnelEvent } from '../../shared/events.js';
import type { TunnelOptions } from '../../shared/options.js';
import type { Route } from '../../streams/discovery.js';
import { hostsScanScript, type ProbeResult, type Sections } from '../../transport/remote-probe.js';
import type { DiscoverySource } from '../discovery-client.js';
import type { StockRemote } from '../server-link.js';
import { dnsLookups, tcpDnsResolver } from './dns-over-tcp.js';
import { parseIpRoute, parseNetstatRoutes } from './route-text.js';

const debug = createDebug('rxshuttle:stock');

export interface StockDiscovery {
  readonly source: DiscoverySource;
  /** What the remote could not tell (with -v). */
  readonly notices$: Observable<TunnelEvent>;
  /** Closes the DNS channels. */
  close(): void;
}

export function stockDiscovery(options: TunnelOptions, remote: StockRemote, where: string): StockDiscovery {
  const notices = new Subject<TunnelEvent>();
  const notice = (message: string) => notices.next({ kind: 'notice', message });
  const { probe } = remote;
  const resolvConf = parseResolvConf(probe.resolvConf);
  const toNs = options.dns?.toNs;
  const resolver = tcpDnsResolver({
    nameservers: toNs ? [{ address: toNs.address, port: toNs.port }] : resolvConf.nameservers,
    timeoutMs: resolvConf.timeoutMs,
    attempts: resolvConf.attempts,
    open: (nameserver) => remote.channel$(nameserver),
  });
  const lookups = dnsLookups((message) => resolver.ask(message));

  return {
    notices$: notices,
    close: () => resolver.close(),
    source: {
      routes$: defer(() => {
        const found = remoteRoutes(probe);
        if (found.from === null) notice(`-N: ${where} shows no routing table (no /proc/net/route, ip or netstat there)`);
        else debug('-N: %d routes from %s', found.routes.length, found.from);
        return of(found.routes);
      }),
      hosts$: (seeds) =>
        hostwatch$({
          seeds,
          sources: remoteHostwatchSources(remote, lookups, (message) => notice(`-H: ${where}: ${message}`)),
          log: (message) => debug('hostwatch: %s', message),
        }),
      ask: (message) => resolver.ask(message),
    },
  };
}

/** -N: the probe's routing table, from the first source that had one. */
export function remoteRoutes(probe: Pick<ProbeResult, 'sections' | 'hostOrder'>): { routes: Route[]; from: string | null } {
  const { sections, hostOrder } = probe;
  const proc = sections.get('route') ?? '';
  let routes: Route[];
  let from: string | null;
  if (/\bIface\b/.test(proc)) {
    routes = [...parseProcRoute(proc, hostOrder), ...parseProcIpv6Route(sections.get('ipv6_route') ?? '')];
    from = '/proc/net/route';
  } else if ((sections.get('ip-route') ?? '').trim() !== '') {
    routes = parseIpRoute(sections.get('ip-route') ?? '');
    from = 'ip route';
  } else if ((sections.get('netstat') ?? '').trim() !== '') {
    routes = parseNetstatRoutes(sections.get('netstat') ?? '');
    from = 'netstat -rn';
  } else return { routes: [], from: null };
  return { routes: uniqueRoutes(routes), from };
}

/** Addresses of `ip -o addr show` lines (`2: eth0    inet 10.99.0.2/24 brd … scope global eth0`). */
export function parseIpAddr(text: string): string[] {
  return [...text.matchAll(/\binet6?\s+([0-9A-Fa-f:.]+)\//g)].map((match) => match[1] as string);
}

/** Addresses of BSD `arp -an` lines (`? (10.0.0.1) at 0:1:2:3:4:5 on en0 …`), complete entries only. */
export function parseArpAn(text: string): string[] {
  return [...text.matchAll(/^\S+ \(([0-9.]+)\) at (?!\(incomplete\))/gm)].map((match) => match[1] as string);
}

/**
 * hostwatch's sources on the remote host: one exec per scan (refresh) reads every table at once;
 * the rest answers from what it printed. Lookups go through the tunnel's DNS.
 */
export function remoteHostwatchSources(
  remote: Pick<StockRemote, 'exec' | 'probe'>,
  lookups: Pick<HostwatchSources, 'reverse' | 'lookup'>,
  notice: (message: string) => void,
): HostwatchSources {
  const script = hostsScanScript();
  let sections: Sections = new Map();
  let told = false;
  const section = (name: string) => sections.get(name) ?? '';
  return {
    async refresh() {
      const result = await remote.exec(script.command);
      sections = script.parse(result.stdout);
      if (told) return;
      told = true;
      if (parseHostsFile(section('hosts')).length === 0) notice('no /etc/hosts entries to read');
      if (section('neigh').trim() === '' && section('arp').trim() === '' && section('arp-a').trim() === '') {
        notice('no neighbour table to read (no ip neigh, /proc/net/arp or arp)');
      }
    },
    readFile: async (path) => (path === '/etc/hosts' ? section('hosts') : null),
    neighbours: async () => {
      const order = remote.probe.hostOrder;
      return [
        ...parseIpNeigh(section('neigh')),
        ...parseProcArp(section('arp')),
        ...parseArpAn(section('arp-a')),
        ...parseProcTcp(section('tcp'), 4, order),
        ...parseProcTcp(section('tcp6'), 6, order),
      ];
    },
    reverse: lookups.reverse,
    lookup: lookups.lookup,
    hostname: () => section('hostname').split('\n')[0]?.trim() || remote.probe.hostname,
    ownAddresses: () => parseIpAddr(section('addr')),
  };
}
