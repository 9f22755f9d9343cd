import { once } from 'node:events';
import { createServer, connect as netConnect, type Server, type Socket } from 'node:net';
import { BehaviorSubject, type Observable, type Subscription } from 'rxjs';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { LocalEvent } from '../../src/streams/channel.js';
import { resetSocket, socketEnd } from '../../src/streams/socket-end.js';
import { socketPair } from '../support/socket-pair.js';
import { unexpectedError } from '../support/unexpected-error.js';
import { sleepForAbsence } from '../support/wait-until.js';
import { act } from './marbles.js';

const servers: Server[] = [];
const sockets: Socket[] = [];
const subscriptions: Subscription[] = [];

afterEach(() => {
  for (const s of subscriptions.splice(0)) s.unsubscribe();
  for (const s of sockets.splice(0)) s.destroy();
  for (const s of servers.splice(0)) s.close();
});

async function listening(): Promise<{ server: Server; port: number }> {
  const server = createServer({ allowHalfOpen: true });
  // Accepted sockets may be reset by the other end at the end of a test.
  server.on('connection', (socket: Socket) => socket.on('error', () => undefined));
  servers.push(server);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('no address');
  return { server, port: address.port };
}

/**
 * A connected loopback pair (test/support/socket-pair.ts): `ours` (the accepted end) is wrapped by
 * socketEnd, `theirs` plays the program on the other side. The end of a test unsubscribes, which
 * resets a socket still open both ways: the program side hears ECONNRESET (ignored by the pair's
 * error handlers).
 */
async function pair(): Promise<{ ours: Socket; theirs: Socket }> {
  const { client: theirs, accepted: ours } = await socketPair();
  return { ours, theirs };
}

function watch(events$: Observable<LocalEvent>) {
  const events: LocalEvent[] = [];
  subscriptions.push(events$.subscribe({ next: (e) => events.push(e), error: unexpectedError }));
  return events;
}

/** Collects what a plain socket receives. */
function received(socket: Socket) {
  const chunks: Buffer[] = [];
  const state = { ended: false, error: undefined as NodeJS.ErrnoException | undefined, closed: false };
  socket.on('data', (chunk: Buffer) => chunks.push(chunk));
  socket.on('end', () => (state.ended = true));
  socket.on('error', (err: NodeJS.ErrnoException) => (state.error = err));
  socket.on('close', () => (state.closed = true));
  return { text: () => Buffer.concat(chunks).toString('latin1'), state };
}

const dataText = (events: LocalEvent[]) =>
  Buffer.concat(events.flatMap((e) => (e.kind === 'data' ? [e.chunk] : []))).toString('latin1');

describe('socketEnd (real loopback sockets)', () => {
  it('write sends the bytes and reports written once they are flushed', async () => {
    const { ours, theirs } = await pair();
    const end = socketEnd(ours);
    const events = watch(end.events$);
    const peer = received(theirs);
    end.perform(act.write('hello'));
    end.perform(act.write(' world'));
    await vi.waitFor(() => expect(events.filter((e) => e.kind === 'written')).toEqual([
      { kind: 'written', bytes: 5 },
      { kind: 'written', bytes: 6 },
    ]));
    await vi.waitFor(() => expect(peer.text()).toBe('hello world'));
  });

  it('reports data from the peer and its EOF; end half-closes while the other direction stays open', async () => {
    const { ours, theirs } = await pair();
    const end = socketEnd(ours);
    const events = watch(end.events$);
    const peer = received(theirs);
    theirs.write('ping');
    await vi.waitFor(() => expect(dataText(events)).toBe('ping'));
    end.perform(act.end);
    await vi.waitFor(() => expect(peer.state.ended).toBe(true));
    // Our write side is closed; theirs is not: their data still arrives.
    theirs.write('after');
    await vi.waitFor(() => expect(dataText(events)).toBe('pingafter'));
    theirs.end();
    await vi.waitFor(() => expect(events.at(-1)).toEqual({ kind: 'eof' }));
    expect(events.filter((e) => e.kind === 'error')).toEqual([]);
  });

  it('after the peer EOF our writes still reach it', async () => {
    const { ours, theirs } = await pair();
    const end = socketEnd(ours);
    const events = watch(end.events$);
    const peer = received(theirs);
    theirs.end();
    await vi.waitFor(() => expect(events).toContainEqual({ kind: 'eof' }));
    end.perform(act.write('still here'));
    end.perform(act.end);
    await vi.waitFor(() => expect(peer.state.ended).toBe(true));
    expect(peer.text()).toBe('still here');
  });

  it('pause stops reading until resume', async () => {
    const { ours, theirs } = await pair();
    const end = socketEnd(ours);
    const events = watch(end.events$);
    end.perform(act.pause);
    expect(ours.isPaused()).toBe(true);
    theirs.write('held');
    await sleepForAbsence(100); // nothing may arrive while paused
    expect(dataText(events)).toBe('');
    end.perform(act.resume);
    expect(ours.isPaused()).toBe(false);
    await vi.waitFor(() => expect(dataText(events)).toBe('held'));
  });

  it('the transport being blocked pauses reading too; reading resumes only when neither blocks', async () => {
    const { ours, theirs } = await pair();
    const blocked$ = new BehaviorSubject(false);
    const end = socketEnd(ours, blocked$);
    const events = watch(end.events$);
    blocked$.next(true);
    expect(ours.isPaused()).toBe(true);
    end.perform(act.pause);
    blocked$.next(false);
    expect(ours.isPaused()).toBe(true); // still out of credit
    theirs.write('x');
    await sleepForAbsence(50); // nothing may arrive while out of credit
    expect(dataText(events)).toBe('');
    end.perform(act.resume);
    expect(ours.isPaused()).toBe(false);
    await vi.waitFor(() => expect(dataText(events)).toBe('x'));
  });

  it('reset closes with RST: the peer sees ECONNRESET', async () => {
    const { ours, theirs } = await pair();
    const end = socketEnd(ours);
    watch(end.events$);
    const peer = received(theirs);
    end.perform(act.reset);
    await vi.waitFor(() => expect(peer.state.error?.code).toBe('ECONNRESET'));
    expect(peer.state.ended).toBe(false);
    expect(ours.destroyed).toBe(true);
    // A second reset (or one on a destroyed socket) is harmless.
    expect(() => resetSocket(ours)).not.toThrow();
  });

  it("reports 'connected' when a connecting socket connects", async () => {
    const { port } = await listening();
    const socket = netConnect({ port, host: '127.0.0.1', allowHalfOpen: true });
    sockets.push(socket);
    const events = watch(socketEnd(socket).events$);
    await vi.waitFor(() => expect(events).toEqual([{ kind: 'connected' }]));
  });

  it('reports a failed connect as an error event carrying the errno name', async () => {
    const { server, port } = await listening();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    const socket = netConnect({ port, host: '127.0.0.1', allowHalfOpen: true });
    sockets.push(socket);
    const events = watch(socketEnd(socket).events$);
    await vi.waitFor(() => expect(events).toEqual([{ kind: 'error', code: 'ECONNREFUSED' }]));
  });

  // Issue 14: the tunnel died mid-connection; an orderly end could leave the program waiting for
  // data queued in a socket whose translation goes away.
  it('unsubscribing before our end resets the socket: the program hears ECONNRESET, not an orderly end', async () => {
    const { ours, theirs } = await pair();
    const peer = received(theirs);
    const subscription = socketEnd(ours).events$.subscribe();
    subscription.unsubscribe();
    expect(ours.destroyed).toBe(true);
    await vi.waitFor(() => expect(peer.state.error?.code).toBe('ECONNRESET'));
    expect(peer.state.ended).toBe(false);
  });

  it('unsubscribing after our end but before the peer\'s: what we sent still arrives, then an orderly end', async () => {
    const { ours, theirs } = await pair();
    const end = socketEnd(ours);
    const subscription = end.events$.subscribe();
    const peer = received(theirs);
    end.perform(act.write('last words'));
    end.perform(act.end);
    subscription.unsubscribe();
    await vi.waitFor(() => expect(peer.state.ended).toBe(true));
    expect(peer.text()).toBe('last words');
    expect(peer.state.error).toBeUndefined();
  });

  it('unsubscribing leaves a socket that finished both directions to flush and close by itself', async () => {
    const { ours, theirs } = await pair();
    const end = socketEnd(ours);
    const events: LocalEvent[] = [];
    const subscription = end.events$.subscribe({ next: (e) => events.push(e), error: unexpectedError });
    const peer = received(theirs);
    theirs.end();
    await vi.waitFor(() => expect(events).toContainEqual({ kind: 'eof' }));
    // More than the kernel takes at once: most of it is still queued in the socket when we let go.
    const big = Buffer.alloc(8 * 1024 * 1024, 0x61);
    end.perform(act.write(big));
    end.perform(act.end);
    subscription.unsubscribe();
    expect(ours.destroyed).toBe(false);
    await vi.waitFor(() => expect(peer.state.ended).toBe(true), { timeout: 10_000 });
    expect(peer.text().length).toBe(big.length);
    expect(peer.state.error).toBeUndefined();
  });

  it('keeps a permanent error handler: a late error after unsubscribing does not crash', async () => {
    const { ours } = await pair();
    // Without the pair's own handler: only socketEnd's may catch the error.
    ours.removeAllListeners('error');
    const subscription = socketEnd(ours).events$.subscribe();
    subscription.unsubscribe();
    expect(ours.listenerCount('error')).toBeGreaterThan(0);
    expect(() => ours.emit('error', Object.assign(new Error('late EPIPE'), { code: 'EPIPE' }))).not.toThrow();
  });

  it('turns nagle off', async () => {
    const { ours } = await pair();
    const setNoDelay = vi.spyOn(ours, 'setNoDelay');
    socketEnd(ours);
    expect(setNoDelay).toHaveBeenCalledWith(true);
  });
});
