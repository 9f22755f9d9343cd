import type { Socket } from 'node:net';
import { Writable } from 'node:stream';
import { setImmediate as tick } from 'node:timers/promises';
import { BehaviorSubject, Subject, type Subscription } from 'rxjs';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { ProtocolError } from '../../src/shared/errors.js';
import type { LocalAction, LocalEvent } from '../../src/streams/channel.js';
import { CONTROL_CHANNEL, Command, type Destination, encodeFrame, type Frame, frame } from '../../src/streams/frame.js';
import { type FrameWriter, frameWriter } from '../../src/streams/frame-writer.js';
import { fromReadable } from '../../src/streams/from-readable.js';
import { encodeHello, PROTOCOL_VERSION } from '../../src/streams/handshake.js';
import type { AcceptedConnection, LocalEnd } from '../../src/streams/mux.js';
import { type SessionConfig, type SessionEvent, session } from '../../src/streams/session.js';
import { socketPair } from '../support/socket-pair.js';
import { act, b, DST, DST6, ev, f, pattern } from './marbles.js';

const noiseText = (events: SessionEvent[]): string => events.map((e) => (e.kind === 'noise' ? e.text : '')).join('');

const hello = (window: number, version = PROTOCOL_VERSION) => encodeHello({ version, window, flags: 0 });

/** A session over Subjects: what it sends raw and as frames is recorded. */
function harness(over: Partial<SessionConfig> & Pick<SessionConfig, 'role'>) {
  const bytes$ = new Subject<Buffer>();
  const raw: Buffer[] = [];
  const frames: Frame[] = [];
  // Like frameWriter's, blocked$ never completes.
  const writer: FrameWriter = { write: (fr) => frames.push(fr), blocked$: new BehaviorSubject(false), setMaxQueued: () => {} };
  const events: SessionEvent[] = [];
  const result: { error?: unknown; completed: boolean } = { completed: false };
  const subscription = session({ recvWindow: 1000, bytes$, sendRaw: (x) => raw.push(x), writer, ...over }).subscribe({
    next: (e) => events.push(e),
    error: (e: unknown) => (result.error = e),
    complete: () => (result.completed = true),
  });
  return { bytes$, raw, frames, events, result, subscription };
}

describe('session: hello exchange', () => {
  it('the server says hello first, as soon as it is subscribed, announcing its receive window', () => {
    const h = harness({ role: 'server', recvWindow: 4096 });
    expect(h.raw).toEqual([hello(4096)]);
    expect(h.events).toEqual([]);
  });

  it('announces its capability flags in its hello', () => {
    const h = harness({ role: 'client', recvWindow: 10, flags: 0x1 });
    h.bytes$.next(hello(100));
    expect(h.raw).toEqual([encodeHello({ version: PROTOCOL_VERSION, window: 10, flags: 0x1 })]);
  });

  it("the client waits for the server's hello (reporting banner noise), then answers with its own", () => {
    const h = harness({ role: 'client', recvWindow: 2048, maxNoise: 1024 });
    expect(h.raw).toEqual([]);
    h.bytes$.next(b('Last login: Mon\n'));
    const server = hello(777);
    h.bytes$.next(server.subarray(0, 9));
    expect(h.raw).toEqual([]);
    h.bytes$.next(Buffer.concat([server.subarray(9), encodeFrame(f.ping('p1'))]));
    // Noise may come in pieces (a possible start of the magic is held back until it is decided).
    expect(noiseText(h.events)).toBe('Last login: Mon\n');
    expect(h.events.filter((e) => e.kind !== 'noise')).toEqual([
      { kind: 'hello', hello: { version: PROTOCOL_VERSION, window: 777, flags: 0 } },
    ]);
    expect(h.raw).toEqual([hello(2048)]);
    // The frame that came in the same chunk as the hello's tail was decoded and answered.
    expect(h.frames).toEqual([f.pong('p1')]);
    expect(h.result.error).toBeUndefined();
  });

  it("uses the peer's announced window as its send window", () => {
    const events$ = new Subject<LocalEvent>();
    const actions: LocalAction[] = [];
    const accepted$ = new Subject<AcceptedConnection>();
    const h = harness({ role: 'client', accepted$: () => accepted$ });
    h.bytes$.next(hello(10));
    accepted$.next({ events$, perform: (a) => actions.push(a), destination: DST, source: '127.0.0.1:1' });
    events$.next(ev.data('abcdefghijklmno'));
    expect(h.frames).toEqual([f.open(1), f.data(1, 'abcdefghij')]);
    expect(actions).toEqual([act.pause]);
    expect(h.events).toContainEqual({ kind: 'open', id: 1, destination: DST, source: '127.0.0.1:1' });
  });

  it('a protocol version mismatch is an error with its own code', () => {
    const h = harness({ role: 'client' });
    h.bytes$.next(hello(100, 9));
    expect(h.result.error).toBeInstanceOf(ProtocolError);
    expect((h.result.error as ProtocolError).code).toBe('RXS_ERR_PROTOCOL_VERSION');
    expect(h.raw).toEqual([]);
  });

  it('the byte stream ending before the hello is an error', () => {
    const h = harness({ role: 'client', maxNoise: 100 });
    h.bytes$.next(b('bash: node: command not found\n'));
    h.bytes$.complete();
    expect(h.result.error).toBeInstanceOf(ProtocolError);
    expect((h.result.error as Error).message).toMatch(/before the peer said hello/);
    expect(noiseText(h.events)).toMatch(/^bash: node: command not/);
  });

  it('the server tolerates no noise by default', () => {
    const h = harness({ role: 'server' });
    h.bytes$.next(Buffer.concat([b('x'), hello(100)]));
    expect(h.result.error).toBeInstanceOf(ProtocolError);
  });

  it('completes when the byte stream ends after the hello', () => {
    const h = harness({ role: 'server' });
    h.bytes$.next(hello(100));
    expect(h.events).toEqual([{ kind: 'hello', hello: { version: PROTOCOL_VERSION, window: 100, flags: 0 } }]);
    h.bytes$.complete();
    expect(h.result).toEqual({ completed: true });
  });

  it('a malformed frame after the hello ends the session with a ProtocolError', () => {
    const h = harness({ role: 'server' });
    const bad = Buffer.alloc(8);
    bad.writeUInt32BE(1, 0);
    bad.writeUInt32BE((0x66 << 24) >>> 0, 4);
    h.bytes$.next(Buffer.concat([hello(100), bad]));
    expect(h.result.error).toBeInstanceOf(ProtocolError);
    expect((h.result.error as Error).message).toMatch(/unknown command/);
  });

  it('the byte stream ending inside a frame is an error, not a clean end', () => {
    const h = harness({ role: 'server' });
    h.bytes$.next(Buffer.concat([hello(100), encodeFrame(f.ping('abc')).subarray(0, 9)]));
    h.bytes$.complete();
    expect(h.result.error).toBeInstanceOf(ProtocolError);
  });

  it('EXIT from the peer is reported and completes the session', () => {
    const h = harness({ role: 'client' });
    h.bytes$.next(Buffer.concat([hello(100), encodeFrame(f.exit('bye'))]));
    expect(h.events.at(-1)).toEqual({ kind: 'exit', reason: 'bye' });
    expect(h.result.completed).toBe(true);
  });

  it('sends control frames (ping) only after the hello', () => {
    const control$ = new Subject<Frame>();
    const h = harness({ role: 'client', control$ });
    control$.next(f.ping('early')); // not yet connected: nobody listens
    h.bytes$.next(hello(100));
    control$.next(f.ping('now'));
    expect(h.frames).toEqual([f.ping('now')]);
  });
});

/** A local end driven by the test: events pushed by hand, actions recorded; writes are acknowledged. */
function scriptedEnd(autoAck = true) {
  const events$ = new Subject<LocalEvent>();
  const actions: LocalAction[] = [];
  const end: LocalEnd = {
    events$,
    perform: (a) => {
      actions.push(a);
      if (autoAck && a.kind === 'write') {
        const bytes = a.chunk.length;
        setImmediate(() => events$.next(ev.written(bytes)));
      }
    },
  };
  const written = () => Buffer.concat(actions.flatMap((a) => (a.kind === 'write' ? [a.chunk] : [])));
  return { events$, actions, end, written };
}

describe('session: client and server over a real loopback socket', () => {
  const subscriptions: Subscription[] = [];
  afterEach(() => {
    for (const s of subscriptions.splice(0)) s.unsubscribe();
  });

  /** A connected loopback pair (test/support/socket-pair.ts): the client's end, then the server's. */
  async function loopbackPair(): Promise<[Socket, Socket]> {
    const { client, accepted } = await socketPair();
    return [client, accepted];
  }

  function run(role: 'client' | 'server', socket: Socket, over: Partial<SessionConfig>) {
    const writer = frameWriter(socket);
    const events: SessionEvent[] = [];
    const state: { error?: unknown; completed: boolean } = { completed: false };
    subscriptions.push(
      session({
        role,
        recvWindow: 64 * 1024,
        bytes$: fromReadable(socket),
        sendRaw: (x) => socket.write(x),
        writer,
        ...over,
      }).subscribe({
        next: (e) => events.push(e),
        error: (e: unknown) => (state.error = e),
        complete: () => (state.completed = true),
      }),
    );
    return { events, state };
  }

  it('carries a request and a response, half-closes, and ends both sessions when the transport closes', async () => {
    const [clientSocket, serverSocket] = await loopbackPair();
    const dialled: Destination[] = [];
    const remote = scriptedEnd();
    const srv = run('server', serverSocket, {
      dial: (destination) => {
        dialled.push(destination);
        return remote.end;
      },
    });
    const accepted$ = new Subject<AcceptedConnection>();
    const cli = run('client', clientSocket, { accepted$: () => accepted$, maxNoise: 1024 });
    await vi.waitFor(() => expect(srv.events.some((e) => e.kind === 'hello')).toBe(true));
    expect(cli.events[0]).toEqual({ kind: 'hello', hello: { version: PROTOCOL_VERSION, window: 64 * 1024, flags: 0 } });

    const browser = scriptedEnd();
    accepted$.next({ ...browser.end, destination: DST6, source: '[::1]:5555' });
    await vi.waitFor(() => expect(dialled).toEqual([DST6]));
    remote.events$.next(ev.connected);
    browser.events$.next(ev.data('GET / HTTP/1.0\r\n\r\n'));
    await vi.waitFor(() => expect(remote.written().toString()).toBe('GET / HTTP/1.0\r\n\r\n'));
    browser.events$.next(ev.eof);
    await vi.waitFor(() => expect(remote.actions).toContainEqual(act.end));
    // Half-closed: the response still comes back.
    remote.events$.next(ev.data('HTTP/1.0 200 OK\r\n\r\nhi'));
    remote.events$.next(ev.eof);
    await vi.waitFor(() => expect(cli.events.some((e) => e.kind === 'close')).toBe(true));
    expect(browser.written().toString()).toBe('HTTP/1.0 200 OK\r\n\r\nhi');
    expect(browser.actions.at(-1)).toEqual(act.end);
    await vi.waitFor(() => expect(srv.events.some((e) => e.kind === 'close')).toBe(true));
    expect(cli.events.find((e) => e.kind === 'close')).toMatchObject({ reason: 'done', bytesSent: 18, bytesReceived: 21 });
    expect(srv.events.find((e) => e.kind === 'close')).toMatchObject({ reason: 'done', bytesSent: 21, bytesReceived: 18 });

    // The client goes away: the server's session completes, and then the client's.
    clientSocket.end();
    await vi.waitFor(() => expect(srv.state.completed).toBe(true));
    serverSocket.end();
    await vi.waitFor(() => expect(cli.state.completed).toBe(true));
    expect(srv.state.error).toBeUndefined();
    expect(cli.state.error).toBeUndefined();
  });

  it('moves 2 MB each way through a 64 KiB window, in order, with credit flowing back', async () => {
    const [clientSocket, serverSocket] = await loopbackPair();
    const remote = scriptedEnd();
    const srv = run('server', serverSocket, { dial: () => remote.end });
    const accepted$ = new Subject<AcceptedConnection>();
    const cli = run('client', clientSocket, { accepted$: () => accepted$ });
    await vi.waitFor(() => expect(cli.events.some((e) => e.kind === 'hello')).toBe(true));
    const local = scriptedEnd();
    accepted$.next({ ...local.end, destination: DST, source: '127.0.0.1:2' });
    await vi.waitFor(() => expect(srv.events.some((e) => e.kind === 'open')).toBe(true));
    remote.events$.next(ev.connected);

    const up = pattern(2_000_000, 1);
    const down = pattern(2_000_000, 2);
    // Feed in 64 KiB reads, but only while not paused (as a socket would).
    const feed = async (end: ReturnType<typeof scriptedEnd>, data: Buffer) => {
      for (let at = 0; at < data.length; at += 65536) {
        await vi.waitFor(() => {
          const flow = end.actions.filter((a) => a.kind === 'pause' || a.kind === 'resume').at(-1);
          expect(flow?.kind ?? 'resume').toBe('resume');
        }, { interval: 2, timeout: 5000 });
        end.events$.next(ev.data(data.subarray(at, at + 65536)));
      }
      end.events$.next(ev.eof);
    };
    await Promise.all([feed(local, up), feed(remote, down)]);
    // Each side's close means it has sent and received EOF: all bytes have been handed to its socket.
    await vi.waitFor(() => expect(cli.events.some((e) => e.kind === 'close')).toBe(true), { timeout: 10_000 });
    await vi.waitFor(() => expect(srv.events.some((e) => e.kind === 'close')).toBe(true), { timeout: 10_000 });
    expect(remote.written().equals(up)).toBe(true);
    expect(local.written().equals(down)).toBe(true);
    expect(local.actions.some((a) => a.kind === 'pause')).toBe(true);
    expect(srv.state.error).toBeUndefined();
    expect(cli.state.error).toBeUndefined();
  });

  it('a peer that breaks the protocol ends the session with an error', async () => {
    const [clientSocket, serverSocket] = await loopbackPair();
    const cli = run('client', clientSocket, {});
    serverSocket.write(hello(1000));
    serverSocket.write(encodeFrame({ channel: 9, command: Command.DATA, payload: b('?') }));
    await vi.waitFor(() => expect(cli.state.error).toBeInstanceOf(ProtocolError));
    expect((cli.state.error as Error).message).toMatch(/unknown channel 9/);
  });
});

// Issue 17, finding 7: a server that sends PINGs and never reads must not grow the client.
describe('session: a peer that floods PINGs without reading', () => {
  /** A writable whose writes complete only when told to; the session's writer is a real frameWriter on it. */
  function stuckTransport() {
    let release: Array<() => void> = [];
    const writable = new Writable({
      highWaterMark: 64 * 1024,
      write: (_chunk, _encoding, callback) => release.push(() => callback()),
      writev: (_chunks, callback) => release.push(() => callback()),
    });
    const drain = () => {
      const pending = release;
      release = [];
      for (const done of pending) done();
    };
    const inner = frameWriter(writable);
    const pongs = { count: 0 };
    const writer: FrameWriter = {
      ...inner,
      write: (fr) => {
        if (fr.command === Command.PONG) pongs.count++;
        inner.write(fr);
      },
    };
    return { writable, writer, drain, pongs };
  }

  it('10 000 PINGs of 64 KiB while the writer never drains leave a bounded number of PONG bytes queued', () => {
    const t = stuckTransport();
    const h = harness({ role: 'client', writer: t.writer, sendRaw: (x) => t.writable.write(x) });
    h.bytes$.next(hello(100));
    const ping = encodeFrame(frame(CONTROL_CHANNEL, Command.PING, pattern(65536)));
    for (let i = 0; i < 10_000; i++) h.bytes$.next(ping);
    expect(h.result.error).toBeUndefined();
    // The writer stops answering once its buffer is over the high-water mark: one PONG beyond it at most.
    expect(t.writable.writableLength).toBeLessThan(64 * 1024 + 2 * (65536 + 8) + 16);
    expect(t.pongs.count).toBeLessThanOrEqual(2);
  });

  it('answers PINGs again once the transport has drained', async () => {
    const t = stuckTransport();
    const h = harness({ role: 'client', writer: t.writer, sendRaw: (x) => t.writable.write(x) });
    h.bytes$.next(hello(100));
    const ping = encodeFrame(frame(CONTROL_CHANNEL, Command.PING, pattern(65536)));
    for (let i = 0; i < 100; i++) h.bytes$.next(ping);
    const answered = t.pongs.count;
    while (t.writable.writableLength > 0) {
      await tick(); // the writer uncorks; each completed write lets the next batch start
      t.drain();
    }
    await tick();
    h.bytes$.next(encodeFrame(f.ping('again')));
    expect(t.pongs.count).toBe(answered + 1);
    expect(h.result.error).toBeUndefined();
  });
});

