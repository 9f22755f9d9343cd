import { createRequire } from 'node:module';
import type { Client, ClientChannel } from 'ssh2';
import { describe, expect, it } from 'vitest';
import { creditChannel, LATENCY_CONTROL_WINDOW } from '../../src/transport/ssh2-credit.js';

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
 * channelWindowAdjust sends the adjust. Keeps a model of the server's side: what it was granted
 * (the initial window plus every adjust), what arrived, what the local program took.
 */
function fakeChannel() {
  const adjusts: number[] = [];
  let adjusted = 0;
  const protocol = {
    channelWindowAdjust(this: unknown, id: number, amount: number) {
      // ssh2's Protocol methods need their `this`.
      expect(this).toBe(protocol);
      expect(id).toBe(REMOTE_ID);
      adjusts.push(amount);
      adjusted += amount;
    },
  };
  const client = { _protocol: protocol };
  const channel = {
    incoming: { id: 0, window: MAX_WINDOW, packetSize: PACKET_SIZE, state: 'open' },
    outgoing: { id: REMOTE_ID, window: MAX_WINDOW, packetSize: PACKET_SIZE, state: 'open' },
    _client: client,
  };
  let arrived = 0;
  let written = 0;
  const granted = () => MAX_WINDOW + adjusted;
  return {
    client: client as unknown as Client,
    channel: channel as unknown as ClientChannel,
    internals: channel,
    clientInternals: client as { _protocol?: object },
    adjusts,
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
    expect(creditChannel(fake.client, fake.channel, LATENCY_CONTROL_WINDOW)).toBeDefined();
    for (let at = 0; at < MAX_WINDOW; at += PACKET_SIZE) fake.arrive(PACKET_SIZE);
    expect(fake.adjusts).toEqual([]);
    // The channel's own count stays above 0: ssh2 drops data that arrives on a window of 0.
    expect(fake.internals.incoming.window).toBeGreaterThan(0);
  });

  it.each([LATENCY_CONTROL_WINDOW, 100_000])('window %d: no adjust while room < window/2; the first one makes credit + unwritten == window', (window) => {
    const fake = fakeChannel();
    const credit = creditChannel(fake.client, fake.channel, window);
    if (!credit) return expect.fail('creditChannel: undefined');
    // The server sends its whole initial grant; nothing written yet: no room at all.
    fake.arrive(MAX_WINDOW);
    // room = window - credit (0) - unwritten (MAX_WINDOW - written): half the window once
    // all but half a window is written. One byte short of that: still nothing.
    const threshold = MAX_WINDOW - Math.ceil(window / 2);
    fake.write(threshold - 1);
    credit.consumed(threshold - 1);
    expect(fake.adjusts).toEqual([]);
    fake.write(1);
    credit.consumed(1);
    expect(fake.adjusts).toEqual([Math.ceil(window / 2)]);
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
    const credit = creditChannel(fake.client, fake.channel, window);
    if (!credit) return expect.fail('creditChannel: undefined');
    const windowAtTakeOver = fake.internals.incoming.window;
    const rand = random(seed);
    let arrivedTotal = 0;
    for (let step = 0; step < 20_000; step++) {
      const adjustsBefore = fake.adjusts.length;
      if (rand(2) === 0) {
        // The server sends at most what it was granted, in packets of up to 32 KiB.
        const bytes = Math.min(fake.credit(), 1 + rand(PACKET_SIZE));
        if (bytes === 0) continue;
        fake.arrive(bytes);
        arrivedTotal += bytes;
        // Window goes back only as the program takes data, never on arrival.
        expect(fake.adjusts.length, `step ${step}: adjust on arrival`).toBe(adjustsBefore);
      } else {
        // The socket writes part of what is unwritten (a chunk, or what is left of one).
        const bytes = Math.min(fake.unwritten(), 1 + rand(PACKET_SIZE));
        if (bytes === 0) continue;
        fake.write(bytes);
        credit.consumed(bytes);
        if (fake.adjusts.length > adjustsBefore) {
          expect(fake.adjusts.length, `step ${step}: one adjust per consumed()`).toBe(adjustsBefore + 1);
          // In halves of the window at least: not an adjust per packet.
          expect(fake.adjusts.at(-1), `step ${step}: adjust amount`).toBeGreaterThanOrEqual(window / 2);
          expect(fake.credit() + fake.unwritten(), `step ${step}: credit + unwritten after an adjust`).toBe(window);
        }
        // All written and the server out of window would leave both sides waiting.
        if (fake.unwritten() === 0) expect(fake.credit(), `step ${step}: credit with nothing unwritten`).toBeGreaterThanOrEqual(window / 2);
      }
      const bound = fake.adjusts.length === 0 ? Math.max(MAX_WINDOW, window) : window;
      expect(fake.credit() + fake.unwritten(), `step ${step}: credit + unwritten`).toBeLessThanOrEqual(bound);
      // ssh2's own count moves with ours (down on arrival, up by our adjusts), far from 0.
      expect(fake.internals.incoming.window - windowAtTakeOver, `step ${step}: ssh2's count`).toBe(fake.granted() - MAX_WINDOW - arrivedTotal);
    }
    // The run did go through many adjusts.
    expect(fake.adjusts.length).toBeGreaterThan(10);
  });

  it("adjusts while the channel is at 'eof' (we sent EOF; the server still sends)", () => {
    const fake = fakeChannel();
    const credit = creditChannel(fake.client, fake.channel, LATENCY_CONTROL_WINDOW);
    fake.arrive(MAX_WINDOW);
    fake.internals.outgoing.state = 'eof';
    credit?.consumed(MAX_WINDOW);
    expect(fake.adjusts).toEqual([LATENCY_CONTROL_WINDOW]);
  });

  it.each(['closing', 'closed'])("sends no adjust once the channel is '%s'", (state) => {
    const fake = fakeChannel();
    const credit = creditChannel(fake.client, fake.channel, LATENCY_CONTROL_WINDOW);
    fake.arrive(MAX_WINDOW);
    credit?.consumed(MAX_WINDOW / 2);
    fake.internals.outgoing.state = state;
    // What is drained after our close: room enough for several adjusts, none sent.
    credit?.consumed(MAX_WINDOW / 2);
    expect(fake.adjusts).toEqual([]);
  });

  it.each<[string, (fake: ReturnType<typeof fakeChannel>) => void]>([
    ['no incoming', (fake) => Reflect.deleteProperty(fake.internals, 'incoming')],
    ['incoming.window not a number', (fake) => Reflect.set(fake.internals.incoming, 'window', undefined)],
    ['no outgoing', (fake) => Reflect.deleteProperty(fake.internals, 'outgoing')],
    ['outgoing.id not a number', (fake) => Reflect.set(fake.internals.outgoing, 'id', undefined)],
    ['no _protocol', (fake) => Reflect.deleteProperty(fake.clientInternals, '_protocol')],
    ['no channelWindowAdjust', (fake) => Reflect.deleteProperty(fake.clientInternals._protocol ?? {}, 'channelWindowAdjust')],
  ])("returns undefined with %s, leaving the window to ssh2", (_name, breakIt) => {
    const fake = fakeChannel();
    breakIt(fake);
    const before = fake.internals.incoming?.window;
    expect(creditChannel(fake.client, fake.channel, LATENCY_CONTROL_WINDOW)).toBeUndefined();
    // Untouched: ssh2's top-up (at 1 MiB left) still works on it.
    expect(fake.internals.incoming?.window).toBe(before);
  });
});
