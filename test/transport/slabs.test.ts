import { describe, expect, it } from 'vitest';
import { MAX_READ_BYTES, MIN_READ_BYTES, PacketSlabs, RETIRE_AFTER_BYTES, ReadSlabs, SLAB_BYTES } from '../../src/transport/slabs.js';
import { prng } from './test-data.js';

/** An integer in [min, max]. */
const between = (random: () => number, min: number, max: number): number => min + Math.floor(random() * (max - min + 1));

/** A read size as the kernel gives them: often a few bytes or a few KiB, sometimes all there is room for. */
function readSize(random: () => number, room: number): number {
  const r = random();
  if (r < 0.2) return between(random, 1, Math.min(room, 100));
  if (r < 0.6) return between(random, 1, Math.min(room, 8192));
  if (r < 0.8) return room;
  return between(random, 1, room);
}

/** Four bytes that say which read wrote them: a region handed out again shows as other bytes. */
const pattern = (read: number): Buffer => {
  const bytes = Buffer.alloc(4);
  bytes.writeUInt32LE((Math.imul(read, 2654435761) + 1) >>> 0);
  return bytes;
};

let readsSoFar = 0;

/** The kernel's part: writes `bytes` bytes of a read of its own into the next buffer; returns the view. */
function read(slabs: ReadSlabs, bytes: number): Buffer {
  slabs.nextBuffer().fill(pattern(++readsSoFar), 0, bytes);
  return slabs.filled(bytes);
}

/** Reads (as much as there is room for) until reads go into another slab; the views read into the one left. */
function readToEndOfSlab(slabs: ReadSlabs): Buffer[] {
  const start = slabs.nextBuffer().buffer;
  const views: Buffer[] = [];
  while (slabs.nextBuffer().buffer === start) views.push(read(slabs, slabs.nextBuffer().length));
  return views;
}

const last = <T>(items: readonly T[]): T => {
  const item = items[items.length - 1];
  if (item === undefined) throw new Error('empty');
  return item;
};

describe('ReadSlabs regions', () => {
  it('hands out consecutive regions of MIN_READ_BYTES..MAX_READ_BYTES, and a new slab when less than MIN_READ_BYTES remain', () => {
    const slabs = new ReadSlabs();
    const random = prng(7);
    let slab: ArrayBufferLike | undefined;
    let end = 0;
    let slabsSeen = 0;
    for (let i = 0; i < 2000; i++) {
      const region = slabs.nextBuffer();
      expect(region.length).toBeLessThanOrEqual(MAX_READ_BYTES);
      expect(region.length).toBeGreaterThanOrEqual(MIN_READ_BYTES);
      if (region.buffer === slab) {
        // Right after the last read: no gap, no overlap.
        expect(region.byteOffset).toBe(end);
      } else {
        // Another slab only once the last one is too full for a worthwhile read; from its start.
        if (slab) expect(SLAB_BYTES - end).toBeLessThan(MIN_READ_BYTES);
        expect(region.byteOffset).toBe(0);
        expect(region.buffer.byteLength).toBe(SLAB_BYTES);
        slab = region.buffer;
        slabsSeen++;
      }
      // As much of the slab as is left, up to MAX_READ_BYTES.
      expect(region.length).toBe(Math.min(MAX_READ_BYTES, SLAB_BYTES - region.byteOffset));
      const bytes = readSize(random, region.length);
      const view = slabs.filled(bytes);
      // The view is the start of the region the read went into.
      expect(view.buffer).toBe(region.buffer);
      expect(view.byteOffset).toBe(region.byteOffset);
      expect(view.length).toBe(bytes);
      end = region.byteOffset + bytes;
    }
    expect(slabsSeen).toBeGreaterThan(10);
  });

  it('cuts a region to what is left of the slab, and moves on when less than MIN_READ_BYTES would be left', () => {
    const slabs = new ReadSlabs();
    const first = slabs.nextBuffer().buffer;
    expect(slabs.nextBuffer().length).toBe(MAX_READ_BYTES);
    slabs.filled(MAX_READ_BYTES);
    slabs.filled(44 * 1024);
    expect(slabs.nextBuffer().length).toBe(SLAB_BYTES - MAX_READ_BYTES - 44 * 1024);
    // Leaves MIN_READ_BYTES - 1024 of this slab unused.
    slabs.filled(SLAB_BYTES - MAX_READ_BYTES - 44 * 1024 - (MIN_READ_BYTES - 1024));
    expect(slabs.nextBuffer().buffer).not.toBe(first);
    expect(slabs.nextBuffer().byteOffset).toBe(0);
    expect(slabs.nextBuffer().length).toBe(MAX_READ_BYTES);
    expect(slabs.stats).toEqual({ allocated: 2, reused: 0, tainted: 0 });
  });
});

describe('ReadSlabs reuse', () => {
  it('reuses a slab once the reader moved on, RETIRE_AFTER_BYTES went into the next, and every held view was released', () => {
    const slabs = new ReadSlabs();
    const [a] = readToEndOfSlab(slabs);
    if (!a) throw new Error('no read');
    expect(slabs.hold(a)).toBe(true);
    read(slabs, RETIRE_AFTER_BYTES);
    slabs.release(a);
    readToEndOfSlab(slabs);
    expect(slabs.nextBuffer().buffer).toBe(a.buffer);
    expect(slabs.stats).toEqual({ allocated: 2, reused: 1, tainted: 0 });
  });

  it('does not reuse the slab reads are going into, however its views are held and released', () => {
    const slabs = new ReadSlabs();
    const a = read(slabs, 1000);
    const b = read(slabs, 1000);
    // Balanced holds and releases leave the reader's own hold: were it lost, this slab would be
    // free while still read into, and come back as the next one.
    for (const view of [a, b, a]) expect(slabs.hold(view)).toBe(true);
    for (const view of [a, b, a]) slabs.release(view);
    expect(slabs.owns(a)).toBe(true);
    readToEndOfSlab(slabs);
    expect(slabs.nextBuffer().buffer).not.toBe(a.buffer);
    expect(slabs.stats.reused).toBe(0);
  });

  it('keeps the previous slab until RETIRE_AFTER_BYTES went into the next (a MAC may still be to come)', () => {
    const slabs = new ReadSlabs();
    const a = last(readToEndOfSlab(slabs));
    // Nothing of it is held but by the reader.
    for (let i = 0; i < RETIRE_AFTER_BYTES - 1; i++) {
      read(slabs, 1);
      expect(slabs.owns(a)).toBe(true);
    }
    read(slabs, 1);
    read(slabs, 1);
    expect(slabs.owns(a)).toBe(false);
  });

  it('does not reuse a slab while a view of it is held, however far the reader moved on', () => {
    const slabs = new ReadSlabs();
    const viewsOfA = readToEndOfSlab(slabs);
    const a1 = viewsOfA[0];
    const a2 = last(viewsOfA);
    if (!a1 || a1 === a2) throw new Error('expected two reads into the first slab');
    expect(slabs.hold(a1)).toBe(true);
    expect(slabs.hold(a2)).toBe(true);
    const [expected1, expected2] = [Buffer.from(a1), Buffer.from(a2)];
    const slabsAfter = (count: number): ArrayBufferLike[] =>
      Array.from({ length: count }, () => {
        readToEndOfSlab(slabs);
        return slabs.nextBuffer().buffer;
      });
    expect(slabsAfter(4)).not.toContain(a1.buffer);
    // One of its two views released: still held.
    slabs.release(a1);
    expect(slabsAfter(4)).not.toContain(a1.buffer);
    expect(slabs.stats.reused).toBeGreaterThan(0);
    expect(a1.equals(expected1) && a2.equals(expected2)).toBe(true);
    slabs.release(a2);
    expect(slabs.owns(a1)).toBe(false);
    // Free again. Free slabs are taken last-freed first: with the next slabs all held, it comes back.
    const returned = Array.from({ length: 3 }, () => {
      slabs.hold(last(readToEndOfSlab(slabs)));
      return slabs.nextBuffer().buffer;
    });
    expect(returned).toContain(a1.buffer);
  });

  it('keeps the previous slab for the whole read that brings RETIRE_AFTER_BYTES into the next: ssh2 completes a packet in it then', () => {
    // ssh2's deciphers (AES-GCM, ChaCha20-Poly1305, HMAC) keep the encrypted body of a packet
    // that ended a read as a view of that read, and decrypt it in place, and pass its payload on,
    // only while the read that brings the rest of its MAC is passed to them, i.e. after filled().
    // The payload is held then: the slab must not be free by then.
    const slabs = new ReadSlabs();
    const body = last(readToEndOfSlab(slabs)).subarray(-32 * 1024);
    const expected = Buffer.from(body);
    // The next read: the MAC (16 bytes) and the next packets.
    read(slabs, 32 * 1024);
    const held = slabs.hold(body);
    // The payload waits for a congested local socket while reads go on.
    for (let i = 0; i < 3; i++) readToEndOfSlab(slabs);
    expect(body.equals(expected), 'the held payload was overwritten by later reads').toBe(true);
    expect(held).toBe(true);
  });

  it('allocates two slabs in all when every view is released right after the next read', () => {
    const slabs = new ReadSlabs();
    const random = prng(11);
    let previous: Buffer | undefined;
    let slabsUsed = 1;
    for (let i = 0; i < 5000; i++) {
      const before = slabs.nextBuffer().buffer;
      const view = read(slabs, readSize(random, slabs.nextBuffer().length));
      if (slabs.nextBuffer().buffer !== before) slabsUsed++;
      expect(slabs.hold(view)).toBe(true);
      if (previous) slabs.release(previous);
      previous = view;
    }
    expect(slabsUsed).toBeGreaterThan(20);
    expect(slabs.stats).toEqual({ allocated: 2, reused: slabsUsed - 2, tainted: 0 });
  });
});

describe('ReadSlabs taint', () => {
  it('never reuses a slab tainted through a view of it; releasing its views is harmless', () => {
    const slabs = new ReadSlabs();
    const views = readToEndOfSlab(slabs);
    const a = last(views);
    const expected = views.map((view) => Buffer.from(view));
    expect(slabs.hold(a)).toBe(true);
    slabs.taintViewOf(a);
    slabs.taintViewOf(a);
    expect(slabs.stats.tainted).toBe(1);
    // Forgotten: its views are no longer held or released.
    expect(slabs.owns(a)).toBe(false);
    expect(slabs.hold(a)).toBe(false);
    slabs.release(a);
    slabs.release(a);
    for (let i = 0; i < 10; i++) {
      readToEndOfSlab(slabs);
      expect(slabs.nextBuffer().buffer).not.toBe(a.buffer);
    }
    expect(views.every((view, i) => expected[i]?.equals(view))).toBe(true);
    // The releases took nothing from the other slabs: two of them, in turn, as always (one new
    // slab for the tainted one, then nine reuses).
    expect(slabs.stats).toEqual({ allocated: 3, reused: 9, tainted: 1 });
  });

  it('taintReading taints the slab being read into and the previous one; the tainted slab still takes reads until full', () => {
    const slabs = new ReadSlabs();
    const a = last(readToEndOfSlab(slabs));
    const b = read(slabs, 10);
    slabs.taintReading();
    expect(slabs.stats.tainted).toBe(2);
    expect(slabs.owns(a)).toBe(false);
    expect(slabs.owns(b)).toBe(false);
    expect(slabs.nextBuffer().buffer).toBe(b.buffer);
    expect(slabs.nextBuffer().byteOffset).toBe(10);
    const [expectedA, expectedB] = [Buffer.from(a), Buffer.from(b)];
    const viewsOfB = readToEndOfSlab(slabs);
    expect(viewsOfB.every((view) => view.buffer === b.buffer)).toBe(true);
    for (let i = 0; i < 10; i++) {
      readToEndOfSlab(slabs);
      expect([a.buffer, b.buffer]).not.toContain(slabs.nextBuffer().buffer);
    }
    expect(a.equals(expectedA) && b.equals(expectedB)).toBe(true);
  });
});

describe('ReadSlabs with views of other memory', () => {
  const foreign = (): Uint8Array[] => {
    const other = new ReadSlabs();
    return [Buffer.alloc(100), Buffer.allocUnsafe(100), Buffer.allocUnsafe(64 * 1024), new Uint8Array(10), read(other, 100)];
  };

  it('does not hold views that are in none of its slabs', () => {
    const slabs = new ReadSlabs();
    read(slabs, 100);
    for (const view of foreign()) {
      expect(slabs.hold(view)).toBe(false);
      expect(slabs.owns(view)).toBe(false);
    }
  });

  it('ignores releases of views in none of its slabs', () => {
    // Two pools given the same reads and holds, one also foreign releases: they must not differ.
    const plain = new ReadSlabs();
    const released = new ReadSlabs();
    const sequence = (slabs: ReadSlabs, withForeignReleases: boolean): number[] => {
      const random = prng(3);
      const order = new Map<ArrayBufferLike, number>();
      const slabNumbers: number[] = [];
      let held: Buffer | undefined;
      for (let i = 0; i < 1000; i++) {
        const view = read(slabs, readSize(random, slabs.nextBuffer().length));
        if (!order.has(view.buffer)) order.set(view.buffer, order.size);
        slabNumbers.push(order.get(view.buffer) ?? -1);
        if (i % 100 === 0) {
          if (held) slabs.release(held);
          held = view;
          slabs.hold(view);
        }
        if (withForeignReleases) for (const other of foreign()) slabs.release(other);
      }
      return slabNumbers;
    };
    expect(sequence(released, true)).toEqual(sequence(plain, false));
    expect(released.stats).toEqual(plain.stats);
  });
});

describe('ReadSlabs under random reads, holds, releases and taints', () => {
  interface InUse {
    readonly view: Buffer;
    readonly expected: Buffer;
    /** Held and not yet released. */
    held: boolean;
  }

  const overlaps = (a: Uint8Array, b: Uint8Array): boolean =>
    a.buffer === b.buffer && a.byteOffset < b.byteOffset + b.length && b.byteOffset < a.byteOffset + a.length;

  /**
   * Simulates a reader: the kernel writes each read's own bytes into the region nextBuffer()
   * gave; the caller holds some views (payloads for a local socket), releases them later, and
   * now and then taints a slab (a message someone keeps). `deferredHolds`: some reads end in a
   * packet that is held only while the next read is passed on (ssh2 waiting for its MAC).
   * After every step, every view still in use (held, or in a tainted slab) must be unchanged.
   */
  function run(seed: number, steps: number, deferredHolds: boolean): ReadSlabs {
    const random = prng(seed);
    const slabs = new ReadSlabs();
    const tainted = new Set<ArrayBufferLike>();
    let inUse: InUse[] = [];
    let pending: Buffer | undefined;
    const use = (view: Buffer, held: boolean) => inUse.push({ view, expected: Buffer.from(view), held });
    const hold = (view: Buffer, step: number) => {
      // A view of a tainted slab is not held (nor needs to be); any other of a recent read is.
      expect(slabs.hold(view), `seed ${seed} step ${step}: a view of a recent read could not be held (its slab is free)`).toBe(!tainted.has(view.buffer));
      use(view, !tainted.has(view.buffer));
    };
    for (let step = 0; step < steps; step++) {
      const region = slabs.nextBuffer();
      const clash = inUse.find((used) => overlaps(used.view, region));
      if (clash) expect.fail(`seed ${seed} step ${step}: region handed out again while in use (${clash.held ? 'held' : 'tainted'})`);
      const view = read(slabs, readSize(random, region.length));
      if (pending) {
        hold(pending, step);
        pending = undefined;
      }
      // A payload: part of the read, or all of it.
      const r = random();
      if (r < 0.25) hold(view, step);
      else if (r < 0.4) {
        const start = between(random, 0, view.length - 1);
        hold(view.subarray(start, between(random, start + 1, view.length)), step);
      } else if (deferredHolds && r < 0.6) {
        pending = view.subarray(between(random, 0, view.length - 1));
      }
      // Released as a socket writes them: some soon, some after a while; never more than ~40 wait.
      const held = inUse.filter((used) => used.held);
      const releases = held.length > 40 ? 10 : random() < 0.4 ? between(random, 1, 3) : 0;
      for (let i = 0; i < releases && held.length > 0; i++) {
        const [released] = held.splice(between(random, 0, held.length - 1), 1);
        if (!released) break;
        slabs.release(released.view);
        released.held = false;
      }
      // Now and then a release of memory that is no slab's (a copy): nothing happens.
      if (random() < 0.05) slabs.release(Buffer.from(view.subarray(0, 16)));
      // A message someone keeps (its slab tainted), or a key exchange (everything being read into).
      const t = random();
      if (t < 0.01) {
        slabs.taintViewOf(view);
        tainted.add(view.buffer);
        use(view, false);
      } else if (t < 0.02 && held.length > 0) {
        const victim = held[between(random, 0, held.length - 1)];
        if (victim) {
          slabs.taintViewOf(victim.view);
          tainted.add(victim.view.buffer);
        }
      } else if (t < 0.025) {
        slabs.taintReading();
        // The slab being read into, and the one this read went into (it, or the previous one).
        tainted.add(slabs.nextBuffer().buffer);
        tainted.add(view.buffer);
        use(view, false);
      }
      // Views no longer in use: released ones, and now and then ones in tainted slabs.
      inUse = inUse.filter((used) => used.held || (tainted.has(used.view.buffer) && random() < 0.98));
      for (const used of inUse) {
        if (!used.view.equals(used.expected)) {
          expect.fail(`seed ${seed} step ${step}: a view in use (${used.held ? 'held' : 'in a tainted slab'}) was overwritten`);
        }
      }
    }
    if (pending) hold(pending, steps);
    for (const used of inUse) if (used.held) slabs.release(used.view);
    return slabs;
  }

  it.each([1, 2, 3, 0xc0ffee])('never hands out a region still in use, and stops allocating once all is released (seed %i)', (seed) => {
    const slabs = run(seed, 3000, false);
    expect(slabs.stats.reused).toBeGreaterThan(0);
    // Everything released: from here on the free slabs suffice.
    const allocated = slabs.stats.allocated;
    for (let i = 0; i < 20; i++) readToEndOfSlab(slabs);
    expect(slabs.stats.allocated).toBeLessThanOrEqual(allocated + 1);
  });

  it.each([4, 5])('never hands out a region still in use when holds come while the next read is passed on (seed %i)', (seed) => {
    run(seed, 3000, true);
  });
});

describe('PacketSlabs', () => {
  /** An allocation the test still considers live (not yet released), with what was written into it. */
  interface Live {
    readonly packet: Buffer;
    readonly n: number;
  }

  /** Writes allocation `n`'s own pattern all over it: an overlapping later allocation shows as other bytes. */
  const stamp = (packet: Buffer, n: number): Buffer => packet.fill(pattern(n));
  const stamped = (packet: Buffer, n: number): boolean => packet.equals(Buffer.alloc(packet.length, pattern(n)));

  const overlaps = (a: Uint8Array, b: Uint8Array): boolean =>
    a.buffer === b.buffer && a.byteOffset < b.byteOffset + b.length && b.byteOffset < a.byteOffset + a.length;

  it('hands out consecutive, non-overlapping allocations of the asked size, moving on to another slab only when one does not fit', () => {
    const slabs = new PacketSlabs();
    const random = prng(21);
    let slab: ArrayBufferLike | undefined;
    let end = 0;
    let slabsSeen = 0;
    for (let i = 0; i < 3000; i++) {
      const size = between(random, 1, SLAB_BYTES / 4);
      const packet = slabs.allocate(size);
      expect(packet.length).toBe(size);
      expect(slabs.owns(packet)).toBe(true);
      expect(packet.buffer.byteLength).toBe(SLAB_BYTES);
      if (packet.buffer === slab) {
        expect(packet.byteOffset).toBe(end);
      } else {
        // Another slab only because this one did not fit in what was left; from its start.
        if (slab) expect(end + size).toBeGreaterThan(SLAB_BYTES);
        expect(packet.byteOffset).toBe(0);
        slab = packet.buffer;
        slabsSeen++;
      }
      end = packet.byteOffset + size;
    }
    expect(slabsSeen).toBeGreaterThan(100);
    // Nothing released: every slab is still held, none reused.
    expect(slabs.stats).toEqual({ allocated: slabsSeen, reused: 0, tainted: 0 });
  });

  it('fills a slab to its last byte before moving on', () => {
    const slabs = new PacketSlabs();
    const quarter = SLAB_BYTES / 4;
    const packets = [slabs.allocate(quarter), slabs.allocate(quarter), slabs.allocate(quarter), slabs.allocate(quarter - 1), slabs.allocate(1)];
    expect(packets.every((packet) => packet.buffer === packets[0]?.buffer)).toBe(true);
    expect(packets.map((packet) => packet.byteOffset)).toEqual([0, quarter, 2 * quarter, 3 * quarter, SLAB_BYTES - 1]);
    const next = slabs.allocate(1);
    expect(next.buffer).not.toBe(packets[0]?.buffer);
    expect(next.byteOffset).toBe(0);
  });

  it('does not reuse the slab it allocates from, even with every allocation in it released', () => {
    const slabs = new PacketSlabs();
    const first = stamp(slabs.allocate(1000), 1);
    slabs.release(first);
    // Released, but the allocator is still in it: the next allocation follows, it does not start over.
    const second = stamp(slabs.allocate(1000), 2);
    expect(second.buffer).toBe(first.buffer);
    expect(second.byteOffset).toBe(1000);
    slabs.release(second);
    expect(slabs.owns(first)).toBe(true);
    expect(slabs.stats).toEqual({ allocated: 1, reused: 0, tainted: 0 });
  });

  it('reuses a slab only once the allocator moved on from it and every allocation in it was released', () => {
    const slabs = new PacketSlabs();
    const size = 60_000;
    // Slab A: a packet that stays unreleased (a socket that has not written it yet), and others.
    const a = [slabs.allocate(size), slabs.allocate(size), slabs.allocate(size)];
    a.forEach((packet, i) => stamp(packet, i));
    const slabA = a[0]?.buffer;
    for (const packet of a.slice(1)) slabs.release(packet);
    // The rest of A, released at once too: only the unreleased packet keeps it.
    let packet = slabs.allocate(size);
    for (; packet.buffer === slabA; packet = slabs.allocate(size)) slabs.release(packet);
    // From here, slabs filled and released: they come back one after another, never A.
    const seen = new Set<ArrayBufferLike>();
    const previous: Buffer[] = [];
    for (let i = 0; i < 200; i++, packet = slabs.allocate(size)) {
      seen.add(packet.buffer);
      expect(packet.buffer).not.toBe(slabA);
      previous.push(packet);
      if (previous.length > 3) for (const done of previous.splice(0, previous.length - 3)) slabs.release(done);
    }
    expect(a.every((packet, i) => stamped(packet, i)), 'an unreleased packet was overwritten').toBe(true);
    expect(slabs.stats.reused).toBeGreaterThan(0);
    expect(slabs.stats.allocated).toBeLessThanOrEqual(3);
    // Released: A is free, and the next slab the allocator takes (the last freed first).
    if (a[0]) slabs.release(a[0]);
    expect(slabs.owns(a[0] ?? Buffer.alloc(0))).toBe(false);
    let next = slabs.allocate(size);
    while (next.byteOffset !== 0) next = slabs.allocate(size);
    expect(next.buffer).toBe(slabA);
    expect(seen.size + 1).toBe(slabs.stats.allocated);
    for (const held of previous) slabs.release(held);
  });

  it('takes the slab it just left again when everything in it was released by then', () => {
    const slabs = new PacketSlabs();
    for (let i = 0; i < 100; i++) slabs.release(slabs.allocate(50_000));
    expect(slabs.stats).toEqual({ allocated: 1, reused: 9, tainted: 0 });
  });

  it('makes allocations larger than a quarter slab plain buffers: not owned, their release a no-op', () => {
    const slabs = new PacketSlabs();
    const inSlab = slabs.allocate(SLAB_BYTES / 4);
    expect(slabs.owns(inSlab)).toBe(true);
    const plain = slabs.allocate(SLAB_BYTES / 4 + 1);
    expect(plain.length).toBe(SLAB_BYTES / 4 + 1);
    expect(slabs.owns(plain)).toBe(false);
    expect(plain.buffer).not.toBe(inSlab.buffer);
    expect(slabs.hold(plain)).toBe(false);
    slabs.release(plain);
    slabs.release(plain);
    // The slab's accounting is untouched: the next allocation follows the last one in the slab,
    // and the slab is still held for `inSlab` (the extra releases took nothing from it).
    const next = slabs.allocate(100);
    expect(next.buffer).toBe(inSlab.buffer);
    expect(next.byteOffset).toBe(SLAB_BYTES / 4);
    expect(slabs.allocate(SLAB_BYTES * 2).length).toBe(SLAB_BYTES * 2);
    expect(slabs.stats).toEqual({ allocated: 1, reused: 0, tainted: 0 });
  });

  /**
   * Allocates `steps` packets of 1..40000 bytes, each stamped with its own pattern, and releases
   * them in random order after a random delay (at most `maxLive` wait; a released packet was
   * checked intact first). `stallAt`: from there, for `stallFor` steps, nothing is released
   * (a socket that does not drain), then all is. Every allocation must miss every live one.
   * Returns the stats, and the most slabs that were in use at once.
   */
  function randomRun(seed: number, steps: number, maxLive: number, stall?: { at: number; for: number }): { slabs: PacketSlabs; mostInUse: number } {
    const random = prng(seed);
    const slabs = new PacketSlabs();
    let live: Live[] = [];
    let mostInUse = 0;
    const release = (item: Live, step: number) => {
      if (!stamped(item.packet, item.n)) expect.fail(`seed ${seed} step ${step}: packet ${item.n} was overwritten before its release`);
      slabs.release(item.packet);
    };
    for (let step = 0; step < steps; step++) {
      const size = between(random, 1, 40_000);
      const packet = slabs.allocate(size);
      expect(packet.length).toBe(size);
      const clash = live.find((item) => overlaps(item.packet, packet));
      if (clash) expect.fail(`seed ${seed} step ${step}: allocation overlaps live packet ${clash.n}`);
      live.push({ packet: stamp(packet, step), n: step });
      mostInUse = Math.max(mostInUse, new Set(live.map((item) => item.packet.buffer)).size);
      const stalled = stall !== undefined && step >= stall.at && step < stall.at + stall.for;
      if (stalled) continue;
      // A socket's write callbacks: usually a few, in any order; all of them when too many wait.
      const releases = live.length > maxLive ? live.length - maxLive : random() < 0.5 ? between(random, 0, 3) : 0;
      for (let i = 0; i < releases && live.length > 0; i++) {
        const [item] = live.splice(between(random, 0, live.length - 1), 1);
        if (item) release(item, step);
      }
    }
    for (const item of live) release(item, steps);
    live = [];
    return { slabs, mostInUse };
  }

  it.each([1, 2, 3, 0xbeef])('never overwrites a live packet, and allocates few slabs when releases keep up (seed %i)', (seed) => {
    const { slabs, mostInUse } = randomRun(seed, 4000, 24);
    // 4000 packets of ~20 KiB: ~150 slabs' worth, from a handful of slabs.
    expect(slabs.stats.reused).toBeGreaterThan(100);
    // At most 24 packets wait, so at most 25 slabs are in use (each pins one, plus the current),
    // in practice a few; with up to MAX_FREE_SLABS kept free, nothing beyond that is allocated.
    expect(mostInUse).toBeLessThanOrEqual(25);
    expect(slabs.stats.allocated).toBeLessThanOrEqual(mostInUse + 1);
    expect(slabs.stats.allocated).toBeLessThanOrEqual(8);
    expect(slabs.stats.tainted).toBe(0);
  });

  it.each([5, 6])('never overwrites a live packet through a stall, and allocates nothing more once releases catch up (seed %i)', (seed) => {
    // 150 packets unreleased: ~3 MiB, ~6 slabs pinned at once, all freed together afterwards.
    const first = randomRun(seed, 1500, 16, { at: 500, for: 150 });
    expect(first.mostInUse).toBeGreaterThan(5);
    const afterStall = first.slabs.stats.allocated;
    expect(afterStall).toBeLessThanOrEqual(first.mostInUse + 1);
    // The slabs the stall needed were kept (up to MAX_FREE_SLABS): more traffic, no new slabs.
    for (let i = 0; i < 2000; i++) first.slabs.release(first.slabs.allocate(1 + ((i * 7919) % 40_000)));
    expect(first.slabs.stats.allocated).toBe(afterStall);
  });
});
