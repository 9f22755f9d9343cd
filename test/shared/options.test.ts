import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { SubnetRule } from '../../src/firewall/types.js';
import { UsageError } from '../../src/shared/errors.js';
import { hasHostBits, isCanonicalIp, parseIp } from '../../src/shared/ip.js';
import {
  lookupId,
  MAX_NAMED_SUBNETS,
  parseListen,
  parseRemote,
  parseSubnet,
  parseSubnetOrName,
  readSubnetFile,
  resolveOptions,
  splitCommand,
} from '../../src/shared/options.js';

const rule = (family: 4 | 6, address: string, prefix: number, portLow = 0, portHigh = 0, exclude = false): SubnetRule => ({
  family,
  address,
  prefix,
  portLow,
  portHigh,
  exclude,
});

/** What the firewall helper will insist on: canonical spelling, no host bits. */
function expectHelperAccepts(r: SubnetRule) {
  expect(isCanonicalIp(r.address, r.family)).toBe(true);
  const parsed = parseIp(r.address);
  expect(parsed).not.toBeNull();
  expect(hasHostBits(parsed!.bytes, r.prefix)).toBe(false);
}

describe('parseSubnet', () => {
  it.each<[string, SubnetRule]>([
    ['0/0', rule(4, '0.0.0.0', 0)],
    ['0.0.0.0/0', rule(4, '0.0.0.0', 0)],
    ['10/8', rule(4, '10.0.0.0', 8)],
    ['1.2.3.4', rule(4, '1.2.3.4', 32)],
    ['192.168.1.0/24', rule(4, '192.168.1.0', 24)],
    ['10.98.0.7/24', rule(4, '10.98.0.0', 24)], // host bits cleared
    ['10.255.255.255/9', rule(4, '10.128.0.0', 9)],
    ['1.2.3.4/0', rule(4, '0.0.0.0', 0)],
    ['010.001.002.003', rule(4, '10.1.2.3', 32)], // no leading zeros in the canonical form
    [' 10.0.0.0/8 ', rule(4, '10.0.0.0', 8)],
    ['1.2.3.4:80', rule(4, '1.2.3.4', 32, 80, 80)],
    ['1.2.3.4/24:8000-9000', rule(4, '1.2.3.0', 24, 8000, 9000)],
    ['0/0:1-65535', rule(4, '0.0.0.0', 0, 1, 65535)],
    ['10/8:443', rule(4, '10.0.0.0', 8, 443, 443)],
  ])('IPv4 %s', (text, expected) => {
    const parsed = parseSubnet(text);
    expect(parsed).toEqual(expected);
    expectHelperAccepts(parsed);
  });

  it.each<[string, SubnetRule]>([
    ['::/0', rule(6, '::', 0)],
    ['::1', rule(6, '::1', 128)],
    ['fd00::/8', rule(6, 'fd00::', 8)],
    ['FD00::/8', rule(6, 'fd00::', 8)],
    ['fd00::1/64', rule(6, 'fd00::', 64)], // host bits cleared
    ['2001:db8:0:0:1:0:0:1', rule(6, '2001:db8::1:0:0:1', 128)],
    ['1:2:3:4:5:6:7:8', rule(6, '1:2:3:4:5:6:7:8', 128)],
    ['2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff/32', rule(6, '2001:db8::', 32)],
    ['[fd00::1]', rule(6, 'fd00::1', 128)],
    ['[fd00::1]/64', rule(6, 'fd00::', 64)],
    ['[::1]:22', rule(6, '::1', 128, 22, 22)],
    ['[fd00::]/64:8000-9000', rule(6, 'fd00::', 64, 8000, 9000)],
    ['::ffff:1.2.3.4', rule(6, '::ffff:102:304', 128)], // IPv4-mapped, written with a dotted tail
    ['::ffff:0.0.0.0/96', rule(6, '::ffff:0:0', 96)],
  ])('IPv6 %s', (text, expected) => {
    const parsed = parseSubnet(text);
    expect(parsed).toEqual(expected);
    expectHelperAccepts(parsed);
  });

  it('marks excludes', () => {
    expect(parseSubnet('1.2.3.0/24', true)).toEqual(rule(4, '1.2.3.0', 24, 0, 0, true));
    expect(parseSubnet('fd00::/8', true).exclude).toBe(true);
  });

  it.each([
    '',
    'x',
    '1.2.3',
    '10.1/16',
    '1.2.3.4.5',
    '256.0.0.0',
    '1.2.3.256/32',
    '1.2.3.4/33',
    '1.2.3.4/-1',
    '1.2.3.4:0',
    '1.2.3.4:90-80',
    '1.2.3.4:70000',
    '1.2.3.4:80-70000',
    '1.2.3.4:',
    'fd00::/129',
    'gg::/8',
    '1:2:3:4:5:6:7:8:9',
    '[fd00::1',
    '[fd00::1]:0',
    '[1.2.3.4]',
    'example.com',
  ])('refuses %j with a UsageError', (text) => {
    expect(() => parseSubnet(text)).toThrow(UsageError);
  });
});

describe('host names as subnets (parseSubnetOrName)', () => {
  it.each([
    ['example.com', { name: 'example.com', portLow: 0, portHigh: 0, exclude: false }],
    ['Intranet.Corp:443', { name: 'intranet.corp', portLow: 443, portHigh: 443, exclude: false }],
    ['db.lan:5432-5433', { name: 'db.lan', portLow: 5432, portHigh: 5433, exclude: false }],
    // Only hex letters, and a port: still a name, as no IPv6 address reads that way.
    ['bad.cafe:80', { name: 'bad.cafe', portLow: 80, portHigh: 80, exclude: false }],
    ['host_1', { name: 'host_1', portLow: 0, portHigh: 0, exclude: false }],
  ])('%j is a name', (text, expected) => {
    expect(parseSubnetOrName(text)).toEqual(expected);
  });

  it('addresses stay addresses, and their typos stay errors', () => {
    expect(parseSubnetOrName('10.1.0.0/16:80')).toEqual(rule(4, '10.1.0.0', 16, 80, 80, false));
    expect(parseSubnetOrName('fd00::5')).toEqual(rule(6, 'fd00::5', 128, 0, 0, false));
    expect(parseSubnetOrName('[fd00::]/64:443')).toEqual(rule(6, 'fd00::', 64, 443, 443, false));
    expect(parseSubnetOrName('dead::beef', true)).toEqual(rule(6, 'dead::beef', 128, 0, 0, true));
    expect(() => parseSubnetOrName('10.0.0.256')).toThrow(/octet out of range/);
    expect(() => parseSubnetOrName('gg::/8')).toThrow(UsageError);
  });

  it.each(['exa mple.com', 'example.com:0', 'example.com:80-70', 'example.com/24', '-bad.example', 'a..b', `${'a'.repeat(64)}.com`])(
    'refuses %j with a UsageError naming it',
    (text) => {
      expect(() => parseSubnetOrName(text, false, '-x/--exclude')).toThrow(UsageError);
      expect(() => parseSubnetOrName(text, false, '-x/--exclude')).toThrow(/^-x\/--exclude "/);
    },
  );

  it('resolveOptions keeps names apart from the subnets; a name alone is enough to start', () => {
    const options = resolveOptions({ subnets: ['intranet.corp:443', '10.0.0.0/8'], exclude: ['printer.corp'] }, () => ['fw']);
    expect(options.subnets).toEqual([rule(4, '10.0.0.0', 8, 0, 0, false)]);
    expect(options.names).toEqual([
      { name: 'intranet.corp', portLow: 443, portHigh: 443, exclude: false },
      { name: 'printer.corp', portLow: 0, portHigh: 0, exclude: true },
    ]);
    expect(resolveOptions({ subnets: ['only.name'] }, () => ['fw']).names).toHaveLength(1);
    // An excluded name alone tunnels nothing.
    expect(() => resolveOptions({ subnets: [], exclude: ['only.name'] }, () => ['fw'])).toThrow(/no subnets given/);
  });

  it(`at most ${MAX_NAMED_SUBNETS} names`, () => {
    const names = Array.from({ length: MAX_NAMED_SUBNETS + 1 }, (_, i) => `host${i}.lan`);
    expect(() => resolveOptions({ subnets: names }, () => ['fw'])).toThrow(/at most 128 host names/);
  });

  it('-s files take names too', () => {
    const dir = mkdtempSync(join(tmpdir(), 'rxs-names-'));
    try {
      const path = join(dir, 'subnets');
      writeFileSync(path, 'intranet.corp:443  # the wiki\n10.1.0.0/16\n');
      expect(readSubnetFile(path, false)).toEqual([
        { name: 'intranet.corp', portLow: 443, portHigh: 443, exclude: false },
        rule(4, '10.1.0.0', 16, 0, 0, false),
      ]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('--user, --group, --disable-ipv6', () => {
  it('lookupId: a number as is, a name through getent, a UsageError naming the option otherwise', () => {
    const db: Record<string, string> = { 'passwd alice': 'alice:x:1001:1001::/home/alice:/bin/sh', 'group staff': 'staff:x:50:' };
    const getent = (database: string, key: string) => db[`${database} ${key}`] ?? null;
    expect(lookupId('passwd', '1001', '--user', getent)).toBe(1001);
    expect(lookupId('passwd', 0, '--user', getent)).toBe(0);
    expect(lookupId('passwd', 'alice', '--user', getent)).toBe(1001);
    expect(lookupId('group', 'staff', '--group', getent)).toBe(50);
    expect(() => lookupId('passwd', 'bob', '--user', getent)).toThrow(/^--user "bob": no such user$/);
    expect(() => lookupId('group', 'a b', '--group', getent)).toThrow(/^--group "a b": not a group name or number$/);
    expect(() => lookupId('passwd', '99999999999', '--user', getent)).toThrow(UsageError);
  });

  it('resolveOptions looks names up on this machine (root is 0 everywhere)', () => {
    const options = resolveOptions({ subnets: ['10.0.0.0/8'], user: 'root', group: 'root' }, () => ['fw']);
    expect([options.user, options.group]).toEqual([0, 0]);
  });

  it('--disable-ipv6: an IPv6 subnet to tunnel is an error; IPv6 excludes are left out', () => {
    expect(() => resolveOptions({ subnets: ['fd00::/8'], disableIpv6: true }, () => ['fw'])).toThrow(/^--disable-ipv6: an IPv6 subnet to tunnel was given \(fd00::\/8\)$/);
    const options = resolveOptions({ subnets: ['10.0.0.0/8'], exclude: ['fd00::/8'], disableIpv6: true }, () => ['fw']);
    expect(options.subnets).toEqual([rule(4, '10.0.0.0', 8, 0, 0, false)]);
    expect(options.disableIpv6).toBe(true);
  });
});

describe('--method and --tmark', () => {
  it('tproxy takes a mark, 0x-hex or decimal, default 0x01; --tmark without tproxy is an error', () => {
    expect(resolveOptions({ subnets: ['10/8'], method: 'tproxy' }, () => ['fw']).tmark).toBe(1);
    expect(resolveOptions({ subnets: ['10/8'], method: 'tproxy', tmark: '0x20' }, () => ['fw']).tmark).toBe(0x20);
    expect(resolveOptions({ subnets: ['10/8'], method: 'tproxy', tmark: '4294967295' }, () => ['fw']).tmark).toBe(0xffff_ffff);
    for (const bad of ['0', '0x', '0x100000000', 'one', '-1']) {
      expect(() => resolveOptions({ subnets: ['10/8'], method: 'tproxy', tmark: bad }, () => ['fw'])).toThrow(/^--tmark "/);
    }
    expect(() => resolveOptions({ subnets: ['10/8'], tmark: '0x2' }, () => ['fw'])).toThrow(/^--tmark needs --method tproxy$/);
    expect(() => resolveOptions({ subnets: ['10/8'], method: 'pf' as never }, () => ['fw'])).toThrow(/unknown --method "pf"/);
  });
});

describe('readSubnetFile', () => {
  const dir = mkdtempSync(join(tmpdir(), 'rxs-options-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('reads one subnet a line as excludes, skipping blanks and comments', () => {
    const path = join(dir, 'excludes');
    writeFileSync(path, '# local nets\n10.0.0.0/8\n\n  192.168.1.7/24   # office\nfd00::/8\n');
    expect(readSubnetFile(path)).toEqual([
      rule(4, '10.0.0.0', 8, 0, 0, true),
      rule(4, '192.168.1.0', 24, 0, 0, true),
      rule(6, 'fd00::', 8, 0, 0, true),
    ]);
  });

  it('a missing file or a bad line is a UsageError', () => {
    expect(() => readSubnetFile(join(dir, 'nope'))).toThrow(UsageError);
    // The option and the file are named, the reason in words (no errno code).
    expect(() => readSubnetFile(join(dir, 'nope'))).toThrow(/^-X\/--exclude-from .*nope: cannot read it: no such file$/);
    const path = join(dir, 'bad');
    writeFileSync(path, '10.0.0.0/8\nnot a-subnet!\n');
    expect(() => readSubnetFile(path)).toThrow(/^-X\/--exclude-from .*bad, line 2: invalid subnet "not a-subnet!"/);
  });
});

describe('parseRemote', () => {
  it.each([
    ['example.com', { host: 'example.com' }],
    ['testuser@example.com', { user: 'testuser', host: 'example.com' }],
    ['testuser@example.com:2222', { user: 'testuser', host: 'example.com', port: 2222 }],
    ['example.com:2244', { host: 'example.com', port: 2244 }],
    ['10.0.0.1', { host: '10.0.0.1' }],
    ['root@10.0.0.1:22', { user: 'root', host: '10.0.0.1', port: 22 }],
    ['fe80::1', { host: 'fe80::1' }],
    ['::1', { host: '::1' }],
    ['[::1]', { host: '::1' }],
    ['[2001:db8::5]:2222', { host: '2001:db8::5', port: 2222 }],
    ['me@[2001:db8::5]:22', { user: 'me', host: '2001:db8::5', port: 22 }],
    ['first.last@host-1.example.org', { user: 'first.last', host: 'host-1.example.org' }],
  ])('%s', (text, expected) => {
    expect(parseRemote(text)).toEqual(expected);
  });

  it.each([
    '',
    'host:',
    'host:abc',
    'host:0',
    'host:70000',
    '-oProxyCommand=evil',
    '-host',
    'user@-host',
    '@host',
    'user@',
    'a@b@host',
    'us er@host',
    'host name',
    'host;rm',
    '[::1]:x',
  ])('refuses %j with a UsageError', (text) => {
    expect(() => parseRemote(text)).toThrow(UsageError);
  });
});

describe('parseListen', () => {
  it.each([
    ['0', { host: '127.0.0.1', port: 0 }],
    ['12300', { host: '127.0.0.1', port: 12300 }],
    ['0.0.0.0:0', { host: '0.0.0.0', port: 0 }],
    ['192.168.1.1:1234', { host: '192.168.1.1', port: 1234 }],
    ['[::1]:1234', { host: '::1', port: 1234 }],
    ['[::]:0', { host: '::', port: 0 }],
    ['[::1]', { host: '::1', port: 0 }],
    ['localhost:1234', { host: '127.0.0.1', port: 1234 }],
  ])('%s', (text, expected) => {
    expect(parseListen(text)).toEqual(expected);
  });

  it.each(['', 'x', '70000', '1.2.3:80', '999.0.0.1:80', '127.0.0.1:', 'example.com:1234', '::1:80', '[nope]:80', '1.2.3.4:65536'])(
    'refuses %j with a UsageError',
    (text) => {
      expect(() => parseListen(text)).toThrow(UsageError);
    },
  );
});

describe('splitCommand', () => {
  it.each<[string, string[]]>([
    ['ssh', ['ssh']],
    ['  ssh   -v  ', ['ssh', '-v']],
    ['ssh -v -p 2222', ['ssh', '-v', '-p', '2222']],
    ['ssh -F "my cfg"', ['ssh', '-F', 'my cfg']],
    ["ssh -o 'ProxyCommand nc %h %p'", ['ssh', '-o', 'ProxyCommand nc %h %p']],
    ['ssh -i my\\ key', ['ssh', '-i', 'my key']],
    ['"a\\"b"', ['a"b']],
    ["'it'\\''s'", ["it's"]],
    ['x"y z"w', ['xy zw']],
    ['ssh ""', ['ssh', '']],
    ["'a\\b'", ['a\\b']], // no escapes inside single quotes
    ['"a\\\\b"', ['a\\b']],
    ['"C:\\keys\\id"', ['C:\\keys\\id']], // inside double quotes a backslash only escapes " \\ $ `
    ['/usr/bin/ssh\t-v', ['/usr/bin/ssh', '-v']],
  ])('%j', (text, expected) => {
    expect(splitCommand(text)).toEqual(expected);
  });

  it('an empty command is a UsageError', () => {
    expect(() => splitCommand('')).toThrow(UsageError);
    expect(() => splitCommand('   ')).toThrow(UsageError);
  });

  it.each(['ssh "abc', "ssh 'abc", 'ssh abc\\'])('unbalanced quoting (%j) is a UsageError, not silently dropped', (text) => {
    expect(() => splitCommand(text)).toThrow(UsageError);
  });
});

describe('--keepalive', () => {
  it('takes whole seconds from 0 (off) to a day, default 15', async () => {
    const { parseKeepalive, resolveOptions } = await import('../../src/shared/options.js');
    expect(parseKeepalive('0')).toBe(0);
    expect(parseKeepalive(' 30 ')).toBe(30);
    expect(parseKeepalive(86_400)).toBe(86_400);
    for (const bad of ['-1', '1.5', 'x', '', '86401', '1e3']) expect(() => parseKeepalive(bad), bad).toThrow(/^--keepalive "/);
    expect(resolveOptions({ subnets: ['10/8'] }, () => ['fw']).keepalive).toBe(15);
    expect(resolveOptions({ subnets: ['10/8'], keepalive: '5' }, () => ['fw']).keepalive).toBe(5);
  });
});

describe('--auto-nets-wide', () => {
  it('is off by default, on with -N; without -N it is a usage error', () => {
    expect(resolveOptions({ subnets: [], autoNets: true }, () => ['fw']).autoNetsWide).toBe(false);
    expect(resolveOptions({ subnets: ['10/8'] }, () => ['fw']).autoNetsWide).toBe(false);
    expect(resolveOptions({ subnets: [], autoNets: true, autoNetsWide: true }, () => ['fw'])).toMatchObject({ autoNets: true, autoNetsWide: true });
    expect(() => resolveOptions({ subnets: ['10/8'], autoNetsWide: true }, () => ['fw'])).toThrow(UsageError);
    expect(() => resolveOptions({ subnets: ['10/8'], autoNetsWide: true }, () => ['fw'])).toThrow(/--auto-nets-wide needs -N/);
  });

  it('resolved options pass through resolveOptions unchanged', () => {
    const once = resolveOptions({ subnets: [], autoNets: true, autoNetsWide: true }, () => ['fw']);
    expect(resolveOptions(once, () => ['other'])).toEqual(once);
  });
});
