import { Subject, VirtualTimeScheduler } from 'rxjs';
import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  cleanName,
  type HostwatchSources,
  hostwatch$,
  isLocalOnly,
  parseHostsFile,
  parseIpNeigh,
  parseProcArp,
  parseProcTcp,
} from '../../src/remote/hostwatch.js';
import type { HostEntry } from '../../src/streams/discovery.js';
import { unexpectedError } from '../support/unexpected-error.js';
import { advance } from '../support/virtual-time.js';

describe('hostwatch parsers', () => {
  it('/etc/hosts', () => {
    expect(parseHostsFile('# c\n127.0.0.1 localhost\n\n10.0.0.5\tdb1 db1.corp  # db\nbogus line\nfd00::7 six\n')).toEqual([
      { address: '127.0.0.1', names: ['localhost'] },
      { address: '10.0.0.5', names: ['db1', 'db1.corp'] },
      { address: 'fd00::7', names: ['six'] },
    ]);
  });

  it('/proc/net/arp: complete entries only', () => {
    const arp = `IP address       HW type     Flags       HW address            Mask     Device
10.98.0.4        0x1         0x2         92:52:a8:b0:7a:28     *        s1
10.98.0.9        0x1         0x0         00:00:00:00:00:00     *        s1
`;
    expect(parseProcArp(arp)).toEqual(['10.98.0.4']);
  });

  it('ip -j neigh: without FAILED and INCOMPLETE; junk gives nothing', () => {
    const json = JSON.stringify([
      { dst: '10.98.0.4', state: ['STALE'] },
      { dst: '10.98.0.9', state: ['FAILED'] },
      { dst: 'fd00:98::3', state: ['REACHABLE'] },
      { dst: 'fe80::1', state: ['INCOMPLETE'] },
      { nothing: true },
    ]);
    expect(parseIpNeigh(json)).toEqual(['10.98.0.4', 'fd00:98::3']);
    expect(parseIpNeigh('not json')).toEqual([]);
    expect(parseIpNeigh('{}')).toEqual([]);
  });

  it('/proc/net/tcp and tcp6: remote addresses (little-endian words), v4-mapped ones as IPv4', () => {
    const tcp = `  sl  local_address rem_address   st
   0: 0200630A:0016 0100630A:D0E2 01 00000000:00000000
   1: 0200630A:08AE 00000000:0000 0A 00000000:00000000
`;
    expect(parseProcTcp(tcp, 4, 'LE')).toEqual(['10.99.0.1', '0.0.0.0']);
    const tcp6 = `  sl  local_address                         remote_address                        st
   0: 00000000000000000000000000000000:0016 0000000000000000FFFF00000300620A:1F90 01
   1: 00000000000000000000000000000000:0016 000000FD000000000000000003000000:1F90 01
`;
    expect(parseProcTcp(tcp6, 6, 'LE')).toEqual(['10.98.0.3', 'fd00::3']);
  });

  it('isLocalOnly and cleanName', () => {
    for (const a of ['127.0.0.1', '0.0.0.0', '169.254.1.1', '224.0.0.1', '::1', '::', 'fe80::1', 'ff02::1', 'nonsense']) expect(isLocalOnly(a), a).toBe(true);
    for (const a of ['10.0.0.1', '192.168.1.1', 'fd00::1', '2001:db8::1']) expect(isLocalOnly(a), a).toBe(false);
    expect(cleanName('db1.corp.example.')).toBe('db1.corp.example');
    expect(cleanName('my host')).toBe('my_host');
    expect(cleanName('localhost')).toBeNull();
    expect(cleanName('ip6-allnodes')).toBeNull();
    expect(cleanName('')).toBeNull();
  });
});

/** Sources whose answers the test sets; reverse lookups resolve when the test says so. */
function fakeSources(over: Partial<HostwatchSources> = {}): HostwatchSources & { reverses: string[] } {
  const reverses: string[] = [];
  return {
    reverses,
    readFile: async () => null,
    neighbours: async () => [],
    reverse: async (address) => {
      reverses.push(address);
      const names: Record<string, string[]> = { '10.98.0.3': ['target.lab'], '10.98.0.4': ['echo4.lab', 'alias4'] };
      const found = names[address];
      if (!found) throw new Error('ENOTFOUND');
      return found;
    },
    lookup: async () => [],
    hostname: () => '',
    ownAddresses: () => [],
    ...over,
  };
}

/**
 * The fake sources answer in microtasks and hostwatch's polls run on a virtual clock, so once one
 * macrotask turn has passed every lookup started so far has been handled: what has not been
 * reported by then never will be (for asserting that something was NOT reported).
 */
const lookupsHandled = () => new Promise<void>((resolve) => setImmediate(resolve));

describe('hostwatch$', () => {
  const subscriptions: Array<{ unsubscribe(): void }> = [];
  afterEach(() => {
    for (const s of subscriptions.splice(0)) s.unsubscribe();
  });
  /** Runs hostwatch on a virtual clock that the test moves (nothing is polled again unless it does). */
  const watch = (sources: HostwatchSources, extra: Parameters<typeof hostwatch$>[0] = {}) => {
    const found: HostEntry[] = [];
    const options = { sources, pollMs: 60_000, scheduler: new VirtualTimeScheduler(), ...extra };
    subscriptions.push(hostwatch$(options).subscribe({ next: (h) => found.push(h), error: unexpectedError }));
    return found;
  };

  it('reports /etc/hosts names (full and short) but nothing local-only', async () => {
    const found = watch(
      fakeSources({
        readFile: async (path) => (path === '/etc/hosts' ? '127.0.0.1 localhost\n10.0.0.5 db1.corp db1\n::1 ip6-localhost\n169.254.0.1 meta\n' : null),
      }),
    );
    // The whole file is taken in one go: with db1's names there, the local-only ones were left out.
    await vi.waitFor(() =>
      expect(found).toEqual([
        { family: 4, address: '10.0.0.5', name: 'db1.corp' },
        { family: 4, address: '10.0.0.5', name: 'db1' },
      ]),
    );
  });

  it('looks up neighbours in reverse, each address once, and reports what has a name', async () => {
    const sources = fakeSources({ neighbours: async () => ['10.98.0.3', '10.98.0.4', '10.99.0.1', '10.98.0.3', '127.0.0.1'] });
    const found = watch(sources);
    await vi.waitFor(() => {
      expect(found).toEqual(
        expect.arrayContaining([
          { family: 4, address: '10.98.0.3', name: 'target.lab' },
          { family: 4, address: '10.98.0.3', name: 'target' },
          { family: 4, address: '10.98.0.4', name: 'echo4.lab' },
          { family: 4, address: '10.98.0.4', name: 'echo4' },
          { family: 4, address: '10.98.0.4', name: 'alias4' },
        ]),
      );
      expect([...sources.reverses].sort()).toEqual(['10.98.0.3', '10.98.0.4', '10.99.0.1']);
    });
    await lookupsHandled();
    expect([...sources.reverses].sort()).toEqual(['10.98.0.3', '10.98.0.4', '10.99.0.1']);
    expect(found).toHaveLength(5);
  });

  it('seed hosts are looked up forwards (and their addresses in reverse); a failing seed is logged', async () => {
    const logs: string[] = [];
    const sources = fakeSources({
      lookup: async (name) => {
        if (name === 'target.lab') return ['10.98.0.3'];
        throw new Error('ENOTFOUND');
      },
    });
    const found = watch(sources, { seeds: ['target.lab', 'nowhere.lab'], log: (m) => logs.push(m) });
    await vi.waitFor(() => {
      expect(found.slice(0, 2)).toEqual([
        { family: 4, address: '10.98.0.3', name: 'target.lab' },
        { family: 4, address: '10.98.0.3', name: 'target' },
      ]);
      expect(sources.reverses).toContain('10.98.0.3');
      expect(logs).toEqual(['seed host nowhere.lab: ENOTFOUND']);
    });
    await lookupsHandled();
    expect(found).toHaveLength(2); // the reverse lookup finds the same names: not reported again
    expect(logs).toEqual(['seed host nowhere.lab: ENOTFOUND']);
  });

  it('addresses seen by the tunnel are looked up too', async () => {
    const seen = new Subject<string>();
    let scanned = false;
    const found = watch(
      fakeSources({
        neighbours: async () => {
          scanned = true; // the last step of a scan
          return [];
        },
      }),
      { seen$: seen },
    );
    await vi.waitFor(() => expect(scanned).toBe(true));
    await lookupsHandled();
    expect(found).toEqual([]);
    seen.next('10.98.0.4');
    seen.next('10.98.0.4');
    await vi.waitFor(() => expect(found.map((h) => h.name)).toEqual(['echo4.lab', 'echo4', 'alias4']));
    await lookupsHandled();
    expect(found).toHaveLength(3);
  });

  it('the own host name maps to an own address when it resolves only to loopback', async () => {
    const found = watch(
      fakeSources({ hostname: () => 'srv', lookup: async () => ['127.0.1.1'], ownAddresses: () => ['fe80::1', '10.99.0.2'] }),
    );
    await vi.waitFor(() => expect(found).toContainEqual({ family: 4, address: '10.99.0.2', name: 'srv' }));
  });

  it('a name whose address changes is reported again; polling rescans every pollMs', async () => {
    const scheduler = new VirtualTimeScheduler();
    let address = '10.0.0.5';
    let scans = 0;
    const sources = fakeSources({
      readFile: async () => {
        scans++;
        return `${address} moving\n`;
      },
    });
    const found = watch(sources, { pollMs: 30, scheduler });
    await vi.waitFor(() => expect(found).toEqual([{ family: 4, address: '10.0.0.5', name: 'moving' }]));
    address = '10.0.0.6';
    advance(scheduler, 29);
    await lookupsHandled();
    expect(scans).toBe(1);
    expect(found).toHaveLength(1);
    advance(scheduler, 1);
    await vi.waitFor(() =>
      expect(found).toEqual([
        { family: 4, address: '10.0.0.5', name: 'moving' },
        { family: 4, address: '10.0.0.6', name: 'moving' },
      ]),
    );
    expect(scans).toBe(2);
    advance(scheduler, 30);
    await vi.waitFor(() => expect(scans).toBe(3));
    await lookupsHandled();
    expect(found).toHaveLength(2); // unchanged: not reported again
  });

  it('unsubscribing stops the polling', async () => {
    const scheduler = new VirtualTimeScheduler();
    let scans = 0;
    const subscription = hostwatch$({
      sources: fakeSources({
        readFile: async () => {
          scans++;
          return null;
        },
      }),
      pollMs: 30,
      scheduler,
    }).subscribe({ error: unexpectedError });
    await vi.waitFor(() => expect(scans).toBe(1));
    subscription.unsubscribe();
    advance(scheduler, 300);
    await lookupsHandled();
    expect(scans).toBe(1);
    expect(scheduler.actions).toEqual([]);
  });
});
