// The control-channel commands of --dns, -N, -H and UDP in the mux: each goes one way only and
// becomes a MuxEvent on the side it is meant for; the other way it ends the session.
import type { Observable } from 'rxjs';
import { describe, it } from 'vitest';
import { encodeHost, encodeHostsRequest, encodeRoutes } from '../../src/streams/discovery.js';
import { encodeDnsFailed, encodeDnsRequest, encodeDnsResponse } from '../../src/streams/dns.js';
import { CONTROL_CHANNEL, Command, type Frame, frame } from '../../src/streams/frame.js';
import { type LocalEnd, type MuxConfig, runMux } from '../../src/streams/mux.js';
import { encodeUdpClose, encodeUdpData, encodeUdpOpen } from '../../src/streams/udp.js';
import { protocolError, testScheduler } from './marbles.js';

const QUERY = Buffer.from([0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
const ANSWER = Buffer.from([0, 1, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0]);
const never = (): LocalEnd => {
  throw new Error('no dial expected');
};

const mux = (role: 'client' | 'server', inbound$: Observable<Frame>, control$?: Observable<Frame>) =>
  runMux({
    role,
    inbound$,
    sendWindow: 100,
    recvWindow: 100,
    ...(role === 'server' ? { dial: never } : {}),
    ...(control$ ? { control$ } : {}),
  } satisfies MuxConfig);

describe('control channel: DNS, routes, hosts', () => {
  it('server: DNS_REQUEST, ROUTES_REQUEST and HOSTS_REQUEST become events', () => {
    testScheduler().run(({ hot, expectObservable }) => {
      const target = { family: 4, address: '10.0.0.53', port: 53 } as const;
      const inbound$ = hot<Frame>('-d-r-h', {
        d: encodeDnsRequest({ id: 5, target, message: QUERY }),
        r: frame(CONTROL_CHANNEL, Command.ROUTES_REQUEST),
        h: encodeHostsRequest(['seed.lab']),
      });
      expectObservable(mux('server', inbound$)).toBe('-d-r-h', {
        d: { kind: 'dns-request', request: { id: 5, target, message: QUERY } },
        r: { kind: 'routes-request' },
        h: { kind: 'hosts-request', seeds: ['seed.lab'] },
      });
    });
  });

  it('client: DNS_RESPONSE, DNS_FAILED, ROUTES and HOST become events', () => {
    testScheduler().run(({ hot, expectObservable }) => {
      const inbound$ = hot<Frame>('-a-f-r-h', {
        a: encodeDnsResponse(5, ANSWER),
        f: encodeDnsFailed(6, 'ETIMEDOUT'),
        r: encodeRoutes([{ family: 4, address: '10.98.0.0', prefix: 24 }]),
        h: encodeHost({ family: 4, address: '10.98.0.3', name: 'target' }),
      });
      expectObservable(mux('client', inbound$)).toBe('-a-f-r-h', {
        a: { kind: 'dns-response', id: 5, message: ANSWER },
        f: { kind: 'dns-failed', id: 6, reason: 'ETIMEDOUT' },
        r: { kind: 'routes', routes: [{ family: 4, address: '10.98.0.0', prefix: 24 }] },
        h: { kind: 'host', host: { family: 4, address: '10.98.0.3', name: 'target' } },
      });
    });
  });

  it('the server sends its answers as control frames', () => {
    testScheduler().run(({ hot, cold, expectObservable }) => {
      const answer = encodeDnsResponse(5, ANSWER);
      expectObservable(mux('server', hot<Frame>('-'), cold('--a', { a: answer }))).toBe('--a', { a: { kind: 'frame', frame: answer } });
    });
  });

  for (const [name, role, f] of [
    ['DNS_REQUEST', 'client', encodeDnsRequest({ id: 1, message: QUERY })],
    ['ROUTES_REQUEST', 'client', frame(CONTROL_CHANNEL, Command.ROUTES_REQUEST)],
    ['HOSTS_REQUEST', 'client', encodeHostsRequest([])],
    ['DNS_RESPONSE', 'server', encodeDnsResponse(1, ANSWER)],
    ['DNS_FAILED', 'server', encodeDnsFailed(1, 'x')],
    ['ROUTES', 'server', encodeRoutes([])],
    ['HOST', 'server', encodeHost({ family: 4, address: '10.0.0.1', name: 'a' })],
  ] as const) {
    it(`${name} arriving at the ${role} is a protocol error`, () => {
      testScheduler().run(({ hot, expectObservable }) => {
        expectObservable(mux(role, hot<Frame>('--x', { x: f }))).toBe('--#', undefined, protocolError(new RegExp(`unexpected ${name} on the control channel`)));
      });
    });
  }

  it('a malformed payload ends the session with a ProtocolError', () => {
    testScheduler().run(({ hot, expectObservable }) => {
      const bad = frame(CONTROL_CHANNEL, Command.ROUTES, Buffer.from([9, 9]));
      expectObservable(mux('client', hot<Frame>('-x', { x: bad }))).toBe('-#', undefined, protocolError(/malformed ROUTES/));
      const badDns = frame(CONTROL_CHANNEL, Command.DNS_REQUEST, Buffer.from([0, 0, 0, 1, 0, 1]));
      expectObservable(mux('server', hot<Frame>('-x', { x: badDns }))).toBe('-#', undefined, protocolError(/malformed DNS_REQUEST/));
    });
  });
});

describe('control channel: UDP', () => {
  const ECHO = { family: 4, address: '10.98.0.7', port: 7 } as const;

  it('server: UDP_OPEN, UDP_DATA and UDP_CLOSE become udp events', () => {
    testScheduler().run(({ hot, expectObservable }) => {
      const inbound$ = hot<Frame>('-o-d-c', { o: encodeUdpOpen(1, ECHO), d: encodeUdpData(1, Buffer.from('hi')), c: encodeUdpClose(1, 'idle') });
      expectObservable(mux('server', inbound$)).toBe('-o-d-c', {
        o: { kind: 'udp', message: { kind: 'open', flow: 1, destination: ECHO } },
        d: { kind: 'udp', message: { kind: 'data', flow: 1, data: Buffer.from('hi') } },
        c: { kind: 'udp', message: { kind: 'close', flow: 1, reason: 'idle' } },
      });
    });
  });

  it('client: UDP_DATA and UDP_CLOSE become udp events; UDP_OPEN is a protocol error', () => {
    testScheduler().run(({ hot, expectObservable }) => {
      const inbound$ = hot<Frame>('-d-c-o', { d: encodeUdpData(3, Buffer.alloc(0)), c: encodeUdpClose(3, 'ECONNREFUSED'), o: encodeUdpOpen(4, ECHO) });
      expectObservable(mux('client', inbound$)).toBe(
        '-d-c-#',
        {
          d: { kind: 'udp', message: { kind: 'data', flow: 3, data: Buffer.alloc(0) } },
          c: { kind: 'udp', message: { kind: 'close', flow: 3, reason: 'ECONNREFUSED' } },
        },
        protocolError(/unexpected UDP_OPEN on the control channel/),
      );
    });
  });

  it('a UDP frame on a channel other than 0 is a protocol error', () => {
    testScheduler().run(({ hot, expectObservable }) => {
      const onChannel1 = frame(1, Command.UDP_DATA, encodeUdpData(1, Buffer.from('x')).payload);
      expectObservable(mux('server', hot<Frame>('-x', { x: onChannel1 }))).toBe('-#', undefined, protocolError(/UDP_DATA on channel 1/));
    });
  });

  it('a malformed UDP payload ends the session with a ProtocolError', () => {
    testScheduler().run(({ hot, expectObservable }) => {
      const badOpen = frame(CONTROL_CHANNEL, Command.UDP_OPEN, Buffer.from([0, 0, 0, 1, 4, 0, 7]));
      expectObservable(mux('server', hot<Frame>('-x', { x: badOpen }))).toBe('-#', undefined, protocolError(/malformed UDP_OPEN/));
      const badData = frame(CONTROL_CHANNEL, Command.UDP_DATA, Buffer.from([0, 0]));
      expectObservable(mux('client', hot<Frame>('-x', { x: badData }))).toBe('-#', undefined, protocolError(/malformed UDP_DATA/));
    });
  });
});
