/**
 * The status snapshot (issue 14): the pure reducer over TunnelEvents, and the operator over it in
 * virtual time (the TestScheduler's clock is the one `since` is taken from).
 */
import { merge, of, Subject } from 'rxjs';
import { describe, expect, it } from 'vitest';
import type { TunnelEvent } from '../../src/shared/events.js';
import {
  initialStatus,
  MAX_LISTED,
  reduceStatus,
  STOPPING,
  type StatusInput,
  type StatusSnapshot,
  statusTracker,
  tunnelStatus,
} from '../../src/status/snapshot.js';
import type { Destination } from '../../src/streams/frame.js';
import { testScheduler } from '../streams/marbles.js';
import { unexpectedError } from '../support/unexpected-error.js';

const DST: Destination = { family: 4, address: '10.0.0.1', port: 80 };
const DST6: Destination = { family: 6, address: 'fd00::2', port: 443 };
const iso = (ms: number) => new Date(ms).toISOString();

const e = {
  listening: (host = '127.0.0.1', port = 12300): TunnelEvent => ({ kind: 'listening', host, port }),
  transport: (transport: 'ssh' | 'ssh2' = 'ssh2'): TunnelEvent => ({ kind: 'transport', transport }),
  mode: (mode: 'node' | 'stock' = 'node'): TunnelEvent => ({ kind: 'mode', mode, why: 'node 20 found' }),
  connected: (remote = 'lab'): TunnelEvent => ({ kind: 'connected', remote, window: 1 << 20 }),
  reconnecting: (attempt: number): TunnelEvent => ({ kind: 'reconnecting', attempt, delayMs: attempt === 1 ? 0 : 500, reason: 'connection to lab lost' }),
  accept: (id: number, via?: 'ssh', destination = DST): TunnelEvent =>
    via ? { kind: 'accept', id, source: `127.0.0.1:${40000 + id}`, destination, via } : { kind: 'accept', id, source: `127.0.0.1:${40000 + id}`, destination },
  close: (id: number, sent: number, received: number, via?: 'ssh'): TunnelEvent => ({
    kind: 'close',
    id,
    destination: DST,
    reason: 'done',
    bytesSent: sent,
    bytesReceived: received,
    ...(via ? { via } : {}),
  }),
  dns: (outcome: 'answered' | 'failed' | 'timeout'): TunnelEvent => ({
    kind: 'dns',
    source: '127.0.0.1:5353',
    question: 'example.com A',
    transport: 'udp',
    outcome,
    detail: '',
    ms: 3,
  }),
};

/** Runs inputs through the reducer, input i at time i * 10 ms. */
const run = (inputs: readonly StatusInput[], maxListed?: number, start: StatusSnapshot = initialStatus({ pid: 42, remote: 'lab' }, 0)) =>
  inputs.reduce((s, input, i) => reduceStatus(s, input, (i + 1) * 10, maxListed), start);

describe('reduceStatus', () => {
  it('starts connecting, with nothing known but the pid and the remote', () => {
    expect(initialStatus({ pid: 42, remote: 'lab' }, 5)).toEqual({
      pid: 42,
      listen: null,
      remote: 'lab',
      transport: null,
      mode: null,
      state: 'connecting',
      since: iso(5),
      reconnects: 0,
      connections: 0,
      bytesSent: 0,
      bytesReceived: 0,
      dns: { answered: 0, failed: 0, timeout: 0 },
      openConnections: [],
      openConnectionsUnlisted: 0,
    });
    expect(initialStatus().pid).toBe(process.pid);
    expect(initialStatus().remote).toBeNull();
  });

  it('takes listen, transport, mode and remote from their events (IPv6 listen in brackets)', () => {
    const s = run([e.listening(), e.transport('ssh'), e.mode('stock'), e.connected('bastion')]);
    expect(s).toMatchObject({ listen: '127.0.0.1:12300', transport: 'ssh', mode: 'stock', remote: 'bastion', state: 'connected' });
    expect(run([e.listening('::1', 12300)]).listen).toBe('[::1]:12300');
  });

  it('states: connecting → connected → reconnecting (every attempt) → connected, since when each was entered', () => {
    const s1 = run([e.listening(), e.connected()]);
    expect(s1).toMatchObject({ state: 'connected', since: iso(20), reconnects: 0 });
    const s2 = run([e.listening(), e.connected(), e.reconnecting(1), e.reconnecting(2), e.reconnecting(3)]);
    // still reconnecting since the loss; only the loss (attempt 1) is counted
    expect(s2).toMatchObject({ state: 'reconnecting', since: iso(30), reconnects: 1 });
    const s3 = run([e.connected(), e.reconnecting(1), e.reconnecting(2), e.connected(), e.reconnecting(1), e.connected()]);
    expect(s3).toMatchObject({ state: 'connected', since: iso(60), reconnects: 2 });
  });

  it('stopping, once marked, stays whatever comes after; the counters still count', () => {
    const s = run([e.connected(), STOPPING, e.reconnecting(1), e.connected(), STOPPING, e.dns('answered')]);
    expect(s).toMatchObject({ state: 'stopping', since: iso(20), reconnects: 1, dns: { answered: 1, failed: 0, timeout: 0 } });
  });

  it('counts open connections (accept minus close), bytes from close events and DNS outcomes', () => {
    const s = run([
      e.connected(),
      e.accept(1),
      e.accept(2),
      e.accept(1, 'ssh'),
      e.close(1, 100, 2000),
      e.dns('answered'),
      e.dns('answered'),
      e.dns('failed'),
      e.dns('timeout'),
    ]);
    expect(s.connections).toBe(2);
    expect(s.bytesSent).toBe(100);
    expect(s.bytesReceived).toBe(2000);
    expect(s.dns).toEqual({ answered: 2, failed: 1, timeout: 1 });
    // the mux's #1 closed; ssh's #1 (ids counted apart) is still open
    expect(s.openConnections).toEqual([
      { id: 2, source: '127.0.0.1:40002', destination: '10.0.0.1:80' },
      { id: 1, via: 'ssh', source: '127.0.0.1:40001', destination: '10.0.0.1:80' },
    ]);
  });

  it('formats IPv6 destinations in brackets', () => {
    expect(run([e.accept(7, undefined, DST6)]).openConnections).toEqual([{ id: 7, source: '127.0.0.1:40007', destination: '[fd00::2]:443' }]);
  });

  it('a close it never saw accepted adds its bytes but leaves the count alone', () => {
    const s = run([e.close(9, 5, 6)]);
    expect(s).toMatchObject({ connections: 0, bytesSent: 5, bytesReceived: 6, openConnections: [], openConnectionsUnlisted: 0 });
  });

  it('a loss empties the list: the lost session reset its connections without a close each', () => {
    const s = run([e.connected(), e.accept(1), e.accept(2), e.reconnecting(1), e.connected(), e.accept(1)]);
    expect(s.connections).toBe(1);
    expect(s.openConnections).toEqual([{ id: 1, source: '127.0.0.1:40001', destination: '10.0.0.1:80' }]);
    // a later attempt (not a loss) changes nothing of it
    expect(reduceStatus(s, e.reconnecting(2), 1000)).toMatchObject({ connections: 1, reconnects: 1 });
  });

  it('lists at most maxListed open connections, counts the rest, and closes either kind', () => {
    const accepts = [1, 2, 3, 4, 5].map((id) => e.accept(id));
    const s = run(accepts, 3);
    expect(s.openConnections.map((c) => c.id)).toEqual([1, 2, 3]);
    expect(s).toMatchObject({ connections: 5, openConnectionsUnlisted: 2 });
    const closed = run([...accepts, e.close(5, 0, 0), e.close(2, 0, 0)], 3);
    expect(closed.openConnections.map((c) => c.id)).toEqual([1, 3]);
    expect(closed).toMatchObject({ connections: 3, openConnectionsUnlisted: 1 });
    // a slot freed is taken by the next accepted
    expect(run([...accepts, e.close(2, 0, 0), e.accept(6)], 3).openConnections.map((c) => c.id)).toEqual([1, 3, 6]);
  });

  it('stays bounded whatever the stream: 100 000 connections open, 1 000 listed', () => {
    let s = initialStatus({ pid: 1 }, 0);
    for (let id = 1; id <= 100_000; id++) s = reduceStatus(s, e.accept(id), 0);
    expect(s.openConnections).toHaveLength(MAX_LISTED);
    expect(s).toMatchObject({ connections: 100_000, openConnectionsUnlisted: 100_000 - MAX_LISTED });
    expect(JSON.stringify(s).length).toBeLessThan(150_000);
  });

  it('is pure: the snapshot given is not changed; an event that changes nothing returns it', () => {
    const start = run([e.connected(), e.accept(1), e.accept(2)]);
    const before = Object.freeze({ ...start, dns: Object.freeze({ ...start.dns }), openConnections: Object.freeze([...start.openConnections]) });
    const copy = structuredClone(before);
    for (const input of [e.close(1, 1, 1), e.accept(3), e.dns('timeout'), e.reconnecting(1), STOPPING]) reduceStatus(before, input, 99);
    expect(before).toEqual(copy);
    const nothing: TunnelEvent[] = [
      { kind: 'warning', message: 'x' },
      { kind: 'notice', message: 'x' },
      { kind: 'remote-output', line: 'x' },
      { kind: 'host', name: 'db', address: '10.0.0.5' },
      e.transport('ssh2'),
    ];
    const known = reduceStatus(before, e.transport('ssh2'), 0);
    for (const input of nothing) expect(reduceStatus(known, input, 99)).toBe(known);
  });
});

describe('tunnelStatus (marbles)', () => {
  const base = initialStatus({ pid: 42, remote: 'lab' }, 0);
  const conn1 = { id: 1, source: '127.0.0.1:40001', destination: '10.0.0.1:80' };

  it('emits a snapshot after each event: connecting → connected → reconnecting → connected, since in virtual time', () => {
    const scheduler = testScheduler();
    scheduler.run(({ cold, expectObservable }) => {
      const events = cold<StatusInput>('ltm-c-a-r-s-d-x|', {
        l: e.listening(),
        t: e.transport(),
        m: e.mode(),
        c: e.connected(),
        a: e.accept(1),
        r: e.reconnecting(1),
        s: e.reconnecting(2),
        d: e.connected(),
        x: STOPPING,
      });
      const l: StatusSnapshot = { ...base, listen: '127.0.0.1:12300' };
      const t: StatusSnapshot = { ...l, transport: 'ssh2' };
      const m: StatusSnapshot = { ...t, mode: 'node' };
      const c: StatusSnapshot = { ...m, state: 'connected', since: iso(4) };
      const a: StatusSnapshot = { ...c, connections: 1, openConnections: [conn1] };
      const r: StatusSnapshot = { ...a, state: 'reconnecting', since: iso(8), reconnects: 1, connections: 0, openConnections: [] };
      const d: StatusSnapshot = { ...r, state: 'connected', since: iso(12) };
      const x: StatusSnapshot = { ...d, state: 'stopping', since: iso(14) };
      const status$ = events.pipe(tunnelStatus({ pid: 42, remote: 'lab', now: () => scheduler.now() }));
      expectObservable(status$).toBe('ltm-c-a-r-s-d-x|', { l, t, m, c, a, r, s: r, d, x });
    });
  });

  it('counts bytes and DNS outcomes as they come; an error of the tunnel ends it', () => {
    const scheduler = testScheduler();
    scheduler.run(({ cold, expectObservable }) => {
      const lost = new Error('lost');
      const events = cold<StatusInput>('a-b-q-f#', { a: e.accept(1), b: e.close(1, 10, 20), q: e.dns('answered'), f: e.dns('timeout') }, lost);
      const a: StatusSnapshot = { ...base, connections: 1, openConnections: [conn1] };
      const b: StatusSnapshot = { ...base, bytesSent: 10, bytesReceived: 20 };
      const q: StatusSnapshot = { ...b, dns: { answered: 1, failed: 0, timeout: 0 } };
      const f: StatusSnapshot = { ...b, dns: { answered: 1, failed: 0, timeout: 1 } };
      expectObservable(events.pipe(tunnelStatus({ pid: 42, remote: 'lab', now: () => scheduler.now() }))).toBe('a-b-q-f#', { a, b, q, f }, lost);
    });
  });

  it('each subscription starts afresh, connecting since it subscribed', () => {
    const scheduler = testScheduler();
    scheduler.run(({ cold, expectObservable }) => {
      const events = cold<StatusInput>('c|', { c: e.connected() });
      const status$ = events.pipe(tunnelStatus({ pid: 42, remote: 'lab', now: () => scheduler.now() }));
      const first: StatusSnapshot = { ...base, state: 'connected', since: iso(0) };
      const later: StatusSnapshot = { ...base, state: 'connected', since: iso(5) };
      expectObservable(status$).toBe('c|', { c: first });
      expectObservable(status$, '-----^').toBe('-----c|', { c: later });
    });
  });

  it('the program marks stopping by merging STOPPING in', () => {
    const stop = new Subject<StatusInput>();
    const seen: string[] = [];
    merge(of(e.connected()), stop)
      .pipe(tunnelStatus({ now: () => 0 }))
      .subscribe({ next: (s) => seen.push(s.state), error: unexpectedError });
    stop.next(STOPPING);
    expect(seen).toEqual(['connected', 'stopping']);
  });
});

describe('statusTracker', () => {
  it('keeps the latest snapshot of what it was given', () => {
    let clock = 1000;
    const tracker = statusTracker({ pid: 7, remote: 'lab', now: () => clock });
    expect(tracker.current).toMatchObject({ pid: 7, state: 'connecting', since: iso(1000) });
    clock = 2000;
    tracker.record(e.listening());
    tracker.record(e.connected());
    expect(tracker.current).toMatchObject({ state: 'connected', since: iso(2000), listen: '127.0.0.1:12300' });
    clock = 3000;
    tracker.record(STOPPING);
    expect(tracker.current).toMatchObject({ state: 'stopping', since: iso(3000) });
  });
});
