/**
 * The `nft` method's text (nft.ts) and its install/update/remove steps against a fake `nft`.
 * The real nft, in namespaces, is in nft.netns.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { CommandNotFoundError, type RunCommand } from '../../src/firewall/iptables.js';
import { installNft, NFT_NOT_FOUND, nftScript, nftUpdateScript, removeNftTable } from '../../src/firewall/nft.js';
import { HELPER_PROGRAMS } from '../../src/firewall/programs.js';
import type { FirewallSetup, SubnetRule } from '../../src/firewall/types.js';

function rule(spec: string, exclude = false): SubnetRule {
  // "10.0.0.0/8" or "10.0.0.0/8:80-90"
  const m = /^(.+)\/(\d+)(?::(\d+)-(\d+))?$/.exec(spec);
  if (!m) throw new Error(spec);
  const address = m[1]!;
  return {
    family: address.includes(':') ? 6 : 4,
    address,
    prefix: Number(m[2]),
    portLow: Number(m[3] ?? 0),
    portHigh: Number(m[4] ?? 0),
    exclude,
  };
}

// `method` is not read by nft.ts; types.ts knows only 'nat' until the helper is wired.
function setup(rules: SubnetRule[], extra: Partial<FirewallSetup> = {}): FirewallSetup {
  return { version: 1, method: 'nft', port: 12300, routerMode: false, rules, ...extra };
}

const script = (s: FirewallSetup, ownerUid?: number) => nftScript(s, s.rules, ownerUid);
/** The rules of chain `capture`, without indentation. */
const captureLines = (text: string) => {
  const lines = text.split('\n').map((l) => l.trim());
  return lines.slice(lines.indexOf('chain capture {') + 1, lines.indexOf('}', lines.indexOf('chain capture {')));
};

describe('nftScript', () => {
  it('builds one inet table with a capture chain and an output hook', () => {
    expect(script(setup([rule('10.0.0.0/8')]))).toBe(
      [
        'table inet rxshuttle-12300 {',
        '\tchain capture {',
        '\t\tfib daddr type local return',
        '\t\tip daddr 10.0.0.0/8 meta l4proto tcp redirect to :12300',
        '\t}',
        '\tchain output {',
        '\t\ttype nat hook output priority -100; policy accept;',
        '\t\tmeta l4proto tcp jump capture',
        '\t}',
        '}',
        '',
      ].join('\n'),
    );
  });

  it('orders subnets so that the longest prefix wins, excludes first on a tie', () => {
    const text = script(
      setup([
        rule('0.0.0.0/0'),
        rule('10.0.0.0/8', true),
        rule('10.1.0.0/16'),
        rule('10.1.2.0/24', true),
        rule('10.1.2.3/32'),
        rule('192.168.0.0/16'),
        rule('192.168.0.0/16', true),
      ]),
    )!;
    expect(captureLines(text)).toEqual([
      'fib daddr type local return',
      'ip daddr 10.1.2.3/32 meta l4proto tcp redirect to :12300',
      'ip daddr 10.1.2.0/24 meta l4proto tcp return',
      'ip daddr 192.168.0.0/16 meta l4proto tcp return',
      'ip daddr 10.1.0.0/16 meta l4proto tcp redirect to :12300',
      'ip daddr 192.168.0.0/16 meta l4proto tcp redirect to :12300',
      'ip daddr 10.0.0.0/8 meta l4proto tcp return',
      'ip daddr 0.0.0.0/0 meta l4proto tcp redirect to :12300',
    ]);
  });

  it('limits to port ranges', () => {
    const text = script(setup([rule('10.0.0.0/8:8000-8080'), rule('10.0.0.0/8:22-22', true), rule('10.0.0.0/8:1-65535')]))!;
    expect(captureLines(text).slice(1)).toEqual([
      'ip daddr 10.0.0.0/8 tcp dport 22 return',
      'ip daddr 10.0.0.0/8 tcp dport 8000-8080 redirect to :12300',
      'ip daddr 10.0.0.0/8 tcp dport 1-65535 redirect to :12300',
    ]);
  });

  it('captures DNS per nameserver, udp and tcp, before the local RETURN and the subnets; and jumps for udp/53', () => {
    const text = script(setup([rule('10.0.0.0/8', true)], { dnsPort: 12301, dnsServers: ['127.0.0.53', 'fd00::53'] }))!;
    expect(captureLines(text)).toEqual([
      'ip daddr 127.0.0.53 udp dport 53 redirect to :12301',
      'ip daddr 127.0.0.53 tcp dport 53 redirect to :12301',
      'ip6 daddr fd00::53 udp dport 53 redirect to :12301',
      'ip6 daddr fd00::53 tcp dport 53 redirect to :12301',
      'fib daddr type local return',
      'ip daddr 10.0.0.0/8 meta l4proto tcp return',
    ]);
    expect(text).toContain('\t\tmeta l4proto tcp jump capture\n\t\tudp dport 53 jump capture\n');
  });

  it('matches the owner and the bypass group on the output jumps only', () => {
    const text = script(setup([rule('10.0.0.0/8')], { bypassGid: 4242, dnsPort: 53000, dnsServers: ['10.0.0.53'] }), 1000)!;
    expect(text).toContain(
      [
        '\tchain output {',
        '\t\ttype nat hook output priority -100; policy accept;',
        '\t\tmeta l4proto tcp meta skuid 1000 meta skgid != 4242 jump capture',
        '\t\tudp dport 53 meta skuid 1000 meta skgid != 4242 jump capture',
        '\t}',
      ].join('\n'),
    );
    expect(text.match(/meta sk/g)).toHaveLength(4);
    expect(script(setup([rule('10.0.0.0/8')]), 1000)).toContain('\t\tmeta l4proto tcp meta skuid 1000 jump capture\n');
    expect(script(setup([rule('10.0.0.0/8')], { bypassGid: 7 }))).toContain('\t\tmeta l4proto tcp meta skgid != 7 jump capture\n');
  });

  it('hooks prerouting only in router mode, without owner matches', () => {
    expect(script(setup([rule('10.0.0.0/8')]))).not.toContain('prerouting');
    const text = script(setup([rule('10.0.0.0/8')], { routerMode: true, bypassGid: 5, dnsPort: 53000, dnsServers: ['10.0.0.53'] }), 1000)!;
    expect(text.split('\n').slice(-7)).toEqual([
      '\tchain prerouting {',
      '\t\ttype nat hook prerouting priority -100; policy accept;',
      '\t\tmeta l4proto tcp jump capture',
      '\t\tudp dport 53 jump capture',
      '\t}',
      '}',
      '',
    ]);
  });

  it('puts IPv4 and IPv6 in the one table, each family by its own precedence', () => {
    const text = script(setup([rule('fd00::/8'), rule('10.0.0.0/8'), rule('fd00:1::/32', true), rule('10.1.2.3/32', true)]))!;
    expect(text.match(/^table /gm)).toEqual(['table ']);
    expect(captureLines(text)).toEqual([
      'fib daddr type local return',
      'ip daddr 10.1.2.3/32 meta l4proto tcp return',
      'ip daddr 10.0.0.0/8 meta l4proto tcp redirect to :12300',
      'ip6 daddr fd00:1::/32 meta l4proto tcp return',
      'ip6 daddr fd00::/8 meta l4proto tcp redirect to :12300',
    ]);
  });

  it('uses the rules it is given, not setup.rules', () => {
    const s = setup([rule('10.0.0.0/8')]);
    const text = nftScript(s, [...s.rules, rule('172.16.0.0/12')])!;
    expect(text).toContain('ip daddr 172.16.0.0/12 meta l4proto tcp redirect to :12300');
    expect(nftScript(setup([rule('10.0.0.0/8')]), [])).toBeNull();
  });

  it('is null when nothing would be captured: no include and no DNS', () => {
    expect(script(setup([]))).toBeNull();
    expect(script(setup([rule('10.0.0.0/8', true), rule('fd00::/8', true)]))).toBeNull();
    expect(script(setup([], { dnsPort: 12301, dnsServers: [] }))).toBeNull();
    expect(script(setup([], { dnsPort: 12301, dnsServers: ['10.0.0.53'] }))).not.toBeNull();
    expect(script(setup([rule('fd00::/8')]))).not.toBeNull();
  });

  it('refuses text that is not an address or a number (nothing but validated values becomes nft syntax)', () => {
    expect(() => script(setup([{ ...rule('10.0.0.0/8'), address: '10.0.0.0/8 accept; }' }]))).toThrow(/not an address/);
    expect(() => script(setup([{ ...rule('10.0.0.0/8'), portLow: 1.5, portHigh: 2 }]))).toThrow(/not a number/);
    expect(() => script(setup([rule('10.0.0.0/8')], { bypassGid: Number.NaN }))).toThrow(/not a number/);
  });
});

describe('nftUpdateScript', () => {
  it('flushes and refills the capture chain only, in one file', () => {
    const s = setup([rule('10.0.0.0/8')], { routerMode: true, bypassGid: 5, dnsPort: 12301, dnsServers: ['10.0.0.53'] });
    expect(nftUpdateScript(s, [rule('10.0.0.0/8'), rule('10.9.0.0/16', true)])).toBe(
      [
        'flush chain inet rxshuttle-12300 capture',
        'table inet rxshuttle-12300 {',
        '\tchain capture {',
        '\t\tip daddr 10.0.0.53 udp dport 53 redirect to :12301',
        '\t\tip daddr 10.0.0.53 tcp dport 53 redirect to :12301',
        '\t\tfib daddr type local return',
        '\t\tip daddr 10.9.0.0/16 meta l4proto tcp return',
        '\t\tip daddr 10.0.0.0/8 meta l4proto tcp redirect to :12300',
        '\t}',
        '}',
        '',
      ].join('\n'),
    );
  });

  it('holds the same capture chain as a fresh table with those rules', () => {
    const s = setup([rule('10.0.0.0/8'), rule('fd00::/8:443-443')], { dnsPort: 12301, dnsServers: ['fd00::53'] });
    const rules = [...s.rules, rule('10.1.0.0/16', true)];
    expect(captureLines(nftUpdateScript(s, rules))).toEqual(captureLines(nftScript(s, rules)!));
  });

  it('keeps only the RETURNs when nothing is left to include (the hooks stay)', () => {
    expect(captureLines(nftUpdateScript(setup([]), [rule('10.0.0.0/8', true)]))).toEqual([
      'fib daddr type local return',
      'ip daddr 10.0.0.0/8 meta l4proto tcp return',
    ]);
  });
});

/** A fake nft that keeps which tables exist and records every call. */
function fakeNft(existing: string[] = []) {
  const tables = new Set(existing);
  const calls: string[] = [];
  let failNext: string | null = null;
  const run: RunCommand = async (name, args, input) => {
    if (name !== 'nft') throw new Error(`unexpected program ${name}`);
    calls.push([name, ...args].join(' ') + (input === undefined ? '' : `\n${input}`));
    if (failNext !== null) {
      const message = failNext;
      failNext = null;
      throw new Error(message);
    }
    if (args[0] === 'list') return [...tables].map((t) => `table ${t}\n`).join('');
    if (args[0] === 'delete') {
      if (!tables.delete(`${args[2]} ${args[3]}`)) throw new Error('No such file or directory');
      return '';
    }
    const text = input ?? '';
    const flush = /^flush chain (\S+ \S+) /.exec(text);
    if (flush && !tables.has(flush[1]!)) throw new Error('No such file or directory');
    const created = /^table (\S+ \S+) \{/m.exec(text);
    if (created) tables.add(created[1]!);
    return '';
  };
  return { run, tables, calls, failNextWith: (message: string) => void (failNext = message) };
}

describe('installNft', () => {
  const s = setup([rule('10.0.0.0/8')], { port: 5000 });

  it('installs one table in one nft -f, updates it in place, removes it by deleting the table', async () => {
    const nft = fakeNft(['inet rxshuttle-50000', 'ip rxshuttle-5000']);
    const installed = await installNft(s, nft.run, 1000);
    expect(nft.calls.map((c) => c.split('\n')[0])).toEqual(['nft list tables inet', 'nft -f -']);
    expect(nft.calls[1]).toBe(`nft -f -\n${nftScript(s, s.rules, 1000)}`);

    await installed.update([rule('172.16.0.0/12')]);
    expect(nft.calls[2]).toBe(`nft -f -\n${nftUpdateScript(s, [...s.rules, rule('172.16.0.0/12')])}`);

    await installed.remove();
    expect(nft.calls.slice(3).map((c) => c.split('\n')[0])).toEqual(['nft list tables inet', 'nft delete table inet rxshuttle-5000', 'nft list tables inet']);
    // Other tables, even with a name that starts like ours, or ours in another family, stay.
    expect([...nft.tables]).toEqual(['inet rxshuttle-50000', 'ip rxshuttle-5000']);
  });

  it("deletes an earlier instance's leftover table of the same port first", async () => {
    const nft = fakeNft(['inet rxshuttle-5000']);
    await installNft(s, nft.run);
    expect(nft.calls.map((c) => c.split('\n')[0])).toEqual([
      'nft list tables inet',
      'nft delete table inet rxshuttle-5000',
      'nft list tables inet',
      'nft -f -',
    ]);
    expect([...nft.tables]).toEqual(['inet rxshuttle-5000']);
  });

  it('creates no table while there is nothing to capture, and the full table once an update brings an include', async () => {
    const nft = fakeNft();
    const empty = setup([rule('10.0.0.0/8', true)], { port: 5000 });
    const installed = await installNft(empty, nft.run);
    expect(nft.calls).toEqual(['nft list tables inet']);
    await installed.update([]);
    expect(nft.calls).toHaveLength(1);
    await installed.update([rule('10.1.0.0/16')]);
    expect(nft.calls[1]).toBe(`nft -f -\n${nftScript(empty, [...empty.rules, rule('10.1.0.0/16')])}`);
    // from now on in place, even when the include goes again
    await installed.update([]);
    expect(nft.calls[2]?.split('\n')[1]).toBe('flush chain inet rxshuttle-5000 capture');
    await installed.remove();
    expect(nft.tables.size).toBe(0);
  });

  it('runs updates in the order asked, and none after the removal', async () => {
    const nft = fakeNft();
    const installed = await installNft(s, nft.run);
    const first = installed.update([rule('10.1.0.0/16')]);
    const second = installed.update([rule('10.2.0.0/16')]);
    const removal = installed.remove();
    const late = installed.update([rule('10.3.0.0/16')]);
    await Promise.all([first, second, removal]);
    await expect(late).rejects.toThrow(/removed already/);
    const loads = nft.calls.filter((c) => c.startsWith('nft -f -'));
    expect(loads).toHaveLength(3);
    expect(loads[1]).toContain('10.1.0.0/16');
    expect(loads[2]).toContain('10.2.0.0/16');
    expect(nft.tables.size).toBe(0);
  });

  it('passes a failed load on and keeps working after a failed update', async () => {
    const nft = fakeNft();
    nft.failNextWith('nft: Error: Could not process rule: Operation not supported');
    // The first call (list tables) fails: nothing is installed, the error says why.
    await expect(installNft(s, nft.run)).rejects.toThrow(/Operation not supported/);
    expect(nft.tables.size).toBe(0);

    const installed = await installNft(s, nft.run);
    nft.failNextWith('nft: Error: syntax error');
    await expect(installed.update([rule('10.1.0.0/16')])).rejects.toThrow(/syntax error/);
    await installed.update([rule('10.2.0.0/16')]);
    expect(nft.calls.at(-1)).toContain('10.2.0.0/16');
    await installed.remove();
  });

  it('says what to install when nft is missing', async () => {
    const missing: RunCommand = (name) => Promise.reject(new CommandNotFoundError(name));
    await expect(installNft(s, missing)).rejects.toThrow(new RegExp(`^${NFT_NOT_FOUND}$`));
    expect(NFT_NOT_FOUND).toBe('nft not found: install nftables');
  });

  it('nft is one of the programs the helper may run', () => {
    expect(HELPER_PROGRAMS).toContain('nft');
  });
});

describe('removeNftTable', () => {
  it('is false when there is no table of that port', async () => {
    const nft = fakeNft(['inet rxshuttle-50000', 'inet other']);
    expect(await removeNftTable(nft.run, 5000)).toBe(false);
    expect(nft.calls).toEqual(['nft list tables inet']);
  });

  it('throws when the table is still there after the delete', async () => {
    const nft = fakeNft(['inet rxshuttle-5000']);
    const stubborn: RunCommand = async (name, args, input) => (args[0] === 'delete' ? '' : nft.run(name, args, input));
    await expect(removeNftTable(stubborn, 5000)).rejects.toThrow('nft: table inet rxshuttle-5000 is still present after removal');
  });

  it('takes a table that vanished between the look and the delete for removed', async () => {
    const nft = fakeNft(['inet rxshuttle-5000']);
    const racing: RunCommand = async (name, args, input) => {
      if (args[0] === 'delete') nft.tables.clear(); // someone else was faster
      return nft.run(name, args, input);
    };
    expect(await removeNftTable(racing, 5000)).toBe(true);
  });
});
