// The padding pool is rxshuttle's own: loading the ssh2 transport leaves Node's crypto as it was.
import { randomFillSync } from 'node:crypto';
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import { pooledRandomFill } from '../../src/transport/random-pool.js';

describe('the ssh2 transport', () => {
  it("loads ssh2 without replacing crypto.randomFillSync (ssh2 keeps Node's own)", async () => {
    const crypto = createRequire(import.meta.url)('node:crypto') as { randomFillSync: unknown };
    const before = crypto.randomFillSync;
    const assigned: unknown[] = [];
    // Any assignment to the property while the transport loads would show here.
    Object.defineProperty(crypto, 'randomFillSync', {
      configurable: true,
      enumerable: true,
      get: () => before,
      set: (value: unknown) => assigned.push(value),
    });
    try {
      await import('../../src/transport/ssh2.js');
    } finally {
      Object.defineProperty(crypto, 'randomFillSync', { configurable: true, enumerable: true, writable: true, value: before });
    }
    expect(assigned).toEqual([]);
    expect(crypto.randomFillSync).toBe(before);
    expect(randomFillSync).toBe(before);
  });
});

describe('pooledRandomFill', () => {
  it('serves small requests from one real fill, each byte once; large ones go to the real function', () => {
    const calls: number[] = [];
    let counter = 0;
    // A fake "CSPRNG" that numbers its bytes, so reuse would show.
    const real = <T extends NodeJS.ArrayBufferView>(buffer: T, offset = 0, size?: number): T => {
      const view = new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
      const end = size === undefined ? view.length : offset + size;
      calls.push(end - offset);
      for (let i = offset; i < end; i++) view[i] = counter++ & 0xff;
      return buffer;
    };
    const fill = pooledRandomFill(real);
    const a = fill(Buffer.alloc(20), 4, 16);
    const b = fill(Buffer.alloc(16));
    expect(calls).toEqual([64 * 1024]);
    expect([...a.subarray(0, 4)]).toEqual([0, 0, 0, 0]);
    expect([...a.subarray(4)]).toEqual(Array.from({ length: 16 }, (_, i) => i));
    expect([...b]).toEqual(Array.from({ length: 16 }, (_, i) => 16 + i));
    fill(Buffer.alloc(1024));
    expect(calls).toEqual([64 * 1024, 1024]);
    // exhausting the pool refills it
    for (let i = 0; i < 64 * 1024 / 16; i++) fill(Buffer.alloc(16));
    expect(calls).toEqual([64 * 1024, 1024, 64 * 1024]);
  });
});
