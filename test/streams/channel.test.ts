import fc from 'fast-check';
import { filter, Subject } from 'rxjs';
import { describe, expect, it } from 'vitest';
import { ProtocolError } from '../../src/shared/errors.js';
import {
  type ChannelConfig,
  type ChannelInput,
  type ChannelOutput,
  channelMachine,
  openDestination,
} from '../../src/streams/channel.js';
import { Command, frame, MAX_PAYLOAD } from '../../src/streams/frame.js';
import {
  act,
  b,
  closed,
  DST,
  DST6,
  ev,
  f,
  local,
  pattern,
  peer,
  protocolError,
  testScheduler,
  toLocal,
  toPeer,
} from './marbles.js';

const opener = (over: Partial<ChannelConfig> = {}): ChannelConfig => ({
  id: 1,
  role: 'opener',
  sendWindow: 100,
  recvWindow: 100,
  destination: DST,
  ...over,
});
const acceptor = (over: Partial<ChannelConfig> = {}): ChannelConfig => ({
  id: 7,
  role: 'acceptor',
  sendWindow: 100,
  recvWindow: 100,
  ...over,
});

describe('channelMachine: open → data → eof', () => {
  it('opener sends OPEN first, then DATA, then EOF; both EOFs close it as done and complete', () => {
    testScheduler().run(({ cold, expectObservable }) => {
      const input = cold<ChannelInput>('--k-d-e-f', {
        k: peer(f.openOk(1)),
        d: local(ev.data('hi')),
        e: local(ev.eof),
        f: peer(f.eof(1)),
      });
      expectObservable(input.pipe(channelMachine(opener()))).toBe('o---D-E-(xy|)', {
        o: toPeer(f.open(1, DST)),
        D: toPeer(f.data(1, 'hi')),
        E: toPeer(f.eof(1)),
        x: toLocal(act.end),
        y: closed('done'),
      });
    });
  });

  it('carries an IPv6 destination in OPEN', () => {
    testScheduler().run(({ cold, expectObservable }) => {
      expectObservable(cold<ChannelInput>('-').pipe(channelMachine(opener({ id: 3, destination: DST6 })))).toBe('o', {
        o: toPeer(f.open(3, DST6)),
      });
    });
  });

  it('the opener may send DATA before OPEN_OK arrives (optimistic open)', () => {
    testScheduler().run(({ cold, expectObservable }) => {
      const input = cold<ChannelInput>('--d-k', { d: local(ev.data('early')), k: peer(f.openOk(1)) });
      expectObservable(input.pipe(channelMachine(opener()))).toBe('o-D--', {
        o: toPeer(f.open(1)),
        D: toPeer(f.data(1, 'early')),
      });
    });
  });

  it('acceptor answers OPEN_OK once connected, then relays both ways and closes when both EOFs are seen', () => {
    testScheduler().run(({ cold, expectObservable }) => {
      const input = cold<ChannelInput>('-c-a-w-d-e-f', {
        c: local(ev.connected),
        a: peer(f.data(7, 'req')),
        w: local(ev.written(3)),
        d: local(ev.data('resp')),
        e: local(ev.eof),
        f: peer(f.eof(7)),
      });
      // A window of 8 returns credit in batches of 1 byte: every write is credited at once.
      expectObservable(input.pipe(channelMachine(acceptor({ recvWindow: 8 })))).toBe('-K-W-C-D-E-(xy|)', {
        K: toPeer(f.openOk(7)),
        W: toLocal(act.write('req')),
        C: toPeer(f.credit(7, 3)),
        D: toPeer(f.data(7, 'resp')),
        E: toPeer(f.eof(7)),
        x: toLocal(act.end),
        y: closed('done'),
      });
    });
  });

  it('a second connected event does not send a second OPEN_OK', () => {
    testScheduler().run(({ cold, expectObservable }) => {
      const input = cold<ChannelInput>('-c-c', { c: local(ev.connected) });
      expectObservable(input.pipe(channelMachine(acceptor()))).toBe('-K--', { K: toPeer(f.openOk(7)) });
    });
  });
});

describe('channelMachine: half-close', () => {
  it("after the local side's EOF, peer DATA still reaches the socket and credit still returns", () => {
    testScheduler().run(({ cold, expectObservable }) => {
      const input = cold<ChannelInput>('--k-e-a-w-m-v-f', {
        k: peer(f.openOk(1)),
        e: local(ev.eof),
        a: peer(f.data(1, 'hello world!')),
        w: local(ev.written(12)),
        m: peer(f.data(1, 'more')),
        v: local(ev.written(4)),
        f: peer(f.eof(1)),
      });
      // Window 32: credit in batches of 4 bytes.
      expectObservable(input.pipe(channelMachine(opener({ recvWindow: 32 })))).toBe('o---E-W-C-M-K-(xy|)', {
        o: toPeer(f.open(1)),
        E: toPeer(f.eof(1)),
        W: toLocal(act.write('hello world!')),
        C: toPeer(f.credit(1, 12)),
        M: toLocal(act.write('more')),
        K: toPeer(f.credit(1, 4)),
        x: toLocal(act.end),
        y: closed('done'),
      });
    });
  });

  it("after the peer's EOF, local data still goes out (and the peer's credit is still honoured)", () => {
    testScheduler().run(({ cold, expectObservable }) => {
      const input = cold<ChannelInput>('--k-f-d---c-g-e', {
        k: peer(f.openOk(1)),
        f: peer(f.eof(1)),
        d: local(ev.data('0123456789')),
        c: peer(f.credit(1, 10)),
        g: local(ev.data('abc')),
        e: local(ev.eof),
      });
      expectObservable(input.pipe(channelMachine(opener({ sendWindow: 10 })))).toBe('o---x-(Dp)r-G-(Ey|)', {
        o: toPeer(f.open(1)),
        x: toLocal(act.end),
        D: toPeer(f.data(1, '0123456789')),
        p: toLocal(act.pause),
        r: toLocal(act.resume),
        G: toPeer(f.data(1, 'abc')),
        E: toPeer(f.eof(1)),
        y: closed('done'),
      });
    });
  });

  it('holds the local EOF until data waiting for credit has gone out', () => {
    testScheduler().run(({ cold, expectObservable }) => {
      const input = cold<ChannelInput>('--k--a----e----c----f', {
        k: peer(f.openOk(1)),
        a: local(ev.data('abcdefghijklmno')),
        e: local(ev.eof),
        c: peer(f.credit(1, 10)),
        f: peer(f.eof(1)),
      });
      // Flow-control actions are not the point here: only frames and the close.
      const frames$ = input.pipe(
        channelMachine(opener({ sendWindow: 10 })),
        filter((o) => o.to !== 'local' || (o.action.kind !== 'pause' && o.action.kind !== 'resume')),
      );
      expectObservable(frames$).toBe('o----D---------(XE)-(xy|)', {
        o: toPeer(f.open(1)),
        D: toPeer(f.data(1, 'abcdefghij')),
        X: toPeer(f.data(1, 'klmno')),
        E: toPeer(f.eof(1)),
        x: toLocal(act.end),
        y: closed('done'),
      });
    });
  });
});

describe('channelMachine: open failure', () => {
  it('acceptor whose connect fails before connected sends OPEN_FAILED with the errno name and closes refused', () => {
    testScheduler().run(({ cold, expectObservable }) => {
      const input = cold<ChannelInput>('--x', { x: local(ev.error('ECONNREFUSED')) });
      expectObservable(input.pipe(channelMachine(acceptor()))).toBe('--(fc|)', {
        f: toPeer(f.openFailed(7, 'ECONNREFUSED')),
        c: closed('refused', 'ECONNREFUSED'),
      });
    });
  });

  it('acceptor whose socket fails after connected sends CLOSE, resets and closes as reset', () => {
    testScheduler().run(({ cold, expectObservable }) => {
      const input = cold<ChannelInput>('-c-x', { c: local(ev.connected), x: local(ev.error('ECONNRESET')) });
      expectObservable(input.pipe(channelMachine(acceptor()))).toBe('-K-(Crz|)', {
        K: toPeer(f.openOk(7)),
        C: toPeer(f.close(7, 'ECONNRESET')),
        r: toLocal(act.reset),
        z: closed('reset', 'ECONNRESET'),
      });
    });
  });

  it('opener receiving OPEN_FAILED resets the local socket and closes as refused with the errno', () => {
    testScheduler().run(({ cold, expectObservable }) => {
      const input = cold<ChannelInput>('--d-r', {
        d: local(ev.data('early')),
        r: peer(f.openFailed(1, 'EHOSTUNREACH')),
      });
      expectObservable(input.pipe(channelMachine(opener()))).toBe('o-D-(zc|)', {
        o: toPeer(f.open(1)),
        D: toPeer(f.data(1, 'early')),
        z: toLocal(act.reset),
        c: closed('refused', 'EHOSTUNREACH'),
      });
    });
  });

  it('an OPEN_FAILED without errno reads as ECONNREFUSED', () => {
    testScheduler().run(({ cold, expectObservable }) => {
      const input = cold<ChannelInput>('--r', { r: peer(frame(1, Command.OPEN_FAILED)) });
      expectObservable(input.pipe(channelMachine(opener()))).toBe('o-(zc|)', {
        o: toPeer(f.open(1)),
        z: toLocal(act.reset),
        c: closed('refused', 'ECONNREFUSED'),
      });
    });
  });

  it('OPEN_FAILED after OPEN_OK, or sent to the acceptor, is a protocol violation', () => {
    testScheduler().run(({ cold, expectObservable }) => {
      const late = cold<ChannelInput>('--k-r', { k: peer(f.openOk(1)), r: peer(f.openFailed(1, 'ECONNREFUSED')) });
      expectObservable(late.pipe(channelMachine(opener()))).toBe('o---#', { o: toPeer(f.open(1)) }, protocolError(/unexpected OPEN_FAILED/));
      const wrongSide = cold<ChannelInput>('--r', { r: peer(f.openFailed(7, 'ECONNREFUSED')) });
      expectObservable(wrongSide.pipe(channelMachine(acceptor()))).toBe('--#', {}, protocolError(/unexpected OPEN_FAILED/));
    });
  });
});

describe('channelMachine: credit', () => {
  it('holds back data beyond the window, pauses the socket, and releases it on CREDIT', () => {
    testScheduler().run(({ cold, expectObservable }) => {
      const input = cold<ChannelInput>('--k--a----c----r', {
        k: peer(f.openOk(1)),
        a: local(ev.data('abcdefghijklmno')),
        c: peer(f.credit(1, 3)),
        r: peer(f.credit(1, 7)),
      });
      expectObservable(input.pipe(channelMachine(opener({ sendWindow: 10 })))).toBe('o----(Dp)-X----(Yq)', {
        o: toPeer(f.open(1)),
        D: toPeer(f.data(1, 'abcdefghij')),
        p: toLocal(act.pause),
        X: toPeer(f.data(1, 'klm')),
        Y: toPeer(f.data(1, 'no')),
        q: toLocal(act.resume),
      });
    });
  });

  it('pauses when data exactly fills the window, resumes on credit', () => {
    testScheduler().run(({ cold, expectObservable }) => {
      const input = cold<ChannelInput>('--a----c', { a: local(ev.data('0123456789')), c: peer(f.credit(1, 4)) });
      expectObservable(input.pipe(channelMachine(opener({ sendWindow: 10 })))).toBe('o-(Dp)-q', {
        o: toPeer(f.open(1)),
        D: toPeer(f.data(1, '0123456789')),
        p: toLocal(act.pause),
        q: toLocal(act.resume),
      });
    });
  });

  it('keeps byte order when more local data arrives while it is waiting for credit', () => {
    testScheduler().run(({ cold, expectObservable }) => {
      const input = cold<ChannelInput>('--k--a----b----c----r', {
        k: peer(f.openOk(1)),
        a: local(ev.data('abcdefghijklmno')),
        b: local(ev.data('XYZ')),
        c: peer(f.credit(1, 3)),
        r: peer(f.credit(1, 7)),
      });
      // Bytes on the wire must be abcdefghij klm no XYZ — never XYZ before "no".
      expectObservable(input.pipe(channelMachine(opener({ sendWindow: 10 })))).toBe('o----(Dp)------X----(YZq)', {
        o: toPeer(f.open(1)),
        D: toPeer(f.data(1, 'abcdefghij')),
        p: toLocal(act.pause),
        X: toPeer(f.data(1, 'klm')),
        Y: toPeer(f.data(1, 'no')),
        Z: toPeer(f.data(1, 'XYZ')),
        q: toLocal(act.resume),
      });
    });
  });

  it('splits a large read into DATA frames of at most MAX_PAYLOAD bytes', () => {
    const chunk = pattern(3 * MAX_PAYLOAD + 3392);
    testScheduler().run(({ cold, expectObservable }) => {
      const input = cold<ChannelInput>('--a', { a: local(ev.data(chunk)) });
      expectObservable(input.pipe(channelMachine(opener({ sendWindow: 1_000_000 })))).toBe('o-(ABCD)', {
        o: toPeer(f.open(1)),
        A: toPeer(f.data(1, chunk.subarray(0, MAX_PAYLOAD))),
        B: toPeer(f.data(1, chunk.subarray(MAX_PAYLOAD, 2 * MAX_PAYLOAD))),
        C: toPeer(f.data(1, chunk.subarray(2 * MAX_PAYLOAD, 3 * MAX_PAYLOAD))),
        D: toPeer(f.data(1, chunk.subarray(3 * MAX_PAYLOAD))),
      });
    });
  });

  it('returns credit only after written events, in batches of an eighth of the window', () => {
    testScheduler().run(({ cold, expectObservable }) => {
      const input = cold<ChannelInput>('--k-a-w-x-y-z', {
        k: peer(f.openOk(1)),
        a: peer(f.data(1, pattern(30))),
        w: local(ev.written(4)), // 4 < 80/8 and 26 still unwritten: hold
        x: local(ev.written(6)), // 10 freed: return
        y: local(ev.written(15)),
        z: local(ev.written(5)), // 5 < 10: waits for the next batch (the peer still has 55 of credit)
      });
      expectObservable(input.pipe(channelMachine(opener({ recvWindow: 80 })))).toBe('o---W---C-D', {
        o: toPeer(f.open(1)),
        W: toLocal(act.write(pattern(30))),
        C: toPeer(f.credit(1, 10)),
        D: toPeer(f.credit(1, 15)),
      });
    });
  });

  it('accepts DATA that exactly fills the receive window, and more once it has been written', () => {
    testScheduler().run(({ cold, expectObservable }) => {
      const input = cold<ChannelInput>('--k-a-b-w-c', {
        k: peer(f.openOk(1)),
        a: peer(f.data(1, '123456')),
        b: peer(f.data(1, '7890')),
        w: local(ev.written(6)),
        c: peer(f.data(1, 'abcdef')),
      });
      expectObservable(input.pipe(channelMachine(opener({ recvWindow: 10 })))).toBe('o---A-B-C-D', {
        o: toPeer(f.open(1)),
        A: toLocal(act.write('123456')),
        B: toLocal(act.write('7890')),
        C: toPeer(f.credit(1, 6)),
        D: toLocal(act.write('abcdef')),
      });
    });
  });

  it('window violation: more DATA than the receive window errors with ProtocolError', () => {
    testScheduler().run(({ cold, expectObservable }) => {
      const input = cold<ChannelInput>('--k-a-b', {
        k: peer(f.openOk(1)),
        a: peer(f.data(1, '123456')),
        b: peer(f.data(1, '78901')),
      });
      expectObservable(input.pipe(channelMachine(opener({ recvWindow: 10 })))).toBe(
        'o---W-#',
        { o: toPeer(f.open(1)), W: toLocal(act.write('123456')) },
        protocolError(/window violation/),
      );
    });
  });

  it('window violation counts bytes not yet returned as CREDIT, not merely bytes not yet written', () => {
    // docs/protocol.md: a sender may have at most the window of DATA bytes "that the peer has not
    // returned with CREDIT". 5 of 80 bytes written (below the 10-byte batch: no CREDIT yet), so the
    // peer still has all 80 outstanding and may not send another byte.
    testScheduler().run(({ cold, expectObservable }) => {
      const input = cold<ChannelInput>('--k-a-w-b', {
        k: peer(f.openOk(1)),
        a: peer(f.data(1, pattern(80))),
        w: local(ev.written(5)),
        b: peer(f.data(1, '12345')),
      });
      expectObservable(input.pipe(channelMachine(opener({ recvWindow: 80 })))).toBe(
        'o---W---#',
        { o: toPeer(f.open(1)), W: toLocal(act.write(pattern(80))) },
        protocolError(/window violation/),
      );
    });
  });

  it('credit overflow: CREDIT beyond the send window errors with ProtocolError', () => {
    testScheduler().run(({ cold, expectObservable }) => {
      const input = cold<ChannelInput>('--a-c-d', {
        a: local(ev.data('12345')),
        c: peer(f.credit(1, 5)),
        d: peer(f.credit(1, 1)),
      });
      expectObservable(input.pipe(channelMachine(opener({ sendWindow: 10 })))).toBe(
        'o-D---#',
        { o: toPeer(f.open(1)), D: toPeer(f.data(1, '12345')) },
        protocolError(/credit overflow/),
      );
    });
  });

  it('a CREDIT payload that is not 4 bytes is a protocol violation', () => {
    testScheduler().run(({ cold, expectObservable }) => {
      const input = cold<ChannelInput>('--c', { c: peer(frame(1, Command.CREDIT, b('\x00\x01'))) });
      expectObservable(input.pipe(channelMachine(opener()))).toBe('o-#', { o: toPeer(f.open(1)) }, protocolError(/malformed CREDIT/));
    });
  });
});

describe('channelMachine: protocol violations and resets', () => {
  const cases: Array<[string, ChannelConfig, ChannelInput[], RegExp]> = [
    ['DATA after EOF', opener(), [peer(f.openOk(1)), peer(f.eof(1)), peer(f.data(1, 'x'))], /DATA after EOF/],
    ['a second EOF', opener(), [peer(f.openOk(1)), peer(f.eof(1)), peer(f.eof(1))], /second EOF/],
    ['DATA before OPEN_OK', opener(), [peer(f.data(1, 'x'))], /DATA before OPEN_OK/],
    ['OPEN_OK twice', opener(), [peer(f.openOk(1)), peer(f.openOk(1))], /unexpected OPEN_OK/],
    ['OPEN_OK sent to the acceptor', acceptor(), [peer(f.openOk(7))], /unexpected OPEN_OK/],
    ['OPEN on an open channel', acceptor(), [peer(f.open(7))], /unexpected OPEN/],
    ['PING on a TCP channel', opener(), [peer(frame(1, Command.PING))], /unexpected PING/],
  ];
  it.each(cases)('%s ends the channel with a ProtocolError', (_name, config, inputs, message) => {
    const input$ = new Subject<ChannelInput>();
    const seen: ChannelOutput[] = [];
    let error: unknown;
    input$.pipe(channelMachine(config)).subscribe({ next: (o) => seen.push(o), error: (e: unknown) => (error = e) });
    for (const input of inputs) input$.next(input);
    expect(error).toBeInstanceOf(ProtocolError);
    expect((error as ProtocolError).code).toBe('RXS_ERR_PROTOCOL');
    expect((error as Error).message).toMatch(message);
    expect((error as Error).message).toMatch(new RegExp(`channel ${config.id}`));
  });

  it('peer CLOSE resets the local socket and closes as reset with its reason', () => {
    testScheduler().run(({ cold, expectObservable }) => {
      const input = cold<ChannelInput>('--k-c', { k: peer(f.openOk(1)), c: peer(f.close(1, 'ECONNRESET')) });
      expectObservable(input.pipe(channelMachine(opener()))).toBe('o---(rz|)', {
        o: toPeer(f.open(1)),
        r: toLocal(act.reset),
        z: closed('reset', 'ECONNRESET'),
      });
      const bare = cold<ChannelInput>('--c', { c: peer(f.close(1)) });
      expectObservable(bare.pipe(channelMachine(opener()))).toBe('o-(rz|)', {
        o: toPeer(f.open(1)),
        r: toLocal(act.reset),
        z: closed('reset', 'closed by peer'),
      });
    });
  });

  it('a local socket error sends CLOSE with the errno, resets and closes as reset', () => {
    testScheduler().run(({ cold, expectObservable }) => {
      const input = cold<ChannelInput>('--k-x', { k: peer(f.openOk(1)), x: local(ev.error('EPIPE')) });
      expectObservable(input.pipe(channelMachine(opener()))).toBe('o---(Crz|)', {
        o: toPeer(f.open(1)),
        C: toPeer(f.close(1, 'EPIPE')),
        r: toLocal(act.reset),
        z: closed('reset', 'EPIPE'),
      });
    });
  });

  it('the end of its input (session over) resets the socket and closes as reset', () => {
    testScheduler().run(({ cold, expectObservable }) => {
      const input = cold<ChannelInput>('--k-|', { k: peer(f.openOk(1)) });
      expectObservable(input.pipe(channelMachine(opener()))).toBe('o---(rz|)', {
        o: toPeer(f.open(1)),
        r: toLocal(act.reset),
        z: closed('reset', 'session ended'),
      });
    });
  });

  it('an error of its input is passed on', () => {
    testScheduler().run(({ cold, expectObservable }) => {
      const boom = new Error('boom');
      expectObservable(cold<ChannelInput>('--#', {}, boom).pipe(channelMachine(opener()))).toBe('o-#', { o: toPeer(f.open(1)) }, boom);
    });
  });

  it('ignores everything after it has closed', () => {
    testScheduler().run(({ cold, expectObservable }) => {
      const input = cold<ChannelInput>('--c-d-x', {
        c: peer(f.close(1)),
        d: local(ev.data('late')),
        x: peer(f.data(1, 'late')),
      });
      expectObservable(input.pipe(channelMachine(opener()))).toBe('o-(rz|)', {
        o: toPeer(f.open(1)),
        r: toLocal(act.reset),
        z: closed('reset', 'closed by peer'),
      });
    });
  });

  it('an opener without a destination is a programming error', () => {
    let error: unknown;
    new Subject<ChannelInput>()
      .pipe(channelMachine(opener({ destination: undefined as never })))
      .subscribe({ error: (e: unknown) => (error = e) });
    expect(error).toBeInstanceOf(TypeError);
  });

  it('openDestination decodes the OPEN payload', () => {
    expect(openDestination(f.open(9, DST6))).toEqual(DST6);
    expect(() => openDestination(frame(9, Command.OPEN, b('xx')))).toThrow(ProtocolError);
  });
});

describe('channelMachine: credit invariants (property)', () => {
  type Step = { kind: 'read'; size: number } | { kind: 'credit'; fraction: number };
  // Reads of up to 20 windows (at most 150 000 bytes), so draining a tiny window stays cheap.
  const scenario = fc.oneof(fc.integer({ min: 1, max: 64 }), fc.integer({ min: 1000, max: 300_000 })).chain((window) =>
    fc.tuple(
      fc.constant(window),
      fc.array(
        fc.oneof(
          fc.record({ kind: fc.constant('read' as const), size: fc.integer({ min: 1, max: Math.min(150_000, window * 20) }) }),
          fc.record({ kind: fc.constant('credit' as const), fraction: fc.double({ min: 0, max: 1, noNaN: true }) }),
        ) as fc.Arbitrary<Step>,
        { maxLength: 30 },
      ),
    ),
  );

  it('never has more than the window in flight, never sends a frame over 64 KiB, keeps byte order, pauses/resumes in turn', () => {
    fc.assert(
      fc.property(scenario, ([window, steps]) => {
        const input$ = new Subject<ChannelInput>();
        const sent: Buffer[] = [];
        const flow: string[] = [];
        let inFlight = 0;
        let failure: unknown;
        input$.pipe(channelMachine(opener({ sendWindow: window }))).subscribe({
          next: (o) => {
            if (o.to === 'peer' && o.frame.command === Command.DATA) {
              expect(o.frame.payload.length).toBeGreaterThan(0);
              expect(o.frame.payload.length).toBeLessThanOrEqual(MAX_PAYLOAD);
              inFlight += o.frame.payload.length;
              expect(inFlight).toBeLessThanOrEqual(window);
              sent.push(o.frame.payload);
            } else if (o.to === 'local' && (o.action.kind === 'pause' || o.action.kind === 'resume')) {
              flow.push(o.action.kind);
            }
          },
          error: (e: unknown) => (failure = e),
        });
        input$.next(peer(f.openOk(1)));
        const read: Buffer[] = [];
        let seed = 0;
        const grant = (n: number) => {
          if (n <= 0) return;
          inFlight -= n; // the peer wrote n bytes out and returns them
          input$.next(peer(f.credit(1, n)));
        };
        for (const s of steps) {
          if (s.kind === 'read') {
            const chunk = pattern(s.size, seed);
            seed = (seed + s.size) % 251;
            read.push(chunk);
            input$.next(local(ev.data(chunk)));
          } else {
            grant(Math.floor(inFlight * s.fraction));
          }
        }
        // The peer drains everything: all bytes must come out, in order.
        while (inFlight > 0 && failure === undefined) grant(inFlight);
        expect(failure).toBeUndefined();
        expect(Buffer.concat(sent).equals(Buffer.concat(read))).toBe(true);
        flow.forEach((kind, i) => expect(kind).toBe(i % 2 === 0 ? 'pause' : 'resume'));
      }),
      { seed: 20240611, numRuns: 200 },
    );
  });
});
