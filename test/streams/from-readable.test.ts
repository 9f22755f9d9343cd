import { PassThrough } from 'node:stream';
import { concat, of, switchMap, take } from 'rxjs';
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
    const seen: string[] = [];
    const done = new Promise<void>((resolve) =>
      fromReadable(stream).subscribe({
        next: (c) => seen.push(`data ${c.toString()}`),
        error: (e: unknown) => {
          seen.push(`error ${String(e)}`);
          resolve();
        },
        complete: () => {
          seen.push('complete');
          resolve();
        },
      }),
    );
    stream.destroy();
    await done;
    expect(stream.readableEnded).toBe(false); // closed, never ended
    expect(seen).toEqual(['complete']);
    expect(stream.listenerCount('data')).toBe(0);
  });

  it('pauses the stream when unsubscribed', () => {
    const stream = new PassThrough();
    const subscription = fromReadable(stream).subscribe();
    expect(stream.isPaused()).toBe(false);
    subscription.unsubscribe();
    expect(stream.isPaused()).toBe(true);
    expect(stream.listenerCount('data')).toBe(0);
  });

  it('hands over from one reader to the next without losing a chunk: take(1), then a new subscription, in the same turn', async () => {
    const stream = new PassThrough();
    const source$ = fromReadable(stream);
    const seen: string[] = [];
    const done = new Promise<void>((resolve, reject) =>
      // The next reader subscribes while the first is still being torn down (splitProbe's case).
      source$
        .pipe(
          take(1),
          switchMap((first) => concat(of(first), source$)),
        )
        .subscribe({ next: (c) => seen.push(c.toString()), complete: resolve, error: reject }),
    );
    stream.write('first');
    await new Promise((r) => setImmediate(r));
    stream.write('second');
    stream.end();
    await done;
    expect(seen).toEqual(['first', 'second']);
  });

  it('a subscription after the end completes at once', async () => {
    const stream = new PassThrough();
    const source$ = fromReadable(stream);
    const first = new Promise<void>((resolve, reject) => source$.subscribe({ complete: resolve, error: reject }));
    stream.end();
    await first;
    expect(stream.readableEnded).toBe(true);
    const seen: string[] = [];
    source$.subscribe({ next: () => seen.push('data'), error: () => seen.push('error'), complete: () => seen.push('complete') });
    // Completed during subscribe, without waiting for an event that will never come again.
    expect(seen).toEqual(['complete']);
    expect(stream.listenerCount('data')).toBe(0);
    expect(stream.listenerCount('end')).toBe(0);
  });
});
