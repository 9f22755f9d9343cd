import { describe, expect, it } from 'vitest';
import { byPrecedence, chainName, natCleanupScript, natRules } from '../../src/firewall/rules.js';
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

function setup(rules: SubnetRule[], extra: Partial<FirewallSetup> = {}): FirewallSetup {
  return { version: 1, method: 'nat', port: 12300, routerMode: false, rules, ...extra };
}

describe('natRules', () => {
  it('redirects one included subnet', () => {
    expect(natRules(setup([rule('10.0.0.0/8')]))).toEqual({
      v4: [
        '*nat',
        ':rxshuttle-12300 - [0:0]',
        '-A rxshuttle-12300 -m addrtype --dst-type LOCAL -j RETURN',
        '-A rxshuttle-12300 -d 10.0.0.0/8 -p tcp -j REDIRECT --to-ports 12300',
        '-I OUTPUT 1 -p tcp -j rxshuttle-12300',
        'COMMIT',
        '',
      ].join('\n'),
      v6: null,
    });
  });

  it('orders subnets so that the longest prefix wins, excludes first on a tie', () => {
    const { v4 } = natRules(
      setup([
        rule('0.0.0.0/0'),
        rule('10.0.0.0/8', true),
        rule('10.1.0.0/16'),
        rule('10.1.2.0/24', true),
        rule('10.1.2.3/32'),
        rule('192.168.0.0/16'),
        rule('192.168.0.0/16', true),
      ]),
    );
    const body = v4!.split('\n').filter((l) => l.startsWith('-A rxshuttle-12300 -d'));
    expect(body).toEqual([
      '-A rxshuttle-12300 -d 10.1.2.3/32 -p tcp -j REDIRECT --to-ports 12300',
      '-A rxshuttle-12300 -d 10.1.2.0/24 -p tcp -j RETURN',
      '-A rxshuttle-12300 -d 192.168.0.0/16 -p tcp -j RETURN',
      '-A rxshuttle-12300 -d 10.1.0.0/16 -p tcp -j REDIRECT --to-ports 12300',
      '-A rxshuttle-12300 -d 192.168.0.0/16 -p tcp -j REDIRECT --to-ports 12300',
      '-A rxshuttle-12300 -d 10.0.0.0/8 -p tcp -j RETURN',
      '-A rxshuttle-12300 -d 0.0.0.0/0 -p tcp -j REDIRECT --to-ports 12300',
    ]);
  });

  it('puts the LOCAL return before every subnet rule', () => {
    const lines = natRules(setup([rule('0.0.0.0/0'), rule('10.0.0.0/8', true)])).v4!.split('\n');
    expect(lines[2]).toBe('-A rxshuttle-12300 -m addrtype --dst-type LOCAL -j RETURN');
  });

  it('limits to port ranges', () => {
    const { v4 } = natRules(setup([rule('10.0.0.0/8:8000-8080'), rule('10.0.0.0/8:22-22', true), rule('10.0.0.0/8:1-65535')]));
    expect(v4).toContain('-A rxshuttle-12300 -d 10.0.0.0/8 -p tcp --dport 22 -j RETURN\n');
    expect(v4).toContain('-A rxshuttle-12300 -d 10.0.0.0/8 -p tcp --dport 8000:8080 -j REDIRECT --to-ports 12300\n');
    expect(v4).toContain('-A rxshuttle-12300 -d 10.0.0.0/8 -p tcp --dport 1:65535 -j REDIRECT --to-ports 12300\n');
    // equal prefixes: the exclude first, includes in the caller's order
    const order = v4!.split('\n').filter((l) => l.includes('--dport')).map((l) => l.split('--dport ')[1]?.split(' ')[0]);
    expect(order).toEqual(['22', '8000:8080', '1:65535']);
  });

  it('jumps from PREROUTING too in router mode, inserted first', () => {
    const { v4 } = natRules(setup([rule('10.0.0.0/8')], { routerMode: true, port: 5000 }));
    expect(v4!.split('\n').slice(-4)).toEqual([
      '-I PREROUTING 1 -p tcp -j rxshuttle-5000',
      '-I OUTPUT 1 -p tcp -j rxshuttle-5000',
      'COMMIT',
      '',
    ]);
  });

  it('lets the bypass group skip the chain on the OUTPUT jump only (owner is invalid from PREROUTING)', () => {
    const { v4 } = natRules(setup([rule('10.0.0.0/8')], { routerMode: true, bypassGid: 4242 }));
    expect(v4).toContain('-I OUTPUT 1 -p tcp -m owner ! --gid-owner 4242 -j rxshuttle-12300\n');
    expect(v4).toContain('-I PREROUTING 1 -p tcp -j rxshuttle-12300\n');
    expect(v4!.match(/-m owner/g)).toHaveLength(1);
  });

  it('builds IPv6 rules only from IPv6 entries, and only with an IPv6 include', () => {
    const both = natRules(setup([rule('10.0.0.0/8'), rule('fd00::/8'), rule('fd00:1::/32', true)], { bypassGid: 7 }));
    expect(both.v4).not.toContain('fd00');
    expect(both.v6).toBe(
      [
        '*nat',
        ':rxshuttle-12300 - [0:0]',
        '-A rxshuttle-12300 -m addrtype --dst-type LOCAL -j RETURN',
        '-A rxshuttle-12300 -d fd00:1::/32 -p tcp -j RETURN',
        '-A rxshuttle-12300 -d fd00::/8 -p tcp -j REDIRECT --to-ports 12300',
        '-I OUTPUT 1 -p tcp -m owner ! --gid-owner 7 -j rxshuttle-12300',
        'COMMIT',
        '',
      ].join('\n'),
    );
    expect(natRules(setup([rule('10.0.0.0/8'), rule('fd00::/8', true)])).v6).toBeNull();
    expect(natRules(setup([rule('fd00::/8')])).v4).toBeNull();
  });

  it('installs nothing for a family with only excludes, or no rules at all', () => {
    expect(natRules(setup([rule('10.0.0.0/8', true)]))).toEqual({ v4: null, v6: null });
    expect(natRules(setup([]))).toEqual({ v4: null, v6: null });
  });
});

describe('byPrecedence', () => {
  it('is stable for rules of equal rank', () => {
    const rules = [rule('10.0.0.0/8:1-2'), rule('11.0.0.0/8'), rule('12.0.0.0/8:3-4')];
    expect(byPrecedence(rules)).toEqual(rules);
  });
});

const SAVE = `# Generated by iptables-save v1.8.9 (nf_tables) on Wed Nov 25 21:04:22 2026
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:DOCKER - [0:0]
:rxshuttle-1230 - [0:0]
:rxshuttle-12300 - [0:0]
-A PREROUTING -p tcp -j rxshuttle-12300
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT -p tcp -m owner ! --gid-owner 1000 -j rxshuttle-12300
-A OUTPUT -p tcp -j rxshuttle-1230
-A OUTPUT -p tcp -j rxshuttle-12300
-A DOCKER -p tcp -j rxshuttle-12300
-A rxshuttle-1230 -d 10.0.0.0/8 -p tcp -j REDIRECT --to-ports 1230
-A rxshuttle-12300 -m addrtype --dst-type LOCAL -j RETURN
-A rxshuttle-12300 -d 10.1.2.0/24 -p tcp -m tcp --dport 80:90 -j RETURN
-A rxshuttle-12300 -d 10.0.0.0/8 -p tcp -j REDIRECT --to-ports 12300
COMMIT
# Completed on Wed Nov 25 21:04:22 2026
`;

describe('natCleanupScript', () => {
  it('names the chain after the port', () => {
    expect(chainName(12300)).toBe('rxshuttle-12300');
  });

  it('deletes every jump to the chain by its saved spelling, then flushes and deletes it', () => {
    expect(natCleanupScript(SAVE, 12300)).toBe(
      [
        '*nat',
        '-D PREROUTING -p tcp -j rxshuttle-12300',
        '-D OUTPUT -p tcp -m owner ! --gid-owner 1000 -j rxshuttle-12300',
        '-D OUTPUT -p tcp -j rxshuttle-12300',
        '-D DOCKER -p tcp -j rxshuttle-12300',
        '-F rxshuttle-12300',
        '-X rxshuttle-12300',
        'COMMIT',
        '',
      ].join('\n'),
    );
  });

  it('leaves other instances alone, even when one port is a prefix of the other', () => {
    expect(natCleanupScript(SAVE, 1230)).toBe(
      ['*nat', '-D OUTPUT -p tcp -j rxshuttle-1230', '-F rxshuttle-1230', '-X rxshuttle-1230', 'COMMIT', ''].join('\n'),
    );
  });

  it('returns null when there is nothing of the instance', () => {
    expect(natCleanupScript(SAVE, 9999)).toBeNull();
    expect(natCleanupScript('', 12300)).toBeNull();
  });

  it('deletes gotos too, but never a rule that only mentions the name (another tool\'s comment)', () => {
    const foreign = [
      '-A OUTPUT -p tcp -m comment --comment rxshuttle-12300 -j ACCEPT',
      '-A OUTPUT -p tcp -m comment --comment "not -j rxshuttle-12300 at all" -j RETURN',
      '-A OUTPUT -p tcp -m comment --comment "say \\"-g rxshuttle-12300\\" here" -j RETURN',
      '-A OUTPUT -p tcp -m comment --comment -j -j RETURN',
    ];
    const save = [
      '*nat',
      ':OUTPUT ACCEPT [0:0]',
      ':rxshuttle-12300 - [0:0]',
      ...foreign,
      '-A OUTPUT -p udp -g rxshuttle-12300',
      '-A OUTPUT -p tcp -m comment --comment "ours, after all" -j rxshuttle-12300',
      '-A rxshuttle-12300 -p tcp -j REDIRECT --to-ports 12300',
      'COMMIT',
    ].join('\n');
    expect(natCleanupScript(save, 12300)).toBe(
      [
        '*nat',
        '-D OUTPUT -p udp -g rxshuttle-12300',
        '-D OUTPUT -p tcp -m comment --comment "ours, after all" -j rxshuttle-12300',
        '-F rxshuttle-12300',
        '-X rxshuttle-12300',
        'COMMIT',
        '',
      ].join('\n'),
    );
    expect(natCleanupScript(['*nat', ':OUTPUT ACCEPT [0:0]', ...foreign, 'COMMIT'].join('\n'), 12300)).toBeNull();
  });

  it('only looks at the nat table', () => {
    const filter = '*filter\n:rxshuttle-12300 - [0:0]\n-A INPUT -j rxshuttle-12300\nCOMMIT\n';
    expect(natCleanupScript(filter, 12300)).toBeNull();
    expect(natCleanupScript(filter + SAVE, 12300)).toContain('-X rxshuttle-12300');
  });

  it('removes exactly what natRules installs (round trip through the saved form)', () => {
    const s = setup([rule('10.0.0.0/8'), rule('10.1.0.0/16', true)], { routerMode: true, bypassGid: 5 });
    const installed = natRules(s).v4!;
    // What iptables-save prints for it: base chains, then our chain and rules in -A form.
    const saved = [
      '*nat',
      ':PREROUTING ACCEPT [0:0]',
      ':OUTPUT ACCEPT [0:0]',
      ...installed.split('\n').filter((l) => l.startsWith(':rxshuttle')),
      ...installed
        .split('\n')
        .filter((l) => l.startsWith('-I '))
        .map((l) => l.replace(/^-I (\S+) 1 /, '-A $1 ')),
      ...installed.split('\n').filter((l) => l.startsWith('-A ')),
      'COMMIT',
    ].join('\n');
    expect(natCleanupScript(saved, 12300)).toBe(
      [
        '*nat',
        '-D PREROUTING -p tcp -j rxshuttle-12300',
        '-D OUTPUT -p tcp -m owner ! --gid-owner 5 -j rxshuttle-12300',
        '-F rxshuttle-12300',
        '-X rxshuttle-12300',
        'COMMIT',
        '',
      ].join('\n'),
    );
  });
});
