/**
 * The `tproxy` method (tproxy.ts, policy-routing.ts): its mangle text, and install / update /
 * remove against a fake iptables and a fake `ip`, alone and through the helper's protocol. The
 * real kernel, in namespaces: tproxy.netns.test.ts.
 */
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { type FirewallHelperOptions, runFirewallHelper } from '../../src/firewall/helper.js';
import { killSwitchScript } from '../../src/firewall/kill-switch.js';
import { installRules, removeInstanceRules } from '../../src/firewall/methods.js';
import { IP_NOT_FOUND, markText, policyRoutingCommands, RULE_PRIORITY, routeTable } from '../../src/firewall/policy-routing.js';
import { chainsCleanupScript, natRules } from '../../src/firewall/rules.js';
import { installTproxy, removeTproxyCapture, tproxyChains, tproxyDnsScripts, tproxyMangleScript, tproxyMangleUpdate } from '../../src/firewall/tproxy.js';
import type { FirewallSetup, SubnetRule } from '../../src/firewall/types.js';
import { runWatchdog } from '../../src/firewall/watchdog.js';
import { FakeIptables } from './support/fake-iptables.js';
import { outputLines } from './support/output-lines.js';

function rule(spec: string, exclude = false): SubnetRule {
  // "10.0.0.0/8" or "10.0.0.0/8:80-90"
  const m = /^(.+)\/(\d+)(?::(\d+)-(\d+))?$/.exec(spec);
  if (!m) throw new Error(spec);
  const address = m[1]!;
  return { family: address.includes(':') ? 6 : 4, address, prefix: Number(m[2]), portLow: Number(m[3] ?? 0), portHigh: Number(m[4] ?? 0), exclude };
}

const PORT = 12300;
const T = 0x7278_0000 + PORT;
function setup(rules: SubnetRule[], extra: Partial<FirewallSetup> = {}): FirewallSetup {
  return { version: 1, method: 'tproxy', port: PORT, routerMode: false, rules, tmark: 1, udpPort: 12302, ...extra };
}
const FULL = setup([rule('10.0.0.0/8'), rule('10.1.0.0/16', true), rule('10.2.0.0/16:8000-8080'), rule('fd00::/8'), rule('fd00:1::/32:53-53', true)], {
  bypassGid: 4242,
  dnsPort: 12301,
  dnsServers: ['10.1.0.53', 'fd00::53'],
});

const mangleLines = (fake: FakeIptables, family: 4 | 6) => fake.rxshuttleLines(family, 'mangle');
/** Everything an instance of port P could hold in the fakes: no line, no rule, no route. */
function leftOf(fake: FakeIptables, port = PORT) {
  const table = 0x7278_0000 + port;
  return {
    mangle: [...mangleLines(fake, 4), ...mangleLines(fake, 6)].filter((l) => l.includes(`-${port} `) || l.endsWith(`-${port}`)),
    nat: [...fake.rxshuttleLines(4), ...fake.rxshuttleLines(6)].filter((l) => l.includes(`rxshuttle-${port}`)),
    ip: [...fake.ip[4].of(table).rules, ...fake.ip[6].of(table).rules],
    routes: [...fake.ip[4].of(table).routes, ...fake.ip[6].of(table).routes],
    nft: [...fake.nftTables.keys()],
  };
}
const NOTHING = { mangle: [], nat: [], ip: [], routes: [], nft: [] };

describe('tproxyMangleScript', () => {
  it('IPv4: LOCAL and DNS RETURN first, then the subnets by precedence, TCP and UDP each; jumps from PREROUTING (lo, marked) and OUTPUT', () => {
    expect(tproxyMangleScript(FULL, 4)).toBe(
      [
        '*mangle',
        ':rxshuttle-tproxy-12300 - [0:0]',
        ':rxshuttle-mark-12300 - [0:0]',
        '-A rxshuttle-tproxy-12300 -m addrtype --dst-type LOCAL -j RETURN',
        '-A rxshuttle-tproxy-12300 -d 10.1.0.53/32 -p tcp --dport 53 -j RETURN',
        '-A rxshuttle-tproxy-12300 -d 10.1.0.53/32 -p udp --dport 53 -j RETURN',
        '-A rxshuttle-tproxy-12300 -d 10.1.0.0/16 -p tcp -j RETURN',
        '-A rxshuttle-tproxy-12300 -d 10.1.0.0/16 -p udp -j RETURN',
        '-A rxshuttle-tproxy-12300 -d 10.2.0.0/16 -p tcp --dport 8000:8080 -j TPROXY --on-port 12300 --on-ip 127.0.0.1 --tproxy-mark 0x1/0x1',
        '-A rxshuttle-tproxy-12300 -d 10.2.0.0/16 -p udp --dport 8000:8080 -j TPROXY --on-port 12302 --on-ip 127.0.0.1 --tproxy-mark 0x1/0x1',
        '-A rxshuttle-tproxy-12300 -d 10.0.0.0/8 -p tcp -j TPROXY --on-port 12300 --on-ip 127.0.0.1 --tproxy-mark 0x1/0x1',
        '-A rxshuttle-tproxy-12300 -d 10.0.0.0/8 -p udp -j TPROXY --on-port 12302 --on-ip 127.0.0.1 --tproxy-mark 0x1/0x1',
        '-A rxshuttle-mark-12300 -m addrtype --dst-type LOCAL -j RETURN',
        '-A rxshuttle-mark-12300 -d 10.1.0.53/32 -p tcp --dport 53 -j RETURN',
        '-A rxshuttle-mark-12300 -d 10.1.0.53/32 -p udp --dport 53 -j RETURN',
        '-A rxshuttle-mark-12300 -d 10.1.0.0/16 -p tcp -j RETURN',
        '-A rxshuttle-mark-12300 -d 10.1.0.0/16 -p udp -j RETURN',
        '-A rxshuttle-mark-12300 -d 10.2.0.0/16 -p tcp --dport 8000:8080 -j MARK --set-xmark 0x1/0x1',
        '-A rxshuttle-mark-12300 -d 10.2.0.0/16 -p udp --dport 8000:8080 -j MARK --set-xmark 0x1/0x1',
        '-A rxshuttle-mark-12300 -d 10.0.0.0/8 -p tcp -j MARK --set-xmark 0x1/0x1',
        '-A rxshuttle-mark-12300 -d 10.0.0.0/8 -p udp -j MARK --set-xmark 0x1/0x1',
        '-I PREROUTING 1 -i lo -p tcp -m mark --mark 0x1/0x1 -j rxshuttle-tproxy-12300',
        '-I PREROUTING 1 -i lo -p udp -m mark --mark 0x1/0x1 -j rxshuttle-tproxy-12300',
        '-I OUTPUT 1 -p tcp -m owner ! --gid-owner 4242 -j rxshuttle-mark-12300',
        '-I OUTPUT 1 -p udp -m owner ! --gid-owner 4242 -j rxshuttle-mark-12300',
        'COMMIT',
        '',
      ].join('\n'),
    );
  });

  it('IPv6: ::1, /128 nameservers, a single port', () => {
    const text = tproxyMangleScript(FULL, 6)!;
    const body = text.split('\n').filter((l) => l.startsWith('-A rxshuttle-tproxy-12300'));
    expect(body).toEqual([
      '-A rxshuttle-tproxy-12300 -m addrtype --dst-type LOCAL -j RETURN',
      '-A rxshuttle-tproxy-12300 -d fd00::53/128 -p tcp --dport 53 -j RETURN',
      '-A rxshuttle-tproxy-12300 -d fd00::53/128 -p udp --dport 53 -j RETURN',
      '-A rxshuttle-tproxy-12300 -d fd00:1::/32 -p tcp --dport 53 -j RETURN',
      '-A rxshuttle-tproxy-12300 -d fd00:1::/32 -p udp --dport 53 -j RETURN',
      '-A rxshuttle-tproxy-12300 -d fd00::/8 -p tcp -j TPROXY --on-port 12300 --on-ip ::1 --tproxy-mark 0x1/0x1',
      '-A rxshuttle-tproxy-12300 -d fd00::/8 -p udp -j TPROXY --on-port 12302 --on-ip ::1 --tproxy-mark 0x1/0x1',
    ]);
    expect(text).not.toContain('10.');
  });

  it('without udpPort: no UDP rule and no UDP jump at all (DNS RETURNs for TCP only)', () => {
    const { udpPort: _, ...tcpOnly } = FULL;
    const text = tproxyMangleScript(tcpOnly, 4)!;
    expect(text).not.toContain('udp');
    expect(text).toContain('-A rxshuttle-mark-12300 -d 10.1.0.53/32 -p tcp --dport 53 -j RETURN');
    expect(text.split('\n').filter((l) => l.startsWith('-I '))).toEqual([
      '-I PREROUTING 1 -i lo -p tcp -m mark --mark 0x1/0x1 -j rxshuttle-tproxy-12300',
      '-I OUTPUT 1 -p tcp -m owner ! --gid-owner 4242 -j rxshuttle-mark-12300',
    ]);
  });

  it('owner matches (restricted uid, --user, --group) and the bypass group on the OUTPUT jumps only', () => {
    const owned = setup([rule('10.0.0.0/8')], { user: 1000, group: 100, bypassGid: 7 });
    const jumps = (text: string | null) => text!.split('\n').filter((l) => l.startsWith('-I '));
    expect(jumps(tproxyMangleScript(owned, 4))).toEqual([
      '-I PREROUTING 1 -i lo -p tcp -m mark --mark 0x1/0x1 -j rxshuttle-tproxy-12300',
      '-I PREROUTING 1 -i lo -p udp -m mark --mark 0x1/0x1 -j rxshuttle-tproxy-12300',
      '-I OUTPUT 1 -p tcp -m owner --uid-owner 1000 -m owner --gid-owner 100 -m owner ! --gid-owner 7 -j rxshuttle-mark-12300',
      '-I OUTPUT 1 -p udp -m owner --uid-owner 1000 -m owner --gid-owner 100 -m owner ! --gid-owner 7 -j rxshuttle-mark-12300',
    ]);
    // The restricted mode's uid wins over --user.
    expect(tproxyMangleScript(owned, 4, 2000)).toContain('-I OUTPUT 1 -p tcp -m owner --uid-owner 2000 -m owner --gid-owner 100');
    expect(tproxyMangleScript(owned, 4)!.split('\n').filter((l) => l.startsWith('-A ') && l.includes('owner'))).toEqual([]);
  });

  it('router mode: PREROUTING jumps without -i lo and mark (forwarded traffic meets the chain as it comes in)', () => {
    const text = tproxyMangleScript(setup([rule('10.0.0.0/8')], { routerMode: true }), 4)!;
    expect(text.split('\n').filter((l) => l.startsWith('-I PREROUTING'))).toEqual([
      '-I PREROUTING 1 -p tcp -j rxshuttle-tproxy-12300',
      '-I PREROUTING 1 -p udp -j rxshuttle-tproxy-12300',
    ]);
  });

  it('the mark in hex, as iptables-save writes it; nothing for a family without an include', () => {
    expect(tproxyMangleScript(setup([rule('10.0.0.0/8')], { tmark: 0xff00 }), 4)).toContain('--tproxy-mark 0xff00/0xff00');
    expect(tproxyMangleScript(setup([rule('10.0.0.0/8')], { tmark: 0xffff_ffff }), 4)).toContain('--set-xmark 0xffffffff/0xffffffff');
    expect(tproxyMangleScript(setup([rule('10.0.0.0/8'), rule('fd00::/8', true)]), 6)).toBeNull();
    expect(tproxyMangleScript(setup([rule('10.0.0.0/8', true)], { dnsPort: 53000, dnsServers: ['10.0.0.53'] }), 4)).toBeNull();
    expect(() => tproxyMangleScript({ ...setup([rule('10.0.0.0/8')]), tmark: undefined } as unknown as FirewallSetup, 4)).toThrow(/no tmark/);
  });

  it('update: both chains flushed and refilled in one script, jumps untouched; with nothing included, the LOCAL RETURNs stay', () => {
    expect(tproxyMangleUpdate(FULL, 4, [rule('192.168.7.7/32')])).toBe(
      [
        '*mangle',
        '-F rxshuttle-tproxy-12300',
        '-F rxshuttle-mark-12300',
        '-A rxshuttle-tproxy-12300 -m addrtype --dst-type LOCAL -j RETURN',
        '-A rxshuttle-tproxy-12300 -d 10.1.0.53/32 -p tcp --dport 53 -j RETURN',
        '-A rxshuttle-tproxy-12300 -d 10.1.0.53/32 -p udp --dport 53 -j RETURN',
        '-A rxshuttle-tproxy-12300 -d 192.168.7.7/32 -p tcp -j TPROXY --on-port 12300 --on-ip 127.0.0.1 --tproxy-mark 0x1/0x1',
        '-A rxshuttle-tproxy-12300 -d 192.168.7.7/32 -p udp -j TPROXY --on-port 12302 --on-ip 127.0.0.1 --tproxy-mark 0x1/0x1',
        '-A rxshuttle-mark-12300 -m addrtype --dst-type LOCAL -j RETURN',
        '-A rxshuttle-mark-12300 -d 10.1.0.53/32 -p tcp --dport 53 -j RETURN',
        '-A rxshuttle-mark-12300 -d 10.1.0.53/32 -p udp --dport 53 -j RETURN',
        '-A rxshuttle-mark-12300 -d 192.168.7.7/32 -p tcp -j MARK --set-xmark 0x1/0x1',
        '-A rxshuttle-mark-12300 -d 192.168.7.7/32 -p udp -j MARK --set-xmark 0x1/0x1',
        'COMMIT',
        '',
      ].join('\n'),
    );
    expect(tproxyMangleUpdate(FULL, 6, [])).toBe(
      ['*mangle', '-F rxshuttle-tproxy-12300', '-F rxshuttle-mark-12300', '-A rxshuttle-tproxy-12300 -m addrtype --dst-type LOCAL -j RETURN', '-A rxshuttle-mark-12300 -m addrtype --dst-type LOCAL -j RETURN', 'COMMIT', ''].join('\n'),
    );
  });
});

describe('--dns with tproxy', () => {
  it("is exactly the nat method's DNS part: its chain with the REDIRECTs and LOCAL RETURN, its jumps, no subnet", () => {
    const dns = tproxyDnsScripts({ ...FULL, routerMode: true }, 1000);
    expect(dns.v4).toBe(
      [
        '*nat',
        ':rxshuttle-12300 - [0:0]',
        '-A rxshuttle-12300 -d 10.1.0.53/32 -p udp --dport 53 -j REDIRECT --to-ports 12301',
        '-A rxshuttle-12300 -d 10.1.0.53/32 -p tcp --dport 53 -j REDIRECT --to-ports 12301',
        '-A rxshuttle-12300 -m addrtype --dst-type LOCAL -j RETURN',
        '-I PREROUTING 1 -p tcp -j rxshuttle-12300',
        '-I OUTPUT 1 -p tcp -m owner --uid-owner 1000 -m owner ! --gid-owner 4242 -j rxshuttle-12300',
        '-I PREROUTING 1 -p udp --dport 53 -j rxshuttle-12300',
        '-I OUTPUT 1 -p udp --dport 53 -m owner --uid-owner 1000 -m owner ! --gid-owner 4242 -j rxshuttle-12300',
        'COMMIT',
        '',
      ].join('\n'),
    );
    // The nat method with the same setup has the same DNS lines, and its subnet lines besides.
    const nat = natRules({ ...FULL, method: 'nat', routerMode: true }, 1000).v4!.split('\n');
    expect(nat.filter((l) => !/ -d 10\.[0-2]\.0\.0\//.test(l))).toEqual(dns.v4!.split('\n'));
    expect(dns.v6).toContain('-A rxshuttle-12300 -d fd00::53/128 -p udp --dport 53 -j REDIRECT --to-ports 12301');
    expect(tproxyDnsScripts(setup([rule('10.0.0.0/8')]))).toEqual({ v4: null, v6: null });
  });
});

describe('policy routing', () => {
  it("T: 'rx' in the high half plus the port; R: 120, before the main table's 32766", () => {
    expect(routeTable(12300)).toBe(T);
    expect(routeTable(1)).toBe(1_920_466_945);
    expect(routeTable(65535)).toBe(1_920_532_479);
    expect(RULE_PRIORITY).toBeGreaterThan(0);
    expect(RULE_PRIORITY).toBeLessThan(220); // before strongSwan's catch-all, and all later ones
    expect(() => routeTable(0)).toThrow();
    expect(() => routeTable(65536)).toThrow();
    expect(markText(1)).toBe('0x1');
    expect(() => markText(0)).toThrow();
    expect(() => markText(2 ** 32)).toThrow();
  });

  it('route first, then the rule, per family', () => {
    expect(policyRoutingCommands(4, PORT, 0x10)).toEqual([
      ['-4', 'route', 'add', 'local', '0.0.0.0/0', 'dev', 'lo', 'table', String(T)],
      ['-4', 'rule', 'add', 'fwmark', '0x10/0x10', 'lookup', String(T), 'priority', '120'],
    ]);
    expect(policyRoutingCommands(6, PORT, 1)[0]).toEqual(['-6', 'route', 'add', 'local', '::/0', 'dev', 'lo', 'table', String(T)]);
  });
});

describe('chainsCleanupScript (mangle)', () => {
  it('removes exactly what tproxyMangleScript installs (round trip through the saved form), nothing of another port', () => {
    const installed = tproxyMangleScript(FULL, 4)!.split('\n');
    const other = tproxyMangleScript({ ...FULL, port: 1230 }, 4)!.split('\n');
    const saved = [
      '*mangle',
      ':PREROUTING ACCEPT [0:0]',
      ':OUTPUT ACCEPT [0:0]',
      ...[...installed, ...other].filter((l) => l.startsWith(':rxshuttle')),
      ...[...installed, ...other].filter((l) => l.startsWith('-I ')).map((l) => l.replace(/^-I (\S+) 1 /, '-A $1 ')),
      ...[...installed, ...other].filter((l) => l.startsWith('-A ')),
      'COMMIT',
    ].join('\n');
    const { tproxy, mark } = tproxyChains(PORT);
    expect(chainsCleanupScript(saved, 'mangle', [tproxy, mark])).toBe(
      [
        '*mangle',
        '-D PREROUTING -i lo -p tcp -m mark --mark 0x1/0x1 -j rxshuttle-tproxy-12300',
        '-D PREROUTING -i lo -p udp -m mark --mark 0x1/0x1 -j rxshuttle-tproxy-12300',
        '-D OUTPUT -p tcp -m owner ! --gid-owner 4242 -j rxshuttle-mark-12300',
        '-D OUTPUT -p udp -m owner ! --gid-owner 4242 -j rxshuttle-mark-12300',
        '-F rxshuttle-tproxy-12300',
        '-F rxshuttle-mark-12300',
        '-X rxshuttle-tproxy-12300',
        '-X rxshuttle-mark-12300',
        'COMMIT',
        '',
      ].join('\n'),
    );
    expect(chainsCleanupScript(saved.replace('*mangle', '*nat'), 'mangle', [tproxy, mark])).toBeNull();
  });
});

describe('installTproxy (fake iptables and ip)', () => {
  it('installs routing, mangle chains and the DNS chain in both families; remove leaves nothing, and a user rule untouched', async () => {
    const fake = new FakeIptables();
    // The user's own policy routing, as sshuttle's manual has it, with the same mark.
    for (const family of [4, 6] as const) {
      fake.ip[family].addRule({ priority: 100, fwmark: '0x1', table: '100' });
      fake.ip[family].routes.set('100', ['local default dev lo']);
    }
    const userRules = { 4: [...fake.ip[4].rules], 6: [...fake.ip[6].rules] };
    const installed = await installTproxy(FULL, fake.run);
    for (const family of [4, 6] as const) {
      expect(fake.ip[family].of(T)).toEqual({ rules: [{ priority: 120, fwmark: '0x1/0x1', table: String(T) }], routes: ['local default dev lo'] });
      expect(mangleLines(fake, family)).toContain(`-A OUTPUT -p udp -m owner ! --gid-owner 4242 -j rxshuttle-mark-12300`);
      expect(fake.rxshuttleLines(family)).toContain('-A OUTPUT -p udp --dport 53 -m owner ! --gid-owner 4242 -j rxshuttle-12300');
    }
    expect(mangleLines(fake, 4)).toContain('-A rxshuttle-tproxy-12300 -d 10.0.0.0/8 -p udp -j TPROXY --on-port 12302 --on-ip 127.0.0.1 --tproxy-mark 0x1/0x1');
    // The route is in place before the rule that leads to it, and both before anything is marked.
    const order = fake.calls.filter((c) => c.file === 'ip' && c.args[2] === 'add').map((c) => c.args.slice(0, 2).join(' '));
    expect(order).toEqual(['-4 route', '-4 rule', '-6 route', '-6 rule']);
    const firstMangle = fake.calls.findIndex((c) => c.file.endsWith('-restore') && c.input?.startsWith('*mangle\n:'));
    const lastIpAdd = fake.calls.map((c) => c.file === 'ip' && c.args[1] === 'rule' && c.args[2] === 'add' && c.args[0] === '-4').lastIndexOf(true);
    expect(lastIpAdd).toBeLessThan(firstMangle);

    await installed.remove();
    expect(leftOf(fake)).toEqual(NOTHING);
    expect(fake.ip[4].rules).toEqual(userRules[4]);
    expect(fake.ip[6].rules).toEqual(userRules[6]);
    expect(fake.ip[4].routes.get('100')).toEqual(['local default dev lo']);
  });

  it('a family with a nameserver but no include gets the DNS chain only: no mangle chain, no policy routing', async () => {
    const fake = new FakeIptables();
    const installed = await installTproxy(setup([rule('10.0.0.0/8')], { dnsPort: 12301, dnsServers: ['fd00::53'] }), fake.run);
    expect(fake.ip[6].of(T)).toEqual({ rules: [], routes: [] });
    expect(mangleLines(fake, 6)).toEqual([]);
    expect(fake.rxshuttleLines(6)).toContain('-A rxshuttle-12300 -d fd00::53/128 -p udp --dport 53 -j REDIRECT --to-ports 12301');
    expect(fake.rxshuttleLines(4)).toEqual([]);
    await installed.remove();
    expect(leftOf(fake)).toEqual(NOTHING);
  });

  it('IPv4 only: IPv6 gets nothing, and an unusable ip6tables/IPv6 does not stop it', async () => {
    const fake = new FakeIptables();
    fake.missing.add('ip6tables-save');
    const installed = await installTproxy(setup([rule('10.0.0.0/8')]), fake.run);
    expect(fake.ip[6].of(T)).toEqual({ rules: [], routes: [] });
    expect(fake.ip[4].of(T).rules).toHaveLength(1);
    await installed.remove();
    expect(leftOf(fake)).toEqual(NOTHING);
  });

  it('update: one mangle restore per installed family (-F, rules), jumps and policy routing untouched; a new family gets all of it', async () => {
    const fake = new FakeIptables();
    const installed = await installTproxy(setup([rule('10.0.0.0/8')]), fake.run);
    const jumps = () => mangleLines(fake, 4).filter((l) => l.startsWith('-A PREROUTING') || l.startsWith('-A OUTPUT'));
    const before = jumps();
    fake.calls.length = 0;
    await installed.update([rule('192.168.7.7/32'), rule('10.9.0.0/16', true)]);
    expect(fake.calls.map((c) => c.file)).toEqual(['iptables-restore']);
    expect(fake.calls[0]!.input!.split('\n').slice(0, 3)).toEqual(['*mangle', '-F rxshuttle-tproxy-12300', '-F rxshuttle-mark-12300']);
    expect(jumps()).toEqual(before);
    expect(mangleLines(fake, 4).filter((l) => l.startsWith('-A rxshuttle-mark-12300'))).toEqual([
      '-A rxshuttle-mark-12300 -m addrtype --dst-type LOCAL -j RETURN',
      '-A rxshuttle-mark-12300 -d 192.168.7.7/32 -p tcp -j MARK --set-xmark 0x1/0x1',
      '-A rxshuttle-mark-12300 -d 192.168.7.7/32 -p udp -j MARK --set-xmark 0x1/0x1',
      '-A rxshuttle-mark-12300 -d 10.9.0.0/16 -p tcp -j RETURN',
      '-A rxshuttle-mark-12300 -d 10.9.0.0/16 -p udp -j RETURN',
      '-A rxshuttle-mark-12300 -d 10.0.0.0/8 -p tcp -j MARK --set-xmark 0x1/0x1',
      '-A rxshuttle-mark-12300 -d 10.0.0.0/8 -p udp -j MARK --set-xmark 0x1/0x1',
    ]);

    // An IPv6 address: routing, chains and jumps for IPv6, as at the start.
    await installed.update([rule('fd00::7/128')]);
    expect(fake.ip[6].of(T).rules).toHaveLength(1);
    expect(mangleLines(fake, 6)).toContain('-A rxshuttle-tproxy-12300 -d fd00::7/128 -p tcp -j TPROXY --on-port 12300 --on-ip ::1 --tproxy-mark 0x1/0x1');
    expect(mangleLines(fake, 4).filter((l) => l.includes('192.168'))).toEqual([]);

    // A failing restore: the chains as they were.
    const kept = [...mangleLines(fake, 4), ...mangleLines(fake, 6)];
    fake.failRestore = (file) => (file === 'ip6tables-restore' ? 'RULE_APPEND failed' : undefined);
    await expect(installed.update([rule('fd00::8/128')])).rejects.toThrow(/RULE_APPEND failed/);
    fake.failRestore = undefined;
    expect(mangleLines(fake, 6)).toEqual(kept.slice(mangleLines(fake, 4).length));
    await installed.remove();
    expect(leftOf(fake)).toEqual(NOTHING);
  });

  it('a new family whose routing cannot be set up: the update fails, nothing of that family stays, the other is intact', async () => {
    const fake = new FakeIptables();
    const installed = await installTproxy(setup([rule('10.0.0.0/8')]), fake.run);
    const v4 = { mangle: mangleLines(fake, 4), ip: fake.ip[4].of(T) };
    fake.failRestore = (file, what) => (file === 'ip' && what.startsWith('-6 rule add') ? 'RTNETLINK answers: Operation not supported' : undefined);
    await expect(installed.update([rule('fd00::7/128')])).rejects.toThrow(/Operation not supported/);
    fake.failRestore = undefined;
    expect(fake.ip[6].of(T)).toEqual({ rules: [], routes: [] });
    expect(mangleLines(fake, 6)).toEqual([]);
    expect({ mangle: mangleLines(fake, 4), ip: fake.ip[4].of(T) }).toEqual(v4);
    await installed.remove();
    expect(leftOf(fake)).toEqual(NOTHING);
  });

  it.each([
    ['the IPv6 mangle restore', (file: string) => (file === 'ip6tables-restore' ? 'TPROXY: unknown target' : undefined)],
    ['the IPv4 rule', (file: string, what: string) => (file === 'ip' && what.startsWith('-4 rule add') ? 'RTNETLINK answers: Permission denied' : undefined)],
    ['the IPv6 route', (file: string, what: string) => (file === 'ip' && what.startsWith('-6 route add') ? 'RTNETLINK answers: Permission denied' : undefined)],
    ['the DNS chain', (file: string, what: string) => (file === 'ip6tables-restore' && what.startsWith('*nat') ? 'REDIRECT failed' : undefined)],
  ])('install failure at %s: the error, and nothing left', async (_name, fail) => {
    const fake = new FakeIptables();
    fake.failRestore = fail;
    await expect(installTproxy(FULL, fake.run)).rejects.toThrow(/failed/);
    fake.failRestore = undefined;
    expect(leftOf(fake)).toEqual(NOTHING);
  });

  it("removes an earlier instance's leftovers on the port first (any mark or priority pointing at T), nothing of another port or the user's", async () => {
    const fake = new FakeIptables();
    // An earlier instance on the port, killed with its watchdog, with another mark; another on port 999.
    for (const port of [PORT, 999]) {
      await installTproxy(setup([rule('10.5.0.0/16'), rule('fd00:5::/32')], { port, tmark: 0x40, dnsPort: port + 1, dnsServers: ['10.5.0.53'] }), fake.run);
    }
    fake.ip[4].addRule({ priority: 5000, fwmark: '0x2/0x2', table: String(T) });
    fake.ip[4].addRule({ priority: 100, fwmark: '0x1', table: '100' });
    const installed = await installTproxy(setup([rule('10.0.0.0/8')]), fake.run);
    const left = leftOf(fake);
    expect(left.mangle.filter((l) => l.includes('10.5.0.0') || l.includes('0x40'))).toEqual([]);
    expect(left.nat).toEqual([]); // this setup has no --dns: the old DNS chain went
    expect(left.ip).toEqual([{ priority: 120, fwmark: '0x1/0x1', table: String(T) }]);
    expect(left.routes).toEqual(['local default dev lo']); // IPv6's table is flushed and stays empty
    // Port 999's instance, and the user's rule, are as they were.
    expect(leftOf(fake, 999).ip).toEqual([
      { priority: 120, fwmark: '0x40/0x40', table: String(0x7278_0000 + 999) },
      { priority: 120, fwmark: '0x40/0x40', table: String(0x7278_0000 + 999) },
    ]);
    expect(leftOf(fake, 999).mangle.length).toBeGreaterThan(0);
    expect(leftOf(fake, 999).nat.length).toBeGreaterThan(0);
    expect(fake.ip[4].rules.filter((r) => r.table === '100')).toHaveLength(1);
    await installed.remove();
    expect(leftOf(fake)).toEqual(NOTHING);
  });

  it('ip missing: the message says what to install, and nothing is left', async () => {
    const fake = new FakeIptables();
    fake.missing.add('ip');
    await expect(installTproxy(FULL, fake.run)).rejects.toThrow(IP_NOT_FOUND);
    expect(leftOf(fake)).toEqual(NOTHING);
  });

  it('removal that finds its rule gone meanwhile fails loudly only if something stays', async () => {
    const fake = new FakeIptables();
    const installed = await installTproxy(setup([rule('10.0.0.0/8')]), fake.run);
    // Someone deleted our rule by hand: removal still succeeds and leaves nothing.
    fake.ip[4].run(['rule', 'del', 'priority', '120', 'table', String(T)]);
    await installed.remove();
    expect(leftOf(fake)).toEqual(NOTHING);
    // The fake refuses to delete what is not there, like the real ip.
    expect(() => fake.ip[4].run(['rule', 'del', 'priority', '120', 'table', String(T)])).toThrow(/No such file/);
  });

  it('a mangle removal that fails keeps the policy routing for the next attempt, and says so', async () => {
    const fake = new FakeIptables();
    const installed = await installTproxy(setup([rule('10.0.0.0/8')]), fake.run);
    fake.failRestore = (file, what) => (file === 'iptables-restore' && what.includes('-X rxshuttle-mark') ? 'table busy' : undefined);
    await expect(installed.remove()).rejects.toThrow(/table busy/);
    expect(fake.ip[4].of(T).rules).toHaveLength(1);
    fake.failRestore = undefined;
    expect(await removeTproxyCapture(fake.run, 4, PORT)).toBe(true);
    expect(leftOf(fake)).toEqual(NOTHING);
  });
});

describe('methods: tproxy among nat and nft', () => {
  it("each method's install clears the others' leftovers of the port; removeInstanceRules clears them all", async () => {
    for (const method of ['nat', 'nft', 'tproxy'] as const) {
      const fake = new FakeIptables();
      // Leftovers of every method on the port.
      await installTproxy(FULL, fake.run);
      fake.nftTables.set('rxshuttle-12300', 'table inet rxshuttle-12300 {\n}\n');
      const extra = method === 'tproxy' ? {} : { udpPort: undefined, tmark: undefined };
      const s = JSON.parse(JSON.stringify({ ...FULL, ...extra, method })) as FirewallSetup;
      const installed = await installRules(s, fake.run);
      const left = leftOf(fake);
      if (method !== 'tproxy') expect({ mangle: left.mangle, ip: left.ip, routes: left.routes }).toEqual({ mangle: [], ip: [], routes: [] });
      if (method !== 'nft') expect(left.nft).toEqual([]);
      await installed.remove();
      expect(leftOf(fake)).toEqual(NOTHING);

      // The watchdog's way: any method named, everything of the port goes.
      await installTproxy(FULL, fake.run);
      fake.nftTables.set('rxshuttle-12300', 'table inet rxshuttle-12300 {\n}\n');
      expect(await removeInstanceRules(method, fake.run, PORT)).toBe(true);
      expect(leftOf(fake)).toEqual(NOTHING);
      expect(await removeInstanceRules(method, fake.run, PORT)).toBe(false);
    }
  });

  it("removeInstanceRules('tproxy'): a failure of its own is thrown, after the other pieces were removed", async () => {
    const fake = new FakeIptables();
    await installTproxy(FULL, fake.run);
    fake.nftTables.set('rxshuttle-12300', 'table inet rxshuttle-12300 {\n}\n');
    fake.failRestore = (file, what) => (file === 'iptables-restore' && what.startsWith('*mangle') ? 'table busy' : undefined);
    await expect(removeInstanceRules('tproxy', fake.run, PORT)).rejects.toThrow(/table busy/);
    fake.failRestore = undefined;
    const left = leftOf(fake);
    expect({ nat: left.nat, nft: left.nft }).toEqual({ nat: [], nft: [] });
    expect(mangleLines(fake, 6)).toEqual([]);
    expect(await removeInstanceRules('tproxy', fake.run, PORT)).toBe(true);
    expect(leftOf(fake)).toEqual(NOTHING);
  });
});

/** Runs the helper on in-memory pipes. */
function startHelper(fake: FakeIptables, opts: FirewallHelperOptions = {}) {
  const input = new PassThrough();
  const output = new PassThrough();
  const warnings: string[] = [];
  const { nextLine } = outputLines(output);
  const done = runFirewallHelper(input, output, { run: fake.run, handleSignals: false, warn: (m) => warnings.push(m), notice: () => {}, resolvedRunning: () => false, ...opts });
  return { input, done, nextLine, warnings };
}

describe('the helper with method tproxy', () => {
  it('READY with everything in place, RULES rewrite the chains (no ip call), QUIT removes it all', async () => {
    const fake = new FakeIptables();
    const h = startHelper(fake);
    expect(await h.nextLine()).toBe('HELLO rxshuttle-fw 1');
    h.input.write(`${JSON.stringify(FULL)}\n`);
    expect(await h.nextLine()).toBe('READY');
    expect(fake.ip[4].of(T).rules).toHaveLength(1);
    const calls = fake.calls.length;
    h.input.write(`RULES ${JSON.stringify([rule('192.168.7.7/32:443-443')])}\n`);
    expect(await h.nextLine()).toBe('OK');
    expect(fake.calls.slice(calls).map((c) => c.file)).toEqual(['iptables-restore', 'ip6tables-restore']);
    expect(mangleLines(fake, 4)).toContain('-A rxshuttle-tproxy-12300 -d 192.168.7.7/32 -p udp --dport 443 -j TPROXY --on-port 12302 --on-ip 127.0.0.1 --tproxy-mark 0x1/0x1');
    h.input.end('QUIT\n');
    expect(await h.done).toBe(0);
    expect(leftOf(fake)).toEqual(NOTHING);
    expect(h.warnings).toEqual([]);
  });

  it('the client dies with --kill-switch: UDP to the subnets is refused too, then the capture goes', async () => {
    const fake = new FakeIptables();
    const h = startHelper(fake);
    await h.nextLine();
    h.input.write(`${JSON.stringify({ ...FULL, killSwitch: true })}\n`);
    expect(await h.nextLine()).toBe('READY');
    h.input.end();
    expect(await h.done).toBe(0);
    expect(leftOf(fake)).toEqual(NOTHING);
    expect(fake.rxshuttleLines(4, 'filter')).toContain('-A rxshuttle-ks-12300 -d 10.0.0.0/8 -p udp -j REJECT');
  });

  it('ip missing: ERROR that says what to install, nothing installed', async () => {
    const fake = new FakeIptables();
    fake.missing.add('ip');
    const h = startHelper(fake);
    await h.nextLine();
    h.input.write(`${JSON.stringify(FULL)}\n`);
    expect(await h.nextLine()).toBe(`ERROR ${IP_NOT_FOUND}`);
    expect(await h.done).toBe(1);
    expect(leftOf(fake)).toEqual(NOTHING);
  });

  it('the restricted mode refuses it, touching nothing', async () => {
    const fake = new FakeIptables();
    const h = startHelper(fake, { ownerUid: 1000, boundBy: () => true });
    await h.nextLine();
    h.input.write(`${JSON.stringify(FULL)}\n`);
    expect(await h.nextLine()).toMatch(/^ERROR method tproxy is refused: its transparent sockets need the client to run as root/);
    expect(await h.done).toBe(1);
    expect(fake.calls).toEqual([]);
  });

  it("the watchdog of a tproxy helper removes its mangle chains, policy routing and DNS chain", async () => {
    const fake = new FakeIptables();
    await installTproxy(FULL, fake.run);
    const input = new PassThrough();
    const said: string[] = [];
    const done = runWatchdog(input, { run: fake.run, say: (m) => said.push(m), resolvedRunning: () => false });
    input.end(`${JSON.stringify({ port: PORT, method: 'tproxy', hostsPath: null, dns: true, lockDirs: null, killSwitch: null })}\n`);
    expect(await done).toBe(0);
    expect(leftOf(fake)).toEqual(NOTHING);
    expect(said).toEqual(['the helper of port 12300 ended without removing its rules; its watchdog removed them']);
  });
});

describe('kill switch with UDP', () => {
  it('with udpPort, UDP to the subnets is rejected too (excludes RETURN first); without, TCP only', () => {
    const lines = killSwitchScript(setup([rule('10.0.0.0/8'), rule('10.1.0.0/16:53-53', true)]), 4)!.split('\n');
    expect(lines.filter((l) => l.startsWith('-A rxshuttle-ks-12300 -d'))).toEqual([
      '-A rxshuttle-ks-12300 -d 10.1.0.0/16 -p tcp --dport 53 -j RETURN',
      '-A rxshuttle-ks-12300 -d 10.1.0.0/16 -p udp --dport 53 -j RETURN',
      '-A rxshuttle-ks-12300 -d 10.0.0.0/8 -p tcp -j REJECT --reject-with tcp-reset',
      '-A rxshuttle-ks-12300 -d 10.0.0.0/8 -p udp -j REJECT',
    ]);
    const { udpPort: _, ...tcpOnly } = setup([rule('10.0.0.0/8')]);
    expect(killSwitchScript(tcpOnly, 4)).not.toContain('udp');
  });
});
