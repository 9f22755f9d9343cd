/**
 * The firewall across sessions (issue 14): while a lost session is started again, the rules stay
 * in place, so nothing to the tunneled subnets leaks onto the direct path. Each session asks for
 * the firewall as before (discovery-client.ts calls `start`); the keeper starts the helper for
 * the first, and hands the same running helper to the next ones as long as they ask for the same
 * setup. A session with another setup (-N named other routes, the DNS port moved) replaces it.
 * The helper stops when the tunnel ends (`held$` is unsubscribed), not when a session does.
 *
 * -H: each session's host entries go to the one helper; it keeps one entry per name, so entries
 * sent again by a new session are not added twice. Host names as subnets: each session resolves
 * them anew; the latest list goes to the one helper, which updates its rules in place.
 */
import { merge, NEVER, Observable, ReplaySubject, Subject, Subscription } from 'rxjs';
import type { FirewallSetup, HostsEntry, SubnetRule } from '../firewall/types.js';
import type { StartFirewall } from './discovery-client.js';
import type { FirewallEvent } from './firewall-client.js';

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
  /** The latest rules beyond the setup's (host names as subnets), whichever session resolved them. */
  readonly extraRules: ReplaySubject<readonly SubnetRule[]>;
  readonly subscription: Subscription;
}

export function firewallKeeper(startHelper: StartFirewall): FirewallKeeper {
  let running: Running | null = null;
  const failure = new Subject<never>();

  const launch = (setup: FirewallSetup, withHosts: boolean, withExtraRules: boolean): Running => {
    const ready = new ReplaySubject<'ready'>(1);
    const warnings = new Subject<FirewallEvent>();
    const hosts = new Subject<HostsEntry>();
    const extraRules = new ReplaySubject<readonly SubnetRule[]>(1);
    const events$ = startHelper(setup, withHosts ? hosts : undefined, withExtraRules ? extraRules : undefined);
    const subscription = events$.subscribe({
      next: (event) => (event === 'ready' ? ready.next('ready') : warnings.next(event)),
      // The helper is gone (or never started): whichever session or wait is on, the tunnel ends.
      error: (e: unknown) => failure.error(e),
    });
    return { key: JSON.stringify(setup), ready, warnings, hosts, extraRules, subscription };
  };

  const start: StartFirewall = (setup, hosts$, extraRules$) =>
    new Observable<FirewallEvent>((subscriber) => {
      const key = JSON.stringify(setup);
      if (running?.key !== key) {
        running?.subscription.unsubscribe();
        running = launch(setup, hosts$ !== undefined, extraRules$ !== undefined);
      }
      const current = running;
      // Before the events: a session's first list reaches a new helper before its READY.
      const sub = extraRules$ ? extraRules$.subscribe({ next: (rules) => current.extraRules.next(rules), error: () => undefined }) : new Subscription();
      sub.add(merge(current.ready, current.warnings, failure).subscribe(subscriber));
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
