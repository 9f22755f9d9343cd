// Ssh2Inbound with a stand-in for ssh2 (its payload hook and channel table) in front of a real
// Readable: what is held, released and tainted as payloads arrive.
import { Readable } from 'node:stream';
import type { ClientChannel } from 'ssh2';
import { describe, expect, it } from 'vitest';
import { SLAB_BYTES } from '../../src/transport/slabs.js';
import { Ssh2Inbound } from '../../src/transport/ssh2-inbound.js';
import { fakeSsh2Client } from './fake-ssh2.js';

const CHANNEL_DATA = 94;

/**
 * A kept channel (a real Readable, flowing, its chunks released as a socket would) behind ssh2's
 * hook; with `copied`, a channel whose chunks are copied instead (as the server's session).
 */
function setup(copied = false) {
  const inbound = new Ssh2Inbound();
  const channel = new Readable({ read() {} });
  channel.on('error', () => {}); // ERR_STREAM_PUSH_AFTER_EOF
  const { client, payloadHandler } = fakeSsh2Client(channel);
  inbound.hook(client);
  inbound.keyExchangeDone();
  if (copied) inbound.copyChunks(channel as unknown as ClientChannel);
  else inbound.keepChunks(channel as unknown as ClientChannel);
  channel.on('data', (chunk: Buffer) => inbound.release(chunk));
  /** One read holding one CHANNEL_DATA payload of `length` bytes (the read is the payload, for brevity). */
  const read = (length: number) => {
    const region = inbound.nextBuffer();
    const size = Math.min(region.length, 9 + length);
    region[0] = CHANNEL_DATA;
    region.writeUInt32BE(0, 1);
    region.writeUInt32BE(size - 9, 5);
    inbound.read(size, (view) => payloadHandler()(view));
    return region.buffer;
  };
  const tracked = () => (inbound as unknown as { slabs: { slabs: Map<ArrayBufferLike, { holds: number }> } }).slabs.slabs;
  return { inbound, channel, payloadHandler, read, tracked };
}

async function fillSlabs(read: (n: number) => ArrayBufferLike, count: number): Promise<Set<ArrayBufferLike>> {
  const seen = new Set<ArrayBufferLike>();
  for (let i = 0; i < (count * SLAB_BYTES) / (200 * 1024); i++) {
    seen.add(read(200 * 1024));
    await new Promise((r) => setImmediate(r)); // let the flowing Readable emit (and release)
  }
  return seen;
}

describe('Ssh2Inbound holds', () => {
  it.each([
    ['a zero-length CHANNEL_DATA', (s: ReturnType<typeof setup>) => s.read(0)],
    ["CHANNEL_DATA after the server's EOF", (s: ReturnType<typeof setup>) => (s.channel.push(null), s.read(100))],
  ])('%s, which the stream drops, holds nothing: its slab is used again', async (_name, drop) => {
    const s = setup();
    await fillSlabs(s.read, 1);
    const dropped = drop(s);
    await fillSlabs(s.read, 12);
    // Reused (tracked again, unheld) or free: not stuck with a hold nobody will release.
    expect(s.tracked().get(dropped)?.holds ?? 0).toBeLessThanOrEqual(1);
    expect(s.inbound.stats.allocated).toBeLessThanOrEqual(3);
  });

  it('leaves slabs untainted for messages ssh2 keeps nothing of (EOF, CLOSE, window adjust, …) and taints for others', () => {
    const s = setup();
    const message = (type: number) => {
      const region = s.inbound.nextBuffer();
      region[0] = type;
      region.writeUInt32BE(0, 1);
      region.writeUInt32BE(0, 5);
      s.inbound.read(64 * 1024, (view) => s.payloadHandler()(view.subarray(0, 9)));
    };
    for (const type of [82, 91, 93, 96, 97, 99, 100]) message(type);
    expect(s.inbound.stats.tainted).toBe(0);
    // A global request (80) may keep what it carries.
    message(80);
    expect(s.inbound.stats.tainted).toBe(1);
  });

  it("copies a copied channel's chunks off the slabs: they taint nothing and outlive the slab's reuse", async () => {
    const s = setup(true);
    const chunks: Buffer[] = [];
    s.channel.on('data', (chunk: Buffer) => chunks.push(chunk));
    await fillSlabs(s.read, 12);
    expect(s.inbound.stats.tainted).toBe(0);
    expect(s.inbound.stats.reused).toBeGreaterThan(0);
    // Each chunk a copy of its own (200 KiB: not from Node's small pool), no slab behind it.
    expect(chunks.length).toBeGreaterThan(0);
    expect(chunks.every((chunk) => chunk.buffer.byteLength === chunk.byteLength)).toBe(true);
  });
});
