import { randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import type { Socket } from 'node:net';
import type { Algorithms, CipherAlgorithm, Connection, MacAlgorithm, NegotiatedAlgorithms, ServerChannel } from 'ssh2';
import { beforeAll, describe, expect, it, vi } from 'vitest';
import { sshRandomFill } from '../../src/transport/random-pool.js';
import { SLAB_BYTES } from '../../src/transport/slabs.js';
import type { Ssh2Connection } from '../../src/transport/ssh2.js';
import { type Ssh2Cipher, ssh2Cipher } from '../../src/transport/ssh2-internals.js';
import { MIN_SLAB_PAYLOAD, Ssh2Outbound } from '../../src/transport/ssh2-outbound.js';
import { clientRekey, destination, useSsh2Lab } from './ssh2-lab.js';
import { content, firstDifference, prng } from './test-data.js';

/** The in-process ssh server and connections the ssh2Forward$ tests below run against (ssh2-lab.ts). */
const lab = useSsh2Lab();

/** The parts of ssh2's protocol internals these tests drive (not in its typings). */
interface CipherInfo {
  sslName: string;
  keyLen: number;
  ivLen: number;
  authLen: number;
}
interface MacInfo {
  len: number;
}
interface Ssh2CipherObject {
  allocPacket(payloadLength: number): Buffer;
  encrypt(packet: Buffer): void;
  free(): void;
}
interface Ssh2Crypto {
  bindingAvailable: boolean;
  init: Promise<void>;
  CIPHER_INFO: Record<string, CipherInfo>;
  MAC_INFO: Record<string, MacInfo>;
  NullCipher: new (seqno: number, onWrite: (packet: Buffer) => void) => Ssh2CipherObject;
  createCipher(config: object): Ssh2CipherObject;
  createDecipher(config: object): { decrypt(data: Buffer, start: number, end: number): void; free(): void };
}

const require = createRequire(import.meta.url);
const sshCrypto = require('ssh2/lib/protocol/crypto.js') as Ssh2Crypto;
/** What ssh2 can negotiate at all (its defaults, and what may be configured). */
const { SUPPORTED_CIPHER, SUPPORTED_MAC } = require('ssh2/lib/protocol/constants.js') as { SUPPORTED_CIPHER: string[]; SUPPORTED_MAC: string[] };
/** Whether ssh2 has its compiled binding: only its ciphers encrypt in place, in the packet allocPacket made. */
const binding = sshCrypto.bindingAvailable;
const mode = binding ? "ssh2's binding: packets in slabs" : "WITHOUT ssh2's binding: packets in fresh memory";

// ChaCha20-Poly1305 without the binding needs ssh2's poly1305 (WebAssembly), loaded asynchronously.
beforeAll(() => sshCrypto.init);

interface Written {
  /** The packet as the socket would have sent it. */
  readonly bytes: Buffer;
  /** Whether it was one of ours (in a reused slab). */
  readonly owned: boolean;
}

/**
 * ssh2's cipher for `cipher` (+ `mac`) and a decipher with the same keys, as a key exchange would
 * make them. Each packet the cipher writes is copied, and then released as ssh2-socket.ts's
 * write callback would (if ours). `reference`: another cipher like it, never taken over.
 */
function ssh2Pair(outbound: Ssh2Outbound, cipher: string, mac: string | undefined, forceNative = false) {
  const cipherInfo = sshCrypto.CIPHER_INFO[cipher];
  if (!cipherInfo) throw new Error(`unknown cipher ${cipher}`);
  const macInfo = mac === undefined ? undefined : sshCrypto.MAC_INFO[mac];
  const cipherKey = randomBytes(cipherInfo.keyLen);
  const cipherIV = randomBytes(cipherInfo.ivLen);
  const macKey = macInfo ? randomBytes(macInfo.len) : undefined;
  const written: Written[] = [];
  const onWrite = (packet: Buffer) => {
    written.push({ bytes: Buffer.from(packet), owned: outbound.owns(packet) });
    if (outbound.owns(packet)) outbound.released(packet);
  };
  const keys = { seqno: 0, cipherInfo, cipherKey, cipherIV, macInfo, macKey, forceNative };
  const payloads: Buffer[] = [];
  const decipher = sshCrypto.createDecipher({
    inbound: { onPayload: (payload: Buffer) => void payloads.push(Buffer.from(payload)), seqno: 0, decipherInfo: cipherInfo, decipherKey: cipherKey, decipherIV: cipherIV, macInfo, macKey },
  });
  return {
    cipher: sshCrypto.createCipher({ outbound: { onWrite, ...keys } }),
    reference: sshCrypto.createCipher({ outbound: { onWrite: () => {}, ...keys } }),
    written,
    /** What the peer decrypts of everything written so far. */
    received: (): Buffer[] => {
      const wire = Buffer.concat(written.map((w) => w.bytes));
      decipher.decrypt(wire, 0, wire.length);
      return payloads;
    },
  };
}

/** ssh2's cipher object as Ssh2Hooks.cipher() hands it on after a key exchange: checked, or undefined. */
const checked = (cipher: unknown): Ssh2Cipher | undefined => {
  const found = ssh2Cipher(cipher);
  return typeof found === 'string' ? undefined : found;
};

/** Every cipher ssh2 can negotiate, each non-AEAD one with every MAC it can. */
const combinations: { name: string; cipher: string; mac?: string }[] = SUPPORTED_CIPHER.flatMap((cipher) =>
  sshCrypto.CIPHER_INFO[cipher]?.authLen ? [{ name: cipher, cipher }] : SUPPORTED_MAC.map((mac) => ({ name: `${cipher} + ${mac}`, cipher, mac })),
);

describe('Ssh2Outbound.takeOverCipher with ssh2 ciphers', () => {
  it('covers the ciphers and MACs ssh2 negotiates by default', () => {
    const names = combinations.map((c) => c.name);
    for (const name of ['aes128-gcm@openssh.com', 'chacha20-poly1305@openssh.com', 'aes128-ctr + hmac-sha2-256', 'aes128-ctr + hmac-sha2-256-etm@openssh.com']) {
      expect(names).toContain(name);
    }
  });

  it.each(combinations)(`$name (${mode}): packets laid out as ssh2's own, in reused slabs where ssh2 encrypts in place, decrypt to what was sent`, ({ cipher, mac }) => {
    let fills = 0;
    const outbound = new Ssh2Outbound((buffer, offset, size) => (fills++, sshRandomFill(buffer, offset, size)));
    const ssh2 = ssh2Pair(outbound, cipher, mac);
    const own = ssh2.cipher.allocPacket;
    // A truncated MAC (-96) is written as another view of the packet: fresh memory for those.
    const taken = binding && !mac?.endsWith('-96');
    expect(outbound.takeOverCipher(checked(ssh2.cipher)), mode).toBe(taken ? 'slabs' : 'fresh');
    expect(ssh2.cipher.allocPacket).not.toBe(own);
    fills = 0;
    // The layout: total length, packet length field, padding length, for every payload size
    // (each block-size residue, and large ones up to beyond a quarter slab).
    const sizes = [...Array.from({ length: 80 }, (_, i) => i), 1000, 16 * 1024, 32 * 1024 + 9, 34_000, SLAB_BYTES / 4, SLAB_BYTES / 4 + 1];
    for (const size of sizes) {
      const ours = ssh2.cipher.allocPacket(size);
      const theirs = ssh2.reference.allocPacket(size);
      expect([ours.length, ours.readUInt32BE(0), ours[4]], `payload of ${size}`).toEqual([theirs.length, theirs.readUInt32BE(0), theirs[4]]);
      // In a slab if not small and it fits in a quarter of one (room for ssh2's MAC or tag included).
      expect(outbound.owns(ours), `payload of ${size}`).toBe(taken && size >= MIN_SLAB_PAYLOAD && ours.length <= SLAB_BYTES / 4);
      outbound.released(ours);
    }
    // Packets as ssh2 sends them: allocated, payload written after the 5-byte header, encrypted
    // in place, written; the peer must read back every payload.
    const random = prng(cipher.length * 31 + (mac?.length ?? 0));
    const payloads = Array.from({ length: 120 }, (_, i) => {
      const size = random() < 0.5 ? Math.floor(random() * 200) : Math.floor(random() * 34_000);
      return Buffer.alloc(size, i + 1);
    });
    for (const payload of payloads) {
      const packet = ssh2.cipher.allocPacket(payload.length);
      payload.copy(packet, 5);
      ssh2.cipher.encrypt(packet);
    }
    expect(ssh2.written.length).toBeGreaterThanOrEqual(payloads.length);
    if (taken) expect(ssh2.written.every((w, i) => w.owned === (taken && (payloads[i]?.length ?? 0) >= MIN_SLAB_PAYLOAD))).toBe(true);
    else expect(ssh2.written.filter((w) => w.owned)).toEqual([]);
    // Every packet's padding came from our pool, not from a call of Node's randomFillSync each.
    expect(fills).toBe(sizes.length + payloads.length);
    const received = ssh2.received();
    expect(received.length).toBe(payloads.length);
    expect(received.every((payload, i) => payloads[i]?.equals(payload)), 'payloads the peer decrypted').toBe(true);
    if (taken) {
      // ~2 MiB of packets, each released once written: two slabs in turn.
      expect(outbound.stats.allocated).toBeLessThanOrEqual(2);
      expect(outbound.stats.reused).toBeGreaterThan(0);
    } else {
      expect(outbound.stats).toEqual({ allocated: 1, reused: 0, tainted: 0 });
    }
  });

  it('takes over each new cipher after a key exchange; packets of the old one still in flight stay intact', () => {
    const outbound = new Ssh2Outbound(sshRandomFill);
    const first = ssh2Pair(outbound, 'aes128-gcm@openssh.com', undefined);
    const second = ssh2Pair(outbound, 'aes128-ctr', 'hmac-sha2-256-etm@openssh.com');
    expect(outbound.takeOverCipher(checked(first.cipher)), mode).toBe(binding ? 'slabs' : 'fresh');
    // A packet of the first cipher, not yet written (a socket that has not drained).
    const pending = first.cipher.allocPacket(20_000);
    pending.fill(7, 5, 5 + 20_000);
    const expected = Buffer.from(pending);
    expect(outbound.takeOverCipher(checked(second.cipher)), mode).toBe(binding ? 'slabs' : 'fresh');
    for (let i = 0; i < 200; i++) {
      const packet = second.cipher.allocPacket(30_000);
      packet.fill(i, 5, 5 + 30_000);
      second.cipher.encrypt(packet);
    }
    expect(pending.equals(expected), 'a packet of the previous cipher was overwritten before it was written').toBe(true);
    first.cipher.encrypt(pending);
    expect(first.received()).toEqual([Buffer.alloc(20_000, 7)]);
    expect(second.received()).toHaveLength(200);
  });

  it.each([
    ['aes128-gcm@openssh.com', undefined],
    ['chacha20-poly1305@openssh.com', undefined],
    ['aes128-ctr', 'hmac-sha2-256'],
  ])("lays out the packets of ssh2's ciphers without the binding (forceNative) in fresh memory: %s %s", (cipher, mac) => {
    const outbound = new Ssh2Outbound(sshRandomFill);
    const ssh2 = ssh2Pair(outbound, cipher, mac, true);
    const own = ssh2.cipher.allocPacket;
    expect(outbound.takeOverCipher(checked(ssh2.cipher))).toBe('fresh');
    expect(ssh2.cipher.allocPacket).not.toBe(own);
    for (const size of [100, 30_000]) {
      const packet = ssh2.cipher.allocPacket(size);
      packet.fill(1, 5, 5 + size);
      ssh2.cipher.encrypt(packet);
    }
    expect(ssh2.written.every((w) => !w.owned)).toBe(true);
    expect(ssh2.received()).toEqual([Buffer.alloc(100, 1), Buffer.alloc(30_000, 1)]);
    expect(outbound.stats).toEqual({ allocated: 1, reused: 0, tainted: 0 });
  });

  it('finds no cipher to take over before the first key exchange (NullCipher) or without one', () => {
    const outbound = new Ssh2Outbound(sshRandomFill);
    const none = new sshCrypto.NullCipher(0, () => {});
    const own = none.allocPacket;
    expect(ssh2Cipher(none)).toMatch(/NullCipher/);
    expect(outbound.takeOverCipher(checked(none))).toBeUndefined();
    expect(none.allocPacket).toBe(own);
    expect(ssh2Cipher(undefined)).toMatch(/allocPacket/);
  });

  it('leaves alone a cipher whose packets are laid out otherwise than expected', () => {
    const outbound = new Ssh2Outbound(sshRandomFill);
    // Named as ssh2's AES-GCM binding cipher, but padding to 8-byte blocks.
    class AESGCMCipherBinding {
      allocPacket(payloadLength: number): Buffer {
        let length = 5 + payloadLength;
        let padding = 8 - ((length - 4) & 7);
        if (padding < 4) padding += 8;
        length += padding;
        const packet = Buffer.alloc(length + 16);
        packet.writeUInt32BE(length - 4, 0);
        packet[4] = padding;
        return packet;
      }
    }
    const odd = new AESGCMCipherBinding();
    const own = odd.allocPacket;
    expect(outbound.takeOverCipher(checked(odd))).toBeUndefined();
    expect(odd.allocPacket).toBe(own);
    // Named as the generic one, without the fields its layout is read from: the check finds no cipher.
    class GenericCipherBinding {
      allocPacket = (payloadLength: number) => Buffer.alloc(payloadLength + 64);
    }
    expect(ssh2Cipher(new GenericCipherBinding())).toMatch(/GenericCipherBinding without/);
  });
});

describe('ssh2Forward$ uploads from reused packet memory (Ssh2Outbound)', () => {
  const uploadMode = binding
    ? "with ssh2's binding: every cipher taken over, packets in reused slabs"
    : "WITHOUT ssh2's binding: every cipher taken over, packets in fresh memory";
  /** What takeOverCipher returns for every cipher here. */
  const takenAs = binding ? 'slabs' : 'fresh';
  /**
   * The most slabs an upload may need: packets wait in our socket's buffer until written, each
   * keeping its slab. Local reads pause once more than SEND_QUEUE_HIGH (512 KiB) wait there or
   * CHANNEL_QUEUE_HIGH (256 KiB) wait in the channel (ssh2-socket.ts, ssh2-forward.ts); add a read of 64 KiB
   * that was under way, the slab being filled, and one partly before the first waiting packet.
   */
  const MOST_SLABS = Math.ceil((512 * 1024 + 256 * 1024 + 64 * 1024) / SLAB_BYTES) + 2;

  /**
   * Follows Ssh2Outbound.takeOverCipher (called after each key exchange): what each call
   * returned, and the connection's Ssh2Outbound (ssh2Connection$ keeps it to itself).
   */
  function watchOutbound() {
    const spy = vi.spyOn(Ssh2Outbound.prototype, 'takeOverCipher');
    lab.cleanups.push(() => spy.mockRestore());
    return {
      returned: () => spy.mock.results.map((result) => (result.type === 'return' ? result.value : result.type)),
      outbound: (): Ssh2Outbound => {
        const instances = [...new Set(spy.mock.contexts)];
        expect(instances).toHaveLength(1);
        return instances[0] as Ssh2Outbound;
      },
    };
  }

  /** Slabs holding packets not yet written (the current one included): PacketSlabs' own count, read for the test. */
  const slabsInUse = (outbound: Ssh2Outbound): number =>
    (outbound as unknown as { slabs: { slabs: Map<ArrayBufferLike, unknown> } }).slabs.slabs.size;

  /** The server's side: collects what comes through a channel; `onProgress` sees the count after each chunk. */
  function collect(channel: ServerChannel, onProgress?: (bytes: number) => void): Promise<Buffer> {
    return new Promise((resolve) => {
      const chunks: Buffer[] = [];
      let received = 0;
      channel.on('error', () => {});
      channel.on('data', (chunk: Buffer) => {
        chunks.push(Buffer.from(chunk));
        received += chunk.length;
        onProgress?.(received);
      });
      channel.once('end', () => {
        channel.end();
        resolve(Buffer.concat(chunks));
      });
    });
  }

  /**
   * Holds our socket's writes back for `ms`, as a stalled network would: packets back up in its
   * buffer, each keeping its slab until written. `queued` gets how many bytes had backed up.
   */
  function stallWrites(connection: Ssh2Connection, ms: number, queued?: (bytes: number) => void): void {
    // ssh2's Client keeps the socket it was given (ssh2Connection$'s, with its write wrapped).
    const socket = (connection.client as unknown as { _sock: Socket })._sock;
    socket.cork();
    setTimeout(() => {
      queued?.(socket.writableLength);
      socket.uncork();
    }, ms);
  }

  /** An in-process server that accepts only `algorithms`, handing each channel to `onChannel`. */
  async function uploadServer(algorithms: Algorithms | undefined, onChannel: (channel: ServerChannel, connection: Connection) => void): Promise<number> {
    const { port } = await lab.startServer({ ...(algorithms ? { algorithms } : {}), onTcpip: (accept, _reject, _info, connection) => onChannel(accept(), connection) });
    return port;
  }

  /** Every packet written by now has been released: only the slab being filled is in use. */
  async function expectAllReleased(outbound: Ssh2Outbound): Promise<void> {
    // The last write callbacks (e.g. of the channel's close) may come a tick after the data.
    await expect.poll(() => slabsInUse(outbound), { timeout: 2000, interval: 10 }).toBe(1);
  }

  const cases: { name: string; cipher: CipherAlgorithm; mac?: MacAlgorithm }[] = [
    { name: 'aes128-gcm@openssh.com', cipher: 'aes128-gcm@openssh.com' },
    { name: 'aes256-gcm@openssh.com', cipher: 'aes256-gcm@openssh.com' },
    { name: 'chacha20-poly1305@openssh.com', cipher: 'chacha20-poly1305@openssh.com' },
    { name: 'aes128-ctr + hmac-sha2-256', cipher: 'aes128-ctr', mac: 'hmac-sha2-256' },
    { name: 'aes128-ctr + hmac-sha2-256-etm@openssh.com', cipher: 'aes128-ctr', mac: 'hmac-sha2-256-etm@openssh.com' },
    { name: 'aes192-ctr + hmac-sha1', cipher: 'aes192-ctr', mac: 'hmac-sha1' },
    { name: 'aes256-ctr + hmac-sha2-512', cipher: 'aes256-ctr', mac: 'hmac-sha2-512' },
    { name: 'aes256-ctr + hmac-sha2-512-etm@openssh.com', cipher: 'aes256-ctr', mac: 'hmac-sha2-512-etm@openssh.com' },
  ];

  it.each(cases)(`$name, ${uploadMode}: a 12 MiB upload arrives intact through re-keys from both sides and write stalls`, async ({ cipher, mac }) => {
    const watch = watchOutbound();
    const total = 12 * 1024 * 1024;
    const data = content(11, total);
    let clientConnection: Ssh2Connection | undefined;
    let arrived: Promise<Buffer> = new Promise(() => {});
    let gotChannel: () => void = () => {};
    const channelOpened = new Promise<void>((resolve) => (gotChannel = resolve));
    const port = await uploadServer({ cipher: [cipher], ...(mac ? { hmac: [mac] } : {}) }, (channel, serverSide) => {
      // As the server receives: re-keys at a quarter (ours), half (the server's) and three
      // quarters (ours); our writes held back for a while at an eighth and five eighths.
      const events = [
        { at: total / 8, then: (client: Ssh2Connection) => stallWrites(client, 30) },
        { at: total / 4, then: (client: Ssh2Connection) => clientRekey(client) },
        { at: total / 2, then: () => serverSide.rekey() },
        { at: (5 * total) / 8, then: (client: Ssh2Connection) => stallWrites(client, 30) },
        { at: (3 * total) / 4, then: (client: Ssh2Connection) => clientRekey(client) },
      ];
      arrived = collect(channel, (bytes) => {
        while (clientConnection && events[0] && bytes >= events[0].at) events.shift()?.then(clientConnection);
      });
      gotChannel();
    });
    const connection = await lab.connect(lab.configFor(port));
    clientConnection = connection;
    const negotiated: NegotiatedAlgorithms[] = [];
    connection.client.on('handshake', (algorithms) => negotiated.push(algorithms));
    const { program, accepted } = await lab.socketPair();
    lab.forward(connection, accepted, destination);
    await channelOpened;
    program.end(data);
    const bytes = await arrived;
    expect(bytes.length).toBe(total);
    expect(firstDifference(bytes, data), 'first corrupted byte').toBe(-1);
    // The three re-keys happened, with the algorithms under test.
    expect(negotiated.map((n) => [n.cs.cipher, mac ? n.cs.mac : undefined])).toEqual(Array(3).fill([cipher, mac]));
    // Taken over after every key exchange (the first one and the three re-keys), or never.
    expect(watch.returned(), uploadMode).toEqual(Array(4).fill(takenAs));
    const outbound = watch.outbound();
    if (binding) {
      expect(outbound.stats.reused, 'packet slabs reused').toBeGreaterThan(0);
      // 12 MiB is 24 slabs' worth: a few slabs sufficed.
      expect(outbound.stats.allocated).toBeLessThanOrEqual(MOST_SLABS);
      await expectAllReleased(outbound);
    } else {
      // No packet of ours: only the slab PacketSlabs starts with, never used.
      expect(outbound.stats, uploadMode).toEqual({ allocated: 1, reused: 0, tainted: 0 });
    }
  }, 30_000);

  it(`${uploadMode}: a long upload through write stalls allocates a bounded number of slabs, and nothing stays pinned after it`, async () => {
    const watch = watchOutbound();
    const total = 48 * 1024 * 1024;
    const arrivals: Promise<Buffer>[] = [];
    // ssh2's default algorithms (what a real server would most likely negotiate). Every 4 MiB
    // the server receives, our socket holds its writes back for a while: packets back up in it
    // (as many as the send queue in ssh2-socket.ts lets through), each keeping its slab until written.
    let clientConnection: Ssh2Connection | undefined;
    let mostQueued = 0;
    const port = await uploadServer(undefined, (channel) => {
      let stalls = 0;
      arrivals.push(
        collect(channel, (bytes) => {
          if (!clientConnection || bytes < (stalls + 1) * 4 * 1024 * 1024) return;
          stalls++;
          stallWrites(clientConnection, 50, (queued) => (mostQueued = Math.max(mostQueued, queued)));
        }),
      );
    });
    const connection = await lab.connect(lab.configFor(port));
    clientConnection = connection;
    /** Sends `data` through a new forward once the server has its channel; resolves with what arrived. */
    const upload = async (data: Buffer): Promise<Buffer> => {
      const { program, accepted } = await lab.socketPair();
      const count = arrivals.length;
      lab.forward(connection, accepted, destination);
      await expect.poll(() => arrivals.length, { timeout: 3000, interval: 5 }).toBe(count + 1);
      program.end(data);
      return (await Promise.all(arrivals))[count] ?? Buffer.alloc(0);
    };
    const first = content(12, total);
    expect(firstDifference(await upload(first), first), 'first corrupted byte of the long upload').toBe(-1);
    // The stalls did back packets up in our socket (else this test would show nothing).
    expect(mostQueued).toBeGreaterThan(256 * 1024);
    expect(watch.returned(), uploadMode).toEqual([takenAs]);
    const outbound = watch.outbound();
    if (!binding) {
      expect(outbound.stats, uploadMode).toEqual({ allocated: 1, reused: 0, tainted: 0 });
      return;
    }
    // 96 slabs' worth went out of a few; every packet was in a slab (no key exchange here).
    expect(outbound.stats.allocated).toBeLessThanOrEqual(MOST_SLABS);
    expect(outbound.stats.allocated + outbound.stats.reused).toBeGreaterThanOrEqual(total / SLAB_BYTES);
    await expectAllReleased(outbound);
    // Nothing pinned: another upload like it makes do with about as many slabs; the count does
    // not grow with the bytes sent.
    const second = content(13, 12 * 1024 * 1024);
    expect(firstDifference(await upload(second), second), 'first corrupted byte of the second upload').toBe(-1);
    expect(outbound.stats.allocated, 'slabs allocated after a second upload').toBeLessThanOrEqual(MOST_SLABS);
    await expectAllReleased(outbound);
  }, 60_000);
});
