/**
 * Memory for the ssh socket's reads (ReadSlabs) and packets (PacketSlabs) that is used again
 * instead of allocated each time.
 *
 * Why: a bulk download through ssh2 otherwise allocates a fresh buffer for every read (ssh2, with
 * its binding, decrypts in place and hands the payloads on as views of what it was given, so a
 * single reused read buffer would be overwritten under them). At 4 Gbit/s that is ~0.5 GB/s of
 * external memory, which makes V8 run a full mark-compact every ~50 ms: 12–14 % of the CPU and
 * pauses of up to 10 ms, which is what round trips under bulk load suffered from.
 *
 * How: reads go one after another into slabs of SLAB_BYTES. A slab is used again only when
 * nothing can still look at it:
 * - the slab reads are going into is held by the reader, and the one before it until a few bytes
 *   have gone into the next (a decipher may keep a view of a packet whose MAC is still to come);
 * - every view the caller passes on and wants to keep (payloads for a local socket) is held
 *   until the caller releases it (the socket wrote it);
 * - anything else that may keep a view the caller cannot follow (a key exchange, other message
 *   types, other channels) taints the slab: it is never used again and the GC frees it.
 * A slab whose holds are lost (a channel torn down with data still buffered) is not used again,
 * and stays allocated while the pool lives (one connection): the cost of a lost hold is its slab.
 * Mistakes can only cost reuse, never hand out memory still in use, as long as every view that
 * is kept is either held or in a tainted slab.
 */

/** Bytes per slab: a few reads' worth, so a slab frees up soon after its reads are passed on. */
export const SLAB_BYTES = 512 * 1024;
/** A read gets at least this much room (else the next slab): reads of a few bytes cost syscalls. */
export const MIN_READ_BYTES = 64 * 1024;
/** The most a single read may fill: libuv reads again while the buffer fills completely. */
export const MAX_READ_BYTES = 256 * 1024;
/**
 * Bytes that must have gone into the next slab, and been passed on, before the reader lets go of
 * the previous one: ssh2's deciphers keep a view of a packet whose MAC (at most 64 bytes) is
 * still to come, and let go of it only while handling the read that completes it.
 */
export const RETIRE_AFTER_BYTES = 64;
/** Free slabs kept for reuse; beyond that they go to the GC. */
export const MAX_FREE_SLABS = 8;

interface Slab {
  readonly bytes: Buffer;
  /** Where the next read goes. */
  used: number;
  /** The reader's hold plus one per held view. */
  holds: number;
  tainted: boolean;
}

export interface SlabStats {
  /** Slabs allocated so far. */
  allocated: number;
  /** Times a slab was used again. */
  reused: number;
  /** Slabs tainted (left to the GC). */
  tainted: number;
}

/** Slabs, their holds and taint; what fills them is the subclasses' business. */
class Slabs {
  private readonly slabs = new Map<ArrayBufferLike, Slab>();
  private readonly free: Slab[] = [];
  readonly stats: SlabStats = { allocated: 0, reused: 0, tainted: 0 };

  /** Taints the slab `view` is in, if it is in one: something may keep it that no one releases. */
  taintViewOf(view: Uint8Array): void {
    const slab = this.slabs.get(view.buffer);
    if (slab) this.taint(slab);
  }

  /**
   * Each held view (the object itself): a release is matched to its own hold, so releasing a view
   * twice, or a piece of it, or one never held, can only leave a slab unused, never free it early.
   */
  private readonly held = new WeakMap<Uint8Array, Slab>();
  private heldCount = 0;

  /** Views held and not yet released: a chunk that outlived its connection shows here. */
  get heldViews(): number {
    return this.heldCount;
  }

  /** Holds the slab `view` is in until `release(view)`; false if it is in none. */
  hold(view: Uint8Array): boolean {
    const slab = this.slabs.get(view.buffer);
    if (!slab) return false;
    if (this.held.has(view)) return true;
    slab.holds++;
    this.heldCount++;
    this.held.set(view, slab);
    return true;
  }

  /** Lets go of a view `hold` took (any other view is ignored). */
  readonly release = (view: Uint8Array): void => {
    const slab = this.held.get(view);
    if (!slab) return;
    this.held.delete(view);
    this.heldCount--;
    this.drop(slab);
  };

  /** Whether `view` lies in a slab that may be reused (e.g. a packet to release once written). */
  owns(view: Uint8Array): boolean {
    return this.slabs.has(view.buffer);
  }

  /** A slab to fill, held once by its filler. */
  protected takeSlab(): Slab {
    const slab = this.free.pop();
    if (slab) {
      slab.used = 0;
      slab.holds = 1;
      this.stats.reused++;
    }
    // Its own ArrayBuffer (not Node's pool): a slab is recognised by its buffer.
    const taken = slab ?? { bytes: Buffer.from(new ArrayBuffer(SLAB_BYTES)), used: 0, holds: 1, tainted: false };
    if (!slab) this.stats.allocated++;
    this.slabs.set(taken.bytes.buffer, taken);
    return taken;
  }

  protected taint(slab: Slab): void {
    if (slab.tainted) return;
    slab.tainted = true;
    this.stats.tainted++;
    // Forgotten: views of it are no longer recognised, held or released, and it is never reused.
    this.slabs.delete(slab.bytes.buffer);
  }

  protected drop(slab: Slab): void {
    slab.holds--;
    if (slab.holds > 0 || slab.tainted) return;
    this.slabs.delete(slab.bytes.buffer);
    if (this.free.length < MAX_FREE_SLABS) this.free.push(slab);
  }
}

/** Memory for a socket's reads, one region after another. */
export class ReadSlabs extends Slabs {
  private current: Slab;
  /** The slab before the current one, still held by the reader. */
  private previous: Slab | undefined;
  /** The region handed out for the next read. */
  private region: Buffer;

  constructor() {
    super();
    this.current = this.takeSlab();
    this.region = this.regionFor(this.current);
  }

  /** The buffer the next read goes into (Node's `onread.buffer` as a function). */
  readonly nextBuffer = (): Buffer => this.region;

  /**
   * Records that `bytes` were read into the last buffer and returns them as a view; the next
   * buffer is ready after this.
   */
  filled(bytes: number): Buffer {
    const slab = this.current;
    const view = this.region.subarray(0, bytes);
    // Counted before this read: only bytes already passed on have completed what a decipher kept.
    if (this.previous && slab.used >= RETIRE_AFTER_BYTES) {
      this.drop(this.previous);
      this.previous = undefined;
    }
    slab.used += bytes;
    if (slab.bytes.length - slab.used < MIN_READ_BYTES) {
      // Still held: the reader lets go of it a few bytes into the next slab.
      if (this.previous) this.drop(this.previous);
      this.previous = slab;
      this.current = this.takeSlab();
    }
    this.region = this.regionFor(this.current);
    return view;
  }

  /** Taints the slab reads are going into and the one before it (e.g. during a key exchange). */
  taintReading(): void {
    this.taint(this.current);
    if (this.previous) this.taint(this.previous);
  }

  private regionFor(slab: Slab): Buffer {
    return slab.bytes.subarray(slab.used, Math.min(slab.bytes.length, slab.used + MAX_READ_BYTES));
  }
}

/** Memory for packets that are written once and then released, one after another in a slab. */
export class PacketSlabs extends Slabs {
  private current: Slab = this.takeSlab();

  /** `size` bytes, held until released; larger than a quarter slab: a plain allocation. */
  allocate(size: number): Buffer {
    if (size > SLAB_BYTES / 4) return Buffer.allocUnsafe(size);
    if (this.current.bytes.length - this.current.used < size) {
      this.drop(this.current);
      this.current = this.takeSlab();
    }
    const slab = this.current;
    slab.used += size;
    const packet = slab.bytes.subarray(slab.used - size, slab.used);
    this.hold(packet);
    return packet;
  }
}
