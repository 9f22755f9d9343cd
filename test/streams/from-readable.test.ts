import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { fromReadable } from '../../src/streams/from-readable.js';
import { b } from './marbles.js';

describe('fromReadable', () => {
  it('emits chunks (strings as buffers) and completes on end', async () => {
    const stream = new PassThrough();
    stream.pause();
    const chunks: Buffer[] = [];
    const done = new Promise<void>((resolve, reject) =>
      fromReadable(stream).subscribe({ next: (c) => chunks.push(c), error: reject, complete: resolve }),
    );
    stream.write(b('ab'));
    stream.write('cd');
    stream.end();
    await done;
    expect(Buffer.concat(chunks)).toEqual(b('abcd'));
    expect(chunks.every((c) => Buffer.isBuffer(c))).toBe(true);
  });

  it('errors on a stream error, and keeps a permanent error handler', async () => {
    const stream = new PassThrough();
    const done = new Promise<unknown>((resolve) => fromReadable(stream).subscribe({ error: resolve }));
    const boom = new Error('EIO');
    stream.destroy(boom);
    expect(await done).toBe(boom);
    expect(stream.listenerCount('error')).toBeGreaterThan(0);
  });

  it('completes when the stream closes without an end', async () => {
    const stream = new PassThrough();
    const done = new Promise<void>((resolve) => fromReadable(stream).subscribe({ complete: resolve }));
    stream.destroy();
    await done;
  });

  it('pauses the stream when unsubscribed', () => {
    const stream = new PassThrough();
    const subscription = fromReadable(stream).subscribe();
    expect(stream.isPaused()).toBe(false);
    subscription.unsubscribe();
    expect(stream.isPaused()).toBe(true);
    expect(stream.listenerCount('data')).toBe(0);
  });
});
