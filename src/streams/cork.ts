const uncorkLater = (writable: Corkable & { corkedThisTick?: boolean }) => {
  writable.corkedThisTick = false;
  writable.uncork();
};

export interface Corkable {
  cork(): void;
  uncork(): void;
}

/**
 * Corks the writable until the end of this tick (once per tick): everything written meanwhile
 * leaves in one writev instead of one syscall per write.
 */
export function corkForThisTick(writable: Corkable): void {
  const w = writable as Corkable & { corkedThisTick?: boolean };
  if (w.corkedThisTick) return;
  w.corkedThisTick = true;
  w.cork();
  process.nextTick(uncorkLater, w);
}
