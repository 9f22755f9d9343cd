import type { Socket } from 'node:net';
import { EMPTY, NEVER, type Observable, of } from 'rxjs';
import { TestScheduler } from 'rxjs/testing';
import { describe, expect, it, vi } from 'vitest';
import type { FirewallSetup } from '../../src/firewall/types.js';
import { TransportError } from '../../src/shared/errors.js';
import { ConnectionIds, type TunnelEvent } from '../../src/shared/events.js';
import { resolveOptions } from '../../src/shared/options.js';
import type { Hello } from '../../src/streams/handshake.js';
import type { SessionEvent } from '../../src/streams/session.js';
import type { HandOff } from '../../src/transport/control-master.js';
import type { ProbeResult } from '../../src/transport/remote-probe.js';
import type { FirewallEvent } from '../../src/tunnel/firewall-client.js';
import type { Listener, Redirected } from '../../src/tunnel/listener.js';
import type { StockLink } from '../../src/tunnel/server-link.js';
import { sessionEvents } from '../../src/tunnel/session-events.js';
import { firewallSetup, type TunnelParts, tunnel } from '../../src/tunnel/tunnel.js';
import { unexpectedError } from '../support/unexpected-error.js';

const scheduler = () => new TestScheduler((actual, expected) => expect(actual).toEqual(expected));
const hello: Hello = { version: 1, window: 65_536, flags: 0 };
const destination = { family: 4 as const, address: '10.1.2.3', port: 80 };

describe('sessionEvents', () => {
  it('turns a session into tunnel events: noise as output, hello as connected then what follows it, opens and closes', () => {
    scheduler().run(({ cold, expectObservable }) => {
      const session$ = cold<SessionEvent>('n----h--o-c-p', {
        n: { kind: 'noise', text: 'Welcome\nto the host\n' },
        h: { kind: 'hello', hello },
        o: { kind: 'open', id: 7, destination, source: '127.0.0.1:5000' },
        c: { kind: 'close', id: 7, destination, reason: 'done', bytesSent: 3, bytesReceived: 4 },
        p: { kind: 'pong', payload: Buffer.alloc(0) },
      });
      const afterHello = vi.fn(() => cold<TunnelEvent>('-f', { f: { kind: 'notice', message: 'firewall' } }));
      const out$ = session$.pipe(sessionEvents({ where: 'host', channels: new ConnectionIds().renumbering(), afterHello, onUdp: () => undefined, onOther: () => null }));
      expectObservable(out$).toBe('(ab)-cd-e-g', {
        a: { kind: 'remote-output', line: 'Welcome' },
        b: { kind: 'remote-output', line: 'to the host' },
        c: { kind: 'connected', remote: 'host', window: 65_536 },
        d: { kind: 'notice', message: 'firewall' },
        e: { kind: 'accept', id: 1, source: '127.0.0.1:5000', destination },
        g: { kind: 'close', id: 1, destination, reason: 'done', bytesSent: 3, bytesReceived: 4 },
      });
    });
  });

  it("ends with the server's EXIT reason, made printable, as an event and then the error", () => {
    scheduler().run(({ cold, expectObservable }) => {
      const session$ = cold<SessionEvent>('h-x', { h: { kind: 'hello', hello }, x: { kind: 'exit', reason: 'bye\u001b[2J' } });
      const out$ = session$.pipe(sessionEvents({ where: 'host', channels: new ConnectionIds().renumbering(), afterHello: () => NEVER, onUdp: () => undefined, onOther: () => null }));
      expectObservable(out$).toBe(
        'c-(r#)',
        { c: { kind: 'connected', remote: 'host', window: 65_536 }, r: { kind: 'remote-exit', reason: 'bye\\x1b[2J' } },
        new TransportError('RXS_ERR_REMOTE_EXIT', 'server on host stopped: bye\\x1b[2J'),
      );
    });
  });

  it('passes UDP messages to the flows and the rest to the control conversations', () => {
    const message = { kind: 'close', flow: 1 } as never;
    const onUdp = vi.fn();
    const onOther = vi.fn((event: SessionEvent) => (event.kind === 'routes' ? of<TunnelEvent>({ kind: 'notice', message: 'routes' }) : null));
    scheduler().run(({ cold, expectObservable }) => {
      const session$ = cold<SessionEvent>('u-r', { u: { kind: 'udp', message }, r: { kind: 'routes', routes: [] } });
      expectObservable(session$.pipe(sessionEvents({ where: 'host', channels: new ConnectionIds().renumbering(), afterHello: () => NEVER, onUdp, onOther }))).toBe('--n', {
        n: { kind: 'notice', message: 'routes' },
      });
    });
    expect(onUdp).toHaveBeenCalledExactlyOnceWith(message);
    expect(onOther).toHaveBeenCalledTimes(1);
  });
});

describe('firewallSetup', () => {
  const listener: Listener = { servers: [], host: '127.0.0.1', port: 12300 };
  it("keeps the ssh server's own addresses out of the rules, and asks for what the options say", () => {
    const options = resolveOptions({ remote: 'me@bastion', subnets: ['10.0.0.0/8'], killSwitch: true, user: '1000' }, () => ['fw']);
    const setup = firewallSetup(options, listener, 'nat', { addresses: ['192.0.2.7', '2001:db8::7'], openssh: true });
    expect(setup).toMatchObject({ version: 1, method: 'nat', port: 12300, routerMode: false, killSwitch: true, user: 1000 });
    expect(setup.rules.slice(0, 2)).toEqual([
      { family: 4, address: '192.0.2.7', prefix: 32, portLow: 0, portHigh: 0, exclude: true },
      { family: 6, address: '2001:db8::7', prefix: 128, portLow: 0, portHigh: 0, exclude: true },
    ]);
    expect(setup.rules[2]).toMatchObject({ family: 4, address: '10.0.0.0', prefix: 8, exclude: false });
  });
  it('tproxy: the mark and the UDP port; a listener beyond loopback is router mode; local mode its bypass group', () => {
    const options = resolveOptions({ subnets: ['10.0.0.0/8'], method: 'tproxy' }, () => ['fw']);
    const setup = firewallSetup(options, { ...listener, host: '0.0.0.0' }, 'tproxy', { addresses: [], openssh: false }, 1_000_012_300);
    expect(setup).toMatchObject({ method: 'tproxy', tmark: 1, udpPort: 12300, routerMode: true, bypassGid: 1_000_012_300 });
  });
});

describe('tunnel (fake parts, virtual time)', () => {
  const probe: ProbeResult = {
    node: { kind: 'none' } as never,
    os: 'Linux',
    hostOrder: 'LE',
    hostname: 'bastion',
    resolvConf: '',
    sections: new Map(),
  };
  const fakeSocket = () => ({ resetAndDestroy: vi.fn(), destroy: vi.fn(), writableEnded: false }) as unknown as Socket;

  it('a lost stock session is started again; the firewall helper is started once and stays; connections are carried by each', () => {
    scheduler().run(({ cold, hot, flush }) => {
      const options = resolveOptions({ remote: 'me@bastion', subnets: ['10.0.0.0/8'], keepalive: 0 }, () => ['fw']);
      const sessions: Array<Observable<never>> = [cold<never>('-----#', undefined, new TransportError('RXS_ERR_TRANSPORT_CLOSED', 'connection to bastion lost')), NEVER];
      const carried: string[] = [];
      const link = (ended$: Observable<never>): StockLink => ({
        stock: {
          probe,
          carrier: () => ({
            carry: (_socket: Socket, to): Observable<HandOff> => {
              carried.push(to.address);
              return cold<HandOff>('o', { o: { kind: 'opened' } });
            },
            close: () => undefined,
          }),
          exec: () => Promise.reject(new Error('no commands here')),
          channel$: () => NEVER,
          ended$,
        },
      });
      const helperStarts: FirewallSetup[] = [];
      const parts: TunnelParts = {
        host$: of({ addresses: ['192.0.2.7'], openssh: true }),
        link$: () => cold('-l', { l: link(sessions.shift() ?? NEVER) }),
        startFirewall: (setup) => {
          helperStarts.push(setup);
          return cold<FirewallEvent>('r', { r: 'ready' });
        },
        redirected$: hot<Redirected>('---a------------b', {
          a: { socket: fakeSocket(), destination, source: '127.0.0.1:1' },
          b: { socket: fakeSocket(), destination: { ...destination, address: '10.9.9.9' }, source: '127.0.0.1:2' },
        }),
        datagrams$: EMPTY,
        nudge$: NEVER,
        replies: () => ({ take: () => undefined, closeAll: () => undefined }),
      };
      const events: Array<{ at: number; event: TunnelEvent }> = [];
      const listener: Listener = { servers: [], host: '127.0.0.1', port: 12300 };
      const subscription = tunnel({ ...options, reconnect: true }, listener, 'nat', Number.POSITIVE_INFINITY, parts).subscribe({
        next: (event) => events.push({ at: Date.now(), event }),
        error: unexpectedError,
      });
      flush();
      const kinds = events.map((e) => e.event.kind);
      expect(kinds).toEqual(['connected', 'firewall-ready', 'accept', 'reconnecting', 'connected', 'firewall-ready', 'accept']);
      expect(helperStarts).toHaveLength(1);
      expect(carried).toEqual(['10.1.2.3', '10.9.9.9']);
      subscription.unsubscribe();
    });
  });
});
