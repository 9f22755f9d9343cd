// The client's UDP flow operator: captured datagrams become flows with frames, replies come back
// addressed for the OS layer, flows expire and are bounded, and under pressure datagrams are
// dropped and counted, never queued without limit.
import { type Observable, Subject } from 'rxjs';
import type { TestScheduler } from 'rxjs/testing';
import { describe, expect, it } from 'vitest';
import type { Destination, Frame } from '../../src/streams/frame.js';
import {
  encodeUdpClose,
  encodeUdpData,
  encodeUdpOpen,
  MAX_UDP_DATAGRAM,
  QUEUED_DATAGRAM_OVERHEAD,
  type UdpLimits,
  type UdpMessage,
} from '../../src/streams/udp.js';
import {
  type LocalDatagram,
  type UdpCloseReason,
  type UdpDropReason,
  type UdpFlowOutput,
  udpFlows,
} from '../../src/streams/udp-flows.js';
import { unexpectedError } from '../support/unexpected-error.js';
import { b, pattern, protocolError, testScheduler } from './marbles.js';

const APP: Destination = { family: 4, address: '10.0.0.5', port: 40_000 };
const APP2: Destination = { family: 4, address: '10.0.0.5', port: 40_001 };
const ECHO: Destination = { family: 4, address: '10.98.0.7', port: 7 };
const OTHER: Destination = { family: 4, address: '10.98.0.8', port: 9 };
const NS: Destination = { family: 4, address: '10.98.0.9', port: 53 };
const ECHO6: Destination = { family: 6, address: 'fd00::7', port: 7 };
const APP6: Destination = { family: 6, address: 'fd00::5', port: 40_000 };

const dg = (source: Destination, destination: Destination, data: string | Buffer): LocalDatagram => ({
  source,
  destination,
  data: typeof data === 'string' ? b(data) : data,
});

/** Output builders. */
const sent = (frame: Frame): UdpFlowOutput => ({ kind: 'frame', frame });
const opened = (id: number, source: Destination, destination: Destination): UdpFlowOutput => ({ kind: 'udp-open', id, source, destination });
const reply = (flow: number, from: Destination, to: Destination, data: string | Buffer): UdpFlowOutput => ({
  kind: 'reply',
  flow,
  source: from,
  destination: to,
  data: typeof data === 'string' ? b(data) : data,
});
interface Counts {
  datagramsSent?: number;
  bytesSent?: number;
  datagramsReceived?: number;
  bytesReceived?: number;
  datagramsDropped?: number;
}
const closed = (id: number, source: Destination, destination: Destination, reason: UdpCloseReason, counts: Counts = {}, detail?: string): UdpFlowOutput => ({
  kind: 'udp-close',
  id,
  source,
  destination,
  reason,
  datagramsSent: counts.datagramsSent ?? 0,
  bytesSent: counts.bytesSent ?? 0,
  datagramsReceived: counts.datagramsReceived ?? 0,
  bytesReceived: counts.bytesReceived ?? 0,
  datagramsDropped: counts.datagramsDropped ?? 0,
  ...(detail === undefined ? {} : { detail }),
});
const dropped = (id: number, source: Destination, destination: Destination, reason: UdpDropReason, datagramsDropped: number): UdpFlowOutput => ({
  kind: 'udp-drop',
  id,
  source,
  destination,
  reason,
  datagramsDropped,
});
/** What the server sends, decoded. */
const server = {
  data: (flow: number, data: string | Buffer): UdpMessage => ({ kind: 'data', flow, data: typeof data === 'string' ? b(data) : data }),
  close: (flow: number, reason: string): UdpMessage => ({ kind: 'close', flow, reason }),
};

interface Inputs {
  local$: Observable<LocalDatagram>;
  fromServer$?: Observable<UdpMessage>;
  writable$?: Observable<boolean>;
  limits?: Partial<UdpLimits>;
}

function flows(scheduler: TestScheduler, helpers: { hot: TestScheduler['createHotObservable'] }, inputs: Inputs) {
  return inputs.local$.pipe(
    udpFlows({
      fromServer$: inputs.fromServer$ ?? helpers.hot<UdpMessage>('-'),
      writable$: inputs.writable$ ?? helpers.hot<boolean>('-'),
      scheduler,
      ...(inputs.limits ? { limits: inputs.limits } : {}),
    }),
  );
}

/**
 * Subscription for tests about something else than expiry: they stop watching before the idle
 * timers (30 s of virtual time) would close their flows.
 */
const BRIEFLY = '^ 999ms !';

/** Runs a marble test with a TestScheduler that is also the operator's clock. */
function marbles(body: (scheduler: TestScheduler, helpers: Parameters<Parameters<TestScheduler['run']>[0]>[0]) => void) {
  const scheduler = testScheduler();
  scheduler.run((helpers) => body(scheduler, helpers));
}

describe('udpFlows: flows', () => {
  it("a flow's first datagram opens it: the event, UDP_OPEN, then the datagram as UDP_DATA", () => {
    marbles((scheduler, { hot, expectObservable }) => {
      const local$ = hot('-a-----b', { a: dg(APP, ECHO, 'ping'), b: dg(APP, ECHO, 'again') });
      expectObservable(flows(scheduler, { hot }, { local$ }), BRIEFLY).toBe('-(oOd)-b', {
        o: opened(1, APP, ECHO),
        O: sent(encodeUdpOpen(1, ECHO)),
        d: sent(encodeUdpData(1, b('ping'))),
        b: sent(encodeUdpData(1, b('again'))),
      });
    });
  });

  it('two interleaved flows get ids of their own, and replies go back to the right program from the right address', () => {
    marbles((scheduler, { hot, expectObservable }) => {
      const local$ = hot('-a------b-------c-------d', {
        a: dg(APP, ECHO, 'a1'),
        b: dg(APP2, OTHER, 'b1'),
        c: dg(APP, ECHO, 'a2'),
        d: dg(APP2, OTHER, 'b2'),
      });
      const fromServer$ = hot<UdpMessage>('--------------x---y-----------z', {
        x: server.data(2, 'B1'),
        y: server.data(1, 'A1'),
        z: server.data(2, 'B2'),
      });
      expectObservable(flows(scheduler, { hot }, { local$, fromServer$ }), BRIEFLY).toBe('-(oOd)--(pPe)-x-c-y-----f-----z', {
        o: opened(1, APP, ECHO),
        O: sent(encodeUdpOpen(1, ECHO)),
        d: sent(encodeUdpData(1, b('a1'))),
        p: opened(2, APP2, OTHER),
        P: sent(encodeUdpOpen(2, OTHER)),
        e: sent(encodeUdpData(2, b('b1'))),
        x: reply(2, OTHER, APP2, 'B1'),
        y: reply(1, ECHO, APP, 'A1'),
        c: sent(encodeUdpData(1, b('a2'))),
        f: sent(encodeUdpData(2, b('b2'))),
        z: reply(2, OTHER, APP2, 'B2'),
      });
    });
  });

  it('the same program to two destinations, or two programs to one, are separate flows; IPv6 too', () => {
    const outputs: UdpFlowOutput[] = [];
    const local$ = new Subject<LocalDatagram>();
    local$.pipe(udpFlows({ fromServer$: new Subject(), writable$: new Subject() })).subscribe({ next: (o) => outputs.push(o), error: unexpectedError });
    local$.next(dg(APP, ECHO, 'x'));
    local$.next(dg(APP, OTHER, 'x'));
    local$.next(dg(APP2, ECHO, 'x'));
    local$.next(dg(APP6, ECHO6, 'x'));
    local$.next(dg(APP, ECHO, 'x'));
    local$.complete();
    const opens = outputs.filter((o) => o.kind === 'udp-open');
    expect(opens.map((o) => o.kind === 'udp-open' && [o.id, o.source.port, o.destination.address])).toEqual([
      [1, 40_000, '10.98.0.7'],
      [2, 40_000, '10.98.0.8'],
      [3, 40_001, '10.98.0.7'],
      [4, 40_000, 'fd00::7'],
    ]);
    expect(outputs).toContainEqual(sent(encodeUdpOpen(4, ECHO6)));
  });

  it('keeps the boundaries of datagrams from 0 bytes to the largest UDP allows', () => {
    const sizes = [0, 1, 1400, 65_000, MAX_UDP_DATAGRAM];
    const frames: Frame[] = [];
    const local$ = new Subject<LocalDatagram>();
    local$.pipe(udpFlows({ fromServer$: new Subject(), writable$: new Subject() })).subscribe({ next: (o) => o.kind === 'frame' && frames.push(o.frame), error: unexpectedError });
    for (const size of sizes) local$.next(dg(APP, ECHO, pattern(size, size)));
    local$.complete();
    const data = frames.filter((f) => f.payload.length >= 4 && f.command === encodeUdpData(1, b('')).command);
    expect(data.map((f) => f.payload.length - 4)).toEqual(sizes);
    data.forEach((f, i) => expect(f.payload.subarray(4).equals(pattern(sizes[i] as number, sizes[i]))).toBe(true));
  });

  it('a datagram whose destination does not fit its family ends the operator with the error, before any flow', () => {
    const local$ = new Subject<LocalDatagram>();
    const outputs: UdpFlowOutput[] = [];
    let error: unknown;
    local$.pipe(udpFlows({ fromServer$: new Subject(), writable$: new Subject() })).subscribe({ next: (o) => outputs.push(o), error: (e: unknown) => (error = e) });
    local$.next(dg(APP, { family: 4, address: 'fd00::7', port: 7 }, 'x'));
    expect(error).toBeInstanceOf(TypeError);
    expect(outputs).toEqual([]);
  });
});

describe('udpFlows: expiry', () => {
  it('a flow without a datagram either way for the idle time closes, and tells the server', () => {
    marbles((scheduler, { hot, expectObservable }) => {
      const local$ = hot('-a', { a: dg(APP, ECHO, 'x') });
      expectObservable(flows(scheduler, { hot }, { local$, limits: { idleMs: 100 } })).toBe('-(oOd) 95ms (cC)', {
        o: opened(1, APP, ECHO),
        O: sent(encodeUdpOpen(1, ECHO)),
        d: sent(encodeUdpData(1, b('x'))),
        c: closed(1, APP, ECHO, 'idle', { datagramsSent: 1, bytesSent: 1 }),
        C: sent(encodeUdpClose(1, 'idle')),
      });
    });
  });

  it('datagrams in either direction keep a flow alive; the idle time counts from the last one', () => {
    marbles((scheduler, { hot, expectObservable }) => {
      const local$ = hot('-a 49ms b', { a: dg(APP, ECHO, 'x'), b: dg(APP, ECHO, 'y') });
      const fromServer$ = hot<UdpMessage>('- 119ms r', { r: server.data(1, 'R') });
      // a at 1, b at 51, the reply at 120: the flow closes at 220, not at 101 or 151.
      expectObservable(flows(scheduler, { hot }, { local$, fromServer$, limits: { idleMs: 100 } })).toBe('-(oOd) 45ms b 68ms r 99ms (cC)', {
        o: opened(1, APP, ECHO),
        O: sent(encodeUdpOpen(1, ECHO)),
        d: sent(encodeUdpData(1, b('x'))),
        b: sent(encodeUdpData(1, b('y'))),
        r: reply(1, ECHO, APP, 'R'),
        c: closed(1, APP, ECHO, 'idle', { datagramsSent: 2, bytesSent: 2, datagramsReceived: 1, bytesReceived: 1 }),
        C: sent(encodeUdpClose(1, 'idle')),
      });
    });
  });

  it('flows to port 53 expire sooner (dnsIdleMs)', () => {
    marbles((scheduler, { hot, expectObservable }) => {
      const local$ = hot('-a-----n', { a: dg(APP, ECHO, 'x'), n: dg(APP, NS, 'q') });
      // The DNS flow, opened at 7, closes at 37; the other, opened at 1, at 101.
      expectObservable(flows(scheduler, { hot }, { local$, limits: { idleMs: 100, dnsIdleMs: 30 } })).toBe('-(oOd)-(pPe) 25ms (cC) 60ms (xX)', {
        o: opened(1, APP, ECHO),
        O: sent(encodeUdpOpen(1, ECHO)),
        d: sent(encodeUdpData(1, b('x'))),
        p: opened(2, APP, NS),
        P: sent(encodeUdpOpen(2, NS)),
        e: sent(encodeUdpData(2, b('q'))),
        c: closed(2, APP, NS, 'idle', { datagramsSent: 1, bytesSent: 1 }),
        C: sent(encodeUdpClose(2, 'idle')),
        x: closed(1, APP, ECHO, 'idle', { datagramsSent: 1, bytesSent: 1 }),
        X: sent(encodeUdpClose(1, 'idle')),
      });
    });
  });

  it('a datagram after expiry opens a new flow with a new id', () => {
    marbles((scheduler, { hot, expectObservable }) => {
      const local$ = hot('-a 199ms a', { a: dg(APP, ECHO, 'x') });
      expectObservable(flows(scheduler, { hot }, { local$, limits: { idleMs: 100 } }), '^ 250ms !').toBe('-(oOd) 95ms (cC) 96ms (pPe)', {
        o: opened(1, APP, ECHO),
        O: sent(encodeUdpOpen(1, ECHO)),
        d: sent(encodeUdpData(1, b('x'))),
        c: closed(1, APP, ECHO, 'idle', { datagramsSent: 1, bytesSent: 1 }),
        C: sent(encodeUdpClose(1, 'idle')),
        p: opened(2, APP, ECHO),
        P: sent(encodeUdpOpen(2, ECHO)),
        e: sent(encodeUdpData(2, b('x'))),
      });
    });
  });
});

describe('udpFlows: bounds and pressure', () => {
  // Datagrams of 30 000 bytes: a flow holds two (the smallest per-flow bound allowed holds one
  // of the largest), three flows' worth do not fit the total of 100 000.
  const BIG = 30_000;
  const COST = BIG + QUEUED_DATAGRAM_OVERHEAD;
  const tight = { maxFlowQueuedBytes: MAX_UDP_DATAGRAM + QUEUED_DATAGRAM_OVERHEAD, maxQueuedBytes: 100_000 };
  const a = [pattern(BIG, 1), pattern(BIG, 2), pattern(BIG, 3), pattern(BIG, 4), pattern(BIG, 5)] as const;
  const c = [pattern(BIG, 11), pattern(BIG, 12)] as const;

  it('while the transport is full datagrams wait within the per-flow bound; beyond it they are dropped and counted', () => {
    expect(2 * COST).toBeLessThanOrEqual(tight.maxFlowQueuedBytes);
    expect(3 * COST).toBeGreaterThan(tight.maxFlowQueuedBytes);
    marbles((scheduler, { hot, expectObservable }) => {
      const local$ = hot('-abcd---------e', {
        a: dg(APP, ECHO, a[0]),
        b: dg(APP, ECHO, a[1]),
        c: dg(APP, ECHO, a[2]),
        d: dg(APP, ECHO, a[3]),
        e: dg(APP, ECHO, a[4]),
      });
      const writable$ = hot('f-------t', { f: false, t: true });
      expectObservable(flows(scheduler, { hot }, { local$, writable$, limits: tight }), BRIEFLY).toBe('-o-x----(OAB)-E', {
        o: opened(1, APP, ECHO),
        // One event for the episode (c and d), however many it drops.
        x: dropped(1, APP, ECHO, 'flow-queue-full', 1),
        O: sent(encodeUdpOpen(1, ECHO)),
        A: sent(encodeUdpData(1, a[0])),
        B: sent(encodeUdpData(1, a[1])),
        E: sent(encodeUdpData(1, a[4])),
      });
    });
  });

  it('the total bound holds across flows; what waits goes out round-robin, UDP_CLOSE first, then UDP_OPEN, then data', () => {
    marbles((scheduler, { hot, expectObservable }) => {
      const local$ = hot('-ab-c-d-', {
        a: dg(APP, ECHO, a[0]),
        b: dg(APP, ECHO, a[1]),
        c: dg(APP2, OTHER, c[0]),
        d: dg(APP2, OTHER, c[1]),
      });
      const writable$ = hot('f----------t', { f: false, t: true });
      expectObservable(flows(scheduler, { hot }, { local$, writable$, limits: tight }), BRIEFLY).toBe('-o--p-x----(OPACB)', {
        o: opened(1, APP, ECHO),
        p: opened(2, APP2, OTHER),
        x: dropped(2, APP2, OTHER, 'queue-full', 1),
        O: sent(encodeUdpOpen(1, ECHO)),
        P: sent(encodeUdpOpen(2, OTHER)),
        A: sent(encodeUdpData(1, a[0])),
        C: sent(encodeUdpData(2, c[0])),
        B: sent(encodeUdpData(1, a[1])),
      });
    });
  });

  it('a drop episode ends when the flow gets a datagram queued again; the next drop is news again', () => {
    marbles((scheduler, { hot, expectObservable }) => {
      const local$ = hot('-abc------d--efg', {
        a: dg(APP, ECHO, a[0]),
        b: dg(APP, ECHO, a[1]),
        c: dg(APP, ECHO, a[2]),
        d: dg(APP, ECHO, a[3]),
        e: dg(APP, ECHO, a[0]),
        f: dg(APP, ECHO, a[1]),
        g: dg(APP, ECHO, a[2]),
      });
      const writable$ = hot('f----t------f', { f: false, t: true });
      expectObservable(flows(scheduler, { hot }, { local$, writable$, limits: tight }), BRIEFLY).toBe('-o-x-(OAB)D----y', {
        o: opened(1, APP, ECHO),
        x: dropped(1, APP, ECHO, 'flow-queue-full', 1),
        O: sent(encodeUdpOpen(1, ECHO)),
        A: sent(encodeUdpData(1, a[0])),
        B: sent(encodeUdpData(1, a[1])),
        D: sent(encodeUdpData(1, a[3])),
        y: dropped(1, APP, ECHO, 'flow-queue-full', 2),
      });
    });
  });

  it('a datagram larger than UDP allows is dropped, not sent', () => {
    marbles((scheduler, { hot, expectObservable }) => {
      const local$ = hot('-a', { a: dg(APP, ECHO, Buffer.alloc(MAX_UDP_DATAGRAM + 1)) });
      expectObservable(flows(scheduler, { hot }, { local$ }), BRIEFLY).toBe('-(oxO)', {
        o: opened(1, APP, ECHO),
        x: dropped(1, APP, ECHO, 'too-large', 1),
        O: sent(encodeUdpOpen(1, ECHO)),
      });
    });
  });

  it('at the flow limit the flow quiet the longest is closed to make room', () => {
    marbles((scheduler, { hot, expectObservable }) => {
      // a, then b, then a again: b is the quietest when c comes.
      const local$ = hot('-a-----b-----a-----c', { a: dg(APP, ECHO, 'a'), b: dg(APP, OTHER, 'b'), c: dg(APP2, ECHO, 'c') });
      expectObservable(flows(scheduler, { hot }, { local$, limits: { maxFlows: 2 } }), BRIEFLY).toBe('-(oOd)-(pPe)-g-----(xqXQf)', {
        o: opened(1, APP, ECHO),
        O: sent(encodeUdpOpen(1, ECHO)),
        d: sent(encodeUdpData(1, b('a'))),
        g: sent(encodeUdpData(1, b('a'))),
        p: opened(2, APP, OTHER),
        P: sent(encodeUdpOpen(2, OTHER)),
        e: sent(encodeUdpData(2, b('b'))),
        x: closed(2, APP, OTHER, 'evicted', { datagramsSent: 1, bytesSent: 1 }),
        q: opened(3, APP2, ECHO),
        X: sent(encodeUdpClose(2, 'evicted')),
        Q: sent(encodeUdpOpen(3, ECHO)),
        f: sent(encodeUdpData(3, b('c'))),
      });
    });
  });

  it('a flow closed before its UDP_OPEN went out costs no frame at all; its waiting datagrams count as dropped', () => {
    marbles((scheduler, { hot, expectObservable }) => {
      const local$ = hot('-a-b-c', { a: dg(APP, ECHO, 'a'), b: dg(APP, OTHER, 'b'), c: dg(APP2, ECHO, 'c') });
      const writable$ = hot('f--------t', { f: false, t: true });
      expectObservable(flows(scheduler, { hot }, { local$, writable$, limits: { maxFlows: 2 } }), BRIEFLY).toBe('-o-p-(xq)(PQef)', {
        o: opened(1, APP, ECHO),
        p: opened(2, APP, OTHER),
        x: closed(1, APP, ECHO, 'evicted', { datagramsDropped: 1 }),
        q: opened(3, APP2, ECHO),
        P: sent(encodeUdpOpen(2, OTHER)),
        e: sent(encodeUdpData(2, b('b'))),
        Q: sent(encodeUdpOpen(3, ECHO)),
        f: sent(encodeUdpData(3, b('c'))),
      });
    });
  });

  it('a flood while the transport is stuck: flows stay within maxFlows, what waits within the bounds, the rest is counted', () => {
    const limits = { maxFlows: 64, maxQueuedBytes: 200_000 };
    const writable$ = new Subject<boolean>();
    const local$ = new Subject<LocalDatagram>();
    const outputs: UdpFlowOutput[] = [];
    local$.pipe(udpFlows({ fromServer$: new Subject(), writable$, limits })).subscribe({ next: (o) => outputs.push(o), error: unexpectedError });
    writable$.next(false);
    let offered = 0;
    for (let i = 0; i < 20_000; i++) {
      const source = { family: 4, address: '10.0.0.5', port: 10_000 + (i % 500) } as const;
      local$.next(dg(source, ECHO, pattern(i % 1500, i)));
      offered++;
    }
    const opens = outputs.filter((o) => o.kind === 'udp-open').length;
    const closes = outputs.filter((o) => o.kind === 'udp-close');
    expect(outputs.filter((o) => o.kind === 'frame')).toEqual([]);
    expect(opens - closes.length).toBe(64);
    // Everything that left the queues without being sent was counted.
    const droppedInClosed = closes.reduce((sum, o) => sum + (o.kind === 'udp-close' ? o.datagramsDropped : 0), 0);
    writable$.next(true);
    const data = outputs.filter((o) => o.kind === 'frame' && o.frame.command === encodeUdpData(1, b('')).command);
    const waitingBytes = data.reduce((sum, o) => sum + (o.kind === 'frame' ? o.frame.payload.length - 4 + QUEUED_DATAGRAM_OVERHEAD : 0), 0);
    expect(waitingBytes).toBeLessThanOrEqual(limits.maxQueuedBytes);
    expect(data.length).toBeGreaterThan(0);
    local$.complete();
    const all = outputs.filter((o) => o.kind === 'udp-close').reduce((sum, o) => sum + (o.kind === 'udp-close' ? o.datagramsDropped + o.datagramsSent : 0), 0);
    expect(all).toBe(offered);
    expect(droppedInClosed).toBeGreaterThan(0);
  });
});

describe('udpFlows: the server', () => {
  it('UDP_CLOSE from the server ends the flow with its reason; late frames for it are dropped; the next datagram opens anew', () => {
    marbles((scheduler, { hot, expectObservable }) => {
      const local$ = hot('-a--------a', { a: dg(APP, ECHO, 'x') });
      const fromServer$ = hot<UdpMessage>('------c-d', { c: server.close(1, 'ECONNREFUSED'), d: server.data(1, 'late') });
      expectObservable(flows(scheduler, { hot }, { local$, fromServer$ }), BRIEFLY).toBe('-(oOd)c---(pPe)', {
        o: opened(1, APP, ECHO),
        O: sent(encodeUdpOpen(1, ECHO)),
        d: sent(encodeUdpData(1, b('x'))),
        c: closed(1, APP, ECHO, 'peer', { datagramsSent: 1, bytesSent: 1 }, 'ECONNREFUSED'),
        p: opened(2, APP, ECHO),
        P: sent(encodeUdpOpen(2, ECHO)),
        e: sent(encodeUdpData(2, b('x'))),
      });
    });
  });

  it('a frame for a flow never opened is a protocol error', () => {
    marbles((scheduler, { hot, expectObservable }) => {
      const local$ = hot('-a', { a: dg(APP, ECHO, 'x') });
      const fromServer$ = hot<UdpMessage>('------d', { d: server.data(2, 'who?') });
      expectObservable(flows(scheduler, { hot }, { local$, fromServer$ }), BRIEFLY).toBe(
        '-(oOd)#',
        { o: opened(1, APP, ECHO), O: sent(encodeUdpOpen(1, ECHO)), d: sent(encodeUdpData(1, b('x'))) },
        protocolError(/UDP_DATA for flow 2, which was never opened/),
      );
    });
  });

  it('so is one for a flow whose UDP_OPEN has not been sent yet', () => {
    marbles((scheduler, { hot, expectObservable }) => {
      const local$ = hot('-a', { a: dg(APP, ECHO, 'x') });
      const fromServer$ = hot<UdpMessage>('---c', { c: server.close(1, 'idle') });
      const writable$ = hot('f', { f: false });
      expectObservable(flows(scheduler, { hot }, { local$, fromServer$, writable$ }), BRIEFLY).toBe(
        '-o-#',
        { o: opened(1, APP, ECHO) },
        protocolError(/UDP_CLOSE for flow 1, which was never opened/),
      );
    });
  });

  it('when the session ends every flow ends with it, and the operator completes', () => {
    marbles((scheduler, { hot, expectObservable }) => {
      const local$ = hot('-a-----b', { a: dg(APP, ECHO, 'x'), b: dg(APP, OTHER, 'y') });
      const fromServer$ = hot<UdpMessage>('------------|');
      expectObservable(flows(scheduler, { hot }, { local$, fromServer$ })).toBe('-(oOd)-(pPe)(xy|)', {
        o: opened(1, APP, ECHO),
        O: sent(encodeUdpOpen(1, ECHO)),
        d: sent(encodeUdpData(1, b('x'))),
        p: opened(2, APP, OTHER),
        P: sent(encodeUdpOpen(2, OTHER)),
        e: sent(encodeUdpData(2, b('y'))),
        x: closed(1, APP, ECHO, 'ended', { datagramsSent: 1, bytesSent: 1 }, 'session ended'),
        y: closed(2, APP, OTHER, 'ended', { datagramsSent: 1, bytesSent: 1 }, 'session ended'),
      });
    });
  });

  it('when the local datagrams end, the server is told to close every flow, even while the transport is full', () => {
    marbles((scheduler, { hot, expectObservable }) => {
      const local$ = hot('-a-----b-----|', { a: dg(APP, ECHO, 'x'), b: dg(APP, OTHER, 'y') });
      const writable$ = hot('---------f', { f: false });
      expectObservable(flows(scheduler, { hot }, { local$, writable$ })).toBe('-(oOd)-(pPe)-(xyXY|)', {
        o: opened(1, APP, ECHO),
        O: sent(encodeUdpOpen(1, ECHO)),
        d: sent(encodeUdpData(1, b('x'))),
        p: opened(2, APP, OTHER),
        P: sent(encodeUdpOpen(2, OTHER)),
        e: sent(encodeUdpData(2, b('y'))),
        x: closed(1, APP, ECHO, 'ended', { datagramsSent: 1, bytesSent: 1 }, 'no more local datagrams'),
        y: closed(2, APP, OTHER, 'ended', { datagramsSent: 1, bytesSent: 1 }, 'no more local datagrams'),
        X: sent(encodeUdpClose(1, 'closed')),
        Y: sent(encodeUdpClose(2, 'closed')),
      });
    });
  });

  it('unsubscribing cancels the idle timers', () => {
    const scheduler = testScheduler();
    const local$ = new Subject<LocalDatagram>();
    const subscription = local$.pipe(udpFlows({ fromServer$: new Subject(), writable$: new Subject(), scheduler })).subscribe();
    local$.next(dg(APP, ECHO, 'x'));
    local$.next(dg(APP, OTHER, 'y'));
    expect(scheduler.actions.length).toBe(2);
    subscription.unsubscribe();
    expect(scheduler.actions.length).toBe(0);
  });
});
