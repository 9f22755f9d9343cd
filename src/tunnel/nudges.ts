/**
 * What makes a reconnect worth trying at once instead of after its backoff (issue 14): the machine
 * woke from sleep (the wall clock jumped ahead of the monotonic one, which stops during suspend),
 * or its routes changed (a network came or went: /proc/net/route and /proc/net/ipv6_route read
 * again, cheap files). Polled every 2 s only while a reconnect waits: the tunnel subscribes to
 * it just then.
 */
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { filter, interval, map, type Observable, share } from 'rxjs';

const POLL_MS = 2_000;
/** A jump of the wall clock beyond the monotonic one by this much means a suspend. */
const SLEEP_JUMP_MS = 5_000;

const routes = (): string => ['/proc/net/route', '/proc/net/ipv6_route'].map((p) => {
  try {
    return readFileSync(p, 'latin1');
  } catch {
    return '';
  }
}).join('\n');

export function wakeOrRouteChange$(pollMs = POLL_MS): Observable<'wake' | 'routes'> {
  let wallMinusMono = Date.now() - performance.now();
  let lastRoutes = routes();
  return interval(pollMs).pipe(
    map((): 'wake' | 'routes' | null => {
      const skew = Date.now() - performance.now();
      const woke = skew - wallMinusMono > SLEEP_JUMP_MS;
      wallMinusMono = skew;
      const now = routes();
      const changed = now !== lastRoutes;
      lastRoutes = now;
      return woke ? 'wake' : changed ? 'routes' : null;
    }),
    filter((n): n is 'wake' | 'routes' => n !== null),
    share(),
  );
}
