/**
 * The reconnect state machine and the hold of new connections while down (issue 14), in
 * virtual time. A "session" here is a cold observable of strings: `u` means it is up, `#` that
 * it was lost.
 */
import { describe, expect, it } from 'vitest';
import { backoffMs, holdWhileDown, type ReconnectNotice, withReconnect } from '../../src/streams/reconnect.js';
import { testScheduler } from './marbles.js';

const lost = new Error('connection lost');
const onPurpose = new Error('server said EXIT');
const isUp = (v: string) => v === 'u';
const retriable = (e: unknown) => e !== onPurpose;
const notice = (attempt: number, delayMs: number, reason: unknown = lost): ReconnectNotice => ({ kind: 'reconnecting', attempt, delayMs, reason });

describe('withReconnect', () => {
  it('a first connection that fails before it was ever up ends with its error: no retry', () => {
    testScheduler().run(({ cold, expectObservable, expectSubscriptions }) => {
      const session = cold('--#', undefined, lost);
      expectObservable(withReconnect(() => session, isUp, { delayMs: () => 0, retriable })).toBe('--#', undefined, lost);
      expectSubscriptions(session.subscriptions).toBe('^-!');
    });
  });

  it('once up, a loss says so and retries at once; up again resets the count', () => {
    testScheduler().run(({ cold, expectObservable, expectSubscriptions }) => {
      const session = cold('-u--#', undefined, lost);
      const out = withReconnect(() => session, isUp, { delayMs: (n) => (n === 1 ? 0 : 100), retriable });
      // each run is up before it is lost: every loss is attempt 1, retried at once
      expectObservable(out, '^ 14ms !').toBe('-u--nu--nu--nu', { u: 'u', n: notice(1, 0) });
      expectSubscriptions(session.subscriptions).toBe(['^---!', '----^---!', '--------^---!', '------------^--!']);
    });
  });

  it('retries that fail before up back off by the policy, with the attempt counted', () => {
    testScheduler().run(({ cold, expectObservable, expectSubscriptions }) => {
      let runs = 0;
      const up = cold('u--#', undefined, lost);
      const failing = cold('-#', undefined, lost);
      const delays = [0, 5, 10];
      const out = withReconnect(() => (runs++ === 0 ? up : failing), isUp, { delayMs: (n) => delays[n - 1] ?? 20, retriable });
      // t3 lost: attempt 1 now; t4 fails: attempt 2 after 5; t10 fails: attempt 3 after 10; t21 fails: attempt 4 after 20
      expectObservable(out, '^ 30ms !').toBe('u--ab-----c----------d', {
        u: 'u',
        a: notice(1, 0),
        b: notice(2, 5),
        c: notice(3, 10),
        d: notice(4, 20),
      });
      expectSubscriptions(failing.subscriptions).toBe(['---^!', '---------^!', '--------------------^!']);
    });
  });

  it('a nudge (wake from sleep, a route change) cuts a wait short', () => {
    testScheduler().run(({ cold, hot, expectObservable }) => {
      let runs = 0;
      const up = cold('u-#', undefined, lost);
      const failing = cold('#', undefined, lost);
      const nudge$ = hot('-------------x');
      const out = withReconnect(() => (runs++ < 2 ? (runs === 1 ? up : failing) : up), isUp, { delayMs: (n) => (n === 1 ? 0 : 1000), retriable, nudge$ });
      // t2 lost → attempt 1 at once (fails at t2) → attempt 2 would wait 1000 ms; the nudge at t13 retries, up at t13
      expectObservable(out, '^ 14ms !').toBe('u-(ab)-------u', { u: 'u', a: notice(1, 0), b: notice(2, 1000) });
    });
  });

  it('an error that is not worth a retry ends it, even after it was up', () => {
    testScheduler().run(({ cold, expectObservable }) => {
      const session = cold('u--#', undefined, onPurpose);
      expectObservable(withReconnect(() => session, isUp, { delayMs: () => 0, retriable })).toBe('u--#', { u: 'u' }, onPurpose);
    });
  });

  it('unsubscribing during a wait ends it: nothing is run again', () => {
    testScheduler().run(({ cold, expectObservable, expectSubscriptions }) => {
      const session = cold('u-#', undefined, lost);
      const out = withReconnect(() => session, isUp, { delayMs: () => 50, retriable });
      expectObservable(out, '^ 9ms !').toBe('u-n', { u: 'u', n: notice(1, 50) });
      expectSubscriptions(session.subscriptions).toBe(['^-!']);
    });
  });
});

describe('backoffMs', () => {
  it('0 for the first retry, then 0.5 s doubling, within ±20 %, capped at 10 s', () => {
    expect(backoffMs(1)).toBe(0);
    expect([2, 3, 4, 5, 6, 7, 8].map((n) => backoffMs(n, 10_000, () => 0.5))).toEqual([500, 1000, 2000, 4000, 8000, 10_000, 10_000]);
    expect(backoffMs(3, 10_000, () => 0)).toBe(800);
    expect(backoffMs(3, 10_000, () => 0.999)).toBe(1200);
    expect(backoffMs(50, 10_000, () => 0.999)).toBe(10_000);
  });
});

describe('holdWhileDown', () => {
  it('passes through while up; holds while down and releases in order when up again', () => {
    testScheduler().run(({ hot, expectObservable }) => {
      const dropped: string[] = [];
      const up$ = hot('t----f-------t', { t: true, f: false });
      const items = hot('-a----b--c----------d');
      const out = items.pipe(holdWhileDown(up$, { max: 10, maxWaitMs: 100, drop: (i, why) => dropped.push(`${i} ${why}`) }));
      expectObservable(out).toBe('-a-----------(bc)---d');
      expect(dropped).toEqual([]);
    });
  });

  it('beyond the bound in count a new one is dropped at once; one that waits too long is dropped', () => {
    const dropped: string[] = [];
    testScheduler().run(({ hot, expectObservable }) => {
      const up$ = hot('f--------------------t', { t: true, f: false });
      const items = hot('-abc---d');
      const out = items.pipe(holdWhileDown(up$, { max: 2, maxWaitMs: 10, drop: (i, why) => dropped.push(`${i} ${why}`) }));
      // a, b wait; c (t3) and d (t7) are one too many; a and b time out at t11 and t12
      expectObservable(out).toBe('');
    });
    expect(dropped).toEqual(['c full', 'd full', 'a timeout', 'b timeout']);
  });

  it('what still waits when it ends is dropped too', () => {
    const dropped: string[] = [];
    testScheduler().run(({ hot, expectObservable }) => {
      const up$ = hot('f', { f: false });
      const items = hot('-ab');
      expectObservable(items.pipe(holdWhileDown(up$, { max: 5, maxWaitMs: 100, drop: (i, why) => dropped.push(`${i} ${why}`) })), '^---!').toBe('');
    });
    expect(dropped).toEqual(['a end', 'b end']);
  });

  it('down from the start: nothing passes until up', () => {
    testScheduler().run(({ hot, cold, expectObservable }) => {
      const up$ = cold('---t', { t: true });
      const items = hot('-a');
      expectObservable(items.pipe(holdWhileDown(up$, { max: 5, maxWaitMs: 100, drop: () => undefined }))).toBe('---a');
    });
  });
});
