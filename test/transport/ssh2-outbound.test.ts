import { randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import type { Client } from 'ssh2';
import { beforeAll, describe, expect, it } from 'vitest';
import { SLAB_BYTES } from '../../src/transport/slabs.js';
import { sshRandomFill } from '../../src/transport/ssh2-module.js';
import { MIN_SLAB_PAYLOAD, Ssh2Outbound } from '../../src/transport/ssh2-outbound.js';
import { prng } from './test-data.js';

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
interface Ssh2Cipher {
  allocPacket(payloadLength: number): Buffer;
  encrypt(packet: Buffer): void;
  free(): void;
}
interface Ssh2Crypto {
  bindingAvailable: boolean;
  init: Promise<void>;
  CIPHER_INFO: Record<string, CipherInfo>;
  MAC_INFO: Record<string, MacInfo>;
  NullCipher: new (seqno: number, onWrite: (packet: Buffer) => void) => Ssh2Cipher;
  createCipher(config: object): Ssh2Cipher;
  createDecipher(config: object): { decrypt(data: Buffer, start: number, end: number): void; free(): void };
}

const require = createRequire(import.meta.url);
const sshCrypto = require('ssh2/lib/protocol/crypto.js') as Ssh2Crypto;
/** What ssh2 can negotiate at all (its defaults, and what may be configured). */
const { SUPPORTED_CIPHER, SUPPORTED_MAC } = require('ssh2/lib/protocol/constants.js') as { SUPPORTED_CIPHER: string[]; SUPPORTED_MAC: string[] };
/** Whether ssh2 has its compiled binding: only its ciphers encrypt in place, in the packet allocPacket made. */
const binding = sshCrypto.bindingAvailable;
const mode = binding ? "ssh2's binding: taken over" : "WITHOUT ssh2's binding: left alone";

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
 * make them. Each packet the cipher writes is copied, and then released as ssh2.ts's socket
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

/** `client._protocol._cipher`: where takeOverCipher finds the cipher of the last key exchange. */
const clientWith = (cipher: unknown): Client => ({ _protocol: { _cipher: cipher } }) as unknown as Client;

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

  it.each(combinations)(`$name (${mode}): packets laid out as ssh2's own, in reused slabs, decrypt to what was sent`, ({ cipher, mac }) => {
    const outbound = new Ssh2Outbound(sshRandomFill);
    const ssh2 = ssh2Pair(outbound, cipher, mac);
    const own = ssh2.cipher.allocPacket;
    // A truncated MAC (-96) is written as another view of the packet: such ciphers are left alone.
    const taken = binding && !mac?.endsWith('-96');
    expect(outbound.takeOverCipher(clientWith(ssh2.cipher)), mode).toBe(taken);
    if (!taken) expect(ssh2.cipher.allocPacket).toBe(own);
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
    expect(ssh2.written).toHaveLength(payloads.length);
    expect(ssh2.written.every((w, i) => w.owned === (taken && (payloads[i]?.length ?? 0) >= MIN_SLAB_PAYLOAD))).toBe(true);
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
    expect(outbound.takeOverCipher(clientWith(first.cipher)), mode).toBe(binding);
    // A packet of the first cipher, not yet written (a socket that has not drained).
    const pending = first.cipher.allocPacket(20_000);
    pending.fill(7, 5, 5 + 20_000);
    const expected = Buffer.from(pending);
    expect(outbound.takeOverCipher(clientWith(second.cipher)), mode).toBe(binding);
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
  ])("leaves ssh2's ciphers without the binding (forceNative) alone: %s %s", (cipher, mac) => {
    const outbound = new Ssh2Outbound(sshRandomFill);
    const ssh2 = ssh2Pair(outbound, cipher, mac, true);
    const own = ssh2.cipher.allocPacket;
    expect(outbound.takeOverCipher(clientWith(ssh2.cipher))).toBe(false);
    expect(ssh2.cipher.allocPacket).toBe(own);
    const packet = ssh2.cipher.allocPacket(100);
    packet.fill(1, 5, 105);
    ssh2.cipher.encrypt(packet);
    expect(ssh2.written.every((w) => !w.owned)).toBe(true);
    expect(ssh2.received()).toEqual([Buffer.alloc(100, 1)]);
  });

  it('leaves alone the cipher before the first key exchange, and a client without a protocol', () => {
    const outbound = new Ssh2Outbound(sshRandomFill);
    const none = new sshCrypto.NullCipher(0, () => {});
    const own = none.allocPacket;
    expect(outbound.takeOverCipher(clientWith(none))).toBe(false);
    expect(none.allocPacket).toBe(own);
    expect(outbound.takeOverCipher({} as Client)).toBe(false);
    expect(outbound.takeOverCipher(clientWith(undefined))).toBe(false);
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
    expect(outbound.takeOverCipher(clientWith(odd))).toBe(false);
    expect(odd.allocPacket).toBe(own);
    // Named as the generic one, without the fields its layout is read from.
    class GenericCipherBinding {
      allocPacket = (payloadLength: number) => Buffer.alloc(payloadLength + 64);
    }
    expect(outbound.takeOverCipher(clientWith(new GenericCipherBinding()))).toBe(false);
  });
});
