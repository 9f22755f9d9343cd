import { BehaviorSubject, type Observable, Subject } from 'rxjs';
import { describe, expect, it } from 'vitest';
import type { FirewallSetup, HostsEntry, SubnetRule } from '../../src/firewall/types.js';
import type { FirewallEvent } from '../../src/tunnel/firewall-client.js';
import { firewallKeeper } from '../../src/tunnel/firewall-keeper.js';
import { unexpectedError } from '../support/unexpected-error.js';

const SETUP: FirewallSetup = { version: 1, method: 'nat', port: 12300, routerMode: false, rules: [] };
const rule = (address: string): SubnetRule => ({ family: 4, address, prefix: 32, portLow: 0, portHigh: 0, exclude: false });

describe('firewallKeeper with the rules of host names', () => {
  it('one helper for sessions with the same setup; each session\'s latest list reaches it, whoever resolved it', () => {
    const launches: Array<{ setup: FirewallSetup; extra: Array<readonly SubnetRule[]>; events: Subject<FirewallEvent> }> = [];
    const keeper = firewallKeeper((setup, _hosts?: Observable<HostsEntry>, extra$?: Observable<readonly SubnetRule[]>) => {
      const launch = { setup, extra: [] as Array<readonly SubnetRule[]>, events: new Subject<FirewallEvent>() };
      launches.push(launch);
      extra$?.subscribe({ next: (rules) => launch.extra.push(rules), error: unexpectedError });
      return launch.events;
    });
    const held = keeper.held$.subscribe();
    // Session 1 resolved wiki.corp to .1 before starting the firewall: the helper gets that first.
    const first = new BehaviorSubject<readonly SubnetRule[]>([rule('10.0.0.1')]);
    const seen1: FirewallEvent[] = [];
    const s1 = keeper.start(SETUP, undefined, first).subscribe({ next: (e) => seen1.push(e), error: unexpectedError });
    expect(launches).toHaveLength(1);
    expect(launches[0]?.extra).toEqual([[rule('10.0.0.1')]]);
    launches[0]?.events.next('ready');
    expect(seen1).toEqual(['ready']);
    first.next([rule('10.0.0.2')]);
    s1.unsubscribe();
    // Session 2 (after a reconnect) asks for the same setup: the same helper, ready at once, its list goes there.
    const second = new BehaviorSubject<readonly SubnetRule[]>([rule('10.0.0.3')]);
    const seen2: FirewallEvent[] = [];
    const s2 = keeper.start(SETUP, undefined, second).subscribe({ next: (e) => seen2.push(e), error: unexpectedError });
    expect(launches).toHaveLength(1);
    expect(seen2).toEqual(['ready']);
    expect(launches[0]?.extra).toEqual([[rule('10.0.0.1')], [rule('10.0.0.2')], [rule('10.0.0.3')]]);
    // Session 1's list no longer counts once it is gone.
    first.next([rule('10.0.0.9')]);
    expect(launches[0]?.extra.at(-1)).toEqual([rule('10.0.0.3')]);
    s2.unsubscribe();
    held.unsubscribe();
  });
});
