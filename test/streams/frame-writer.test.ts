import { Writable } from 'node:stream';
import { setImmediate as tick } from 'node:timers/promises';
import { from, lastValueFrom, toArray } from 'rxjs';
import { describe, expect, it } from 'vitest';
import { decodeFrames } from '../../src/streams/decode-frames.js';
import { type Frame, MAX_PAYLOAD } from '../../src/streams/frame.js';
import { frameWriter } from '../../src/streams/frame-writer.js';
import { unexpectedError } from '../support/unexpected-error.js';
import { f, pattern } from './marbles.js';

/** A writable that records each writev batch and completes writes only when told to. */
function recorder(highWaterMark: number) {
  const batches: Buffer[][] = [];
  let release: Array<() => void> = [];
  const writable = new Writable({
    highWaterMark,
    writev(chunks, callback) {
      batches.push(chunks.map((c) => c.chunk as Buffer));
      release.push(() => callback());
    },
    write(chunk: Buffer, _encoding, callback) {
      batches.push([chunk]);
      release.push(() => callback());
    },
  });
  const drainAll = () => {
    const pending = release;
    release = [];
    for (const done of pending) done();
  };
  const bytes = () => Buffer.concat(batches.flat());
  return { writable, batches, drainAll, bytes };
}

const decode = (bytes: Buffer): Promise<Frame[]> => lastValueFrom(from([bytes]).pipe(decodeFrames(), toArray()));

describe('frameWriter', () => {
  it('writes the frames of one tick as one writev batch, header and payload uncopied', async () => {
    const rec = recorder(1024 * 1024);
    const writer = frameWriter(rec.writable);
    const payload = pattern(1000);
    const frames = [f.open(1), f.data(1, payload), f.eof(1)];
    for (const fr of frames) writer.write(fr);
    expect(rec.batches).toEqual([]); // corked until the end of the tick
    await tick();
    rec.drainAll();
    await tick();
    expect(rec.batches.length).toBe(1);
    expect(rec.batches[0]?.some((chunk) => chunk === payload)).toBe(true);
    expect(await decode(rec.bytes())).toEqual(frames);
  });

  it('reports blocked while the writable is over its high-water mark, and unblocked on drain', async () => {
    const rec = recorder(1000);
    const writer = frameWriter(rec.writable);
    const seen: boolean[] = [];
    writer.blocked$.subscribe({ next: (blocked) => seen.push(blocked), error: unexpectedError });
    expect(seen).toEqual([false]);
    writer.write(f.data(1, pattern(500)));
    expect(seen).toEqual([false]);
    writer.write(f.data(1, pattern(MAX_PAYLOAD)));
    writer.write(f.data(1, pattern(10)));
    expect(seen).toEqual([false, true]); // reported once, not per frame
    await tick();
    rec.drainAll();
    await tick();
    expect(seen).toEqual([false, true, false]);
    expect((await decode(rec.bytes())).map((fr) => fr.payload.length)).toEqual([500, MAX_PAYLOAD, 10]);
  });

  it('with a larger maxQueued lets more bytes queue before blocking; setMaxQueued changes it', async () => {
    const rec = recorder(1000);
    const writer = frameWriter(rec.writable, 200_000);
    const seen: boolean[] = [];
    writer.blocked$.subscribe({ next: (blocked) => seen.push(blocked), error: unexpectedError });
    writer.write(f.data(1, pattern(MAX_PAYLOAD)));
    writer.write(f.data(1, pattern(MAX_PAYLOAD)));
    expect(seen).toEqual([false]);
    writer.setMaxQueued(0); // back to the stream's own high-water mark
    writer.write(f.data(1, pattern(10)));
    expect(seen).toEqual([false, true]);
    await tick();
    rec.drainAll();
    await tick();
    expect(seen).toEqual([false, true, false]);
  });

  it('does not let a write error on the transport crash the process', () => {
    const writable = new Writable({ write: (_c, _e, cb) => cb(new Error('EPIPE')) });
    frameWriter(writable);
    expect(writable.listenerCount('error')).toBeGreaterThan(0);
  });
});
