import { BehaviorSubject, distinctUntilChanged, type Observable } from 'rxjs';
import { encodeHeader, type Frame } from './frame.js';

const ignore = () => {};

export interface FrameWriter {
  write(frame: Frame): void;
  /** true while the writable's buffer is over its high-water mark; readers pause on it. */
  readonly blocked$: Observable<boolean>;
}

/**
 * Frames onto a writable stream: header and payload go out together in one writev (cork, then
 * uncork once per tick), never copied into a new buffer.
 */
export function frameWriter(writable: NodeJS.WritableStream & { cork(): void; uncork(): void }): FrameWriter {
  writable.on('error', ignore);
  const blocked = new BehaviorSubject(false);
  let corked = false;
  const uncork = () => {
    corked = false;
    writable.uncork();
  };
  writable.on('drain', () => blocked.next(false));
  return {
    write(f) {
      if (!corked) {
        corked = true;
        writable.cork();
        process.nextTick(uncork);
      }
      let ok = writable.write(encodeHeader(f));
      if (f.payload.length > 0) ok = writable.write(f.payload);
      if (!ok && !blocked.value) blocked.next(true);
    },
    blocked$: blocked.pipe(distinctUntilChanged()),
  };
}
