import { BehaviorSubject, distinctUntilChanged, type Observable } from 'rxjs';
import { corkForThisTick } from './cork.js';
import { encodeHeader, type Frame } from './frame.js';

const ignore = () => {};

export interface FrameWriter {
  write(frame: Frame): void;
  /** true while the writable's buffer is over its high-water mark; readers pause on it. */
  readonly blocked$: Observable<boolean>;
  /** Changes how many bytes may queue before readers pause (see frameWriter). */
  setMaxQueued(bytes: number): void;
}

type CorkableWritable = NodeJS.WritableStream & {
  cork(): void;
  uncork(): void;
  readonly writableLength: number;
  readonly writableHighWaterMark: number;
};

/**
 * Frames onto a writable stream: header and payload go out together in one writev (cork, then
 * uncork once per tick), never copied into a new buffer. Readers are told to pause once more than
 * `maxQueued` bytes wait in the stream (never less than its high-water mark, since 'drain' only
 * follows a write() that returned false): small keeps interactive frames from queueing behind
 * bulk ones (latency control), large favours throughput.
 */
export function frameWriter(writable: CorkableWritable, maxQueued = 0): FrameWriter {
  writable.on('error', ignore);
  let limit = Math.max(maxQueued, writable.writableHighWaterMark);
  const blocked = new BehaviorSubject(false);
  writable.on('drain', () => blocked.next(false));
  return {
    write(f) {
      corkForThisTick(writable);
      writable.write(encodeHeader(f));
      if (f.payload.length > 0) writable.write(f.payload);
      if (writable.writableLength >= limit && !blocked.value) blocked.next(true);
    },
    blocked$: blocked.pipe(distinctUntilChanged()),
    setMaxQueued(bytes) {
      limit = Math.max(bytes, writable.writableHighWaterMark);
    },
  };
}
