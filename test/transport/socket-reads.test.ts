import { type AddressInfo, createServer, connect as netConnect, type Socket } from 'node:net';
import { lastValueFrom, toArray } from 'rxjs';
import type { ClientChannel, ServerChannel } from 'ssh2';
import { afterEach, describe, expect, it } from 'vitest';
import { recv } from '../../src/os/libc.js';
import { readIntoSharedBuffer, readWaiting } from '../../src/transport/socket-reads.js';
import type { Ssh2Connection } from '../../src/transport/ssh2.js';
import { ssh2Forward$ } from '../../src/transport/ssh2-forward.js';
import { socketPair as makeSocketPair } from '../support/socket-pair.js';
import { sleepForAbsence, waitUntil } from '../support/wait-until.js';
import { bounded, clientRekey, destination, useSsh2Lab } from './ssh2-lab.js';
import { content, firstDifference } from './test-data.js';

/** The in-process ssh server and connections the ssh2Forward$ tests below run against (ssh2-lab.ts). */
const lab = useSsh2Lab();


const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const cleanup of cleanups.splice(0).reverse()) cleanup();
});

const tick = () => new Promise<void>((resolve) => setImmediate(resolve));

/** What `socket` emits as 'data' from now on, and when it ends. */
function collect(socket: Socket) {
  const chunks: Buffer[] = [];
  socket.on('data', (chunk: Buffer) => chunks.push(chunk));
  const ended = new Promise<void>((resolve) => socket.once('end', () => resolve()));
  return { ended, bytes: () => Buffer.concat(chunks), text: () => Buffer.concat(chunks).toString() };
}

/** A connected pair (test/support/socket-pair.ts), the accepted end paused by pauseOnConnect unless told otherwise. */
const socketPair = async (over: 'tcp' | 'unix' = 'tcp', pauseOnConnect = true) => {
  const { client, accepted } = await makeSocketPair({ over, pauseOnConnect, noDelay: true });
  return { program: client, accepted };
};

/** Node's private fields readIntoSharedBuffer sets, by symbol description. */
function privateFields(socket: Socket): { kBuffer: unknown; kBufferCb: unknown; kBufferGen: unknown } {
  const fields = socket as unknown as Record<symbol, unknown>;
  const get = (description: string) => {
    const symbol = Object.getOwnPropertySymbols(socket).find((s) => s.description === description);
    if (!symbol) throw new Error(`no ${description} on the socket (Node internals changed)`);
    return fields[symbol];
  };
  return { kBuffer: get('kBuffer'), kBufferCb: get('kBufferCb'), kBufferGen: get('kBufferGen') };
}

/**
 * Reads `accepted` through `buffer`, copying every read out; records 'data' events. `verdict`
 * decides what onRead returns (default true).
 */
function sharedReader(accepted: Socket, buffer: Buffer, verdict: (reads: number) => boolean = () => true) {
  const chunks: Buffer[] = [];
  const sizes: number[] = [];
  const buffersSeen = new Set<Buffer>();
  let dataEvents = 0;
  accepted.on('data', () => dataEvents++);
  const ok = readIntoSharedBuffer(accepted, buffer, (bytes, given) => {
    buffersSeen.add(given);
    sizes.push(bytes);
    chunks.push(Buffer.from(given.subarray(0, bytes)));
    return verdict(sizes.length);
  });
  const ended = new Promise<void>((resolve) => accepted.once('end', () => resolve()));
  return {
    ok,
    ended,
    received: () => Buffer.concat(chunks),
    bytes: () => sizes.reduce((sum, n) => sum + n, 0),
    sizes,
    buffersSeen,
    dataEvents: () => dataEvents,
  };
}

describe('readIntoSharedBuffer', () => {
  it.each(['tcp', 'unix'] as const)(
    'over %s: hands every byte to onRead in order (writes larger than the buffer too), emits no data, counts bytesRead, ends, and the half-close keeps the way back open',
    async (over) => {
      const { program, accepted } = await socketPair(over);
      const buffer = Buffer.alloc(16 * 1024);
      const reader = sharedReader(accepted, buffer);
      expect(reader.ok).toBe(true);
      expect(privateFields(accepted).kBuffer).toBe(buffer);
      accepted.resume();
      const writes = [content(1, 10), content(2, 100_000), content(3, 7), content(4, 1024 * 1024 + 3), content(5, 16 * 1024), content(6, 3 * 16 * 1024 + 1)];
      const sent = Buffer.concat(writes);
      for (const write of writes) program.write(write);
      program.end();
      await reader.ended;
      expect(reader.dataEvents(), "'data' events").toBe(0);
      expect(reader.bytes()).toBe(sent.length);
      expect(firstDifference(reader.received(), sent), 'first wrong byte').toBe(-1);
      // Every read went into the one buffer, none beyond it.
      expect([...reader.buffersSeen]).toEqual([buffer]);
      expect(Math.max(...reader.sizes)).toBeLessThanOrEqual(buffer.length);
      // Larger writes than the buffer took several reads (some of them filling it).
      expect(reader.sizes.length).toBeGreaterThan(writes.length);
      expect(reader.sizes).toContain(buffer.length);
      expect(accepted.bytesRead).toBe(sent.length);
      // Half-close: our side still writes after the program's EOF, and its EOF goes through.
      let back = '';
      program.on('data', (chunk: Buffer) => (back += chunk.toString()));
      const programEnded = new Promise<void>((resolve) => program.once('end', () => resolve()));
      expect(accepted.writable).toBe(true);
      accepted.end('reply after EOF');
      await programEnded;
      expect(back).toBe('reply after EOF');
      await new Promise<void>((resolve) => (accepted.closed ? resolve() : accepted.once('close', () => resolve())));
      // After the close too (Node keeps the count once the handle is gone).
      expect(accepted.bytesRead).toBe(sent.length);
    },
    10_000,
  );

  it('returning false from onRead stops reading until resume()', async () => {
    const { program, accepted } = await socketPair();
    let stop = true;
    const reader = sharedReader(accepted, Buffer.alloc(4096), () => !stop);
    expect(reader.ok).toBe(true);
    accepted.resume();
    program.write('first');
    await waitUntil(() => reader.sizes.length === 1, { timeoutMs: 3000, what: 'first read' });
    // Reading stopped: what is sent now waits in the kernel.
    program.write(content(7, 50_000));
    await sleepForAbsence(50);
    expect(reader.sizes.length).toBe(1);
    expect(reader.received().toString()).toBe('first');
    stop = false;
    accepted.resume();
    program.end();
    await reader.ended;
    expect(firstDifference(reader.received(), Buffer.concat([Buffer.from('first'), content(7, 50_000)]))).toBe(-1);
    expect(reader.dataEvents()).toBe(0);
  }, 10_000);

  it('pause() stops reading and resume() continues (also before the first resume: nothing is read until then)', async () => {
    const { program, accepted } = await socketPair();
    const reader = sharedReader(accepted, Buffer.alloc(4096));
    expect(reader.ok).toBe(true);
    // Not reading yet: readIntoSharedBuffer does not start reading by itself.
    program.write('early');
    await sleepForAbsence(30);
    expect(reader.sizes).toEqual([]);
    accepted.resume();
    await waitUntil(() => reader.bytes() === 5, { timeoutMs: 3000, what: 'early bytes' });
    accepted.pause();
    program.write(content(8, 20_000));
    await sleepForAbsence(50);
    expect(reader.bytes()).toBe(5);
    accepted.resume();
    await waitUntil(() => reader.bytes() === 5 + 20_000, { timeoutMs: 3000, what: 'bytes after resume' });
    program.end('!');
    await reader.ended;
    expect(firstDifference(reader.received(), Buffer.concat([Buffer.from('early'), content(8, 20_000), Buffer.from('!')]))).toBe(-1);
    expect(reader.dataEvents()).toBe(0);
  }, 10_000);

  it.each(['tcp', 'unix'] as const)('over %s: two sockets sharing one buffer each get exactly their own bytes, interleaved', async (over) => {
    const first = await socketPair(over);
    const second = await socketPair(over);
    const buffer = Buffer.alloc(8 * 1024);
    const order: number[] = [];
    const readers = [first, second].map(({ accepted }, index) => {
      const reader = sharedReader(accepted, buffer, () => (order.push(index), true));
      expect(reader.ok).toBe(true);
      accepted.resume();
      return reader;
    });
    const data = [content(21, 2 * 1024 * 1024), content(22, 2 * 1024 * 1024 + 5)];
    // Alternating writes, so that reads of the two sockets alternate in the buffer.
    for (let at = 0; at < data[1]!.length; at += 32 * 1024) {
      first.program.write(data[0]!.subarray(at, at + 32 * 1024));
      second.program.write(data[1]!.subarray(at, at + 32 * 1024));
    }
    first.program.end();
    second.program.end();
    await Promise.all(readers.map((reader) => reader.ended));
    for (const [index, reader] of readers.entries()) {
      expect(reader.dataEvents()).toBe(0);
      expect([...reader.buffersSeen]).toEqual([buffer]);
      expect(firstDifference(reader.received(), data[index]!), `first wrong byte of socket ${index}`).toBe(-1);
    }
    // The reads did interleave (the buffer really was shared between sockets in flight).
    const switches = order.filter((socket, i) => i > 0 && socket !== order[i - 1]).length;
    expect(switches).toBeGreaterThan(2);
  }, 10_000);

  describe('returns false and changes nothing', () => {
    const expectUntouched = (socket: Socket) => expect(privateFields(socket)).toEqual({ kBuffer: null, kBufferCb: null, kBufferGen: null });

    it('for an accepted socket already reading (no pauseOnConnect): data still arrives as data', async () => {
      const { program, accepted } = await socketPair('tcp', false);
      const onRead = () => expect.fail('onRead called');
      expect(readIntoSharedBuffer(accepted, Buffer.alloc(1024), onRead)).toBe(false);
      expectUntouched(accepted);
      const received = collect(accepted);
      program.end('as data');
      await received.ended;
      expect(received.text()).toBe('as data');
    }, 10_000);

    it('for a paused-on-connect socket once resume() has started it reading', async () => {
      const { program, accepted } = await socketPair();
      const received = collect(accepted);
      accepted.resume();
      // resume() starts reading on the next tick.
      await tick();
      expect((accepted as unknown as { _handle: { reading: boolean } })._handle.reading).toBe(true);
      expect(readIntoSharedBuffer(accepted, Buffer.alloc(1024), () => expect.fail('onRead called'))).toBe(false);
      expectUntouched(accepted);
      program.end('still data');
      await received.ended;
      expect(received.text()).toBe('still data');
    }, 10_000);

    // A socket that has read and stopped only because its readable buffer filled: its handle is
    // not reading, but the 64 KiB it holds would reach 'data' listeners only, never onRead.
    it('for an accepted socket that read until its readable buffer filled (reading stopped, bytes buffered)', async () => {
      const { program, accepted } = await socketPair('tcp', false);
      program.write(content(9, 1024 * 1024));
      await waitUntil(() => accepted.readableLength > 0 && !(accepted as unknown as { _handle: { reading: boolean } })._handle.reading, { timeoutMs: 3000, what: 'buffer full' });
      expect(readIntoSharedBuffer(accepted, Buffer.alloc(4096), () => true)).toBe(false);
      expectUntouched(accepted);
    }, 10_000);

    // resume() starts reading only on the next tick: right after it the handle is not reading
    // yet, but the socket is flowing and a 'data' listener attached before must get its bytes.
    it('for a paused-on-connect socket right after resume() (same tick)', async () => {
      const { accepted } = await socketPair();
      accepted.on('data', () => {});
      accepted.resume();
      expect(readIntoSharedBuffer(accepted, Buffer.alloc(4096), () => true)).toBe(false);
      expectUntouched(accepted);
    }, 10_000);

    it('for a client socket made with onread (its fields are not null)', async () => {
      const listener = createServer((socket) => socket.end('hello'));
      await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', () => resolve()));
      cleanups.push(() => listener.close());
      const own = Buffer.alloc(1024);
      let ownReads = '';
      const client = netConnect({
        host: '127.0.0.1',
        port: (listener.address() as AddressInfo).port,
        onread: { buffer: own, callback: (bytes: number, buf: Uint8Array) => ((ownReads += Buffer.from(buf.subarray(0, bytes)).toString()), true) },
      });
      cleanups.push(() => client.destroy());
      // Before it connects (its handle is not reading yet): the fields alone say no.
      expect((client as unknown as { _handle: { reading?: boolean } })._handle.reading).toBeFalsy();
      const before = privateFields(client);
      expect(before.kBuffer).toBe(own);
      expect(readIntoSharedBuffer(client, Buffer.alloc(1024), () => expect.fail('onRead called'))).toBe(false);
      expect(privateFields(client)).toEqual(before);
      await new Promise<void>((resolve) => client.once('end', () => resolve()));
      expect(ownReads).toBe('hello');
    }, 10_000);
  });
});

describe('readWaiting', () => {
  const MSG_PEEK_DONTWAIT = 0x2 | 0x40;
  const recvPeek = (fd: number, buffer: Buffer) => recv()(fd, buffer, buffer.length, MSG_PEEK_DONTWAIT);
  /** Waits until the kernel has `bytes` for `socket` (without reading them). */
  const queued = async (socket: Socket, bytes: number) => {
    const fd = (socket as unknown as { _handle: { fd: number } })._handle.fd;
    const peek = Buffer.alloc(bytes);
    await waitUntil(() => recvPeek(fd, peek) >= bytes, { timeoutMs: 3000, what: `${bytes} bytes queued` });
  };

  it('reads what already waits in a paused socket, at once; Node reads what comes after', async () => {
    const { program, accepted } = await socketPair();
    program.write('first');
    await queued(accepted, 5);
    const buffer = Buffer.alloc(64 * 1024);
    expect(readWaiting(accepted, buffer)).toBe(5);
    expect(buffer.subarray(0, 5).toString()).toBe('first');
    // Nothing is left: a second call finds nothing.
    expect(readWaiting(accepted, buffer)).toBe(0);
    const rest = collect(accepted);
    accepted.resume();
    program.end('second');
    await rest.ended;
    expect(rest.text()).toBe('second');
    // Node counts only its own reads.
    expect(accepted.bytesRead).toBe(6);
  }, 10_000);

  it('reads at most the buffer, leaving the rest to Node', async () => {
    const { program, accepted } = await socketPair();
    const sent = content(3, 10_000);
    program.end(sent);
    await queued(accepted, sent.length);
    const buffer = Buffer.alloc(4096);
    expect(readWaiting(accepted, buffer)).toBe(4096);
    const head = Buffer.from(buffer);
    const rest = collect(accepted);
    accepted.resume();
    await rest.ended;
    expect(firstDifference(Buffer.concat([head, rest.bytes()]), sent)).toBe(-1);
  }, 10_000);

  it('finds nothing when nothing waits, and the socket goes on as before', async () => {
    const { program, accepted } = await socketPair();
    expect(readWaiting(accepted, Buffer.alloc(1024))).toBe(0);
    const got = collect(accepted);
    accepted.resume();
    program.end('later');
    await got.ended;
    expect(got.text()).toBe('later');
  }, 10_000);

  it("leaves an EOF to Node: 'end' still comes", async () => {
    const { program, accepted } = await socketPair();
    // 'finish': the FIN has gone out (loopback delivers it within the shutdown call).
    await new Promise<void>((resolve) => program.end(resolve));
    expect(readWaiting(accepted, Buffer.alloc(1024))).toBe(0);
    const got = collect(accepted);
    accepted.resume();
    await got.ended;
    expect(got.text()).toBe('');
  }, 10_000);

  it('gives a reset it consumed to the socket, as Node would', async () => {
    const { program, accepted } = await socketPair();
    const failed = new Promise<NodeJS.ErrnoException>((resolve) => accepted.once('error', resolve));
    // 'close': the descriptor is closed with SO_LINGER 0, so the RST has gone out (and arrived).
    await new Promise<void>((resolve) => program.resetAndDestroy().once('close', () => resolve()));
    expect(readWaiting(accepted, Buffer.alloc(1024))).toBe(0);
    const err = await failed;
    expect(err.code).toBe('ECONNRESET');
    expect(accepted.destroyed).toBe(true);
  }, 10_000);

  it('finds nothing on a destroyed socket (no descriptor)', async () => {
    const { accepted } = await socketPair();
    accepted.destroy();
    expect(readWaiting(accepted, Buffer.alloc(1024))).toBe(0);
  }, 10_000);
});

describe('ssh2Forward$ uploads through the shared read buffer (socket-reads.ts)', () => {
  /** One write ssh2Forward$ made to a channel, as the test's wrapper saw it. */
  interface ChannelWrite {
    readonly buffer: ArrayBufferLike;
    readonly length: number;
    /** The channel's outgoing window and queued bytes just before the write. */
    readonly windowBefore: number;
    readonly queuedBefore: number;
    /** Whether ssh2 still held (part of) the chunk when write() returned. */
    kept: boolean;
    /** Whether the write came after the channel's 'close'. */
    readonly afterClose: boolean;
  }
  interface WatchedChannel {
    readonly channel: ClientChannel;
    readonly writes: ChannelWrite[];
    closed: boolean;
  }

  type Outgoing = { window: number; state: string };
  const outgoingOf = (channel: ClientChannel) => (channel as unknown as { outgoing: Outgoing }).outgoing;

  /**
   * Wraps the client's forwardOut so that every channel ssh2Forward$ opens gets its write()
   * wrapped (before ssh2Forward$ sees the channel): records each chunk's memory and the state of
   * the channel around the write.
   */
  function watchChannels(connection: Ssh2Connection): WatchedChannel[] {
    const watched: WatchedChannel[] = [];
    const client = connection.client as unknown as { forwardOut: (...args: unknown[]) => unknown };
    const forwardOut = client.forwardOut.bind(client);
    client.forwardOut = (...args: unknown[]) => {
      const callback = args.pop() as (err: Error | undefined, channel?: ClientChannel) => void;
      return forwardOut(...args, (err: Error | undefined, channel?: ClientChannel) => {
        if (channel) {
          const entry: WatchedChannel = { channel, writes: [], closed: false };
          watched.push(entry);
          // First 'close' listener: runs before ssh2Forward$'s.
          channel.once('close', () => (entry.closed = true));
          const write = channel.write.bind(channel) as (chunk: Buffer, ...rest: unknown[]) => boolean;
          channel.write = ((chunk: Buffer, ...rest: unknown[]) => {
            const record: ChannelWrite = {
              buffer: chunk.buffer,
              length: chunk.length,
              windowBefore: outgoingOf(channel).window,
              queuedBefore: channel.writableLength,
              kept: false,
              afterClose: entry.closed,
            };
            const accepted = write(chunk, ...rest);
            record.kept = channel.writableLength > 0;
            entry.writes.push(record);
            return accepted;
          }) as typeof channel.write;
        }
        callback(err, channel);
      });
    };
    return watched;
  }

  /** Node's private field readIntoSharedBuffer sets (the buffer the socket reads into; null if none). */
  const readBufferOf = (socket: Socket): Buffer | null => {
    const symbol = Object.getOwnPropertySymbols(socket).find((s) => s.description === 'kBuffer');
    return symbol ? ((socket as unknown as Record<symbol, Buffer | null>)[symbol] ?? null) : null;
  };

  /** Counts the accepted socket's 'data' events (with pauseOnConnect, listening does not start reading). */
  const countData = (socket: Socket) => {
    let events = 0;
    socket.on('data', () => events++);
    return () => events;
  };

  /**
   * Splits the writes into views of `shared` (the read buffer) and copies; checks that ssh2 kept
   * no view past write() (it would be overwritten by the next read of any socket).
   */
  function paths(writes: readonly ChannelWrite[], shared: ArrayBufferLike) {
    const views = writes.filter((w) => w.buffer === shared);
    const copies = writes.filter((w) => w.buffer !== shared);
    expect(
      views.filter((w) => w.kept),
      'views of the shared buffer ssh2 kept past write()',
    ).toEqual([]);
    // A view only when ssh2 could send it all at once.
    expect(views.every((w) => w.queuedBefore === 0 && w.windowBefore >= w.length)).toBe(true);
    return { views: views.length, copies: copies.length, copiesForWindowOrQueue: copies.filter((w) => w.queuedBefore > 0 || w.windowBefore < w.length).length };
  }

  /** A pause of the server's reading at `at` bytes received: until `until()` holds (if given; at most 3 s), then `ms` more. */
  interface ServerPause {
    readonly at: number;
    readonly ms: number;
    readonly until?: () => boolean;
    /** Runs just before the server reads again; `held`: whether `until` came true. */
    readonly then?: (held: boolean) => void;
  }

  /**
   * The server's side of a channel: collects what arrives; `pauses` (by bytes received, or one
   * every so many bytes) stop it from reading for a while: ssh2 then stops granting us window
   * once its 2 MiB buffer is full.
   */
  function receive(channel: ServerChannel, pauses: { every: number; ms: number } | ServerPause[] = []): Promise<Buffer> {
    return new Promise((resolve) => {
      const chunks: Buffer[] = [];
      let received = 0;
      let next = Array.isArray(pauses) ? 0 : pauses.every;
      channel.on('error', () => {});
      const hold = async ({ ms, until, then }: Omit<ServerPause, 'at'>) => {
        channel.pause();
        const held = until ? await waitUntil(until, { timeoutMs: 3000, intervalMs: 5 }).then(() => true, () => false) : true;
        await new Promise((r) => setTimeout(r, ms));
        then?.(held);
        channel.resume();
      };
      channel.on('data', (chunk: Buffer) => {
        chunks.push(Buffer.from(chunk));
        received += chunk.length;
        if (Array.isArray(pauses)) {
          const pause = pauses[0];
          if (!pause || received < pause.at) return;
          pauses.shift();
          void hold(pause);
        } else if (received >= next) {
          next += pauses.every;
          void hold({ ms: pauses.ms });
        }
      });
      channel.once('end', () => {
        channel.end();
        resolve(Buffer.concat(chunks));
      });
    });
  }

  it('a 16 MiB upload arrives intact while the server stops reading (window runs out: copies), then reads again (views), through a re-key', async () => {
    const total = 16 * 1024 * 1024;
    const data = content(41, total);
    let watched: WatchedChannel[] = [];
    /** Whether each stop of the server saw our window run out with chunks waiting in the channel. */
    const ranOut: boolean[] = [];
    let rekeyAt: (() => void) | undefined;
    let arrived: Promise<Buffer> = new Promise(() => {});
    let opened: () => void = () => {};
    const channelOpened = new Promise<void>((resolve) => (opened = resolve));
    const { port } = await lab.startServer({
      onTcpip: (accept) => {
        const windowOut = () => {
          const channel = watched[0]?.channel;
          return channel !== undefined && outgoingOf(channel).window === 0 && channel.writableLength > 0;
        };
        const stop: ServerPause = { at: 0, ms: 50, until: windowOut, then: (held) => ranOut.push(held && windowOut()) };
        arrived = receive(accept(), [
          { ...stop, at: 2 * 1024 * 1024 },
          { at: 8 * 1024 * 1024, ms: 0, then: () => rekeyAt?.() },
          { ...stop, at: 11 * 1024 * 1024 },
        ]);
        opened();
      },
    });
    const connection = await lab.connect(lab.configFor(port));
    watched = watchChannels(connection);
    let handshakes = 0;
    connection.client.on('handshake', () => handshakes++);
    rekeyAt = () => clientRekey(connection);
    const { program, accepted } = await lab.socketPair();
    const dataEvents = countData(accepted);
    lab.forward(connection, accepted, destination);
    await channelOpened;
    // The server has the channel a moment before ssh2Forward$ does.
    await expect.poll(() => readBufferOf(accepted), { timeout: 3000, interval: 5 }).not.toBeNull();
    const shared = readBufferOf(accepted);
    expect(shared?.length).toBe(256 * 1024);
    program.end(data);
    const bytes = await arrived;
    expect(bytes.length).toBe(total);
    expect(firstDifference(bytes, data), 'first corrupted byte').toBe(-1);
    expect(handshakes).toBe(1);
    expect(dataEvents(), "the accepted socket's 'data' events").toBe(0);
    // While the server read nothing, our window ran out and chunks waited in the channel.
    expect(ranOut).toEqual([true, true]);
    const [entry] = watched;
    expect(watched).toHaveLength(1);
    const { views, copies, copiesForWindowOrQueue } = paths(entry?.writes ?? [], shared?.buffer ?? new ArrayBuffer(0));
    expect(views, 'writes that were views of the shared buffer').toBeGreaterThan(0);
    expect(copies, 'writes that were copies').toBeGreaterThan(0);
    expect(copiesForWindowOrQueue).toBe(copies);
    expect(entry?.writes.reduce((sum, w) => sum + w.length, 0)).toBe(total);
  }, 20_000);

  it('three uploads at once, read by the server at different paces, each arrive intact (one buffer, views in all of them)', async () => {
    const total = 6 * 1024 * 1024;
    const dataFor = (port: number) => content(port * 7, total);
    const arrivals = new Map<number, Promise<Buffer>>();
    const paces = new Map<number, { every: number; ms: number } | []>([
      [81, []],
      [82, { every: 1536 * 1024, ms: 100 }],
      [83, { every: 384 * 1024, ms: 25 }],
    ]);
    const { port } = await lab.startServer({
      onTcpip: (accept, _reject, info) => arrivals.set(info.destPort, receive(accept(), paces.get(info.destPort) ?? [])),
    });
    const connection = await lab.connect(lab.configFor(port));
    const watched = watchChannels(connection);
    const ports = [...paces.keys()];
    const pairs = await Promise.all(ports.map(() => lab.socketPair()));
    const dataEvents = pairs.map(({ accepted }) => countData(accepted));
    pairs.forEach(({ accepted }, i) => lab.forward(connection, accepted, { ...destination, port: ports[i] ?? 0 }));
    await expect.poll(() => arrivals.size, { timeout: 3000, interval: 5 }).toBe(ports.length);
    // The server has the channels a moment before ssh2Forward$ does.
    await expect.poll(() => pairs.every(({ accepted }) => readBufferOf(accepted) !== null), { timeout: 3000, interval: 5 }).toBe(true);
    // All three read into the one buffer.
    const shared = readBufferOf(pairs[0]!.accepted);
    for (const { accepted } of pairs) expect(readBufferOf(accepted)).toBe(shared);
    pairs.forEach(({ program }, i) => program.end(dataFor(ports[i] ?? 0)));
    for (const destPort of ports) {
      const bytes = await arrivals.get(destPort);
      expect(bytes?.length, `bytes to port ${destPort}`).toBe(total);
      expect(firstDifference(bytes ?? Buffer.alloc(0), dataFor(destPort)), `first corrupted byte to port ${destPort}`).toBe(-1);
    }
    expect(dataEvents.map((count) => count())).toEqual([0, 0, 0]);
    expect(watched).toHaveLength(3);
    const each = watched.map((entry) => paths(entry.writes, shared?.buffer ?? new ArrayBuffer(0)));
    // Views in every forward (the buffer was shared in flight), and copies where the server paused.
    for (const [i, { views }] of each.entries()) expect(views, `views in forward ${i}`).toBeGreaterThan(0);
    expect(each.reduce((sum, { copies }) => sum + copies, 0), 'copies in all').toBeGreaterThan(0);
  }, 20_000);

  it('discards what the program still sends after the server closed the channel, and completes with closed', async () => {
    const total = 8 * 1024 * 1024;
    const data = content(43, total);
    let serverChannelClosed: Promise<void> = new Promise(() => {});
    let serverGot = 0;
    const firstBytes: Buffer[] = [];
    const { port } = await lab.startServer({
      onTcpip: (accept) => {
        const channel = accept();
        channel.on('error', () => {});
        serverChannelClosed = new Promise((resolve) => channel.once('close', () => resolve()));
        let closing = false;
        channel.on('data', (chunk: Buffer) => {
          serverGot += chunk.length;
          firstBytes.push(Buffer.from(chunk));
          if (serverGot >= 1024 * 1024 && !closing) {
            closing = true;
            channel.close();
          }
        });
      },
    });
    const connection = await lab.connect(lab.configFor(port));
    const watched = watchChannels(connection);
    const { program, accepted } = await lab.socketPair('unix');
    const dataEvents = countData(accepted);
    let programError: unknown;
    program.on('error', (err) => (programError = err));
    const programEnded = new Promise<void>((resolve) => program.once('end', () => resolve()));
    program.resume();
    let readAtClose = -1;
    const done = lastValueFrom(bounded(ssh2Forward$(connection, accepted, destination), 10_000, 'forward').pipe(toArray()));
    await expect.poll(() => watched.length, { timeout: 3000, interval: 5 }).toBe(1);
    watched[0]?.channel.once('close', () => (readAtClose = accepted.bytesRead));
    const allWritten = new Promise<void>((resolve) => program.end(data, () => resolve()));
    const handOffs = await done;
    await allWritten;
    await programEnded;
    await serverChannelClosed;
    expect(programError).toBeUndefined();
    // Every byte the program sent was read (none left to reset the connection with)...
    expect(handOffs).toEqual([{ kind: 'opened' }, { kind: 'closed', bytesSent: total, bytesReceived: 0 }]);
    // ... most of them after the close, and none of those went to the channel.
    expect(readAtClose).toBeGreaterThan(0);
    expect(readAtClose).toBeLessThan(total);
    const writes = watched[0]?.writes ?? [];
    expect(writes.filter((w) => w.afterClose)).toEqual([]);
    expect(writes.reduce((sum, w) => sum + w.length, 0)).toBeLessThanOrEqual(readAtClose);
    expect(dataEvents()).toBe(0);
    // What the server did get was the beginning of the data, intact.
    const got = Buffer.concat(firstBytes);
    expect(got.length).toBeLessThan(total);
    expect(firstDifference(got, data.subarray(0, got.length))).toBe(-1);
  }, 20_000);
});
