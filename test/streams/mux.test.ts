import { type Observable, Subject } from 'rxjs';
import { describe, expect, it } from 'vitest';
import type { LocalAction, LocalEvent } from '../../src/streams/channel.js';
import { Command, type Destination, type Frame, frame, MAX_PAYLOAD } from '../../src/streams/frame.js';
import { type AcceptedConnection, type LocalEnd, type MuxConfig, type MuxOutput, runMux } from '../../src/streams/mux.js';
import { act, b, DST, DST6, ev, f, out, pattern, protocolError, testScheduler } from './marbles.js';

const SOURCE = '127.0.0.1:40000';

/** A local end whose events are given and whose actions are recorded on a Subject. */
function fakeEnd(events$: Observable<LocalEvent>): { end: LocalEnd; actions$: Subject<LocalAction> } {
  const actions$ = new Subject<LocalAction>();
  return { end: { events$, perform: (a) => actions$.next(a) }, actions$ };
}

function fakeConnection(
  events$: Observable<LocalEvent>,
  destination: Destination = DST,
): { conn: AcceptedConnection; actions$: Subject<LocalAction> } {
  const { end, actions$ } = fakeEnd(events$);
  return { conn: { ...end, destination, source: SOURCE }, actions$ };
}

const client = (over: Partial<MuxConfig> & Pick<MuxConfig, 'inbound$'>): MuxConfig => ({
  role: 'client',
  sendWindow: 100,
  recvWindow: 100,
  ...over,
});

/** The client's open event (with the accepted socket's source address). */
const opened = (id: number, destination: Destination = DST): MuxOutput => ({ kind: 'open', id, destination, source: SOURCE });
/** The server's open event (no source). */
const served = (id: number, destination: Destination = DST): MuxOutput => ({ kind: 'open', id, destination });

describe('runMux (client)', () => {
  it('open → data → eof: OPEN first, then DATA, then EOF; both EOFs close the channel as done', () => {
    testScheduler().run(({ cold, hot, expectObservable }) => {
      const { conn, actions$ } = fakeConnection(cold('----------d----e', { d: ev.data('hi'), e: ev.eof }));
      const accepted$ = cold('-----c', { c: conn });
      const inbound$ = hot<Frame>('----------k---w----------f', {
        k: f.openOk(1),
        w: f.data(1, 'yo'),
        f: f.eof(1),
      });
      expectObservable(actions$).toBe('14ms w 10ms x', { w: act.write('yo'), x: act.end });
      expectObservable(runMux(client({ inbound$, accepted$ }))).toBe('-----(aO)------D----E----z', {
        a: opened(1),
        O: out(f.open(1)),
        D: out(f.data(1, 'hi')),
        E: out(f.eof(1)),
        z: { kind: 'close', id: 1, destination: DST, reason: 'done', bytesSent: 2, bytesReceived: 2 },
      });
    });
  });

  it('open failure: OPEN_FAILED resets the local socket and reports the close as refused', () => {
    testScheduler().run(({ cold, hot, expectObservable }) => {
      const { conn, actions$ } = fakeConnection(cold('-'), DST6);
      const inbound$ = hot<Frame>('-----r', { r: f.openFailed(1, 'ENETUNREACH') });
      expectObservable(actions$).toBe('-----x', { x: act.reset });
      expectObservable(runMux(client({ inbound$, accepted$: cold('c', { c: conn }) }))).toBe('(aO)-z', {
        a: opened(1, DST6),
        O: out(f.open(1, DST6)),
        z: { kind: 'close', id: 1, destination: DST6, reason: 'refused', detail: 'ENETUNREACH', bytesSent: 0, bytesReceived: 0 },
      });
    });
  });

  it('numbers channels from 1 upwards and routes inbound frames by channel id', () => {
    testScheduler().run(({ cold, hot, expectObservable }) => {
      const one = fakeConnection(cold('-'));
      const two = fakeConnection(cold('-'), DST6);
      const inbound$ = hot<Frame>('----------a-b-c-d', {
        a: f.openOk(2),
        b: f.data(2, 'to two'),
        c: f.openOk(1),
        d: f.data(1, 'to one'),
      });
      expectObservable(one.actions$).toBe('16ms w', { w: act.write('to one') });
      expectObservable(two.actions$).toBe('12ms w', { w: act.write('to two') });
      expectObservable(runMux(client({ inbound$, accepted$: cold('a----b', { a: one.conn, b: two.conn }) }))).toBe(
        '(aO)-(bP)',
        { a: opened(1), O: out(f.open(1)), b: opened(2, DST6), P: out(f.open(2, DST6)) },
      );
    });
  });

  it('a bulk channel out of credit does not hold back an interactive one; frames interleave', () => {
    const bulk = pattern(150_000);
    testScheduler().run(({ cold, hot, expectObservable }) => {
      const bulkEnd = fakeConnection(cold('----------d', { d: ev.data(bulk) }));
      const keys = fakeConnection(cold('----------k', { k: ev.data('ls\n') }), DST6);
      const accepted$ = cold('a----b', { a: bulkEnd.conn, b: keys.conn });
      const inbound$ = hot<Frame>('-----------x---y---p----c----z', {
        x: f.openOk(1),
        y: f.openOk(2),
        p: f.data(2, 'file\n'),
        c: f.credit(1, MAX_PAYLOAD),
        z: f.data(1, 'ack'),
      });
      expectObservable(bulkEnd.actions$).toBe('10ms p 13ms r 4ms w', {
        p: act.pause,
        r: act.resume,
        w: act.write('ack'),
      });
      expectObservable(keys.actions$).toBe('19ms w', { w: act.write('file\n') });
      // 150 000 bytes against a 100 000-byte window: 65 536 + 34 464 go out, 50 000 wait for credit.
      expectObservable(runMux(client({ inbound$, accepted$, sendWindow: 100_000 }))).toBe('(aO)-(bP)-(XY)-K--------Z', {
        a: opened(1),
        O: out(f.open(1)),
        b: opened(2, DST6),
        P: out(f.open(2, DST6)),
        X: out(f.data(1, bulk.subarray(0, MAX_PAYLOAD))),
        Y: out(f.data(1, bulk.subarray(MAX_PAYLOAD, 100_000))),
        K: out(f.data(2, 'ls\n')),
        Z: out(f.data(1, bulk.subarray(100_000))),
      });
    });
  });

  it('answers PING on channel 0 with PONG, reports PONG, and sends control frames', () => {
    testScheduler().run(({ cold, hot, expectObservable }) => {
      const inbound$ = hot<Frame>('--p--q', { p: f.ping('t1'), q: f.pong('t2') });
      const control$ = cold<Frame>('----c', { c: f.ping('mine') });
      expectObservable(runMux(client({ inbound$, control$ }))).toBe('--P-CQ', {
        P: out(f.pong('t1')),
        C: out(f.ping('mine')),
        Q: { kind: 'pong', payload: b('t2') },
      });
    });
  });

  it('EXIT reports an exit event, resets the channels still open and completes the mux', () => {
    testScheduler().run(({ cold, hot, expectObservable, expectSubscriptions }) => {
      const events$ = cold<LocalEvent>('-');
      const { conn, actions$ } = fakeConnection(events$);
      const inbound$ = hot<Frame>('-----x', { x: f.exit('server stopped: ENOMEM') });
      expectObservable(actions$).toBe('5ms r', { r: act.reset });
      expectObservable(runMux(client({ inbound$, accepted$: cold('c', { c: conn }) }))).toBe('(aO)-(ez|)', {
        a: opened(1),
        O: out(f.open(1)),
        e: { kind: 'exit', reason: 'server stopped: ENOMEM' },
        z: { kind: 'close', id: 1, destination: DST, reason: 'reset', detail: 'session ended', bytesSent: 0, bytesReceived: 0 },
      });
      expectSubscriptions(events$.subscriptions).toBe('^----!');
    });
  });

  it('when the session ends, channels still open are reset (RST to their programs) and reported closed', () => {
    // A program must not mistake a dead tunnel for an orderly end of its download: the channel
    // machine resets the socket when its input ends ('session ended'); the mux has to let it.
    testScheduler().run(({ cold, hot, expectObservable }) => {
      const { conn, actions$ } = fakeConnection(cold('-'));
      const inbound$ = hot<Frame>('-----k---|', { k: f.openOk(1) });
      expectObservable(actions$).toBe('9ms r', { r: act.reset });
      expectObservable(runMux(client({ inbound$, accepted$: cold('c', { c: conn }) }))).toBe('(aO)-----(z|)', {
        a: opened(1),
        O: out(f.open(1)),
        z: { kind: 'close', id: 1, destination: DST, reason: 'reset', detail: 'session ended', bytesSent: 0, bytesReceived: 0 },
      });
    });
  });

  it('completes when the inbound frames complete, and errors when they error', () => {
    testScheduler().run(({ hot, expectObservable }) => {
      expectObservable(runMux(client({ inbound$: hot<Frame>('---|') }))).toBe('---|');
      const boom = new Error('transport lost');
      expectObservable(runMux(client({ inbound$: hot<Frame>('---#', {}, boom) }))).toBe('---#', {}, boom);
    });
  });

  it('a frame for a channel that was never opened ends the session with an error', () => {
    testScheduler().run(({ hot, expectObservable }) => {
      const inbound$ = hot<Frame>('--a', { a: f.data(5, 'x') });
      expectObservable(runMux(client({ inbound$ }))).toBe('--#', {}, protocolError(/DATA for unknown channel 5/));
    });
  });

  it('a frame for a channel that finished earlier is dropped silently; an id never opened is still an error', () => {
    testScheduler().run(({ cold, hot, expectObservable }) => {
      const { conn } = fakeConnection(cold('-----e', { e: ev.eof }));
      const inbound$ = hot<Frame>('----------f----l----c----d', {
        f: f.eof(1),
        l: f.data(1, 'late'),
        c: f.credit(1, 10),
        d: f.data(2, 'x'),
      });
      expectObservable(runMux(client({ inbound$, accepted$: cold('c', { c: conn }) }))).toBe(
        '(aO)-E----z--------------#',
        {
          a: opened(1),
          O: out(f.open(1)),
          E: out(f.eof(1)),
          z: { kind: 'close', id: 1, destination: DST, reason: 'done', bytesSent: 0, bytesReceived: 0 },
        },
        protocolError(/DATA for unknown channel 2/),
      );
    });
  });

  it('an unexpected command on the control channel ends the session', () => {
    testScheduler().run(({ hot, expectObservable }) => {
      const inbound$ = hot<Frame>('--a', { a: f.data(0, 'x') });
      expectObservable(runMux(client({ inbound$ }))).toBe('--#', {}, protocolError(/unexpected DATA on the control channel/));
    });
  });

  it("a channel's window violation ends the whole session", () => {
    testScheduler().run(({ cold, hot, expectObservable }) => {
      const { conn } = fakeConnection(cold('-'));
      const inbound$ = hot<Frame>('-----k-d', { k: f.openOk(1), d: f.data(1, '12345') });
      expectObservable(runMux(client({ inbound$, accepted$: cold('c', { c: conn }), recvWindow: 4 }))).toBe(
        '(aO)---#',
        { a: opened(1), O: out(f.open(1)) },
        protocolError(/channel 1: window violation/),
      );
    });
  });

  it("a channel's credit overflow ends the whole session", () => {
    testScheduler().run(({ cold, hot, expectObservable }) => {
      const { conn } = fakeConnection(cold('-'));
      const inbound$ = hot<Frame>('-----c', { c: f.credit(1, 1) });
      expectObservable(runMux(client({ inbound$, accepted$: cold('c', { c: conn }) }))).toBe(
        '(aO)-#',
        { a: opened(1), O: out(f.open(1)) },
        protocolError(/channel 1: credit overflow/),
      );
    });
  });

  it('an OPEN sent to the client is a protocol violation', () => {
    testScheduler().run(({ hot, expectObservable }) => {
      const inbound$ = hot<Frame>('--o', { o: f.open(1) });
      expectObservable(runMux(client({ inbound$ }))).toBe('--#', {}, protocolError(/OPEN for unknown channel 1/));
    });
  });
});

describe('runMux: session-level credit on channel 0', () => {
  it('reports CREDIT on channel 0 as session credit; a malformed one ends the session', () => {
    testScheduler().run(({ hot, expectObservable }) => {
      const inbound$ = hot<Frame>('--c--m', { c: f.credit(0, 70_000), m: frame(0, Command.CREDIT, b('xx')) });
      expectObservable(runMux(client({ inbound$ }))).toBe(
        '--s--#',
        { s: { kind: 'session-credit', bytes: 70_000 } },
        protocolError(/malformed session CREDIT/),
      );
    });
  });

  it('returns session credit for received DATA in batches of 64 KiB', () => {
    testScheduler().run(({ cold, hot, expectObservable }) => {
      const { conn, actions$ } = fakeConnection(cold('-'));
      const inbound$ = hot<Frame>('-----k-a-b', {
        k: f.openOk(1),
        a: f.data(1, pattern(40_000)),
        b: f.data(1, pattern(30_000)),
      });
      expectObservable(actions$).toBe('7ms a 1ms b', { a: act.write(pattern(40_000)), b: act.write(pattern(30_000)) });
      expectObservable(runMux(client({ inbound$, accepted$: cold('c', { c: conn }), recvWindow: 1_000_000 }))).toBe('(aO)-----C', {
        a: opened(1),
        O: out(f.open(1)),
        C: out(f.credit(0, 70_000)),
      });
    });
  });
});

describe('runMux (server)', () => {
  /** dial() hands out the given local ends in order and records the destinations. */
  function dialer(ends: LocalEnd[]) {
    const dialled: Destination[] = [];
    const dial = (destination: Destination): LocalEnd => {
      dialled.push(destination);
      const end = ends.shift();
      if (!end) throw new Error('unexpected dial');
      return end;
    };
    return { dial, dialled };
  }
  const server = (over: Partial<MuxConfig> & Pick<MuxConfig, 'inbound$'>): MuxConfig => ({
    role: 'server',
    sendWindow: 100,
    recvWindow: 100,
    ...over,
  });

  it('OPEN dials the destination; connected answers OPEN_OK; data flows both ways with credit; EOFs close', () => {
    testScheduler().run(({ cold, hot, expectObservable }) => {
      const { end, actions$ } = fakeEnd(cold('--c----w---d---e', { c: ev.connected, w: ev.written(3), d: ev.data('resp'), e: ev.eof }));
      const { dial } = dialer([end]);
      const inbound$ = hot<Frame>('--o----g-----------f', { o: f.open(1, DST6), g: f.data(1, 'GET'), f: f.eof(1) });
      expectObservable(actions$).toBe('7ms w 11ms x', { w: act.write('GET'), x: act.end });
      // Receive window 8: credit comes back in batches of 1 byte, so every write is credited.
      expectObservable(runMux(server({ inbound$, dial, recvWindow: 8 }))).toBe('--a-K----C---D---E-z', {
        a: served(1, DST6),
        K: out(f.openOk(1)),
        C: out(f.credit(1, 3)),
        D: out(f.data(1, 'resp')),
        E: out(f.eof(1)),
        z: { kind: 'close', id: 1, destination: DST6, reason: 'done', bytesSent: 4, bytesReceived: 3 },
      });
    });
  });

  it('records what it dialled', () => {
    const { end } = fakeEnd(new Subject<LocalEvent>());
    const { dial, dialled } = dialer([end]);
    const inbound$ = new Subject<Frame>();
    runMux(server({ inbound$, dial })).subscribe();
    inbound$.next(f.open(1, DST6));
    expect(dialled).toEqual([DST6]);
  });

  it('a failed connect answers OPEN_FAILED with the errno name', () => {
    testScheduler().run(({ cold, hot, expectObservable }) => {
      const { end } = fakeEnd(cold('---x', { x: ev.error('ECONNREFUSED') }));
      const { dial } = dialer([end]);
      const inbound$ = hot<Frame>('--o', { o: f.open(1) });
      expectObservable(runMux(server({ inbound$, dial }))).toBe('--a--(Fz)', {
        a: served(1, DST),
        F: out(f.openFailed(1, 'ECONNREFUSED')),
        z: { kind: 'close', id: 1, destination: DST, reason: 'refused', detail: 'ECONNREFUSED', bytesSent: 0, bytesReceived: 0 },
      });
    });
  });

  it('an OPEN reusing the id of a finished channel ends the session', () => {
    testScheduler().run(({ cold, hot, expectObservable }) => {
      const { end } = fakeEnd(cold('-x', { x: ev.error('ECONNREFUSED') }));
      const { dial } = dialer([end]);
      const inbound$ = hot<Frame>('o---------p', { o: f.open(1), p: f.open(1) });
      expectObservable(runMux(server({ inbound$, dial }))).toBe(
        'a(Fz)-----#',
        {
          a: served(1, DST),
          F: out(f.openFailed(1, 'ECONNREFUSED')),
          z: { kind: 'close', id: 1, destination: DST, reason: 'refused', detail: 'ECONNREFUSED', bytesSent: 0, bytesReceived: 0 },
        },
        protocolError(/OPEN reuses channel id 1/),
      );
    });
  });

  it('an OPEN with an id below the highest seen ends the session', () => {
    testScheduler().run(({ cold, hot, expectObservable }) => {
      const { end } = fakeEnd(cold('-'));
      const { dial } = dialer([end]);
      const inbound$ = hot<Frame>('o----p', { o: f.open(5), p: f.open(3) });
      expectObservable(runMux(server({ inbound$, dial }))).toBe('a----#', { a: served(5, DST) }, protocolError(/OPEN reuses channel id 3/));
    });
  });

  it('an OPEN for a channel that is still open ends the session', () => {
    testScheduler().run(({ cold, hot, expectObservable }) => {
      const { end } = fakeEnd(cold('-'));
      const { dial } = dialer([end]);
      const inbound$ = hot<Frame>('o----p', { o: f.open(1), p: f.open(1) });
      expectObservable(runMux(server({ inbound$, dial }))).toBe('a----#', { a: served(1, DST) }, protocolError(/unexpected OPEN/));
    });
  });

  it('a malformed OPEN payload ends the session', () => {
    testScheduler().run(({ hot, expectObservable }) => {
      const { dial } = dialer([]);
      const inbound$ = hot<Frame>('--o', { o: frame(1, Command.OPEN, b('xx')) });
      expectObservable(runMux(server({ inbound$, dial }))).toBe('--#', {}, protocolError(/malformed OPEN/));
    });
  });

  it('a non-OPEN frame for a channel id never opened ends the session', () => {
    testScheduler().run(({ hot, expectObservable }) => {
      const { dial } = dialer([]);
      const inbound$ = hot<Frame>('--d', { d: f.data(1, 'x') });
      expectObservable(runMux(server({ inbound$, dial }))).toBe('--#', {}, protocolError(/DATA for unknown channel 1/));
    });
  });
});
