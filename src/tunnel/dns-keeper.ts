/**
 * --dns across sessions (issue 14): the DNS sockets stay bound while a lost session is started
 * again (the firewall still sends the captured queries to them), and while there is no session
 * every query is answered SERVFAIL at once, so programs fail fast instead of waiting for a
 * timeout. Sessions bind through `bind`: the first binds, the next ones get the same sockets as
 * long as they ask for the same addresses. The sockets close when the tunnel ends.
 */
import { BehaviorSubject, combineLatest, defer, EMPTY, Observable, ReplaySubject, Subscription, switchMap, throwError } from 'rxjs';
import { DnsError } from '../shared/errors.js';
import type { TunnelEvent } from '../shared/events.js';
import { type DnsSockets, dnsCapture$, dnsSockets$ } from './dns-capture.js';

export interface DnsKeeper {
  /** What sessions bind their DNS sockets with (discoveryClient's `bindDns`). */
  readonly bind: typeof dnsSockets$;
  /** While `up$` says no session routes, answers every captured query SERVFAIL (reporting each). */
  whileDown$(up$: Observable<boolean>): Observable<TunnelEvent>;
  /** Subscribed for the tunnel's life; its end closes the sockets. */
  readonly held$: Observable<never>;
}

export function dnsKeeper(bindSockets: typeof dnsSockets$ = dnsSockets$): DnsKeeper {
  let kept: { key: string; sockets: ReplaySubject<DnsSockets>; subscription: Subscription } | null = null;
  const current = new BehaviorSubject<DnsSockets | null>(null);

  const release = () => {
    kept?.subscription.unsubscribe();
    kept = null;
    current.next(null);
  };

  const bind: typeof dnsSockets$ = (hosts, firstPort, avoid) =>
    defer(() => {
      const key = JSON.stringify([hosts, firstPort, avoid]);
      if (kept?.key !== key) {
        release();
        const sockets = new ReplaySubject<DnsSockets>(1);
        const entry = { key, sockets, subscription: new Subscription() };
        kept = entry;
        entry.subscription.add(bindSockets(hosts, firstPort, avoid).subscribe({
          next: (bound) => {
            sockets.next(bound);
            current.next(bound);
          },
          error: (e: unknown) => {
            // Not bound: the next session tries again.
            if (kept === entry) kept = null;
            sockets.error(e);
          },
        }));
      }
      return kept?.sockets ?? throwError(() => new Error('DNS sockets are not bound'));
    });

  // RXS_ERR_DNS_FAILED: answered SERVFAIL at once (an error of another kind leaves the asker to time out).
  const down = () => throwError(() => new DnsError('RXS_ERR_DNS_FAILED', 'no session: reconnecting'));
  return {
    bind,
    whileDown$: (up$) =>
      combineLatest([up$, current]).pipe(switchMap(([up, sockets]) => (up || sockets === null ? EMPTY : dnsCapture$(sockets, down)))),
    held$: new Observable<never>(() => release),
  };
}
