// ssh2 gets a pooled randomFillSync; the process keeps Node's own.
import { randomFillSync } from 'node:crypto';
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import { loadSsh2, pooledRandomFill } from '../../src/transport/ssh2-module.js';

describe('loadSsh2', () => {
  it('returns ssh2 and leaves crypto.randomFillSync as it was', () => {
    const crypto = createRequire(import.meta.url)('node:crypto') as { randomFillSync: unknown };
    const before = crypto.randomFillSync;
    const ssh2 = loadSsh2();
    expect(typeof ssh2.Client).toBe('function');
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
