/**
 * The firewall across sessions (issue 14): while a lost session is started again, the rules stay
 * in place, so nothing to the tunneled subnets leaks onto the direct path. Each session asks for
 * the firewall as before (discovery-client.ts calls `start`); the keeper starts the helper for
 * the first, and hands the same running helper to the next ones as long as they ask for the same
 * setup. A session with another setup (-N named other routes, the DNS port moved) replaces it.
 * The helper stops when the tunnel ends (`held$` is unsubscribed), not when a session does.
 *
 * -H: each session's host entries go to the one helper; it keeps one entry per name, so entries
 * sent again by a new session are not added twice.
 */
import { merge, NEVER, Observable, ReplaySubject, Subject, type Subscription } from 'rxjs';
import type { StartFirewall } from './discovery-client.js';
import type { FirewallEvent } from './firewall/client.js';
import type { FirewallSetup, HostsEntry } from './firewall/types.js';

export interface FirewallKeeper {
  /** What sessions call instead of starting a helper themselves. */
  readonly start: StartFirewall;
  /** Subscribed for the tunnel's life: errors when the helper fails; its end stops the helper. */
  readonly held$: Observable<never>;
}

interface Running {
  readonly key: string;
  readonly ready: ReplaySubject<'ready'>;
  readonly warnings: Subject<FirewallEvent>;
  readonly hosts: Subject<HostsEntry>;
  readonly subscription: Subscription;
}

export function firewallKeeper(startHelper: StartFirewall): FirewallKeeper {
  let running: Running | null = null;
  const failure = new Subject<never>();

  const launch = (setup: FirewallSetup, withHosts: boolean): Running => {
    const ready = new ReplaySubject<'ready'>(1);
    const warnings = new Subject<FirewallEvent>();
    const hosts = new Subject<HostsEntry>();
    const events$ = withHosts ? startHelper(setup, hosts) : startHelper(setup);
    const subscription = events$.subscribe({
      next: (event) => (event === 'ready' ? ready.next('ready') : warnings.next(event)),
      // The helper is gone (or never started): whichever session or wait is on, the tunnel ends.
      error: (e: unknown) => failure.error(e),
    });
    return { key: JSON.stringify(setup), ready, warnings, hosts, subscription };
  };

  const start: StartFirewall = (setup, hosts$) =>
    new Observable<FirewallEvent>((subscriber) => {
      const key = JSON.stringify(setup);
      if (running?.key !== key) {
        running?.subscription.unsubscribe();
        running = launch(setup, hosts$ !== undefined);
      }
      const current = running;
      const sub = merge(current.ready, current.warnings, failure).subscribe(subscriber);
      if (hosts$) sub.add(hosts$.subscribe({ next: (entry) => current.hosts.next(entry), error: () => undefined }));
      return sub;
    });

  const held$ = new Observable<never>((subscriber) => {
    const sub = merge(failure, NEVER).subscribe(subscriber);
    return () => {
      sub.unsubscribe();
      running?.subscription.unsubscribe();
      running = null;
    };
  });

  return { start, held$ };
}
