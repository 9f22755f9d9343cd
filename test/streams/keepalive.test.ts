import { describe, expect, it } from 'vitest';
import { CONTROL_CHANNEL, Command, frame } from '../../src/streams/frame.js';
import { keepalive } from '../../src/streams/keepalive.js';
import { testScheduler } from './marbles.js';

const ping = (n: number) => {
  const payload = Buffer.alloc(4);
  payload.writeUInt32BE(n, 0);
  return frame(CONTROL_CHANNEL, Command.PING, payload);
};
const dead = new Error('no answer');

describe('keepalive', () => {
  it('pings every interval while the peer answers', () => {
    testScheduler().run(({ hot, expectObservable }) => {
      const alive = keepalive({ intervalMs: 10, misses: 3, timeout: () => dead });
      // the peer says something a little after each ping
      const peer$ = hot('    ---------------x---------x---------x---------x-').pipe(alive.heard());
      expectObservable(peer$).toBe('---------------x---------x---------x---------x-');
      expectObservable(alive.pings$, '^ 54ms !').toBe('10ms a 9ms b 9ms c 9ms d 9ms e', {
        a: ping(0),
        b: ping(1),
        c: ping(2),
        d: ping(3),
        e: ping(4),
      });
    });
  });

  it('errors after `misses` silent intervals in a row, however long the tunnel has been idle before', () => {
    testScheduler().run(({ hot, expectObservable }) => {
      const alive = keepalive({ intervalMs: 10, misses: 3, timeout: () => dead });
      const peer$ = hot('-----x-------------------------------').pipe(alive.heard());
      expectObservable(peer$).toBe('-----x-------------------------------');
      // tick 1 (10): heard → ping; ticks 2, 3 silent → ping; tick 4 is the third silent one → error
      expectObservable(alive.pings$).toBe('10ms a 9ms b 9ms c 9ms #', { a: ping(0), b: ping(1), c: ping(2) }, dead);
    });
  });

  it('any byte counts: a busy transfer without pongs is alive', () => {
    testScheduler().run(({ hot, expectObservable }) => {
      const alive = keepalive({ intervalMs: 10, misses: 2, timeout: () => dead });
      const busy = '-x'.repeat(30);
      expectObservable(hot(busy).pipe(alive.heard())).toBe(busy);
      expectObservable(alive.pings$, '^ 54ms !').toBe('10ms a 9ms b 9ms c 9ms d 9ms e', {
        a: ping(0),
        b: ping(1),
        c: ping(2),
        d: ping(3),
        e: ping(4),
      });
    });
  });
});

describe('keepalive timeout message', () => {
  it('is built only when it fires', () => {
    let built = 0;
    const alive = keepalive({ intervalMs: 1000, misses: 1, timeout: () => (built++, dead) });
    const sub = alive.pings$.subscribe({ error: () => {} });
    sub.unsubscribe();
    expect(built).toBe(0);
  });
});
