/** Test data shared by the transport tests: reproducible bytes, and where two runs of them differ. */
import { createCipheriv } from 'node:crypto';

/** Reproducible content that differs everywhere: the AES-CTR keystream of a key made of `seed`. */
export function content(seed: number, bytes: number): Buffer {
  const key = Buffer.alloc(16);
  key.writeUInt32BE(seed);
  return createCipheriv('aes-128-ctr', key, Buffer.alloc(16)).update(Buffer.alloc(bytes));
}

/** Where two buffers first differ (-1: equal), for a failure message that says where. */
export function firstDifference(actual: Buffer, expected: Buffer): number {
  const length = Math.min(actual.length, expected.length);
  for (let i = 0; i < length; i += 4096) {
    const end = Math.min(length, i + 4096);
    if (actual.subarray(i, end).equals(expected.subarray(i, end))) continue;
    for (let j = i; j < end; j++) if (actual[j] !== expected[j]) return j;
  }
  return actual.length === expected.length ? -1 : length;
}

/** mulberry32: a small seeded PRNG, so a failing run replays exactly. */
export function prng(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
