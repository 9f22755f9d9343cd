/**
 * Issue 17, finding 5: a malicious server's -H names must not affect the whole machine. A name
 * may only get an address the tunnel carries (inside an included subnet, not in a more specific
 * exclude), judged after normalising the IPv6 forms that carry an IPv4 address, and never a
 * locally answered name. The pure check (host-address.ts), HOST line validation, and the root
 * helper over pipes, which must not trust the client either.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { runFirewallHelper } from '../../src/firewall/helper.js';
import { TunneledSubnets } from '../../src/firewall/host-address.js';
import { byPrecedence } from '../../src/firewall/rules.js';
import type { FirewallSetup, SubnetRule } from '../../src/firewall/types.js';
import { HostLineError, parseHostLine } from '../../src/firewall/validate.js';
import { inPrefix, parseIp } from '../../src/shared/ip.js';
import { FakeIptables } from './support/fake-iptables.js';
import { outputLines } from './support/output-lines.js';

const rule = (cidr: string, exclude = false, ports: [number, number] = [0, 0]): SubnetRule => {
  const [address = '', prefix = ''] = cidr.split('/');
  return { family: address.includes(':') ? 6 : 4, address, prefix: Number(prefix), portLow: ports[0], portHigh: ports[1], exclude };
};
const LAB = [rule('10.98.0.0/24')];
const EVERYTHING = [rule('0.0.0.0/0'), rule('::/0')];

describe('TunneledSubnets.refusal', () => {
  it.each([
    // The finding's inputs: loopback and link-local in IPv6 clothing.
    ['::ffff:7f00:1', '0/0 and ::/0', 'local'],
    ['::ffff:a9fe:a9fe', '0/0 and ::/0', 'local'],
    ['::7f00:1', '0/0 and ::/0', 'local'],
    ['64:ff9b::7f00:1', '0/0 and ::/0', 'local'],
    ['::ffff:0:7f00:1', '0/0 and ::/0', 'local'],
    ['2002:7f00:1::', '0/0 and ::/0', 'local'],
    ['2001:0:4136:e378:8000:63bf:80ff:fffe', '0/0 and ::/0', 'local'], // Teredo client 127.0.0.1
    ['64:ff9b::e000:1', '0/0 and ::/0', 'local'], // 224.0.0.1
    ['127.0.0.1', '0/0 and ::/0', 'local'],
    ['169.254.169.254', '0/0 and ::/0', 'local'],
    ['0.0.0.0', '0/0 and ::/0', 'local'],
    ['255.255.255.255', '0/0 and ::/0', 'local'],
    ['::1', '0/0 and ::/0', 'local'],
    ['::', '0/0 and ::/0', 'local'],
    ['fe80::1', '0/0 and ::/0', 'local'],
    ['ff02::1', '0/0 and ::/0', 'local'],
    // Only the tunnel's subnets.
    ['6.6.6.6', '10.98.0.0/24', 'outside'],
    ['10.98.1.3', '10.98.0.0/24', 'outside'],
    ['::ffff:606:606', '10.98.0.0/24', 'outside'],
    ['fd00:98::3', '10.98.0.0/24', 'outside'],
    ['10.98.0.3', '10.98.0.0/24', null],
    ['::ffff:a62:3', '10.98.0.0/24', null],
    // NAT64 and 6to4 travel as IPv6: an IPv4 rule does not carry them.
    ['64:ff9b::a62:3', '10.98.0.0/24', 'outside'],
    ['2002:a62:3::1', '10.98.0.0/24', 'outside'],
    ['64:ff9b::a62:3', '64:ff9b::/96', null],
    ['6.6.6.6', '0/0 and ::/0', null],
    ['fd00:98::3', 'fd00:98::/64', null],
    // Tunneled as IPv6; the IPv4 address it carries is not local.
    ['64:ff9b::a62:3', '::/0', null],
    ['not-an-address', '0/0 and ::/0', 'invalid'],
  ] as const)('%s with %s tunneled: %s', (address, tunneled, expected) => {
    const rules = tunneled === '0/0 and ::/0' ? EVERYTHING : [rule(tunneled)];
    expect(new TunneledSubnets(rules).refusal(address)).toBe(expected);
  });

  it('longest prefix wins, an exclude wins a tie, as in the firewall rules', () => {
    const t = new TunneledSubnets([rule('10.0.0.0/8'), rule('10.1.0.0/16', true), rule('10.1.2.0/24'), rule('10.1.2.3/32', true)]);
    expect(['10.9.9.9', '10.1.9.9', '10.1.2.9', '10.1.2.3', '11.0.0.1'].map((a) => t.refusal(a))).toEqual([null, 'outside', null, 'outside', 'outside']);
    const tie = new TunneledSubnets([rule('10.98.0.0/24'), rule('10.98.0.0/24', true)]);
    expect(tie.refusal('10.98.0.3')).toBe('outside');
    expect(new TunneledSubnets([rule('10.98.0.0/24', true)]).refusal('10.98.0.3')).toBe('outside');
    expect(new TunneledSubnets([]).refusal('10.98.0.3')).toBe('outside');
  });

  it('an address is tunneled when at least one TCP port of it is', () => {
    const tunneled = (rules: SubnetRule[]) => new TunneledSubnets(rules).refusal('10.1.2.3') === null;
    expect(tunneled([rule('10.0.0.0/8', false, [22, 22])])).toBe(true);
    expect(tunneled([rule('10.0.0.0/8'), rule('10.1.0.0/16', true, [1, 1000])])).toBe(true);
    expect(tunneled([rule('10.0.0.0/8'), rule('10.1.0.0/16', true, [1, 65535])])).toBe(false);
    expect(tunneled([rule('10.0.0.0/8', false, [22, 22]), rule('10.1.0.0/16', true, [22, 22])])).toBe(false);
    expect(tunneled([rule('10.0.0.0/8'), rule('10.1.0.0/16', true, [1, 1000]), rule('10.1.0.0/17', true, [1001, 65535])])).toBe(false);
    expect(tunneled([rule('10.0.0.0/8'), rule('10.1.0.0/16', true, [1, 1000]), rule('10.1.0.0/17', true, [1002, 65535])])).toBe(true);
  });

  it('property: agrees with the chain as iptables walks it, port by port', () => {
    const nets = ['10.0.0.0/8', '10.1.0.0/16', '10.1.2.0/24', '10.1.2.3/32', '10.1.2.0/31', '0.0.0.0/0', '10.2.0.0/16', 'fd00::/8', '::/0'];
    const ports = fc.constantFrom<[number, number]>([0, 0], [22, 22], [1, 1000], [1000, 2000], [1001, 65535], [1, 65535]);
    const rulesArb = fc.array(fc.tuple(fc.constantFrom(...nets), fc.boolean(), ports).map(([n, x, p]) => rule(n, x, p)), { maxLength: 6 });
    const addressArb = fc.constantFrom('10.1.2.3', '10.1.2.2', '10.1.9.9', '10.2.0.1', '10.9.9.9', '11.0.0.1', 'fd00::1');
    fc.assert(
      fc.property(rulesArb, addressArb, (rules, address) => {
        const ip = parseIp(address)!;
        // Every port where some rule's range starts or ends, and their neighbours: the decision is constant in between.
        const candidates = new Set([1, 65535]);
        for (const r of rules) for (const p of [r.portLow, r.portHigh]) for (const q of [p - 1, p, p + 1]) if (q >= 1 && q <= 65535) candidates.add(q);
        const firstMatch = (port: number) =>
          byPrecedence(rules).find(
            (r) =>
              r.family === ip.family &&
              inPrefix(ip.bytes, parseIp(r.address)!.bytes, r.prefix) &&
              ((r.portLow === 0 && r.portHigh === 0) || (r.portLow <= port && port <= r.portHigh)),
          );
        const expected = [...candidates].some((port) => firstMatch(port)?.exclude === false);
        expect(new TunneledSubnets(rules).tunnels(ip)).toBe(expected);
      }),
      { seed: 17, numRuns: 2000 },
    );
  });
});

describe('HOST lines against the setup (parseHostLine)', () => {
  const lab = new TunneledSubnets(LAB);

  it('refuses an address outside the tunneled subnets, or local after normalising', () => {
    expect(() => parseHostLine('HOST 6.6.6.6 deb.debian.org', lab)).toThrow('invalid HOST line: the address is outside the tunneled subnets');
    expect(() => parseHostLine('HOST ::ffff:7f00:1 a', new TunneledSubnets(EVERYTHING))).toThrow(
      'invalid HOST line: the address is loopback, unspecified, link-local or multicast',
    );
    expect(() => parseHostLine('HOST 64:ff9b::a62:3 nat64.lab', lab)).toThrow('invalid HOST line: the address is outside the tunneled subnets');
    expect(parseHostLine('HOST ::ffff:a62:3 mapped.lab', lab)).toEqual({ address: '::ffff:a62:3', name: 'mapped.lab' });
  });

  it.each(['_gateway', '_outbound', '_GATEWAY', '_localdnsstub', '_localdnsproxy', 'localhost', 'LOCALHOST', 'a.localhost', 'localhost.localdomain'])(
    'refuses the locally answered name %j',
    (name) => {
      expect(() => parseHostLine(`HOST 10.98.0.3 ${name}`, lab)).toThrow(HostLineError);
    },
  );

  it('keeps names that merely look alike', () => {
    for (const name of ['gateway', '_gateway.corp.lab', 'outbound', 'localhostx']) {
      expect(parseHostLine(`HOST 10.98.0.3 ${name}`, lab).name).toBe(name);
    }
  });
});

const dir = mkdtempSync(join(tmpdir(), 'rxs-host-address-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** The helper in-process on pipes, against the fake iptables and a hosts file of its own. */
function startHelper(hostsPath: string) {
  const fake = new FakeIptables();
  const input = new PassThrough();
  const output = new PassThrough();
  const { nextLine } = outputLines(output);
  const done = runFirewallHelper(input, output, { run: fake.run, handleSignals: false, warn: () => {}, notice: () => {}, hostsPath });
  return { fake, input, done, nextLine };
}

describe('the helper refuses HOST lines the setup does not tunnel (issue 17, finding 5)', () => {
  it('writes only names with addresses inside its included subnets, never a locally answered name or one the file has', async () => {
    const original = '127.0.0.1\tlocalhost\n10.98.0.5\tcli\n';
    const path = join(dir, 'hosts');
    writeFileSync(path, original);
    const setup: FirewallSetup = {
      version: 1,
      method: 'nat',
      port: 12300,
      routerMode: false,
      rules: [rule('10.98.0.0/24'), rule('10.98.0.128/25', true)],
      hosts: true,
    };
    const h = startHelper(path);
    expect(await h.nextLine()).toBe('HELLO rxshuttle-fw 1');
    h.input.write(`${JSON.stringify(setup)}\n`);
    expect(await h.nextLine()).toBe('READY');
    const lines = [
      'HOST 6.6.6.6 deb.debian.org',
      'HOST 6.6.6.6 github.com',
      'HOST 10.98.0.3 _gateway',
      'HOST 10.98.0.3 _outbound',
      'HOST ::ffff:7f00:1 evil1',
      'HOST ::ffff:a9fe:a9fe evil2',
      'HOST ::7f00:1 evil3',
      'HOST 64:ff9b::7f00:1 evil4',
      'HOST 10.98.0.200 excluded',
      'HOST fd00:98::3 v6',
      'HOST 10.98.0.3 target',
      'HOST ::ffff:a62:4 mapped',
      'HOST 10.98.0.9 cli',
    ];
    h.input.write(`${lines.join('\n')}\n`);
    const replies: string[] = [];
    for (const _ of lines) replies.push(await h.nextLine());
    const outside = 'ERROR invalid HOST line: the address is outside the tunneled subnets';
    const local = 'ERROR invalid HOST line: the address is loopback, unspecified, link-local or multicast';
    const name = 'ERROR invalid HOST line: not an acceptable host name';
    expect(replies.filter((r) => r !== 'OK')).toEqual([outside, outside, name, name, local, local, local, local, outside, outside]);
    expect(replies.filter((r) => r === 'OK')).toHaveLength(3);

    const written = readFileSync(path, 'utf8');
    expect(written).toContain('10.98.0.3\ttarget\n');
    expect(written).toContain('::ffff:a62:4\tmapped\n');
    expect(written.startsWith(original)).toBe(true);
    // "cli" is the machine's own entry: accepted, never written over.
    expect(written.match(/\bcli\b/g)).toHaveLength(1);
    for (const refused of ['deb.debian.org', 'github.com', '_gateway', '_outbound', 'evil', 'excluded', 'v6', '6.6.6.6']) {
      expect(written).not.toContain(refused);
    }
    h.input.end();
    expect(await h.done).toBe(0);
    expect(readFileSync(path, 'utf8')).toBe(original);
  });
});
