import { createRequire } from 'node:module';
import { lastValueFrom, toArray } from 'rxjs';
import type { Connection, ServerChannel } from 'ssh2';
import { describe, expect, it } from 'vitest';
import { creditChannel, LATENCY_CONTROL_WINDOW } from '../../src/transport/ssh2-credit.js';
import { ssh2Forward$ } from '../../src/transport/ssh2-forward.js';
import { waitUntil } from '../support/wait-until.js';
import { fakeSsh2Client, withChannelFields } from './fake-ssh2.js';
import { bounded, destination, kinds, rekeysAtQuarters, slowReader, stream, useSsh2Lab } from './ssh2-lab.js';
import { content, firstDifference } from './test-data.js';

/** The in-process ssh server and connections the ssh2Forward$ tests below run against (ssh2-lab.ts). */
const lab = useSsh2Lab();

/** ssh2's own window handling (lib/Channel.js): its top-up, and the 2 MiB it grants a channel at open. */
const ssh2Channel = createRequire(import.meta.url)('ssh2/lib/Channel.js') as {
  MAX_WINDOW: number;
  PACKET_SIZE: number;
  windowAdjust(channel: unknown): void;
};
const { MAX_WINDOW, PACKET_SIZE } = ssh2Channel;
const REMOTE_ID = 7;

/** Reproducible pseudo-random integers in [0, n) (mulberry32), so a failing sequence can be replayed. */
function random(seed: number): (n: number) => number {
  let state = seed >>> 0;
  return (n) => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return Math.floor((((t ^ (t >>> 14)) >>> 0) / 2 ** 32) * n);
  };
}

/**
 * A direct-tcpip channel as ssh2's Client holds it, just after the server confirmed it: the
 * window ssh2 granted in `incoming.window`, the server's id in `outgoing`, and the protocol whose
 * channelWindowAdjust sends the adjust; its hooks found by the real check (ssh2-internals.ts).
 * Keeps a model of the server's side: what it was granted (the initial window plus every
 * adjust), what arrived, what the local program took.
 */
function fakeChannel() {
  const ssh2 = fakeSsh2Client({ push: () => true });
  // ssh2's own top-up (Channel.js windowAdjust) reaches the protocol through `_client`.
  const channel = withChannelFields({ _client: ssh2.client }, REMOTE_ID, MAX_WINDOW);
  const hooks = ssh2.channelHooks(channel);
  const adjusts = (): number[] => ssh2.adjusts;
  let arrived = 0;
  let written = 0;
  let counted = 0;
  let adjusted = 0;
  const granted = () => {
    for (; counted < ssh2.adjusts.length; counted++) adjusted += ssh2.adjusts[counted] ?? 0;
    return MAX_WINDOW + adjusted;
  };
  return {
    hooks,
    internals: channel,
    adjusts,
    /** Whether every adjust went out as ssh2's own would: called on its protocol, for the server's channel. */
    adjustsAsSsh2: () => ssh2.adjustCalls.every(({ self, remoteId }) => self === ssh2.protocol && remoteId === REMOTE_ID),
    granted,
    credit: () => granted() - arrived,
    unwritten: () => arrived - written,
    /** CHANNEL_DATA as ssh2's Client handles it: the window goes down, then its own top-up gets a chance. */
    arrive(bytes: number) {
      arrived += bytes;
      channel.incoming.window -= bytes;
      // ssh2 tops up here (and when its reader drains) if the window is down to 1 MiB; called
      // unconditionally, it must still find nothing to add once creditChannel took over.
      ssh2Channel.windowAdjust(channel);
    },
    /** The local program took `bytes`. */
    write(bytes: number) {
      written += bytes;
    },
  };
}

describe('creditChannel', () => {
  it("takes the window over: ssh2's own top-up finds nothing to add, however much arrives", () => {
    const fake = fakeChannel();
    creditChannel(fake.hooks, LATENCY_CONTROL_WINDOW);
    for (let at = 0; at < MAX_WINDOW; at += PACKET_SIZE) fake.arrive(PACKET_SIZE);
    expect(fake.adjusts()).toEqual([]);
    // The channel's own count stays above 0: ssh2 drops data that arrives on a window of 0.
    expect(fake.internals.incoming.window).toBeGreaterThan(0);
  });

  it.each([LATENCY_CONTROL_WINDOW, 100_000])('window %d: no adjust while room < window/2; the first one makes credit + unwritten == window', (window) => {
    const fake = fakeChannel();
    const credit = creditChannel(fake.hooks, window);
    // The server sends its whole initial grant; nothing written yet: no room at all.
    fake.arrive(MAX_WINDOW);
    // room = window - credit (0) - unwritten (MAX_WINDOW - written): half the window once
    // all but half a window is written. One byte short of that: still nothing.
    const threshold = MAX_WINDOW - Math.ceil(window / 2);
    fake.write(threshold - 1);
    credit.consumed(threshold - 1);
    expect(fake.adjusts()).toEqual([]);
    fake.write(1);
    credit.consumed(1);
    expect(fake.adjusts()).toEqual([Math.ceil(window / 2)]);
    expect(fake.credit() + fake.unwritten()).toBe(window);
  });

  it.each([
    [LATENCY_CONTROL_WINDOW, 1],
    [LATENCY_CONTROL_WINDOW, 2],
    [64 * 1024, 3],
    [100_000, 4],
    // Larger than ssh2's initial grant: room from the first byte written.
    [4 * 1024 * 1024, 5],
  ])('window %d (seed %d): random arrivals and writes keep credit + unwritten == window at each adjust, never above it after the first', (window, seed) => {
    const fake = fakeChannel();
    const credit = creditChannel(fake.hooks, window);
    const windowAtTakeOver = fake.internals.incoming.window;
    const rand = random(seed);
    let arrivedTotal = 0;
    for (let step = 0; step < 20_000; step++) {
      const adjustsBefore = fake.adjusts().length;
      if (rand(2) === 0) {
        // The server sends at most what it was granted, in packets of up to 32 KiB.
        const bytes = Math.min(fake.credit(), 1 + rand(PACKET_SIZE));
        if (bytes === 0) continue;
        fake.arrive(bytes);
        arrivedTotal += bytes;
        // Window goes back only as the program takes data, never on arrival.
        expect(fake.adjusts().length, `step ${step}: adjust on arrival`).toBe(adjustsBefore);
      } else {
        // The socket writes part of what is unwritten (a chunk, or what is left of one).
        const bytes = Math.min(fake.unwritten(), 1 + rand(PACKET_SIZE));
        if (bytes === 0) continue;
        fake.write(bytes);
        credit.consumed(bytes);
        if (fake.adjusts().length > adjustsBefore) {
          expect(fake.adjusts().length, `step ${step}: one adjust per consumed()`).toBe(adjustsBefore + 1);
          // In halves of the window at least: not an adjust per packet.
          expect(fake.adjusts().at(-1), `step ${step}: adjust amount`).toBeGreaterThanOrEqual(window / 2);
          expect(fake.credit() + fake.unwritten(), `step ${step}: credit + unwritten after an adjust`).toBe(window);
        }
        // All written and the server out of window would leave both sides waiting.
        if (fake.unwritten() === 0) expect(fake.credit(), `step ${step}: credit with nothing unwritten`).toBeGreaterThanOrEqual(window / 2);
      }
      const bound = fake.adjusts().length === 0 ? Math.max(MAX_WINDOW, window) : window;
      expect(fake.credit() + fake.unwritten(), `step ${step}: credit + unwritten`).toBeLessThanOrEqual(bound);
      // ssh2's own count moves with ours (down on arrival, up by our adjusts), far from 0.
      expect(fake.internals.incoming.window - windowAtTakeOver, `step ${step}: ssh2's count`).toBe(fake.granted() - MAX_WINDOW - arrivedTotal);
    }
    // The run did go through many adjusts.
    expect(fake.adjusts().length).toBeGreaterThan(10);
    expect(fake.adjustsAsSsh2()).toBe(true);
  });

  it("adjusts while the channel is at 'eof' (we sent EOF; the server still sends)", () => {
    const fake = fakeChannel();
    const credit = creditChannel(fake.hooks, LATENCY_CONTROL_WINDOW);
    fake.arrive(MAX_WINDOW);
    fake.internals.outgoing.state = 'eof';
    credit.consumed(MAX_WINDOW);
    expect(fake.adjusts()).toEqual([LATENCY_CONTROL_WINDOW]);
  });

  it.each(['closing', 'closed'])("sends no adjust once the channel is '%s'", (state) => {
    const fake = fakeChannel();
    const credit = creditChannel(fake.hooks, LATENCY_CONTROL_WINDOW);
    fake.arrive(MAX_WINDOW);
    credit.consumed(MAX_WINDOW / 2);
    fake.internals.outgoing.state = state;
    // What is drained after our close: room enough for several adjusts, none sent.
    credit.consumed(MAX_WINDOW / 2);
    expect(fake.adjusts()).toEqual([]);
  });
});

describe('ssh2Forward$ channel credit (ssh2-credit.ts)', () => {
  /** What ssh2's forwardOut grants the server when it opens the channel (its MAX_WINDOW). */
  const INITIAL_GRANT = 2 * 1024 * 1024;
  /** ssh2's largest channel packet. */
  const PACKET = 32 * 1024;
  const modes = [
    ['credit (LATENCY_CONTROL_WINDOW)', LATENCY_CONTROL_WINDOW],
    ["ssh2's own windowing (null)", null],
  ] as const;

  interface ServerWindow {
    /** Bytes the server's channel has sent (handed to its connection), whether or not they reached us yet. */
    sent(): number;
    /** Window adjusts that reached the server. */
    adjusts(): number;
    /** The smallest adjust (Infinity before the first). */
    leastAdjust(): number;
    /** The most the server was allowed to have in flight once an adjust had come (0 before the first). */
    mostAfterAdjust(): number;
  }

  /**
   * Watches the server's view of a channel's window: ssh2 keeps it in `outgoing.window`, lowers
   * it as the channel sends and raises it as each of our adjusts arrives, right before sending
   * again; watching every assignment sees each adjust and the allowance at its peak. What the
   * server sent is then what it was granted minus what it may still send: its own count, with no
   * timing of ours in it.
   */
  function watchServerWindow(channel: ServerChannel): ServerWindow {
    const outgoing = (channel as unknown as { outgoing: { window: number } }).outgoing;
    let window = outgoing.window;
    let granted = window;
    let adjusts = 0;
    let leastAdjust = Infinity;
    let mostAfterAdjust = 0;
    Object.defineProperty(outgoing, 'window', {
      configurable: true,
      enumerable: true,
      get: () => window,
      set: (value: number) => {
        if (value > window) {
          adjusts++;
          granted += value - window;
          leastAdjust = Math.min(leastAdjust, value - window);
          mostAfterAdjust = Math.max(mostAfterAdjust, value);
        }
        window = value;
      },
    });
    return { sent: () => granted - window, adjusts: () => adjusts, leastAdjust: () => leastAdjust, mostAfterAdjust: () => mostAfterAdjust };
  }

  /** A server streaming `data` into each channel as its window allows; resolves with the first channel, watched. */
  async function streamingServer(data: Buffer) {
    let opened: (channel: { channel: ServerChannel; window: ServerWindow; connection: Connection }) => void = () => {};
    const channel = new Promise<Parameters<typeof opened>[0]>((resolve) => (opened = resolve));
    const { port } = await lab.startServer({
      onTcpip: (accept, _reject, _info, connection) => {
        const accepted = accept();
        // Watched before the first write, so every byte sent is counted.
        const window = watchServerWindow(accepted);
        // Reads what we send (nothing): ssh2 emits a server channel's 'close' only after its 'end'.
        accepted.resume();
        stream(accepted, data);
        opened({ channel: accepted, window, connection });
      },
    });
    return { port, channel };
  }

  /** Resolves with `count()` once it is above 0 and has not changed for `quietMs`: the server sent all it may. */
  async function stalled(count: () => number, quietMs = 500, limitMs = 10_000): Promise<number> {
    let last = count();
    let since = Date.now();
    await waitUntil(
      () => {
        const now = count();
        if (now !== last) {
          last = now;
          since = Date.now();
        }
        return last > 0 && Date.now() - since >= quietMs;
      },
      { timeoutMs: limitMs, what: () => `the server to stall (sent ${count()})` },
    );
    return last;
  }

  /**
   * Streams 16 MiB to a program that reads nothing until the server has stalled, then reads it
   * all. Over a Unix socket pair, so that the kernel takes little off our socket meanwhile.
   */
  async function stoppedReader(receiveWindow: number | null) {
    const data = content(31, 16 * 1024 * 1024);
    const server = await streamingServer(data);
    const connection = await lab.connect(lab.configFor(server.port));
    const { program, accepted } = await lab.socketPair('unix');
    program.pause();
    const chunks: Buffer[] = [];
    program.on('data', (chunk: Buffer) => chunks.push(chunk));
    const ended = new Promise<void>((resolve) => program.once('end', () => resolve()));
    lab.forward(connection, accepted, destination, receiveWindow);
    const { window } = await server.channel;
    const whileStopped = await stalled(window.sent);
    // Bytes whose write to the program's socket completed (ssh2Forward$ credits them then).
    const inKernel = accepted.bytesWritten - accepted.writableLength;
    const adjustsWhileStopped = window.adjusts();
    program.resume();
    await ended;
    return { data, bytes: Buffer.concat(chunks), whileStopped, inKernel, adjustsWhileStopped, window };
  }

  it('with LATENCY_CONTROL_WINDOW: the server stalls at its initial grant while the program reads nothing, then never has more than the window to send', async () => {
    const { data, bytes, whileStopped, inKernel, adjustsWhileStopped, window } = await stoppedReader(LATENCY_CONTROL_WINDOW);
    // What the stall bound below rests on: the kernel took too little for any window to go back.
    expect(inKernel, 'bytes the kernel took off our socket').toBeLessThan(INITIAL_GRANT - LATENCY_CONTROL_WINDOW / 2);
    expect(adjustsWhileStopped, 'window adjusts while the program read nothing').toBe(0);
    expect(whileStopped, 'bytes the server sent while the program read nothing').toBeLessThanOrEqual(INITIAL_GRANT);
    // It did use its grant (else the stall says nothing).
    expect(whileStopped).toBeGreaterThan(INITIAL_GRANT - PACKET);
    expect(bytes.length).toBe(data.length);
    expect(firstDifference(bytes, data), 'first corrupted byte').toBe(-1);
    // After the initial grant, credit + unwritten <= the window: the server never may send more.
    expect(window.mostAfterAdjust(), 'most the server had to send after an adjust').toBeLessThanOrEqual(LATENCY_CONTROL_WINDOW);
    // In halves of the window, not an adjust per packet; enough of them to carry the rest.
    expect(window.leastAdjust()).toBeGreaterThanOrEqual(LATENCY_CONTROL_WINDOW / 2);
    expect(window.adjusts()).toBeGreaterThanOrEqual((data.length - INITIAL_GRANT) / LATENCY_CONTROL_WINDOW);
  }, 30_000);

  it("with null (ssh2's own windowing): ssh2 tops the window up on arrival, so far more reaches us while the program reads nothing", async () => {
    const { data, bytes, whileStopped, window } = await stoppedReader(null);
    // ssh2 tops up (back to 2 MiB when 1 MiB is left) until its channel buffers 2 MiB unread:
    // that 2 MiB, plus up to a packet short of a 1 MiB window still outstanding, plus what the
    // kernel and our socket hold. The credit test's bound is INITIAL_GRANT.
    expect(whileStopped, 'bytes the server sent while the program read nothing').toBeGreaterThanOrEqual(INITIAL_GRANT + INITIAL_GRANT / 2 - PACKET);
    // A top-up arrives with at most 1 MiB of the old window unused: at least 1 MiB to send.
    expect(window.mostAfterAdjust(), 'most the server had to send after an adjust').toBeGreaterThanOrEqual(INITIAL_GRANT / 2);
    expect(bytes.length).toBe(data.length);
    expect(firstDifference(bytes, data), 'first corrupted byte').toBe(-1);
  }, 30_000);

  it.each(modes)('%s: a download arrives intact through re-keys from both sides and a slow local reader', async (_name, receiveWindow) => {
    const total = 12 * 1024 * 1024;
    const data = content(32, total);
    const server = await streamingServer(data);
    const connection = await lab.connect(lab.configFor(server.port));
    let handshakes = 0;
    connection.client.on('handshake', () => handshakes++);
    const pair = await lab.socketPair();
    let serverSide: Connection | undefined;
    void server.channel.then(({ connection: c }) => (serverSide = c));
    const rekeyAt = rekeysAtQuarters(total, connection, () => serverSide);
    const received = slowReader(pair, {
      burst: 768 * 1024,
      restMs: 15,
      onProgress: rekeyAt,
    });
    lab.forward(connection, pair.accepted, destination, receiveWindow);
    const { bytes, backedUp } = await received;
    expect(backedUp).toBe(true);
    expect(bytes.length).toBe(total);
    expect(firstDifference(bytes, data), 'first corrupted byte').toBe(-1);
    expect(handshakes).toBe(3);
    const { window } = await server.channel;
    // Adjusts queued during a key exchange change nothing in the bound.
    if (receiveWindow !== null) expect(window.mostAfterAdjust(), 'most the server had to send after an adjust').toBeLessThanOrEqual(receiveWindow);
  }, 60_000);

  it.each(modes.flatMap(([name, receiveWindow]) => [
    [name, 'while the server waits for window (the program read nothing)', receiveWindow] as const,
    [name, 'after the program read 4 MiB, the stream flowing', receiveWindow] as const,
  ]))('%s: the channel closes and the forward completes when the program closes its socket %s', async (_name, when, receiveWindow) => {
    const total = 64 * 1024 * 1024;
    const server = await streamingServer(content(33, total));
    const connection = await lab.connect(lab.configFor(server.port));
    const { program, accepted } = await lab.socketPair('unix');
    program.pause();
    let read = 0;
    const readEnough = new Promise<void>((resolve) =>
      program.on('data', (chunk: Buffer) => {
        read += chunk.length;
        if (read >= 4 * 1024 * 1024) resolve();
      }),
    );
    const done = lastValueFrom(bounded(ssh2Forward$(connection, accepted, destination, receiveWindow), 10_000, 'forward').pipe(toArray()));
    const { channel, window } = await server.channel;
    const serverClosed = new Promise<void>((resolve) => channel.once('close', () => resolve()));
    if (when.startsWith('while')) await stalled(window.sent);
    else {
      program.resume();
      await readEnough;
    }
    program.destroy();
    const handOffs = await done;
    expect(kinds(handOffs)).toEqual(['opened', 'closed']);
    await serverClosed;
    // The server stopped short: the close, not the end of the stream, ended the channel.
    expect(window.sent()).toBeLessThan(total);
  }, 30_000);
});
