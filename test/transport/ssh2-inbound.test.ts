// Ssh2Inbound with a stand-in for ssh2 (its payload hook and channel table) in front of a real
// Readable: what is held, released and tainted as payloads arrive; with ssh2's own AES-GCM
// decipher; and downloads through ssh2Forward$ from an in-process ssh2 server on reused memory.

import { randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import { Readable } from 'node:stream';
import type { ClientChannel, Connection } from 'ssh2';
import { describe, expect, it } from 'vitest';
import { SLAB_BYTES } from '../../src/transport/slabs.js';
import { Ssh2Inbound } from '../../src/transport/ssh2-inbound.js';
import { fakeSsh2Client, withChannelFields } from './fake-ssh2.js';
import { destination, rekeysAtQuarters, slowReader, stream, useSsh2Lab } from './ssh2-lab.js';
import { content, firstDifference } from './test-data.js';

/** The in-process ssh server and connections the ssh2Forward$ tests below run against (ssh2-lab.ts). */
const lab = useSsh2Lab();

const CHANNEL_DATA = 94;

/**
 * A kept channel (a real Readable, flowing, its chunks released as a socket would) behind ssh2's
 * hook; with `copied`, a channel whose chunks are copied instead (as the server's session).
 */
function setup(copied = false) {
  const inbound = new Ssh2Inbound();
  const channel = withChannelFields(new Readable({ read() {} }));
  channel.on('error', () => {}); // ERR_STREAM_PUSH_AFTER_EOF
  const { hooks, payloadHandler } = fakeSsh2Client(channel);
  inbound.hook(hooks);
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

describe('ssh2Forward$ on reused read memory', () => {
  it('delivers a download intact through re-keys from both sides and a slow local reader, reusing slabs', async () => {
    const total = 12 * 1024 * 1024;
    const data = content(1, total);
    let serverSide: Connection | undefined;
    const { port } = await lab.startServer({
      onTcpip: (accept, _reject, _info, connection) => {
        serverSide = connection;
        stream(accept(), data);
      },
    });
    const connection = await lab.connect(lab.configFor(port));
    let handshakes = 0;
    connection.client.on('handshake', () => handshakes++);
    const pair = await lab.socketPair();
    const rekeyAt = rekeysAtQuarters(total, connection, () => serverSide);
    const received = slowReader(pair, {
      burst: 1024 * 1024,
      restMs: 20,
      onProgress: rekeyAt,
    });
    lab.forward(connection, pair.accepted, destination);
    const { bytes, backedUp } = await received;
    expect(backedUp).toBe(true);
    expect(bytes.length).toBe(total);
    expect(firstDifference(bytes, data), 'first corrupted byte').toBe(-1);
    expect(handshakes).toBe(3);
    const inbound = connection.inbound as Ssh2Inbound;
    expect(inbound.reusing).toBe(true);
    expect(inbound.stats.reused).toBeGreaterThan(0);
    // What was read during the key exchanges is never reused.
    expect(inbound.stats.tainted).toBeGreaterThan(0);
  }, 60_000);

  it('gives each of two simultaneous forwards its own stream, intact', async () => {
    const total = 6 * 1024 * 1024;
    const dataFor = (port: number) => content(port, total);
    const { port } = await lab.startServer({ onTcpip: (accept, _reject, info) => stream(accept(), dataFor(info.destPort)) });
    const connection = await lab.connect(lab.configFor(port));
    const first = await lab.socketPair();
    const second = await lab.socketPair();
    // Different rhythms, so their chunks interleave differently in the slabs.
    const receivedFirst = slowReader(first, { burst: 512 * 1024, restMs: 10 });
    const receivedSecond = slowReader(second, { burst: 1536 * 1024, restMs: 25 });
    lab.forward(connection, first.accepted, { ...destination, port: 81 });
    lab.forward(connection, second.accepted, { ...destination, port: 82 });
    const [firstReceived, secondReceived] = await Promise.all([receivedFirst, receivedSecond]);
    expect(firstReceived.backedUp || secondReceived.backedUp).toBe(true);
    expect(firstDifference(firstReceived.bytes, dataFor(81)), 'first corrupted byte of the first').toBe(-1);
    expect(firstDifference(secondReceived.bytes, dataFor(82)), 'first corrupted byte of the second').toBe(-1);
    expect((connection.inbound as Ssh2Inbound).stats.reused).toBeGreaterThan(0);
  }, 60_000);
});

describe("Ssh2Inbound with ssh2's own AES-GCM decipher", () => {
  interface Ssh2Crypto {
    CIPHER_INFO: Record<string, { keyLen: number; ivLen: number }>;
    createCipher(config: object): { allocPacket(payloadLength: number): Buffer; encrypt(packet: Buffer): void };
    createDecipher(config: object): { decrypt(data: Buffer, start: number, end: number): void };
  }
  const sshCrypto = createRequire(import.meta.url)('ssh2/lib/protocol/crypto.js') as Ssh2Crypto;
  const CHANNEL_DATA = 94;
  const CHUNK = 32 * 1024;
  const TAG = 16;

  /**
   * The server's CHANNEL_DATA packets for channel 0, each CHUNK bytes of `data`, encrypted as
   * ssh2 does; each packet is [length][encrypted body][16-byte tag].
   */
  function encrypt(data: Buffer, keys: { cipherKey: Buffer; cipherIV: Buffer }): Buffer[] {
    const packets: Buffer[] = [];
    const cipher = sshCrypto.createCipher({
      outbound: { onWrite: (packet: Buffer) => packets.push(Buffer.from(packet)), seqno: 0, cipherInfo: sshCrypto.CIPHER_INFO['aes128-gcm@openssh.com'], ...keys },
    });
    for (let at = 0; at < data.length; at += CHUNK) {
      const chunk = data.subarray(at, at + CHUNK);
      const packet = cipher.allocPacket(9 + chunk.length);
      packet[5] = CHANNEL_DATA;
      packet.writeUInt32BE(0, 6);
      packet.writeUInt32BE(chunk.length, 10);
      chunk.copy(packet, 14);
      cipher.encrypt(packet);
    }
    return packets;
  }

  /**
   * Feeds the packets to Ssh2Inbound and ssh2's decipher one read at a time, each read ending
   * `tagInNextRead` ? just before a packet's tag (so ssh2 completes that packet while the next
   * read is passed on) : just after it. The local socket takes chunks at once, except that,
   * when not congested already, it congests as the first chunk completed in a read into a new
   * slab arrives, and drains 40 reads later. Returns what the socket wrote, and which chunks
   * had changed by the time it wrote them.
   */
  function download(data: Buffer, tagInNextRead: boolean): { written: Buffer; corrupted: number[] } {
    const keys = { cipherKey: randomBytes(16), cipherIV: randomBytes(12) };
    const wire = encrypt(data, keys);
    const inbound = new Ssh2Inbound();
    const channel = withChannelFields({ push: (_chunk: Buffer): boolean => true });
    const { hooks, payloadHandler } = fakeSsh2Client(channel);
    inbound.hook(hooks);
    inbound.keyExchangeDone();
    expect(inbound.reusing).toBe(true);
    const queue: { chunk: Buffer; index: number }[] = [];
    const written: Buffer[] = [];
    const corrupted: number[] = [];
    let pushed = 0;
    let congestedFor = 0;
    let congestNow = false;
    const write = ({ chunk, index }: { chunk: Buffer; index: number }) => {
      if (!chunk.equals(data.subarray(index * CHUNK, (index + 1) * CHUNK))) corrupted.push(index);
      written.push(Buffer.from(chunk));
      inbound.release(chunk);
    };
    const originalPush = channel.push;
    channel.push = (chunk: Buffer) => {
      queue.push({ chunk, index: pushed++ });
      if (congestNow && congestedFor === 0) congestedFor = 40;
      congestNow = false;
      return originalPush(chunk);
    };
    inbound.keepChunks(channel as unknown as ClientChannel);
    const decipher = sshCrypto.createDecipher({
      inbound: { onPayload: payloadHandler(), seqno: 0, decipherInfo: sshCrypto.CIPHER_INFO['aes128-gcm@openssh.com'], decipherKey: keys.cipherKey, decipherIV: keys.cipherIV },
    });
    const stream = Buffer.concat(wire);
    // Where each read ends: before or after each packet's tag.
    const ends: number[] = [];
    let at = 0;
    for (const packet of wire) {
      at += packet.length;
      ends.push(tagInNextRead ? at - TAG : at);
    }
    ends.push(stream.length);
    let start = 0;
    let lastSlab: ArrayBufferLike | undefined;
    for (const end of ends) {
      if (end <= start) continue;
      const region = inbound.nextBuffer();
      expect(end - start).toBeLessThanOrEqual(region.length);
      stream.copy(region, 0, start, end);
      congestNow = lastSlab !== undefined && region.buffer !== lastSlab;
      lastSlab = region.buffer;
      inbound.read(end - start, (view) => decipher.decrypt(view, 0, view.length));
      start = end;
      if (congestedFor > 0) congestedFor--;
      if (congestedFor === 0) for (const queued of queue.splice(0)) write(queued);
    }
    for (const queued of queue.splice(0)) write(queued);
    expect(inbound.stats.reused).toBeGreaterThan(0);
    return { written: Buffer.concat(written), corrupted };
  }

  it.each([
    ['just after the tag', false],
    ['just before the tag (ssh2 keeps a view of the body until the tag comes in the next read)', true],
  ])('keeps chunks intact while the local socket congests, with reads ending %s', (_name, tagInNextRead) => {
    const data = content(7, 6 * 1024 * 1024);
    const { written, corrupted } = download(data, tagInNextRead);
    expect(corrupted, 'chunks that were overwritten before the socket wrote them').toEqual([]);
    expect(firstDifference(written, data)).toBe(-1);
  });
});
