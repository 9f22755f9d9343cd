import { asyncScheduler, interval, type MonoTypeOperatorFunction, Observable, type SchedulerLike, tap } from 'rxjs';
import { CONTROL_CHANNEL, Command, type Frame, frame } from './frame.js';

export interface KeepaliveConfig {
  /** A PING every this many milliseconds. */
  readonly intervalMs: number;
  /** Intervals in a row without a single byte from the peer before the session is declared dead. */
  readonly misses: number;
  /** The error the pings end with then. */
  readonly timeout: () => Error;
}

export interface Keepalive {
  /** Put on the peer's byte stream: every chunk counts as a sign of life. */
  readonly heard: <T>() => MonoTypeOperatorFunction<T>;
  /** PING frames for the control channel; errors with `timeout()` once the peer has gone silent. */
  readonly pings$: Observable<Frame>;
}

/**
 * Notices a peer that has gone away without closing anything (a dropped network, a suspended
 * host): TCP and ssh may wait for many minutes. Pings make a live peer answer even when no
 * connection is carrying data; any byte counts as an answer, so a busy transfer is never mistaken
 * for a dead one. Ticks are counted instead of clocks compared, so a laptop waking from sleep
 * does not declare a live session dead at once.
 */
export function keepalive(config: KeepaliveConfig, scheduler: SchedulerLike = asyncScheduler): Keepalive {
  let heard = false;
  return {
    heard: () => tap(() => (heard = true)),
    pings$: new Observable<Frame>((out) => {
      let missed = 0;
      let sequence = 0;
      heard = false;
      return interval(config.intervalMs, scheduler).subscribe({
        next: () => {
          if (heard) missed = 0;
          else if (++missed >= config.misses) return out.error(config.timeout());
          heard = false;
          const payload = Buffer.allocUnsafe(4);
          payload.writeUInt32BE(sequence++ >>> 0, 0);
          out.next(frame(CONTROL_CHANNEL, Command.PING, payload));
        },
        error: (err: unknown) => out.error(err),
      });
    }),
  };
}
