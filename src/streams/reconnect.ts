/**
 * Coming back by itself (issue 14): the state machine that re-runs a session after it was lost,
 * and the hold that keeps new connections waiting while there is none. Pure operators over an
 * injected scheduler, marble-tested in test/streams/reconnect.test.ts; tunnel/tunnel.ts supplies the
 * session and the signals.
 *
 *   connecting ──up──▶ connected ──lost──▶ reconnecting ──(delay | nudge)──▶ connecting …
 *        └──lost before ever up: the error ends it (a first connection that fails still exits)
 *
 * After a loss the first retry is immediate, the next ones back off (doubling, with jitter) up
 * to a cap of about 10 s; a nudge (the machine woke from sleep, the routes or addresses changed)
 * cuts the wait short. Being up resets the backoff.
 */
import {
  asyncScheduler,
  defer,
  type MonoTypeOperatorFunction,
  NEVER,
  Observable,
  race,
  retry,
  type SchedulerLike,
  Subject,
  take,
  tap,
  throwError,
  timer,
} from 'rxjs';

export interface ReconnectPolicy {
  /** The wait before retry `attempt` (1 = the first after a loss). */
  readonly delayMs: (attempt: number) => number;
  /** Whether a loss is worth a retry (a server that said EXIT on purpose, for one, is not). */
  readonly retriable: (error: unknown) => boolean;
  /** Cuts a wait short: wake from sleep, a change of routes or addresses. */
  readonly nudge$?: Observable<unknown>;
  readonly scheduler?: SchedulerLike;
}

/** What the machine reports besides the session's own events. */
export type ReconnectNotice = { readonly kind: 'reconnecting'; readonly attempt: number; readonly delayMs: number; readonly reason: unknown };

/** Backoff: 0 for the first retry, then 0.5 s doubling up to `capMs`, each within ±20 % (`random` in [0, 1)). */
export function backoffMs(attempt: number, capMs = 10_000, random: () => number = Math.random): number {
  if (attempt <= 1) return 0;
  const base = Math.min(capMs, 500 * 2 ** (attempt - 2));
  return Math.round(Math.min(capMs, base * (0.8 + 0.4 * random())));
}

/**
 * Runs `session()` and, once it has been up (`isUp` of one of its values), runs it again
 * whenever it errors with a retriable error: a notice first, then the policy's delay (or a
 * nudge). An error before it was ever up, or one that is not retriable, ends it.
 */
export function withReconnect<T>(
  session: () => Observable<T>,
  isUp: (value: T) => boolean,
  policy: ReconnectPolicy,
): Observable<T | ReconnectNotice> {
  return defer(() => {
    const scheduler = policy.scheduler ?? asyncScheduler;
    const notices = new Subject<ReconnectNotice>();
    let everUp = false;
    let attempt = 0;
    const runs$ = defer(session).pipe(
      tap((value) => {
        if (!isUp(value)) return;
        everUp = true;
        attempt = 0;
      }),
      retry({
        delay: (error: unknown) => {
          if (!everUp || !policy.retriable(error)) return throwError(() => error);
          attempt++;
          const delayMs = policy.delayMs(attempt);
          notices.next({ kind: 'reconnecting', attempt, delayMs, reason: error });
          return delayMs <= 0 ? timer(0, scheduler) : race(timer(delayMs, scheduler), (policy.nudge$ ?? NEVER).pipe(take(1)));
        },
      }),
    );
    return new Observable<T | ReconnectNotice>((subscriber) => {
      const sub = notices.subscribe(subscriber);
      sub.add(runs$.subscribe(subscriber));
      return sub;
    });
  });
}

export interface HoldPolicy<T> {
  /** At most this many wait at once; one more is dropped at once. */
  readonly max: number;
  /** Each waits at most this long. */
  readonly maxWaitMs: number;
  /** What becomes of one that is not carried (reset it). */
  readonly drop: (item: T, why: 'full' | 'timeout' | 'end') => void;
  readonly scheduler?: SchedulerLike;
}

/**
 * Passes items through while `up$`'s last value is true; while it is false (the session is
 * down) they wait, at most `max` at once and `maxWaitMs` each, and go out in their order once it
 * is true again. Items beyond the bound, or that waited too long, go to `drop`; so do those still
 * waiting when the source ends or the subscription is closed.
 */
export function holdWhileDown<T>(up$: Observable<boolean>, policy: HoldPolicy<T>): MonoTypeOperatorFunction<T> {
  return (source) =>
    new Observable<T>((subscriber) => {
      const scheduler = policy.scheduler ?? asyncScheduler;
      let up = false;
      const waiting: Array<{ item: T; timer: { unsubscribe(): void } }> = [];
      const release = () => {
        while (up && waiting.length > 0) {
          const next = waiting.shift()!;
          next.timer.unsubscribe();
          subscriber.next(next.item);
        }
      };
      const upSub = up$.subscribe({
        next: (value) => {
          up = value;
          release();
        },
        error: (e: unknown) => subscriber.error(e),
      });
      const sourceSub = source.subscribe({
        next: (item) => {
          if (up) return subscriber.next(item);
          if (waiting.length >= policy.max) return policy.drop(item, 'full');
          const entry = {
            item,
            timer: scheduler.schedule(() => {
              const i = waiting.indexOf(entry);
              if (i >= 0) waiting.splice(i, 1);
              policy.drop(item, 'timeout');
            }, policy.maxWaitMs),
          };
          waiting.push(entry);
        },
        error: (e: unknown) => subscriber.error(e),
        complete: () => subscriber.complete(),
      });
      return () => {
        upSub.unsubscribe();
        sourceSub.unsubscribe();
        for (const { item, timer: t } of waiting.splice(0)) {
          t.unsubscribe();
          policy.drop(item, 'end');
        }
      };
    });
}
