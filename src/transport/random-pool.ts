import { randomFillSync } from 'node:crypto';

type RandomFillSync = <T extends NodeJS.ArrayBufferView>(buffer: T, offset?: number, size?: number) => T;

/** Bytes of CSPRNG output fetched at once; each is handed out once. */
const POOL_BYTES = 64 * 1024;
/** Larger requests go to the real randomFillSync. */
const MAX_POOLED = 256;

/**
 * randomFillSync that serves small requests from a pool of bytes the real one filled. An ssh
 * packet needs 4–20 bytes of random padding, and each call of Node's randomFillSync costs
 * ~8–13 µs of fixed overhead: about a tenth of a bulk upload's CPU. Every byte still comes from
 * the CSPRNG, and none is used twice.
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

/**
 * The pooled randomFillSync for the packets we lay out for ssh2 (ssh2-outbound.ts). Ours alone:
 * Node's crypto.randomFillSync, which ssh2 and everyone else use, is left as it is.
 */
export const sshRandomFill: RandomFillSync = pooledRandomFill(randomFillSync);
