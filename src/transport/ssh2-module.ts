import { createRequire } from 'node:module';

type Ssh2Module = typeof import('ssh2');
type RandomFillSync = <T extends NodeJS.ArrayBufferView>(buffer: T, offset?: number, size?: number) => T;

const require = createRequire(import.meta.url);

/** Bytes of CSPRNG output fetched at once; each is handed out once. */
const POOL_BYTES = 64 * 1024;
/** Larger requests go to the real randomFillSync. */
const MAX_POOLED = 256;

/**
 * randomFillSync that serves small requests from a pool of bytes the real one filled. ssh2 asks
 * for 4–20 bytes of padding per packet, and each call of Node's randomFillSync costs ~8 µs of
 * fixed overhead: about a tenth of a bulk upload's CPU. Every byte still comes from the CSPRNG,
 * and none is used twice.
 */
export function pooledRandomFill(original: RandomFillSync): RandomFillSync {
  const pool = Buffer.allocUnsafe(POOL_BYTES);
  let used = POOL_BYTES;
  return (buffer, offset = 0, size) => {
    const length = size ?? buffer.byteLength - offset;
    if (length > MAX_POOLED || !(buffer instanceof Uint8Array)) return original(buffer, offset, size);
    if (used + length > POOL_BYTES) {
      original(pool);
      used = 0;
    }
    pool.copy(buffer, offset, used, used + length);
    pool.fill(0, used, used + length);
    used += length;
    return buffer;
  };
}

/** A pooled randomFillSync of our own, for packets we lay out for ssh2 (ssh2-outbound.ts). */
export const sshRandomFill: RandomFillSync = pooledRandomFill((require('node:crypto') as { randomFillSync: RandomFillSync }).randomFillSync);

/**
 * The ssh2 module, loaded with the pooled randomFillSync in place: ssh2 takes its own reference
 * to crypto.randomFillSync when it loads, so the pool serves ssh2 alone and the process's
 * crypto.randomFillSync is restored at once. (Had someone loaded ssh2 before, that copy, with
 * Node's own function, is what we get.)
 */
export function loadSsh2(): Ssh2Module {
  const crypto = require('node:crypto') as { randomFillSync: RandomFillSync };
  const original = crypto.randomFillSync;
  crypto.randomFillSync = pooledRandomFill(original);
  try {
    return require('ssh2') as Ssh2Module;
  } finally {
    crypto.randomFillSync = original;
  }
}
