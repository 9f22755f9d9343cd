import { PacketSlabs } from './slabs.js';
import type { PacketLayout, Ssh2Cipher } from './ssh2-internals.js';

type RandomFill = (buffer: Uint8Array, offset: number, size: number) => unknown;

/** Payloads smaller than this are laid out in fresh memory, not in a slab. */
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
 * the socket's write callback releases it (`released`). Ciphers that do not encrypt in place
 * (without ssh2's binding) get the same layout in fresh memory.
 *
 * Either way the padding comes from our pooled CSPRNG bytes (`randomFill`): ssh2's own
 * allocPacket calls Node's randomFillSync for each packet's 4–20 bytes, ~10 µs a call.
 */
export class Ssh2Outbound {
  private readonly slabs = new PacketSlabs();
  /** Ciphers already taken over: checking one again would compare ours with ours. */
  private readonly taken = new WeakSet<object>();

  constructor(private readonly randomFill: RandomFill) {}

  get stats() {
    return this.slabs.stats;
  }

  /**
   * Call after each key exchange with its cipher (Ssh2Hooks.cipher): where the cipher's packets
   * come from now, `slabs` or `fresh` memory in our layout, or undefined: ssh2's own allocPacket.
   */
  takeOverCipher(cipher: Ssh2Cipher | undefined): 'slabs' | 'fresh' | undefined {
    if (!cipher) return undefined;
    const mode = cipher.inPlace ? 'slabs' : 'fresh';
    if (this.taken.has(cipher.id)) return mode;
    const { layout } = cipher;
    if (!CHECK_SIZES.every((size) => sameLayout(cipher.allocPacket(size), this.allocPacket(layout, size, false)))) return undefined;
    // Small packets (channel opens, EOFs, window adjusts) in fresh memory: too small to matter to the GC.
    cipher.replaceAllocPacket(
      cipher.inPlace
        ? (payloadLength) => this.allocPacket(layout, payloadLength, payloadLength >= MIN_SLAB_PAYLOAD)
        : (payloadLength) => this.allocPacket(layout, payloadLength, false),
    );
    this.taken.add(cipher.id);
    return mode;
  }

  /** Whether `chunk` is a packet of ours (to be released when written). */
  owns(chunk: Uint8Array): boolean {
    return this.slabs.owns(chunk);
  }

  /** For the socket's write callback: the packet has been written. */
  readonly released = (packet: Uint8Array): void => this.slabs.release(packet);

  private allocPacket({ block, aad, trailer }: PacketLayout, payloadLength: number, inSlab: boolean): Buffer {
    let packetLength = 4 + 1 + payloadLength;
    let padding = block - ((packetLength - aad) & (block - 1));
    if (padding < 4) padding += block;
    packetLength += padding;
    const packet = inSlab ? this.slabs.allocate(packetLength + trailer) : Buffer.allocUnsafe(packetLength + trailer);
    packet.writeUInt32BE(packetLength - 4, 0);
    packet[4] = padding;
    this.randomFill(packet, 5 + payloadLength, padding);
    return packet;
  }
}

function sameLayout(theirs: Buffer, ours: Buffer): boolean {
  return theirs.length === ours.length && theirs.readUInt32BE(0) === ours.readUInt32BE(0) && theirs[4] === ours[4];
}
