export interface Corkable {
  cork(): void;
  uncork(): void;
}

type Marked = Corkable & { corkedUntil?: 'tick' | 'io' | undefined };

const uncork = (writable: Marked) => {
  writable.corkedUntil = undefined;
  writable.uncork();
};

/**
 * Corks the writable until the end of this tick (once per tick): everything written meanwhile
 * leaves in one writev instead of one syscall per write.
 */
export function corkForThisTick(writable: Corkable): void {
  const w = writable as Marked;
  if (w.corkedUntil) return;
  w.corkedUntil = 'tick';
  w.cork();
  process.nextTick(uncork, w);
}

/**
 * Corks the writable until the event loop has run every I/O callback that is ready now
 * (setImmediate): writes that many connections' events produce in one turn leave together in
 * one writev. Costs no extra wait beyond that turn.
 */
export function corkForThisTurn(writable: Corkable): void {
  const w = writable as Marked;
  if (w.corkedUntil) return;
  w.corkedUntil = 'io';
  w.cork();
  setImmediate(uncork, w);
}
