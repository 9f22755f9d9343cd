import type { Client } from 'ssh2';
import { PacketSlabs } from './slabs.js';

type RandomFill = (buffer: Uint8Array, offset: number, size: number) => unknown;

/** The ssh2 cipher fields this module reads (not in its typings; checked before use). */
interface Ssh2Cipher {
  allocPacket(payloadLength: number): Buffer;
  _encBlockLen?: number;
  _aadLen?: number;
  _macLen?: number;
  _macActualLen?: number;
}

/** How a packet is laid out: padding to `block` after `aad` bytes, and `trailer` bytes of tag/MAC. */
interface Layout {
  readonly block: number;
  readonly aad: number;
  readonly trailer: number;
}

/**
 * ssh2's ciphers that encrypt in place, in the packet their allocPacket made, and write that same
 * packet: those are the ones whose packets can come from reused memory.
 */
function layoutOf(cipher: Ssh2Cipher): Layout | undefined {
  switch (cipher.constructor.name) {
    case 'AESGCMCipherBinding':
      return { block: 16, aad: 4, trailer: 16 };
    case 'ChaChaPolyCipherBinding':
      return { block: 8, aad: 4, trailer: 16 };
    case 'GenericCipherBinding': {
      const { _encBlockLen: block, _aadLen: aad, _macLen: trailer, _macActualLen: sent } = cipher;
      if (typeof block !== 'number' || typeof aad !== 'number' || typeof trailer !== 'number') return undefined;
      // A truncated MAC (hmac-*-96) is written as a shorter view of the packet, a different
      // object than the one allocated: its release would not match its hold.
      if (sent !== trailer) return undefined;
      return { block, aad, trailer };
    }
    default:
      return undefined;
  }
}

/** Payloads smaller than this keep ssh2's own allocation. */
export const MIN_SLAB_PAYLOAD = 1024;
/** Payload sizes the layout is checked against ssh2's own allocPacket with. */
const CHECK_SIZES = [0, 1, 7, 100, 32 * 1024 + 9];

/**
 * The packets ssh2 sends, in reused slabs instead of one fresh buffer each.
 *
 * Why: a bulk upload otherwise allocates a ~32 KiB buffer per packet, and that external memory
 * makes V8 run a full mark-compact many times a second (a quarter of the CPU in a 4 Gbit/s
 * upload, with pauses of several ms).
 *
 * How: after each key exchange the new cipher's allocPacket is replaced by one that lays the
 * packet out exactly as ssh2's does (checked against it; any difference and the cipher is left
 * alone) in a PacketSlabs region. The packet is encrypted in place and written to the socket;
 * the socket's write callback releases it (`released`).
 */
export class Ssh2Outbound {
  private readonly slabs = new PacketSlabs();
  /** Ciphers already taken over: checking one again would compare ours with ours. */
  private readonly taken = new WeakSet<object>();

  constructor(private readonly randomFill: RandomFill) {}

  get stats() {
    return this.slabs.stats;
  }

  /** Call after each key exchange (ssh2's 'handshake' event); true if the new cipher was taken over. */
  takeOverCipher(client: Client): boolean {
    const cipher = (client as unknown as { _protocol?: { _cipher?: Ssh2Cipher } })._protocol?._cipher;
    if (!cipher || typeof cipher.allocPacket !== 'function') return false;
    if (this.taken.has(cipher)) return true;
    const layout = layoutOf(cipher);
    if (!layout || !CHECK_SIZES.every((size) => sameLayout(cipher.allocPacket(size), this.allocPacket(layout, size, true)))) return false;
    const own = cipher.allocPacket.bind(cipher);
    // Small packets (channel opens, EOFs, window adjusts) come from Node's pool as before: cheaper
    // there, and too small to matter to the GC.
    cipher.allocPacket = (payloadLength) => (payloadLength < MIN_SLAB_PAYLOAD ? own(payloadLength) : this.allocPacket(layout, payloadLength, false));
    this.taken.add(cipher);
    return true;
  }

  /** Whether `chunk` is a packet of ours (to be released when written). */
  owns(chunk: Uint8Array): boolean {
    return this.slabs.owns(chunk);
  }

  /** For the socket's write callback: the packet has been written. */
  readonly released = (packet: Uint8Array): void => this.slabs.release(packet);

  private allocPacket({ block, aad, trailer }: Layout, payloadLength: number, check: boolean): Buffer {
    let packetLength = 4 + 1 + payloadLength;
    let padding = block - ((packetLength - aad) & (block - 1));
    if (padding < 4) padding += block;
    packetLength += padding;
    const packet = check ? Buffer.allocUnsafe(packetLength + trailer) : this.slabs.allocate(packetLength + trailer);
    packet.writeUInt32BE(packetLength - 4, 0);
    packet[4] = padding;
    this.randomFill(packet, 5 + payloadLength, padding);
    return packet;
  }
}

function sameLayout(theirs: Buffer, ours: Buffer): boolean {
  return theirs.length === ours.length && theirs.readUInt32BE(0) === ours.readUInt32BE(0) && theirs[4] === ours[4];
}
