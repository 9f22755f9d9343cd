// Hostile frames into a whole protocol session (hello, decoder, mux, channels, credit, scheduler),
// on both sides: what a hostile client can send the server (which runs on someone else's host),
// and what a hostile or broken server can send the client. Whatever arrives, the session ends
// with a ProtocolError or completes when the bytes end; it never throws anything else, never
// leaves an error unhandled, never hangs, and writes only well-formed frames.
import fc from 'fast-check';
import { BehaviorSubject, Observable, config as rxConfig, Subject } from 'rxjs';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { RxshuttleError } from '../../src/shared/errors.js';
import type { LocalAction, LocalEvent } from '../../src/streams/channel.js';
import { encodeDestination } from '../../src/streams/destination.js';
import { CONTROL_CHANNEL, Command, type Destination, encodeFrame, type Frame, frame, MAX_PAYLOAD } from '../../src/streams/frame.js';
import type { FrameWriter } from '../../src/streams/frame-writer.js';
import { encodeHello, PROTOCOL_VERSION } from '../../src/streams/handshake.js';
import type { AcceptedConnection, LocalEnd } from '../../src/streams/mux.js';
import { session } from '../../src/streams/session.js';
import { RUNS, SEEDS } from './seeds.js';

const WINDOW = 1000;
let unhandled: unknown[] = [];
let previous: typeof rxConfig.onUnhandledError;
beforeEach(() => {
  unhandled = [];
  previous = rxConfig.onUnhandledError;
  rxConfig.onUnhandledError = (e) => unhandled.push(e);
});
afterEach(() => {
  rxConfig.onUnhandledError = previous;
});

const u32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0, 0);
  return b;
};

/** A local end (socket) that connects, or fails to, as its port says; records what it is asked. */
function fakeEnd(destination: Destination, actions: LocalAction[]): LocalEnd {
  return {
    events$: new Observable<LocalEvent>((sub) => {
      if (destination.port % 5 === 1) sub.next({ kind: 'error', code: 'ECONNREFUSED' });
      else if (destination.port % 5 === 2) sub.next({ kind: 'error', code: 'EMFILE' });
      else {
        sub.next({ kind: 'connected' });
        if (destination.port % 5 === 3) sub.next({ kind: 'data', chunk: Buffer.alloc(3000, 1) });
        if (destination.port % 5 === 4) sub.next({ kind: 'eof' });
      }
    }),
    perform: (action) => actions.push(action),
  };
}

const destinationArb = fc.oneof(
  fc.record({ family: fc.constant(4 as const), address: fc.ipV4(), port: fc.integer({ min: 0, max: 65535 }) }),
  fc.record({
    family: fc.constant(6 as const),
    address: fc.constantFrom('fd00::1', '::1', '2001:db8::5'),
    port: fc.integer({ min: 0, max: 65535 }),
  }),
);
const payloadArb = fc.oneof(
  fc.constant(Buffer.alloc(0)),
  fc.uint8Array({ maxLength: 24 }).map((a) => Buffer.from(a)),
  destinationArb.map((d) => encodeDestination(d)),
  fc.constantFrom(0, 1, 7, WINDOW / 2, WINDOW, WINDOW + 1, 0x7fffffff, 0xffffffff).map(u32),
  fc.integer({ min: 1, max: 3 * WINDOW }).map((n) => Buffer.alloc(n, 0x61)),
  fc.constantFrom('ECONNREFUSED', 'closed by peer', '\u0000\n\u001b[2J').map((t) => Buffer.from(t, 'utf8')),
);
const frameArb: fc.Arbitrary<Buffer> = fc.oneof(
  {
    weight: 10,
    arbitrary: fc
      .record({
        channel: fc.oneof(fc.constantFrom(CONTROL_CHANNEL, 1, 2, 3), fc.nat({ max: 0xffffffff })),
        command: fc.constantFrom(...Object.values(Command)),
        payload: payloadArb,
      })
      .map((f) => encodeFrame(frame(f.channel, f.command, f.payload))),
  },
  // An unknown command byte or a wrong length, raw.
  { weight: 1, arbitrary: fc.uint8Array({ minLength: 1, maxLength: 12 }).map((a) => Buffer.from(a)) },
);
/** A plausible client → server conversation, then hostile frames. */
const scriptArb = fc.tuple(
  fc.array(destinationArb, { maxLength: 3 }),
  fc.array(frameArb, { maxLength: 24 }),
  fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { maxLength: 6 }),
);

function chunks(bytes: Buffer, points: readonly number[]): Buffer[] {
  const offsets = [...new Set(points.map((p) => Math.floor(p * bytes.length)))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let start = 0;
  for (const offset of [...offsets, bytes.length]) {
    if (offset > start) out.push(bytes.subarray(start, offset));
    start = Math.max(start, offset);
  }
  return out;
}

interface Run {
  error?: unknown;
  completed: boolean;
  written: Frame[];
  dialed: number;
  opens: number;
}

function runSession(role: 'client' | 'server', opens: readonly Destination[], hostile: readonly Buffer[], points: readonly number[]): Run {
  const bytes$ = new Subject<Buffer>();
  const written: Frame[] = [];
  const writer: FrameWriter = { write: (f) => written.push(f), blocked$: new BehaviorSubject(false), setMaxQueued: () => {} };
  const run: Run = { completed: false, written, dialed: 0, opens: 0 };
  const accepted$ = new Subject<AcceptedConnection>();
  const actions: LocalAction[] = [];
  const sub = session({
    role,
    recvWindow: WINDOW,
    bytes$,
    sendRaw: () => {},
    writer,
    ...(role === 'server'
      ? {
          dial: (destination: Destination) => {
            run.dialed++;
            return fakeEnd(destination, actions);
          },
        }
      : { accepted$: () => accepted$ }),
  }).subscribe({ error: (e: unknown) => (run.error = e), complete: () => (run.completed = true) });

  const peerHello = encodeHello({ version: PROTOCOL_VERSION, window: WINDOW, flags: 0 });
  // The server's side: the client opens channels 1.. first. The client's side: its own sockets open them.
  const prologue = role === 'server' ? opens.map((d, i) => encodeFrame(frame(i + 1, Command.OPEN, encodeDestination(d)))) : [];
  for (const piece of chunks(Buffer.concat([peerHello, ...prologue, ...hostile]), points)) {
    if (run.error !== undefined || run.completed) break;
    bytes$.next(piece);
    if (role === 'client' && run.opens < opens.length) {
      const d = opens[run.opens++] as Destination;
      accepted$.next({ ...fakeEnd(d, actions), destination: d, source: '127.0.0.1:1' });
    }
  }
  bytes$.complete();
  sub.unsubscribe();
  if (role === 'server') run.opens = opens.length + hostile.length;
  return run;
}

function check(run: Run): void {
  expect(unhandled).toEqual([]);
  // It ended, one way or the other, as soon as the bytes did.
  expect(run.completed || run.error !== undefined).toBe(true);
  if (run.error !== undefined) {
    expect(run.error).toBeInstanceOf(RxshuttleError);
    expect((run.error as RxshuttleError).code).toMatch(/^RXS_ERR_PROTOCOL/);
  }
  for (const f of run.written) {
    expect(Object.values(Command)).toContain(f.command);
    expect(f.payload.length).toBeLessThanOrEqual(MAX_PAYLOAD);
  }
  // Every connection the server made was asked for by an OPEN (opens: an upper bound of those).
  expect(run.dialed).toBeLessThanOrEqual(run.opens);
}

describe.each(SEEDS)('session fuzzing, %s', (_name, seed) => {
  for (const role of ['server', 'client'] as const) {
    it(`${role}: any frames after the hello end in a ProtocolError or a clean end`, () => {
      fc.assert(
        fc.property(scriptArb, ([opens, hostile, points]) => {
          unhandled = [];
          check(runSession(role, opens, hostile, points));
        }),
        { seed, numRuns: Math.ceil(RUNS / 2) },
      );
    });
  }
});

describe('session: hand-picked hostile input (server side)', () => {
  const open1 = encodeFrame(frame(1, Command.OPEN, encodeDestination({ family: 4, address: '10.0.0.1', port: 80 })));
  const cases: Array<[string, Buffer[], RegExp]> = [
    ['a truncated header', [Buffer.from([0, 0, 0, 1, 4])], /stream ended inside a frame/],
    ['a length over the limit', [Buffer.from([0, 0, 0, 1, Command.DATA, 0x01, 0x00, 0x01])], /exceeds 65536/],
    ['an unknown command', [Buffer.from([0, 0, 0, 1, 0x7f, 0, 0, 0])], /unknown command 0x7f/],
    ['data for an unknown channel', [encodeFrame(frame(9, Command.DATA, Buffer.from('x')))], /DATA for unknown channel 9/],
    ['credit overflow', [open1, encodeFrame(frame(1, Command.CREDIT, u32(0xffffffff)))], /credit overflow|window/],
    ['more data than the window', [open1, encodeFrame(frame(1, Command.DATA, Buffer.alloc(WINDOW + 1)))], /window violation/],
    ['an OPEN that reuses an id', [open1, open1], /unexpected OPEN|reuses channel id 1/],
    ['a malformed OPEN', [encodeFrame(frame(1, Command.OPEN, Buffer.from([4, 0])))], /malformed OPEN/],
    ['a malformed session CREDIT', [encodeFrame(frame(0, Command.CREDIT, Buffer.from([1])))], /malformed session CREDIT/],
    ['DATA on the control channel', [encodeFrame(frame(0, Command.DATA, Buffer.from('x')))], /unexpected DATA on the control channel/],
  ];
  for (const [name, hostile, message] of cases) {
    it(`${name}: ProtocolError, nothing else`, () => {
      const run = runSession('server', [], hostile, []);
      check(run);
      expect(run.error, name).toBeInstanceOf(RxshuttleError);
      expect((run.error as Error).message).toMatch(message);
    });
  }
});
