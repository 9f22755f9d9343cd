import type { VirtualTimeScheduler } from 'rxjs';

/**
 * Moves a VirtualTimeScheduler's clock `ms` on, running what is due by then (a no-op at the end
 * stops the clock there), for tests whose timers run on virtual time while their I/O is real.
 */
export function advance(scheduler: VirtualTimeScheduler, ms: number): void {
  scheduler.schedule(() => {}, ms);
  scheduler.maxFrames = scheduler.now() + ms;
  scheduler.flush();
}
