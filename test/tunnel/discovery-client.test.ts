import { createSocket } from 'node:dgram';
import dnsPacket from 'dns-packet';
import { type Observable, of, Subject } from 'rxjs';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { render } from '../../src/cli/render.js';
import type { FirewallSetup, HostsEntry, SubnetRule } from '../../src/firewall/types.js';
import { MAX_RULES } from '../../src/firewall/validate.js';
import type { TunnelEvent } from '../../src/shared/events.js';
import { resolveOptions } from '../../src/shared/options.js';
import { encodeHostsRequest, type Route } from '../../src/streams/discovery.js';
import { decodeDnsRequest } from '../../src/streams/dns.js';
import { CONTROL_CHANNEL, Command, type Frame, frame } from '../../src/streams/frame.js';
import type { SessionEvent } from '../../src/streams/session.js';
import {
  autoNetRules,
  discoveryClient,
  dnsHosts,
  isWideRoute,
  REFUSED_HOSTS_WARNING_MS,
  refusedHostsWarning,
  sessionDiscovery,
  wideRoutesIgnored,
} from '../../src/tunnel/discovery-client.js';
import type { FirewallEvent } from '../../src/tunnel/firewall-client.js';
import type { Listener } from '../../src/tunnel/listener.js';
import { unexpectedError } from '../support/unexpected-error.js';

const rule = (address: string, prefix: number, exclude: boolean, family: 4 | 6 = 4): SubnetRule => ({
  family,
  address,
  prefix,
  portLow: 0,
  portHigh: 0,
  exclude,
});
const route = (address: string, prefix: number, family: 4 | 6 = 4): Route => ({ family, address, prefix });

describe('autoNetRules (-N)', () => {
  it('tunnels the server routes like command-line subnets', () => {
    expect(autoNetRules([route('10.98.0.0', 24), route('10.99.0.0', 24)], [], false)).toEqual([
      rule('10.98.0.0', 24, false),
      rule('10.99.0.0', 24, false),
    ]);
  });

  it('leaves out the default route, IPv6 without an IPv6 listener, and duplicates', () => {
    const routes = [route('0.0.0.0', 0), route('::', 0, 6), route('fd00:98::', 64, 6), route('10.98.0.0', 24), route('10.98.0.0', 24)];
    expect(autoNetRules(routes, [rule('10.98.0.0', 24, false)], false)).toEqual([]);
    expect(autoNetRules(routes, [], true)).toEqual([rule('fd00:98::', 64, false, 6), rule('10.98.0.0', 24, false)]);
  });

  it('leaves out routes inside an exclude (-x, the ssh server); keeps wider ones, where the exclude wins by prefix', () => {
    const rules = [rule('10.99.0.2', 32, true), rule('10.98.0.0', 16, true)];
    const routes = [route('10.98.0.0', 24), route('10.99.0.2', 32), route('10.99.0.0', 24), route('10.0.0.0', 8)];
    expect(autoNetRules(routes, rules, false)).toEqual([rule('10.99.0.0', 24, false), rule('10.0.0.0', 8, false)]);
  });

  it('an exclude of some ports only does not remove a route', () => {
    const portsOnly: SubnetRule = { ...rule('10.98.0.0', 24, true), portLow: 22, portHigh: 22 };
    expect(autoNetRules([route('10.98.0.0', 24)], [portsOnly], false)).toEqual([rule('10.98.0.0', 24, false)]);
  });

  it('leaves out routes wider than /8 (IPv4) or /16 (IPv6): 0.0.0.0/1 + 128.0.0.0/1 must not take all TCP', () => {
    const routes = [
      route('0.0.0.0', 1),
      route('128.0.0.0', 1),
      route('64.0.0.0', 7),
      route('10.0.0.0', 8),
      route('2000::', 3, 6),
      route('fd00::', 15, 6),
      route('fd00::', 16, 6),
    ];
    expect(autoNetRules(routes, [], true)).toEqual([rule('10.0.0.0', 8, false), rule('fd00::', 16, false, 6)]);
  });

  it('with wide (--auto-nets-wide) takes them, but still never a default route', () => {
    const routes = [route('0.0.0.0', 0), route('::', 0, 6), route('0.0.0.0', 1), route('128.0.0.0', 1), route('2000::', 3, 6)];
    expect(autoNetRules(routes, [], true, true)).toEqual([rule('0.0.0.0', 1, false), rule('128.0.0.0', 1, false), rule('2000::', 3, false, 6)]);
  });

  it('isWideRoute: shorter than /8 for IPv4, /16 for IPv6', () => {
    expect([7, 8].map((prefix) => isWideRoute(route('10.0.0.0', prefix)))).toEqual([true, false]);
    expect([15, 16].map((prefix) => isWideRoute(route('fd00::', prefix, 6)))).toEqual([true, false]);
  });

  it('the warning names the ignored routes, at most 16 of them', () => {
    expect(wideRoutesIgnored([rule('0.0.0.0', 1, false), rule('128.0.0.0', 1, false)])).toBe(
      '-N: ignored routes wider than /8 (IPv4) or /16 (IPv6) from the server: 0.0.0.0/1, 128.0.0.0/1 (--auto-nets-wide takes them)',
    );
    const many = Array.from({ length: 20 }, (_, i) => rule(`${i * 8}.0.0.0`, 5, false));
    expect(wideRoutesIgnored(many)).toMatch(/: 0\.0\.0\.0\/5, .*, 120\.0\.0\.0\/5 and 4 more \(--auto-nets-wide takes them\)$/);
  });
});

describe('dnsHosts (--dns): where the DNS sockets listen', () => {
  it.each([
    ['127.0.0.1', ['127.0.0.1'], ['::1']],
    // REDIRECT sends this machine's queries to 127.0.0.1 whatever -l says: a socket on 127.0.0.2 would hear none (issue 16, finding 1).
    ['127.0.0.2', ['127.0.0.1'], ['::1']],
    ['::1', ['127.0.0.1'], ['::1']],
    ['0.0.0.0', ['0.0.0.0'], ['::']],
    ['::', ['127.0.0.1'], ['::']],
    // Router mode on one address: forwarded queries come to it, this machine's own to loopback.
    ['192.168.1.5', ['192.168.1.5', '127.0.0.1'], ['::1']],
    ['fd00::5', ['127.0.0.1'], ['fd00::5', '::1']],
  ])('listening on %s: IPv4 %j, IPv6 %j', (host, v4, v6) => {
    expect(dnsHosts(host)).toEqual({ v4, v6 });
  });
});

describe('discoveryClient', () => {
  const listener = (port: number): Listener => ({ servers: [], host: '127.0.0.1', port });
  const base = (port: number): FirewallSetup => ({
    version: 1,
    method: 'nat',
    port,
    routerMode: false,
    rules: [rule('10.99.0.2', 32, true)],
  });
  const session = (d: ReturnType<typeof sessionDiscovery>, event: SessionEvent) => {
    const out: TunnelEvent[] = [];
    d.onSessionEvent(event)?.subscribe({ next: (e) => out.push(e), error: unexpectedError });
    return out;
  };

  it('-N: asks for routes at once, starts the firewall only when they came, with them; -H asks for hosts once ready', async () => {
    const options = resolveOptions({ subnets: [], autoNets: true, autoHosts: true, seedHosts: 'seed.lab' }, () => ['fw']);
    const s = sessionDiscovery(options);
    const d = discoveryClient(options, listener(12300), s.source);
    const control: Frame[] = [];
    s.control$.subscribe({ next: (f) => control.push(f), error: unexpectedError });
    expect(control).toEqual([frame(CONTROL_CHANNEL, Command.ROUTES_REQUEST)]);

    const ready = new Subject<FirewallEvent>();
    const started: FirewallSetup[] = [];
    let hosts$: Observable<HostsEntry> | undefined;
    const events: TunnelEvent[] = [];
    d.firewall$(base(12300), (setup, h) => {
      started.push(setup);
      hosts$ = h;
      return ready;
    }).subscribe({ next: (e) => events.push(e), error: unexpectedError });
    expect(started).toEqual([]);

    expect(session(s, { kind: 'routes', routes: [route('0.0.0.0', 0), route('10.98.0.0', 24), route('10.99.0.2', 32)] })).toEqual([]);
    expect(events).toEqual([{ kind: 'routes', routes: [route('0.0.0.0', 0), route('10.98.0.0', 24), route('10.99.0.2', 32)], tunneled: 1 }]);
    expect(started).toEqual([{ ...base(12300), rules: [rule('10.99.0.2', 32, true), rule('10.98.0.0', 24, false)], hosts: true }]);

    const entries: HostsEntry[] = [];
    hosts$?.subscribe({ next: (e) => entries.push(e), error: unexpectedError });
    ready.next('ready');
    expect(events[1]).toEqual({ kind: 'firewall-ready', method: 'nat', port: 12300, rules: started[0]?.rules });
    expect(control[1]).toEqual(encodeHostsRequest(['seed.lab']));

    // Hosts go to the helper (once per name and address) and are reported.
    const host = { kind: 'host', host: { family: 4, address: '10.98.0.3', name: 'target' } } as const;
    expect(session(s, host)).toEqual([]);
    expect(session(s, host)).toEqual([]);
    expect(events.filter((e) => e.kind === 'host')).toEqual([{ kind: 'host', name: 'target', address: '10.98.0.3' }]);
    expect(entries).toEqual([{ address: '10.98.0.3', name: 'target' }]);

    // A refusal by the helper is a warning, said once.
    ready.next({ kind: 'warning', message: 'firewall helper: cannot write the hosts file: EROFS' });
    ready.next({ kind: 'warning', message: 'firewall helper: cannot write the hosts file: EROFS' });
    expect(events.filter((e) => e.kind === 'warning')).toHaveLength(1);
  });

  it('host names as subnets: asked through the session (DNS_REQUEST) before the firewall starts; their rules go beside the setup', async () => {
    const options = resolveOptions({ subnets: ['wiki.corp:443', '10.0.0.0/8'], exclude: ['printer.corp'] }, () => ['fw']);
    const s = sessionDiscovery(options);
    const d = discoveryClient(options, listener(12300), s.source);
    const control: Frame[] = [];
    s.control$.subscribe({ next: (f) => control.push(f), error: unexpectedError });
    const started: Array<{ setup: FirewallSetup; extra: Array<readonly SubnetRule[]> }> = [];
    const ready = new Subject<FirewallEvent>();
    const events: TunnelEvent[] = [];
    d.firewall$(base(12300), (setup, _hosts, extra$) => {
      const entry = { setup, extra: [] as Array<readonly SubnetRule[]> };
      started.push(entry);
      extra$?.subscribe({ next: (rules) => entry.extra.push(rules), error: unexpectedError });
      return ready;
    }).subscribe({ next: (e) => events.push(e), error: unexpectedError });
    // Two questions (A only: this listener has no IPv6), answered by the remote.
    const answers: Record<string, string> = { 'wiki.corp': '192.168.50.7', 'printer.corp': '192.168.50.9' };
    expect(control).toHaveLength(2);
    for (const f of control) {
      const request = decodeDnsRequest(f.payload);
      const query = dnsPacket.decode(request.message);
      const name = query.questions?.[0]?.name ?? '';
      const reply = dnsPacket.encode({ type: 'response', id: query.id, flags: dnsPacket.RECURSION_DESIRED, questions: query.questions, answers: [{ type: 'A', name, ttl: 60, data: answers[name] ?? '' }] });
      expect(started).toEqual([]);
      session(s, { kind: 'dns-response', id: request.id, message: reply });
    }
    const wiki = { family: 4, address: '192.168.50.7', prefix: 32, portLow: 443, portHigh: 443, exclude: false };
    const printer = { family: 4, address: '192.168.50.9', prefix: 32, portLow: 0, portHigh: 0, exclude: true };
    expect(started).toHaveLength(1);
    expect(started[0]?.setup.rules).toEqual(base(12300).rules);
    expect(started[0]?.extra).toEqual([[wiki, printer]]);
    ready.next('ready');
    expect(events).toContainEqual({ kind: 'firewall-ready', method: 'nat', port: 12300, rules: [...base(12300).rules, wiki, printer] });
    expect(events.filter((e) => e.kind === 'name').map((e) => render(e, 1))).toEqual([
      'wiki.corp resolved to 192.168.50.7 (asked again in 60 s).',
      'printer.corp resolved to 192.168.50.9 (asked again in 60 s).',
    ]);
  });

  it('host names as subnets: a name that does not resolve ends it with one line naming it, before any firewall', async () => {
    const options = resolveOptions({ subnets: ['nope.corp'] }, () => ['fw']);
    const s = sessionDiscovery(options);
    const d = discoveryClient(options, listener(12300), s.source);
    const control: Frame[] = [];
    s.control$.subscribe({ next: (f) => control.push(f), error: unexpectedError });
    let started = false;
    let error: unknown;
    d.firewall$(base(12300), () => {
      started = true;
      return new Subject<FirewallEvent>();
    }).subscribe({ error: (e: unknown) => (error = e) });
    const request = decodeDnsRequest(control[0]?.payload ?? Buffer.alloc(0));
    const query = dnsPacket.decode(request.message);
    session(s, { kind: 'dns-response', id: request.id, message: dnsPacket.encode({ type: 'response', id: query.id, flags: 3, questions: query.questions }) });
    expect(started).toBe(false);
    expect(String(error)).toBe('UsageError: host name "nope.corp" does not resolve through the tunnel: NXDOMAIN');
  });

  /** -N against a server that names these routes: the events until the helper starts, and the rules it gets. */
  const withRoutes = (routes: Route[], autoNetsWide: boolean) => {
    const options = resolveOptions({ subnets: [], autoNets: true, autoNetsWide }, () => ['fw']);
    const s = sessionDiscovery(options);
    const d = discoveryClient(options, listener(12300), s.source);
    const started: FirewallSetup[] = [];
    const events: TunnelEvent[] = [];
    d.firewall$(base(12300), (setup) => {
      started.push(setup);
      return new Subject<FirewallEvent>();
    }).subscribe({ next: (e) => events.push(e), error: unexpectedError });
    session(s, { kind: 'routes', routes });
    return { events, rules: started[0]?.rules };
  };
  const halves = [route('0.0.0.0', 1), route('128.0.0.0', 1), route('10.98.0.0', 24)];

  it('-N: routes wider than /8 are not tunneled and are named in one warning, shown at the default verbosity', () => {
    const { events, rules } = withRoutes(halves, false);
    expect(rules).toEqual([rule('10.99.0.2', 32, true), rule('10.98.0.0', 24, false)]);
    expect(events).toEqual([
      { kind: 'routes', routes: halves, tunneled: 1 },
      {
        kind: 'warning',
        message: '-N: ignored routes wider than /8 (IPv4) or /16 (IPv6) from the server: 0.0.0.0/1, 128.0.0.0/1 (--auto-nets-wide takes them)',
      },
    ]);
    expect(render(events[1] as TunnelEvent, 0)).toMatch(/^warning: -N: ignored routes wider than/);
  });

  it('-N: with nothing narrow left, the wide routes are named and nothing is tunneled', () => {
    const { events, rules } = withRoutes(halves.slice(0, 2), false);
    expect(rules).toEqual([rule('10.99.0.2', 32, true)]);
    expect(events.filter((e) => e.kind === 'warning').map((e) => e.kind === 'warning' && e.message)).toEqual([
      expect.stringMatching(/0\.0\.0\.0\/1, 128\.0\.0\.0\/1/),
      '-N: the server named no route to tunnel',
    ]);
  });

  it('-N --auto-nets-wide: the wide routes are tunneled, without a warning', () => {
    const { events, rules } = withRoutes(halves, true);
    expect(rules).toEqual([rule('10.99.0.2', 32, true), rule('0.0.0.0', 1, false), rule('128.0.0.0', 1, false), rule('10.98.0.0', 24, false)]);
    expect(events).toEqual([{ kind: 'routes', routes: halves, tunneled: 3 }]);
  });

  it('-N: routes beyond what the helper takes (MAX_RULES in all) are left out, counted in a warning (issue 16, finding 3)', () => {
    const options = resolveOptions({ subnets: [], autoNets: true }, () => ['fw']);
    const s = sessionDiscovery(options);
    const d = discoveryClient(options, listener(12300), s.source);
    const started: FirewallSetup[] = [];
    const events: TunnelEvent[] = [];
    // As many of the user's own as fit but two.
    const full = { ...base(12300), rules: Array.from({ length: MAX_RULES - 2 }, (_, i) => rule(`10.${i >> 8}.${i & 255}.0`, 24, true)) };
    d.firewall$(full, (setup) => {
      started.push(setup);
      return new Subject<FirewallEvent>();
    }).subscribe({ next: (e) => events.push(e), error: unexpectedError });
    const routes = [route('192.168.1.0', 24), route('192.168.2.0', 24), route('192.168.3.0', 24), route('192.168.4.0', 24)];
    session(s, { kind: 'routes', routes });
    expect(started[0]?.rules).toHaveLength(MAX_RULES);
    expect(started[0]?.rules.slice(-2)).toEqual([rule('192.168.1.0', 24, false), rule('192.168.2.0', 24, false)]);
    expect(events).toEqual([
      { kind: 'routes', routes, tunneled: 2 },
      { kind: 'warning', message: `-N: 2 of the server's routes left out: the firewall takes at most ${MAX_RULES} rules` },
    ]);
  });

  describe('-H: only names whose address the firewall tunnels go to the helper (issue 17, finding 5)', () => {
    afterEach(() => {
      vi.useRealTimers();
    });

    /** -H (and -N when routes are given) up to READY; `host()` plays a HOST from the server. */
    const hostsTunnel = (setupRules: SubnetRule[], routes?: Route[]) => {
      vi.useFakeTimers();
      const options = resolveOptions({ subnets: routes ? [] : ['10.98.0.0/24'], autoHosts: true, ...(routes ? { autoNets: true } : {}) }, () => ['fw']);
      const s = sessionDiscovery(options);
      const d = discoveryClient(options, listener(12300), s.source);
      const ready = new Subject<FirewallEvent>();
      const entries: HostsEntry[] = [];
      const events: TunnelEvent[] = [];
      const setups: FirewallSetup[] = [];
      const sub = d
        .firewall$({ ...base(12300), rules: setupRules }, (setup, h) => {
          setups.push(setup);
          h?.subscribe({ next: (e) => entries.push(e), error: unexpectedError });
          return ready;
        })
        .subscribe({ next: (e) => events.push(e), error: unexpectedError });
      if (routes) session(s, { kind: 'routes', routes });
      ready.next('ready');
      const host = (address: string, name: string) => session(s, { kind: 'host', host: { family: address.includes(':') ? 6 : 4, address, name } });
      const warnings = () => events.filter((e) => e.kind === 'warning').map((e) => e.kind === 'warning' && e.message);
      return { entries, events, setups, host, warnings, sub };
    };

    it('deb.debian.org → 6.6.6.6 with only 10.98.0.0/24 tunneled is not passed to the helper, and one warning says so', () => {
      const t = hostsTunnel([rule('10.98.0.0', 24, false)]);
      t.host('6.6.6.6', 'deb.debian.org');
      t.host('10.98.0.3', 'target');
      t.host('6.6.6.6', 'github.com');
      t.host('::ffff:7f00:1', 'evil');
      t.host('::ffff:a62:3', 'mapped');
      t.host('64:ff9b::a62:3', 'nat64'); // travels as IPv6, which is not tunneled
      t.host('6.6.6.6', 'deb.debian.org'); // again: counted once
      expect(t.entries).toEqual([
        { address: '10.98.0.3', name: 'target' },
        { address: '::ffff:a62:3', name: 'mapped' },
      ]);
      expect(t.events.filter((e) => e.kind === 'host').map((e) => e.kind === 'host' && e.name)).toEqual(['target', 'mapped']);
      expect(t.warnings()).toEqual([]);
      vi.advanceTimersByTime(REFUSED_HOSTS_WARNING_MS);
      expect(t.warnings()).toEqual(['-H: 4 names from the server were refused (addresses outside the tunneled subnets)']);
      expect(render(t.events.at(-1) as TunnelEvent, 0)).toBe('warning: -H: 4 names from the server were refused (addresses outside the tunneled subnets)');
      // Later refusals are debug lines only: at most one warning per tunnel.
      t.host('6.6.6.7', 'later');
      vi.advanceTimersByTime(10 * REFUSED_HOSTS_WARNING_MS);
      expect(t.warnings()).toHaveLength(1);
      expect(t.entries).toHaveLength(2);
      t.sub.unsubscribe();
    });

    it('an exclude more specific than the include wins (the ssh server, -x)', () => {
      const t = hostsTunnel([rule('10.98.0.0', 24, false), rule('10.98.0.2', 32, true)]);
      t.host('10.98.0.2', 'ssh-server');
      t.host('10.98.0.3', 'target');
      expect(t.entries).toEqual([{ address: '10.98.0.3', name: 'target' }]);
      vi.advanceTimersByTime(REFUSED_HOSTS_WARNING_MS);
      expect(t.warnings()).toEqual([refusedHostsWarning(1)]);
      expect(refusedHostsWarning(1)).toBe('-H: 1 name from the server was refused (its address is outside the tunneled subnets)');
      t.sub.unsubscribe();
    });

    it('-N: the subnets are those given to the firewall, with the routes that came from the server', () => {
      const t = hostsTunnel([rule('10.99.0.2', 32, true)], [route('10.98.0.0', 24)]);
      expect(t.setups[0]?.rules).toEqual([rule('10.99.0.2', 32, true), rule('10.98.0.0', 24, false)]);
      t.host('10.98.0.3', 'target');
      t.host('10.99.0.2', 'srv');
      t.host('6.6.6.6', 'deb.debian.org');
      expect(t.entries).toEqual([{ address: '10.98.0.3', name: 'target' }]);
      vi.advanceTimersByTime(REFUSED_HOSTS_WARNING_MS);
      expect(t.warnings()).toEqual([refusedHostsWarning(2)]);
      t.sub.unsubscribe();
    });

    it('no warning when the tunnel ends before it is due', () => {
      const t = hostsTunnel([rule('10.98.0.0', 24, false)]);
      t.host('6.6.6.6', 'deb.debian.org');
      t.sub.unsubscribe();
      vi.advanceTimersByTime(REFUSED_HOSTS_WARNING_MS);
      expect(t.warnings()).toEqual([]);
      expect(vi.getTimerCount()).toBe(0);
    });
  });

  it('--dns: binds the DNS sockets on the next free port, puts them in the setup, and answers captured queries through DNS_REQUEST', async () => {
    const port = 40000 + Math.floor(Math.random() * 20000);
    const options = resolveOptions({ subnets: ['10.98.0.0/24'], nsHosts: '10.98.0.3' }, () => ['fw']);
    const s = sessionDiscovery(options);
    const d = discoveryClient(options, listener(port), s.source);
    const control: Frame[] = [];
    s.control$.subscribe({ next: (f) => control.push(f), error: unexpectedError });
    const events: TunnelEvent[] = [];
    let setup: FirewallSetup | undefined;
    const sub = d.firewall$(base(port), (s) => {
      setup = s;
      return of<FirewallEvent>('ready');
    }).subscribe({ next: (e) => events.push(e), error: unexpectedError });
    await vi.waitFor(() => expect(events[0]).toBeDefined());
    expect(setup?.dnsServers).toEqual(['10.98.0.3']);
    expect(setup?.dnsPort).toBeGreaterThan(port);
    expect(events[0]).toMatchObject({ kind: 'firewall-ready', dns: { port: setup?.dnsPort, nameservers: ['10.98.0.3'] } });

    // A query to the DNS port becomes a DNS_REQUEST; the reply goes back to the asker.
    const socket = createSocket('udp4');
    const answer = new Promise<Buffer>((resolve) => socket.on('message', resolve));
    const query = Buffer.from([0xab, 0xcd, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0x61, 0, 0, 1, 0, 1]);
    socket.send(query, setup?.dnsPort ?? 0, '127.0.0.1');
    await vi.waitFor(() => expect(control[0]).toBeDefined());
    const request = decodeDnsRequest(control[0]?.payload ?? Buffer.alloc(0));
    expect(request.message).toEqual(query);
    const reply = Buffer.from([0xab, 0xcd, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0x61, 0, 0, 1, 0, 1]);
    session(s, { kind: 'dns-response', id: request.id, message: reply });
    expect(await answer).toEqual(reply);
    socket.close();
    sub.unsubscribe();
  });
});
