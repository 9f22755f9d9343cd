import { BehaviorSubject, of, Subject } from 'rxjs';
import { describe, expect, it } from 'vitest';
import { CONTROL_CHANNEL, Command, type Frame, frame } from '../../src/streams/frame.js';
import { CONGESTED_CREDIT_FRAMES, type SchedulerConfig, type SchedulerOutput, schedule } from '../../src/streams/scheduler.js';
import { unexpectedError } from '../support/unexpected-error.js';
import { f, pattern, testScheduler } from './marbles.js';

const sent = (fr: Frame): SchedulerOutput => ({ kind: 'frame', frame: fr });
const blocked = (value: boolean): SchedulerOutput => ({ kind: 'blocked', blocked: value });
const roomy: SchedulerConfig = { sessionWindow: Number.POSITIVE_INFINITY, maxQueued: 1_000_000 };

describe('schedule (fair scheduler)', () => {
  it('serves queued channels round-robin, one frame per turn, once the transport is writable', () => {
    const [b1, b2, b3] = [f.data(1, pattern(100, 1)), f.data(1, pattern(100, 2)), f.data(1, pattern(100, 3))];
    const key = f.data(2, 'k');
    testScheduler().run(({ cold, hot, expectObservable }) => {
      const frames$ = hot<Frame>('-abck-o', { a: b1, b: b2, c: b3, k: key, o: f.open(3) });
      const writable$ = cold('f-------t', { f: false, t: true });
      expectObservable(schedule(roomy, { frames$, writable$, credit$: cold<number>('-') })).toBe('------o-(akbc)', {
        o: sent(f.open(3)), // not DATA/EOF: jumps the queue
        a: sent(b1),
        k: sent(key), // the keystroke goes second, not after all the bulk data
        b: sent(b2),
        c: sent(b3),
      });
    });
  });

  it('keeps DATA and EOF of one channel in order, while CREDIT and control frames jump ahead', () => {
    testScheduler().run(({ cold, hot, expectObservable }) => {
      const frames$ = hot<Frame>('-de-c-p', { d: f.data(1, 'x'), e: f.eof(1), c: f.credit(1, 5), p: f.ping() });
      const writable$ = cold('f-------t', { f: false, t: true });
      expectObservable(schedule(roomy, { frames$, writable$, credit$: cold<number>('-') })).toBe('----c-p-(de)', {
        d: sent(f.data(1, 'x')),
        e: sent(f.eof(1)),
        c: sent(f.credit(1, 5)),
        p: sent(f.ping()),
      });
    });
  });

  it('holds DATA once the session window is used up, until the peer returns session credit', () => {
    const [a, b, c] = [f.data(1, pattern(8, 1)), f.data(2, pattern(8, 2)), f.data(1, pattern(8, 3))];
    testScheduler().run(({ cold, hot, expectObservable }) => {
      const frames$ = hot<Frame>('-abc', { a, b, c });
      const credit$ = hot<number>('------r', { r: 16 });
      expectObservable(
        schedule({ sessionWindow: 10, maxQueued: 1_000_000 }, { frames$, writable$: cold('t', { t: true }), credit$ }),
      ).toBe('-ab---c', { a: sent(a), b: sent(b), c: sent(c) });
    });
  });

  it('asks readers to pause while more than maxQueued DATA bytes wait, and to resume when they have gone', () => {
    const [a, b] = [f.data(1, pattern(4, 1)), f.data(2, pattern(4, 2))];
    testScheduler().run(({ cold, hot, expectObservable }) => {
      const frames$ = hot<Frame>('-ab', { a, b });
      const writable$ = cold('f---t', { f: false, t: true });
      expectObservable(schedule({ sessionWindow: Number.POSITIVE_INFINITY, maxQueued: 5 }, { frames$, writable$, credit$: cold<number>('-') })).toBe(
        '--B-(abU)',
        { B: blocked(true), a: sent(a), b: sent(b), U: blocked(false) },
      );
    });
  });

  it('completes when the frames complete', () => {
    testScheduler().run(({ cold, hot, expectObservable }) => {
      const frames$ = hot<Frame>('-a-|', { a: f.ping() });
      expectObservable(schedule(roomy, { frames$, writable$: cold('t', { t: true }), credit$: cold<number>('-') })).toBe('-a-|', {
        a: sent(f.ping()),
      });
    });
  });

  it('keeps working when writable$ completes after its last value (e.g. of(true))', () => {
    const frames$ = new Subject<Frame>();
    const seen: SchedulerOutput[] = [];
    schedule(roomy, { frames$, writable$: of(true), credit$: new Subject<number>() }).subscribe({ next: (o) => seen.push(o), error: unexpectedError });
    frames$.next(f.ping('a'));
    frames$.next(f.data(1, 'b'));
    expect(seen).toEqual([sent(f.ping('a')), sent(f.data(1, 'b'))]);
  });

  it('a CLOSE drops what its channel still had queued (and what it counted against maxQueued)', () => {
    testScheduler().run(({ cold, hot, expectObservable }) => {
      const frames$ = cold<Frame>('ab-c', { a: f.data(1, '123456789'), b: f.data(2, 'x'), c: f.close(1, 'ECONNRESET') });
      const writable$ = hot<boolean>('f-------t', { f: false, t: true });
      const credit$ = hot<number>('-');
      // Channel 1's 9 queued bytes go with its CLOSE: readers may resume at once.
      expectObservable(schedule({ sessionWindow: Infinity, maxQueued: 8 }, { frames$, writable$, credit$ })).toBe(
        'p--(qc)-x',
        {
          p: blocked(true),
          c: sent(f.close(1, 'ECONNRESET')),
          q: blocked(false),
          x: sent(f.data(2, 'x')),
        },
      );
    });
  });

  // Issue 17, finding 7: a peer that sends without reading must not make us queue without limit.
  describe('a peer that does not read', () => {
    const stingy: SchedulerConfig = { ...roomy, congestedCreditFrames: 0 };

    it('drops a PONG while the transport is not writable, instead of queueing it; answers again once it is', () => {
      testScheduler().run(({ cold, hot, expectObservable }) => {
        const frames$ = hot<Frame>('-a-bc---d', { a: f.pong('1'), b: f.pong('2'), c: f.pong('3'), d: f.pong('4') });
        const writable$ = cold('t-f----t', { f: false, t: true });
        expectObservable(schedule(roomy, { frames$, writable$, credit$: cold<number>('-') })).toBe('-a------d', {
          a: sent(f.pong('1')),
          d: sent(f.pong('4')),
        });
      });
    });

    it('sends the first CREDIT frames of a congested spell as they come, then holds the rest back', () => {
      testScheduler().run(({ cold, hot, expectObservable }) => {
        const frames$ = hot<Frame>('-ab-c---d', { a: f.credit(1, 5), b: f.credit(1, 6), c: f.credit(1, 7), d: f.credit(1, 8) });
        const writable$ = cold('f-----t-f', { f: false, t: true });
        const config = { ...roomy, congestedCreditFrames: 1 };
        // The allowance starts again with each congested spell.
        expectObservable(schedule(config, { frames$, writable$, credit$: cold<number>('-') })).toBe('-a----B-d', {
          a: sent(f.credit(1, 5)),
          B: sent(f.credit(1, 13)),
          d: sent(f.credit(1, 8)),
        });
      });
    });

    it('sums CREDIT per channel while the transport is not writable: one frame per channel when it is, before DATA', () => {
      testScheduler().run(({ cold, hot, expectObservable }) => {
        const frames$ = hot<Frame>('-abcde', {
          a: f.credit(1, 5),
          b: f.data(2, 'x'),
          c: f.credit(0, 65536),
          d: f.credit(1, 7),
          e: f.credit(0, 65536),
        });
        const writable$ = cold('f-------t', { f: false, t: true });
        expectObservable(schedule(stingy, { frames$, writable$, credit$: cold<number>('-') })).toBe('--------(ABx)', {
          A: sent(f.credit(1, 12)),
          B: sent(f.credit(0, 131072)),
          x: sent(f.data(2, 'x')),
        });
      });
    });

    it('a CLOSE discards the CREDIT its channel had held back', () => {
      testScheduler().run(({ cold, hot, expectObservable }) => {
        const frames$ = hot<Frame>('-ab', { a: f.credit(1, 5), b: f.close(1, 'ECONNRESET') });
        const writable$ = cold('f----t', { f: false, t: true });
        expectObservable(schedule(stingy, { frames$, writable$, credit$: cold<number>('-') })).toBe('--b', {
          b: sent(f.close(1, 'ECONNRESET')),
        });
      });
    });

    it('never sums CREDIT beyond what a u32 carries', () => {
      testScheduler().run(({ cold, hot, expectObservable }) => {
        const frames$ = hot<Frame>('-abc', { a: f.credit(0, 0xffff_0000), b: f.credit(0, 0x2_0000), c: f.credit(0, 1) });
        const writable$ = cold('f----t', { f: false, t: true });
        expectObservable(schedule(stingy, { frames$, writable$, credit$: cold<number>('-') })).toBe('--a--b', {
          a: sent(f.credit(0, 0xffff_0000)),
          b: sent(f.credit(0, 0x2_0001)),
        });
      });
    });

    it('100 000 PONGs and CREDITs while the transport never becomes writable leave nothing queued beyond the allowance but one CREDIT per channel', () => {
      const frames$ = new Subject<Frame>();
      const writable$ = new BehaviorSubject(true);
      const seen: SchedulerOutput[] = [];
      schedule(roomy, { frames$, writable$, credit$: new Subject<number>() }).subscribe({ next: (o) => seen.push(o), error: unexpectedError });
      writable$.next(false);
      for (let i = 0; i < CONGESTED_CREDIT_FRAMES; i++) frames$.next(f.credit(3, 1));
      expect(seen.length).toBe(CONGESTED_CREDIT_FRAMES);
      seen.length = 0;
      for (let i = 0; i < 100_000; i++) {
        frames$.next(frame(CONTROL_CHANNEL, Command.PONG, pattern(64, i)));
        frames$.next(f.credit(i % 3, 1));
      }
      expect(seen.length).toBe(0);
      writable$.next(true);
      expect(seen).toEqual([sent(f.credit(0, 33_334)), sent(f.credit(1, 33_333)), sent(f.credit(2, 33_333))]);
    });
  });
});
