/**
 * The firewall side of --dns and -H: setup validation of the new fields, the DNS rules, HOST
 * lines (validation and the helper's handling, against a temp hosts file and the fake
 * iptables), and the systemd-resolved cache flush.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { runFirewallHelper } from '../../src/firewall/helper.js';
import { TunneledSubnets } from '../../src/firewall/host-address.js';
import { hostsBlockName, withBlock } from '../../src/firewall/hosts-file.js';
import type { RunCommand } from '../../src/firewall/iptables.js';
import { flushResolvedCache } from '../../src/firewall/resolved.js';
import { natRules } from '../../src/firewall/rules.js';
import type { FirewallSetup } from '../../src/firewall/types.js';
import { HostLineError, parseHostLine, validateSetup } from '../../src/firewall/validate.js';
import { formatIp } from '../../src/shared/ip.js';
import { FakeIptables } from './support/fake-iptables.js';
import { outputLines } from './support/output-lines.js';

const BASE: FirewallSetup = {
  version: 1,
  method: 'nat',
  port: 12300,
  routerMode: false,
  rules: [{ family: 4, address: '10.98.0.0', prefix: 24, portLow: 0, portHigh: 0, exclude: false }],
};
const DNS: FirewallSetup = { ...BASE, dnsPort: 12301, dnsServers: ['10.98.0.3', 'fd00::53'] };

describe('setup: dnsPort, dnsServers, hosts', () => {
  it('accepts them', () => {
    expect(validateSetup({ ...DNS, hosts: true })).toEqual({ ...DNS, hosts: true });
    expect(validateSetup({ ...BASE, hosts: false })).toEqual({ ...BASE, hosts: false });
  });

  it.each([
    [{ ...BASE, dnsPort: 12301 }, /dnsPort and dnsServers go together/],
    [{ ...BASE, dnsServers: ['10.0.0.1'] }, /dnsPort and dnsServers go together/],
    [{ ...DNS, dnsPort: 12300 }, /dnsPort must differ from port/],
    [{ ...DNS, dnsPort: 0 }, /dnsPort must be an integer 1\.\.65535/],
    [{ ...DNS, dnsServers: [] }, /dnsServers must be an array of 1\.\.32/],
    [{ ...DNS, dnsServers: 'x' }, /dnsServers must be an array/],
    [{ ...DNS, dnsServers: Array.from({ length: 33 }, (_, i) => `10.0.0.${i + 1}`) }, /dnsServers must be an array of 1\.\.32/],
    [{ ...DNS, dnsServers: ['10.0.0.01'] }, /dnsServers\[0\] must be a canonical IP address/],
    [{ ...DNS, dnsServers: ['FD00::53'] }, /dnsServers\[0\] must be a canonical IP address/],
    [{ ...DNS, dnsServers: ['10.0.0.0/8'] }, /dnsServers\[0\] must be a canonical/],
    [{ ...DNS, dnsServers: ['10.0.0.1', '10.0.0.1'] }, /dnsServers has duplicates/],
    [{ ...DNS, dnsServers: [53] }, /dnsServers\[0\] must be a string/],
    [{ ...BASE, hosts: 'yes' }, /hosts must be a boolean/],
  ])('refuses %j', (value, message) => {
    expect(() => validateSetup(value)).toThrow(message);
  });
});

describe('DNS rules', () => {
  it('redirects UDP and TCP port 53 of each nameserver before everything else, per family, and jumps for udp/53', () => {
    const { v4, v6 } = natRules({ ...DNS, bypassGid: 4242 });
    expect(v4).toBe(
      [
        '*nat',
        ':rxshuttle-12300 - [0:0]',
        '-A rxshuttle-12300 -d 10.98.0.3/32 -p udp --dport 53 -j REDIRECT --to-ports 12301',
        '-A rxshuttle-12300 -d 10.98.0.3/32 -p tcp --dport 53 -j REDIRECT --to-ports 12301',
        '-A rxshuttle-12300 -m addrtype --dst-type LOCAL -j RETURN',
        '-A rxshuttle-12300 -d 10.98.0.0/24 -p tcp -j REDIRECT --to-ports 12300',
        '-I OUTPUT 1 -p tcp -m owner ! --gid-owner 4242 -j rxshuttle-12300',
        '-I OUTPUT 1 -p udp --dport 53 -m owner ! --gid-owner 4242 -j rxshuttle-12300',
        'COMMIT',
        '',
      ].join('\n'),
    );
    // IPv6 has no subnet to tunnel, but a nameserver to capture.
    expect(v6).toBe(
      [
        '*nat',
        ':rxshuttle-12300 - [0:0]',
        '-A rxshuttle-12300 -d fd00::53/128 -p udp --dport 53 -j REDIRECT --to-ports 12301',
        '-A rxshuttle-12300 -d fd00::53/128 -p tcp --dport 53 -j REDIRECT --to-ports 12301',
        '-A rxshuttle-12300 -m addrtype --dst-type LOCAL -j RETURN',
        '-I OUTPUT 1 -p tcp -m owner ! --gid-owner 4242 -j rxshuttle-12300',
        '-I OUTPUT 1 -p udp --dport 53 -m owner ! --gid-owner 4242 -j rxshuttle-12300',
        'COMMIT',
        '',
      ].join('\n'),
    );
  });

  it('router mode captures forwarded DNS too; DNS alone (no subnet) still makes a chain', () => {
    const { v4 } = natRules({ ...BASE, rules: [], routerMode: true, dnsPort: 12301, dnsServers: ['10.98.0.3'] });
    expect(v4?.split('\n')).toEqual(
      expect.arrayContaining(['-I PREROUTING 1 -p tcp -j rxshuttle-12300', '-I PREROUTING 1 -p udp --dport 53 -j rxshuttle-12300']),
    );
    expect(natRules({ ...BASE, rules: [] }).v4).toBeNull();
  });
});

describe('DNS rules from any valid setup', () => {
  const SAFE = [
    /^\*nat$/,
    /^:rxshuttle-\d{1,5} - \[0:0\]$/,
    /^-A rxshuttle-\d{1,5} -d [0-9a-f.:]{2,39}\/(32|128) -p (udp|tcp) --dport 53 -j REDIRECT --to-ports \d{1,5}$/,
    /^-A rxshuttle-\d{1,5} -m addrtype --dst-type LOCAL -j RETURN$/,
    /^-I (OUTPUT|PREROUTING) 1 -p (tcp|udp --dport 53)( -m owner ! --gid-owner \d{1,10})? -j rxshuttle-\d{1,5}$/,
    /^COMMIT$/,
    /^$/,
  ];
  it('property: only these lines', () => {
    const v4 = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)).map((b) => b.join('.'));
    const v6 = fc.array(fc.nat(0xffff), { minLength: 8, maxLength: 8 }).map((g) => formatIp(Uint8Array.from(g.flatMap((x) => [x >> 8, x & 0xff]))));
    fc.assert(
      fc.property(fc.uniqueArray(fc.oneof(v4, v6), { minLength: 1, maxLength: 32 }), fc.integer({ min: 1, max: 65534 }), fc.boolean(), (servers, port, routerMode) => {
        const setup = validateSetup({ ...BASE, rules: [], port, routerMode, dnsPort: port + 1, dnsServers: servers });
        for (const script of Object.values(natRules(setup))) {
          for (const line of (script ?? '').split('\n')) expect(SAFE.some((re) => re.test(line)), line).toBe(true);
        }
      }),
    );
  });
});

describe('HOST lines', () => {
  const tunneled = new TunneledSubnets([
    { family: 4, address: '0.0.0.0', prefix: 0, portLow: 0, portHigh: 0, exclude: false },
    { family: 6, address: '::', prefix: 0, portLow: 0, portHigh: 0, exclude: false },
  ]);
  it('accepts a canonical address and a plain host name', () => {
    expect(parseHostLine('HOST 10.98.0.3 target', tunneled)).toEqual({ address: '10.98.0.3', name: 'target' });
    expect(parseHostLine('HOST fd00:98::3 db_1.corp-x.lab', tunneled)).toEqual({ address: 'fd00:98::3', name: 'db_1.corp-x.lab' });
  });

  it.each([
    'HOST 10.98.0.3',
    'HOST 10.98.0.3 a b',
    'HOST  10.98.0.3 a',
    'HOST 10.98.0.3 a\r',
    'HOST 010.98.0.3 a',
    'HOST FD00::3 a',
    'HOST 10.98.0.0/24 a',
    'HOST 127.0.0.1 a',
    'HOST 0.0.0.0 a',
    'HOST ::1 a',
    'HOST :: a',
    'HOST fe80::1 a',
    'HOST 169.254.169.254 metadata',
    'HOST 224.0.0.1 a',
    'HOST 10.98.0.3 localhost',
    'HOST 10.98.0.3 x.localhost',
    'HOST 10.98.0.3 ip6-allnodes',
    'HOST 10.98.0.3 10.0.0.1',
    'HOST 10.98.0.3 -rf',
    'HOST 10.98.0.3 a..b',
    'HOST 10.98.0.3 a/b',
    'HOST 10.98.0.3 #comment',
    `HOST 10.98.0.3 ${'a'.repeat(64)}`,
    'host 10.98.0.3 a',
  ])('refuses %j', (line) => {
    expect(() => parseHostLine(line, tunneled)).toThrow(HostLineError);
  });
});

const dir = mkdtempSync(join(tmpdir(), 'rxs-fwhosts-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const ORIGINAL = '127.0.0.1\tlocalhost\n10.99.0.1\tcli\n';

function startHelper(hostsPath: string, resolved = false) {
  const fake = new FakeIptables();
  const flushed: string[] = [];
  const run: RunCommand = (file, args, input) => {
    if (file === 'resolvectl') {
      flushed.push(args.join(' '));
      return Promise.resolve('');
    }
    return fake.run(file, args, input);
  };
  const input = new PassThrough();
  const output = new PassThrough();
  const { nextLine } = outputLines(output);
  const warnings: string[] = [];
  const done = runFirewallHelper(input, output, { run, handleSignals: false, warn: (m) => warnings.push(m), hostsPath, resolvedRunning: () => resolved });
  return { fake, input, done, nextLine, flushed, warnings };
}

describe('the helper with -H and --dns', () => {
  it('writes HOST lines into its block (one write per burst), answers each, and removes the block on EOF', async () => {
    const path = join(dir, 'hosts-a');
    writeFileSync(path, ORIGINAL);
    const h = startHelper(path);
    expect(await h.nextLine()).toBe('HELLO rxshuttle-fw 1');
    h.input.write(`${JSON.stringify({ ...BASE, hosts: true })}\n`);
    expect(await h.nextLine()).toBe('READY');
    h.input.write('HOST 10.98.0.3 target\nHOST 10.98.0.4 echo4\nHOST 127.0.0.1 evil\nHOST 10.98.0.5 cli\n');
    const replies = [await h.nextLine(), await h.nextLine(), await h.nextLine(), await h.nextLine()];
    expect(replies.filter((r) => r === 'OK')).toHaveLength(3);
    expect(replies.filter((r) => r.startsWith('ERROR '))).toEqual([
      'ERROR invalid HOST line: the address is loopback, unspecified, link-local or multicast',
    ]);
    // "cli" is the machine's own entry: accepted, but never written.
    expect(readFileSync(path, 'utf8')).toBe(
      withBlock(ORIGINAL, hostsBlockName(12300), [
        { address: '10.98.0.3', name: 'target' },
        { address: '10.98.0.4', name: 'echo4' },
      ]),
    );
    h.input.end();
    expect(await h.done).toBe(0);
    expect(readFileSync(path, 'utf8')).toBe(ORIGINAL);
    expect(h.fake.rxshuttleLines()).toEqual([]);
  });

  it('without hosts in the setup, HOST lines are refused and the file is never touched', async () => {
    const path = join(dir, 'hosts-b');
    writeFileSync(path, ORIGINAL);
    const h = startHelper(path);
    await h.nextLine();
    h.input.write(`${JSON.stringify(BASE)}\n`);
    expect(await h.nextLine()).toBe('READY');
    h.input.write('HOST 10.98.0.3 target\n');
    expect(await h.nextLine()).toMatch(/^ERROR unknown command/);
    h.input.end();
    expect(await h.done).toBe(0);
    expect(readFileSync(path, 'utf8')).toBe(ORIGINAL);
  });

  it('clears leftovers of a crashed helper with the same port when it starts', async () => {
    const path = join(dir, 'hosts-c');
    const leftover = withBlock(ORIGINAL, hostsBlockName(12300), [{ address: '10.1.1.1', name: 'stale' }]);
    writeFileSync(path, leftover);
    const h = startHelper(path);
    await h.nextLine();
    h.input.write(`${JSON.stringify({ ...BASE, hosts: true })}\n`);
    expect(await h.nextLine()).toBe('READY');
    expect(readFileSync(path, 'utf8')).toBe(ORIGINAL);
    h.input.end();
    await h.done;
  });

  it('installs the DNS rules and flushes the systemd-resolved cache at start and at the end', async () => {
    const h = startHelper(join(dir, 'unused'), true);
    await h.nextLine();
    h.input.write(`${JSON.stringify({ ...DNS, dnsServers: ['10.98.0.3'] })}\n`);
    expect(await h.nextLine()).toBe('READY');
    expect(h.fake.rxshuttleLines()).toContain('-A rxshuttle-12300 -d 10.98.0.3/32 -p udp --dport 53 -j REDIRECT --to-ports 12301');
    expect(h.flushed).toEqual(['flush-caches']);
    h.input.end();
    expect(await h.done).toBe(0);
    expect(h.flushed).toEqual(['flush-caches', 'flush-caches']);
    expect(h.fake.rxshuttleLines()).toEqual([]);
  });
});

describe('flushResolvedCache', () => {
  it('does nothing where systemd-resolved does not run; falls back to systemd-resolve; never throws', async () => {
    const calls: string[] = [];
    const failing: RunCommand = async (file, args) => {
      calls.push(`${file} ${args.join(' ')}`);
      throw new Error('nope');
    };
    await flushResolvedCache(failing, () => false);
    expect(calls).toEqual([]);
    await flushResolvedCache(failing, () => true);
    expect(calls).toEqual(['resolvectl flush-caches', 'systemd-resolve --flush-caches']);
  });
});
