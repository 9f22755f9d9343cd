// The server's UDP relay against real sockets on the loopback: datagrams keep their bytes and
// boundaries both ways, a flow to a closed port ends with the reason, idle flows end, and what
// waits for a full transport stays within the bounds.
import { createSocket, type Socket } from 'node:dgram';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { BehaviorSubject, type SchedulerLike, Subject, type Subscription, VirtualTimeScheduler } from 'rxjs';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { SERVER_UDP_LIMITS, udpRelay } from '../../src/remote/udp.js';
import { DatagramQueues } from '../../src/streams/datagram-queues.js';
import { Command, type Destination, type Frame } from '../../src/streams/frame.js';
import { decodeUdpMessage, MAX_UDP_DATAGRAM, QUEUED_DATAGRAM_OVERHEAD, type UdpLimits, type UdpMessage } from '../../src/streams/udp.js';
import { pattern, protocolError } from '../streams/marbles.js';
import { unexpectedError } from '../support/unexpected-error.js';
import { advance } from '../support/virtual-time.js';
import { sleepForAbsence, waitUntil } from '../support/wait-until.js';

const sockets: Socket[] = [];
const subscriptions: Subscription[] = [];
afterEach(() => {
  vi.restoreAllMocks();
  for (const subscription of subscriptions.splice(0)) subscription.unsubscribe();
  for (const socket of sockets.splice(0)) socket.close();
});

/** A UDP server on the loopback that answers each datagram with `answer(datagram)`. */
async function udpServer(family: 4 | 6, answer: (datagram: Buffer) => Buffer[]): Promise<Destination> {
  const socket = createSocket(family === 6 ? 'udp6' : 'udp4');
  sockets.push(socket);
  socket.on('message', (datagram, from) => {
    for (const out of answer(datagram)) socket.send(out, from.port, from.address);
  });
  socket.bind(0, family === 6 ? '::1' : '127.0.0.1');
  await once(socket, 'listening');
  return { family, address: family === 6 ? '::1' : '127.0.0.1', port: (socket.address() as AddressInfo).port };
}
const echoServer = (family: 4 | 6 = 4) => udpServer(family, (datagram) => [datagram]);

/** A port on the loopback where nobody listens (bound once, then released). */
async function closedPort(): Promise<Destination> {
  const socket = createSocket('udp4');
  socket.bind(0, '127.0.0.1');
  await once(socket, 'listening');
  const { port } = socket.address() as AddressInfo;
  socket.close();
  return { family: 4, address: '127.0.0.1', port };
}

/** A running relay: what the client would send, and what the relay sends back, decoded. */
function relay(limits: Partial<UdpLimits> = {}, scheduler?: SchedulerLike) {
  const client = new Subject<UdpMessage>();
  const writable = new BehaviorSubject(true);
  const received: UdpMessage[] = [];
  const state: { error?: unknown; completed: boolean } = { completed: false };
  subscriptions.push(
    udpRelay({ messages$: client, writable$: writable, limits, ...(scheduler ? { scheduler } : {}) }).subscribe({
      next: (f: Frame) => {
        expect(f.command === Command.UDP_DATA || f.command === Command.UDP_CLOSE).toBe(true);
        received.push(decodeUdpMessage(f));
      },
      error: (err: unknown) => {
        state.error = err;
      },
      complete: () => {
        state.completed = true;
      },
    }),
  );
  /** Waits until `count` messages have come (fails after `ms`). */
  const until = async (count: number): Promise<UdpMessage[]> => {
    await waitUntil(() => received.length >= count, {
      what: () => `${count} messages (${received.length} came: ${JSON.stringify(received.map((m) => m.kind))})`,
    });
    return received.slice(0, count);
  };
  return {
    open: (flow: number, destination: Destination) => client.next({ kind: 'open', flow, destination }),
    send: (flow: number, data: Buffer) => client.next({ kind: 'data', flow, data }),
    close: (flow: number) => client.next({ kind: 'close', flow, reason: 'idle' }),
    end: () => client.complete(),
    writable,
    received,
    until,
    state,
  };
}

const dataOf = (messages: readonly UdpMessage[]) => messages.flatMap((m) => (m.kind === 'data' ? [m] : []));

/** Replies that have reached the relay's queues (held or dropped there), counted where they are offered. */
const offered = () => vi.spyOn(DatagramQueues.prototype, 'offer');

describe('udpRelay: datagrams', () => {
  it('datagrams of 1 B, 1 400 B and 65 000 B come back intact, one each, also when sent before the socket is ready', async () => {
    const echo = await echoServer();
    const r = relay();
    const sizes = [1, 1400, 65_000];
    r.open(1, echo);
    // At once, before the socket has connected: the relay holds them until it has.
    for (const size of sizes) r.send(1, pattern(size, size));
    const replies = dataOf(await r.until(sizes.length));
    expect(replies.map((m) => [m.flow, m.data.length])).toEqual(sizes.map((size) => [1, size]));
    replies.forEach((m, i) => expect(m.data.equals(pattern(sizes[i] as number, sizes[i]))).toBe(true));
  });

  it('one at a time, from empty to the largest an IPv4 destination takes', async () => {
    const echo = await echoServer();
    const r = relay();
    const sizes = [0, 1, 1400, 9000, 65_000, 65_507];
    r.open(1, echo);
    for (const [i, size] of sizes.entries()) {
      r.send(1, pattern(size, i));
      const reply = (await r.until(i + 1))[i];
      expect(reply?.kind === 'data' && reply.data.equals(pattern(size, i))).toBe(true);
    }
  });

  it('a burst the kernel takes at once is not held against the bounds', async () => {
    const echo = await echoServer();
    // Room for one of the largest datagrams in the relay's own queues; the kernel takes two.
    const r = relay({ maxFlowQueuedBytes: MAX_UDP_DATAGRAM + QUEUED_DATAGRAM_OVERHEAD });
    r.open(1, echo);
    r.send(1, Buffer.from('connect first'));
    await r.until(1);
    r.send(1, pattern(65_000, 1));
    r.send(1, pattern(65_000, 2));
    const replies = dataOf(await r.until(3)).slice(1);
    expect(replies.map((m, i) => m.data.equals(pattern(65_000, i + 1)))).toEqual([true, true]);
  });

  it('before the socket is ready, what waits is bounded per flow: the rest of a burst is dropped', async () => {
    const echo = await echoServer();
    const r = relay({ maxFlowQueuedBytes: MAX_UDP_DATAGRAM + QUEUED_DATAGRAM_OVERHEAD });
    r.open(1, echo);
    r.send(1, pattern(40_000, 1));
    r.send(1, pattern(40_000, 2));
    r.send(1, Buffer.from('small'));
    const replies = dataOf(await r.until(2));
    expect(replies.map((m) => m.data.length)).toEqual([40_000, 5]);
    await sleepForAbsence(50);
    expect(r.received).toHaveLength(2);
  });

  it('over IPv6 too', async () => {
    const echo = await echoServer(6);
    const r = relay();
    r.open(1, echo);
    r.send(1, pattern(65_000, 6));
    const [reply] = dataOf(await r.until(1));
    expect(reply?.data.equals(pattern(65_000, 6))).toBe(true);
  });

  it('two interleaved flows each get their own replies', async () => {
    const a = await udpServer(4, (d) => [Buffer.concat([Buffer.from('A:'), d])]);
    const b = await udpServer(4, (d) => [Buffer.concat([Buffer.from('B:'), d])]);
    const r = relay();
    r.open(1, a);
    r.open(2, b);
    // Both sockets connected (each has answered once) before the interleaved datagrams.
    r.send(1, Buffer.from('hello'));
    r.send(2, Buffer.from('hello'));
    await r.until(2);
    for (let i = 0; i < 10; i++) r.send(1 + (i % 2), Buffer.from(`${i}`));
    const replies = dataOf(await r.until(12)).slice(2);
    expect(replies.filter((m) => m.flow === 1).map((m) => m.data.toString())).toEqual(['A:0', 'A:2', 'A:4', 'A:6', 'A:8']);
    expect(replies.filter((m) => m.flow === 2).map((m) => m.data.toString())).toEqual(['B:1', 'B:3', 'B:5', 'B:7', 'B:9']);
  });

  it('a datagram too large for an IPv4 destination is lost alone; the flow stays open', async () => {
    const echo = await echoServer();
    const r = relay();
    r.open(1, echo);
    r.send(1, Buffer.alloc(MAX_UDP_DATAGRAM, 1));
    r.send(1, Buffer.from('after'));
    const [reply] = await r.until(1);
    expect(reply).toEqual({ kind: 'data', flow: 1, data: Buffer.from('after') });
  });
});

describe('udpRelay: the end of a flow', () => {
  it('a flow to a closed port closes with the reason, and later datagrams for it are dropped', async () => {
    const nobody = await closedPort();
    const r = relay();
    r.open(1, nobody);
    r.send(1, Buffer.from('anyone?'));
    expect(await r.until(1)).toEqual([{ kind: 'close', flow: 1, reason: 'ECONNREFUSED' }]);
    r.send(1, Buffer.from('late'));
    r.close(1);
    await sleepForAbsence(50);
    expect(r.received).toHaveLength(1);
    expect(r.state.error).toBeUndefined();
  });

  it('an idle flow closes with `idle`; traffic either way keeps it open', async () => {
    const echo = await echoServer();
    // Virtual time for the idle timer (the datagrams are real): a loaded machine cannot stretch a pause.
    const scheduler = new VirtualTimeScheduler();
    const r = relay({ idleMs: 300, dnsIdleMs: 300 }, scheduler);
    r.open(1, echo);
    let lastSent = 0;
    // Four datagrams 150 ms apart, each echoed: 600 ms in all, longer than the idle time, and the flow stays.
    for (let i = 0; i < 4; i++) {
      r.send(1, Buffer.from('keep'));
      lastSent = scheduler.now();
      await r.until(i + 1);
      advance(scheduler, 150);
    }
    expect(r.received.map((m) => m.kind)).toEqual(['data', 'data', 'data', 'data']);
    // Idle from the last datagram (sent and echoed at lastSent): closed 300 ms after it, not a moment before.
    advance(scheduler, lastSent + 300 - 1 - scheduler.now());
    expect(r.received).toHaveLength(4);
    advance(scheduler, 1);
    expect(r.received[4]).toEqual({ kind: 'close', flow: 1, reason: 'idle' });
    expect(scheduler.now() - lastSent).toBe(300);
  });

  it('a flow the client closes sends nothing back; its replies stop', async () => {
    const echo = await echoServer();
    const r = relay();
    r.open(1, echo);
    r.send(1, Buffer.from('one'));
    await r.until(1);
    r.close(1);
    r.send(1, Buffer.from('two'));
    await sleepForAbsence(50);
    expect(r.received).toHaveLength(1);
  });

  it('completes when the client messages end, with every socket closed', async () => {
    const echo = await echoServer();
    const r = relay();
    r.open(1, echo);
    r.send(1, Buffer.from('x'));
    await r.until(1);
    r.end();
    expect(r.state.completed).toBe(true);
  });

  it('beyond the flow limit a UDP_OPEN is answered with UDP_CLOSE', async () => {
    const echo = await echoServer();
    const r = relay({ maxFlows: 2 });
    r.open(1, echo);
    r.open(2, echo);
    r.open(3, echo);
    expect(await r.until(1)).toEqual([{ kind: 'close', flow: 3, reason: 'the server has 2 UDP flows open' }]);
    r.close(1);
    r.open(4, echo);
    r.send(4, Buffer.from('room again'));
    expect((await r.until(2))[1]).toEqual({ kind: 'data', flow: 4, data: Buffer.from('room again') });
  });
});

describe('udpRelay: flow ids', () => {
  it('a UDP_OPEN that does not go above every id before is a protocol error', async () => {
    const echo = await echoServer();
    const r = relay();
    r.open(2, echo);
    r.open(1, echo);
    expect(r.state.error).toEqual(protocolError(/UDP_OPEN for flow 1: ids must go up/));
  });

  it('UDP_DATA for a flow never opened is a protocol error', () => {
    const r = relay();
    r.send(1, Buffer.from('x'));
    expect(r.state.error).toEqual(protocolError(/UDP_DATA for flow 1, which was never opened/));
  });
});

describe('udpRelay: bounds', () => {
  const REPLY = 10_000;
  const COST = REPLY + QUEUED_DATAGRAM_OVERHEAD;
  const smallest = MAX_UDP_DATAGRAM + QUEUED_DATAGRAM_OVERHEAD;
  /** Answers each datagram with eight of 10 000 bytes, numbered. */
  const burst = () => udpServer(4, () => Array.from({ length: 8 }, (_, i) => pattern(REPLY, i)));

  it('defaults: idle twice the client\'s, the same flow and byte bounds', () => {
    expect(SERVER_UDP_LIMITS).toMatchObject({ idleMs: 60_000, dnsIdleMs: 20_000, maxFlows: 4096, maxQueuedBytes: 1024 * 1024 });
  });

  it('while the transport is full, replies wait within the per-flow bound; the rest are dropped', async () => {
    const server = await burst();
    const offers = offered();
    const r = relay({ maxFlowQueuedBytes: smallest });
    r.writable.next(false);
    r.open(1, server);
    r.send(1, Buffer.from('go'));
    await vi.waitFor(() => expect(offers).toHaveBeenCalledTimes(8)); // the whole burst has reached the relay
    expect(r.received).toEqual([]);
    r.writable.next(true);
    const fit = Math.floor(smallest / COST);
    expect(fit).toBe(6);
    expect(r.received.map((m, i) => m.kind === 'data' && m.data.equals(pattern(REPLY, i)))).toEqual(Array(fit).fill(true));
    await sleepForAbsence(50);
    expect(r.received).toHaveLength(fit);
  });

  it('the total bound holds across flows, and waiting replies go out round-robin', async () => {
    const server = await burst();
    const offers = offered();
    const r = relay({ maxFlowQueuedBytes: smallest, maxQueuedBytes: 100_000 });
    r.writable.next(false);
    r.open(1, server);
    r.open(2, server);
    r.send(1, Buffer.from('go'));
    await vi.waitFor(() => expect(offers).toHaveBeenCalledTimes(8)); // flow 1's burst has reached the relay
    r.send(2, Buffer.from('go'));
    await vi.waitFor(() => expect(offers).toHaveBeenCalledTimes(16)); // and flow 2's
    r.writable.next(true);
    // Flow 1 took its six; flow 2 got what was left of 100 000 bytes: three.
    expect(r.received.map((m) => m.flow)).toEqual([1, 2, 1, 2, 1, 2, 1, 1, 1]);
    expect(Math.floor(100_000 / COST)).toBe(9);
  });

  it('stops sending the moment the transport is full, and goes on, one reply per turn, when it takes more', async () => {
    const server = await burst();
    const offers = offered();
    const client = new Subject<UdpMessage>();
    const writable = new BehaviorSubject(true);
    const received: Frame[] = [];
    subscriptions.push(
      // Like a frame writer over a slow pipe: full again after every frame.
      udpRelay({ messages$: client, writable$: writable }).subscribe({ next: (f) => {
        received.push(f);
        writable.next(false);
      }, error: unexpectedError }),
    );
    client.next({ kind: 'open', flow: 1, destination: server });
    client.next({ kind: 'data', flow: 1, data: Buffer.from('go') });
    await vi.waitFor(() => expect(offers).toHaveBeenCalledTimes(8)); // the whole burst has reached the relay
    expect(received).toHaveLength(1);
    writable.next(true);
    expect(received).toHaveLength(2);
    writable.next(true);
    writable.next(true);
    expect(received).toHaveLength(4);
  });
});
