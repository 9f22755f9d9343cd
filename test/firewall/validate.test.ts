import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { LineSplitter } from '../../src/firewall/lines.js';
import { MAX_LINE_BYTES, setupLine } from '../../src/firewall/protocol.js';
import { natRules } from '../../src/firewall/rules.js';
import type { FirewallSetup, SubnetRule } from '../../src/firewall/types.js';
import {
  MAX_DNS_SERVERS,
  MAX_EXTRA_RULES,
  MAX_GID,
  MAX_RULES,
  MAX_RULES_LINE_BYTES,
  parseRulesLine,
  parseSetupLine,
  SetupValidationError,
  validateSetup,
} from '../../src/firewall/validate.js';
import { formatIp } from '../../src/shared/ip.js';

const RULE: SubnetRule = { family: 4, address: '10.0.0.0', prefix: 8, portLow: 0, portHigh: 0, exclude: false };
const SETUP: FirewallSetup = { version: 1, method: 'nat', port: 12300, routerMode: false, rules: [RULE] };

function withRule(patch: Record<string, unknown>): unknown {
  return { ...SETUP, rules: [{ ...RULE, ...patch }] };
}

function rejects(value: unknown, message: RegExp): void {
  expect(() => validateSetup(value)).toThrow(SetupValidationError);
  expect(() => validateSetup(value)).toThrow(message);
}

/** Every line natRules can produce, given validated input: nothing else may reach iptables. */
const SAFE_LINE = [
  /^\*nat$/,
  /^:rxshuttle-\d{1,5} - \[0:0\]$/,
  /^-A rxshuttle-\d{1,5} -m addrtype --dst-type LOCAL -j RETURN$/,
  /^-A rxshuttle-\d{1,5} -d [0-9a-f.:]{2,39}\/\d{1,3} -p tcp( --dport \d{1,5}(:\d{1,5})?)? -j (RETURN|REDIRECT --to-ports \d{1,5})$/,
  /^-I (OUTPUT|PREROUTING) 1 -p tcp( -m owner ! --gid-owner \d{1,10})? -j rxshuttle-\d{1,5}$/,
  /^COMMIT$/,
  /^$/,
];

function expectSafeRules(setup: FirewallSetup): void {
  const { v4, v6 } = natRules(setup);
  for (const script of [v4, v6]) {
    for (const line of (script ?? '').split('\n')) {
      expect(SAFE_LINE.some((re) => re.test(line)), line).toBe(true);
    }
  }
}

describe('validateSetup accepts', () => {
  it('a minimal setup, returning a fresh object with exactly the known keys', () => {
    const input = JSON.parse(JSON.stringify(SETUP)) as unknown;
    const out = validateSetup(input);
    expect(out).toEqual(SETUP);
    expect(out).not.toBe(input);
  });

  it('a tproxy setup: tmark required, udpPort optional', () => {
    const tproxy: FirewallSetup = { ...SETUP, method: 'tproxy', tmark: 0xffff_ffff, udpPort: 12302 };
    expect(validateSetup(JSON.parse(JSON.stringify(tproxy)))).toEqual(tproxy);
    expect(validateSetup({ ...SETUP, method: 'tproxy', tmark: 1 })).toEqual({ ...SETUP, method: 'tproxy', tmark: 1 });
    // TCP's and UDP's ports are apart: the same number is fine.
    expect(validateSetup({ ...SETUP, method: 'tproxy', tmark: 1, udpPort: SETUP.port }).udpPort).toBe(SETUP.port);
  });

  it('every field at its limits', () => {
    const setup: FirewallSetup = {
      version: 1,
      method: 'nat',
      port: 65535,
      routerMode: true,
      bypassGid: 2 ** 32 - 2,
      rules: [
        { family: 4, address: '0.0.0.0', prefix: 0, portLow: 1, portHigh: 65535, exclude: true },
        { family: 4, address: '255.255.255.255', prefix: 32, portLow: 80, portHigh: 80, exclude: false },
        { family: 6, address: '::', prefix: 0, portLow: 0, portHigh: 0, exclude: false },
        { family: 6, address: 'fd00:1:2:3:4:5:6:7', prefix: 128, portLow: 0, portHigh: 0, exclude: false },
      ],
    };
    expect(validateSetup(setup)).toEqual(setup);
    expect(validateSetup({ ...SETUP, port: 1, bypassGid: 1 })).toEqual({ ...SETUP, port: 1, bypassGid: 1 });
    expect(validateSetup({ ...SETUP, rules: [] })).toEqual({ ...SETUP, rules: [] });
  });

  it(`up to ${MAX_RULES} rules`, () => {
    expect(validateSetup({ ...SETUP, rules: new Array(MAX_RULES).fill(RULE) }).rules).toHaveLength(MAX_RULES);
  });

  it('a setup line', () => {
    expect(parseSetupLine(JSON.stringify(SETUP))).toEqual(SETUP);
  });

  it('the longest setup it accepts, as the client sends it, fits on one protocol line', () => {
    // Every field at its longest: 39-character IPv6 addresses (no zero group), /128, 5-digit ports.
    const v6 = (n: number) => `ffff:ffff:ffff:ffff:ffff:ffff:${(0xc000 + (n >> 12)).toString(16)}:${(0xc000 + (n & 0xfff)).toString(16)}`;
    const rules = Array.from({ length: MAX_RULES }, (_, i): SubnetRule => ({ family: 6, address: v6(i), prefix: 128, portLow: 10000, portHigh: 65535, exclude: false }));
    const dnsServers = Array.from({ length: MAX_DNS_SERVERS }, (_, i) => v6(i));
    const setup: FirewallSetup = { version: 1, method: 'nat', port: 65535, routerMode: false, rules, bypassGid: MAX_GID, dnsPort: 65534, dnsServers, hosts: false };
    expect(v6(MAX_RULES - 1)).toHaveLength(39);
    const line = Buffer.from(setupLine(setup));
    expect(line.length).toBeGreaterThan(2_500_000);
    // The helper's path: its line splitter, then the validator.
    const items = new LineSplitter(MAX_LINE_BYTES).push(line);
    expect(items).toHaveLength(1);
    expect(parseSetupLine(items[0] as string)).toEqual(setup);
  });
});

describe('parseRulesLine', () => {
  it(`the longest RULES line (${MAX_EXTRA_RULES} IPv6 rules at their longest) fits the helper's command limit`, () => {
    const v6 = (n: number) => `ffff:ffff:ffff:ffff:ffff:ffff:ffff:${(0xc000 + n).toString(16)}`;
    const rules = Array.from({ length: MAX_EXTRA_RULES }, (_, i): SubnetRule => ({ family: 6, address: v6(i), prefix: 128, portLow: 10000, portHigh: 65535, exclude: false }));
    const line = Buffer.from(`RULES ${JSON.stringify(rules)}\n`);
    const items = new LineSplitter(MAX_RULES_LINE_BYTES).push(line);
    expect(items).toHaveLength(1);
    expect(parseRulesLine(items[0] as string)).toEqual(rules);
  });

  it.each([
    ['RULES {}', /expected an array/],
    ['RULES [', /not valid JSON/],
    ['RULES [{"family":4}]', /invalid RULES line: rules\[0\] is missing/],
    [`RULES ${JSON.stringify([{ ...RULE, address: '10.0.0.1', prefix: 8 }])}`, /host bits/],
  ])('refuses %j', (line, why) => {
    expect(() => parseRulesLine(line)).toThrow(why);
  });
});

describe('validateSetup refuses', () => {
  it.each([
    ['null', null, /setup must be an object/],
    ['an array', [SETUP], /setup must be an object/],
    ['a string', 'x', /setup must be an object/],
    ['a class instance', new (class {})(), /setup must be a plain object/],
    ['an unknown key', { ...SETUP, extra: 1 }, /setup has an unknown key/],
    ['a missing key', { version: 1, method: 'nat', port: 1, routerMode: false }, /setup is missing "rules"/],
    ['version 2', { ...SETUP, version: 2 }, /version must be 1/],
    ['version "1"', { ...SETUP, version: '1' }, /version must be 1/],
    ['another method', { ...SETUP, method: 'pf' }, /method must be "nat", "nft" or "tproxy"/],
    ['tproxy without tmark', { ...SETUP, method: 'tproxy' }, /tmark is required by the tproxy method/],
    ['udpPort with nat', { ...SETUP, udpPort: 12302 }, /udpPort and tmark are for the tproxy method only/],
    ['tmark with nft', { ...SETUP, method: 'nft', tmark: 1 }, /udpPort and tmark are for the tproxy method only/],
    ['udpPort equal to dnsPort', { ...SETUP, method: 'tproxy', tmark: 1, udpPort: 12301, dnsPort: 12301, dnsServers: ['10.0.0.53'] }, /udpPort must differ from dnsPort/],
    ['tmark 0', { ...SETUP, method: 'tproxy', tmark: 0 }, /tmark must be an integer 1..4294967295/],
    ['tmark 2^32', { ...SETUP, method: 'tproxy', tmark: 2 ** 32 }, /tmark must be an integer/],
    ['tmark "0x1"', { ...SETUP, method: 'tproxy', tmark: '0x1' }, /tmark must be an integer/],
    ['udpPort 0', { ...SETUP, method: 'tproxy', tmark: 1, udpPort: 0 }, /udpPort must be an integer 1..65535/],
    ['port 0', { ...SETUP, port: 0 }, /port must be an integer 1..65535/],
    ['port 65536', { ...SETUP, port: 65536 }, /port must be an integer/],
    ['a fractional port', { ...SETUP, port: 80.5 }, /port must be an integer/],
    ['a port string', { ...SETUP, port: '80' }, /port must be an integer/],
    ['NaN', { ...SETUP, port: Number.NaN }, /port must be an integer/],
    ['Infinity', { ...SETUP, port: Number.POSITIVE_INFINITY }, /port must be an integer/],
    ['routerMode 1', { ...SETUP, routerMode: 1 }, /routerMode must be a boolean/],
    ['rules as object', { ...SETUP, rules: { 0: RULE } }, /rules must be an array/],
    ['too many rules', { ...SETUP, rules: new Array(MAX_RULES + 1).fill(RULE) }, /at most 20000 entries/],
    ['bypassGid 0 (root)', { ...SETUP, bypassGid: 0 }, /bypassGid must be an integer 1..4294967294/],
    ['bypassGid -1', { ...SETUP, bypassGid: -1 }, /bypassGid must be an integer/],
    ['bypassGid 2^32-1', { ...SETUP, bypassGid: 2 ** 32 - 1 }, /bypassGid must be an integer/],
    ['bypassGid null', { ...SETUP, bypassGid: null }, /bypassGid must be an integer/],
    ['bypassGid as text', { ...SETUP, bypassGid: '1000' }, /bypassGid must be an integer/],
    ['a rule that is not an object', { ...SETUP, rules: ['10.0.0.0/8'] }, /rules\[0\] must be an object/],
    ['an unknown rule key', withRule({ iface: 'eth0' }), /rules\[0\] has an unknown key/],
    ['a rule without exclude', { ...SETUP, rules: [{ family: 4, address: '10.0.0.0', prefix: 8, portLow: 0, portHigh: 0 }] }, /rules\[0\] is missing "exclude"/],
    ['family 5', withRule({ family: 5 }), /rules\[0\].family must be 4 or 6/],
    ['family "4"', withRule({ family: '4' }), /family must be 4 or 6/],
    ['prefix 33 for IPv4', withRule({ prefix: 33 }), /prefix must be an integer 0..32/],
    ['prefix 129 for IPv6', withRule({ family: 6, address: 'fd00::', prefix: 129 }), /prefix must be an integer 0..128/],
    ['a negative prefix', withRule({ prefix: -1 }), /prefix must be an integer/],
    ['an address number', withRule({ address: 167772160 }), /address must be a string/],
    ['a hostname', withRule({ address: 'example.com' }), /address must be a canonical IPv4 address/],
    ['an address with a prefix', withRule({ address: '10.0.0.0/8' }), /canonical IPv4/],
    ['leading zeros', withRule({ address: '010.0.0.0' }), /canonical IPv4/],
    ['an IPv6 address in an IPv4 rule', withRule({ address: 'fd00::' }), /canonical IPv4/],
    ['an IPv4 address in an IPv6 rule', withRule({ family: 6, address: '10.0.0.0' }), /canonical IPv6/],
    ['upper-case IPv6', withRule({ family: 6, address: 'FD00::', prefix: 8 }), /canonical IPv6/],
    ['uncompressed IPv6', withRule({ family: 6, address: 'fd00:0:0:0:0:0:0:0', prefix: 8 }), /canonical IPv6/],
    ['a scoped IPv6 address', withRule({ family: 6, address: 'fe80::1%eth0', prefix: 128 }), /canonical IPv6/],
    ['a mapped IPv4 in IPv6', withRule({ family: 6, address: '::ffff:10.0.0.0', prefix: 104 }), /canonical IPv6/],
    ['host bits (IPv4)', withRule({ address: '10.0.0.1' }), /address has host bits set beyond \/8/],
    ['host bits (IPv6)', withRule({ family: 6, address: 'fd00::1', prefix: 64 }), /host bits set beyond \/64/],
    ['portLow > portHigh', withRule({ portLow: 90, portHigh: 80 }), /portLow ports must be 0..0 \(all\) or 1 <= portLow <= portHigh/],
    ['portLow 0 with a high port', withRule({ portLow: 0, portHigh: 80 }), /ports must be 0..0/],
    ['port 65536 in a range', withRule({ portLow: 1, portHigh: 65536 }), /portHigh must be an integer 0..65535/],
    ['exclude "false"', withRule({ exclude: 'false' }), /exclude must be a boolean/],
  ])('%s', (_name, value, message) => {
    rejects(value, message);
  });

  it('a second rule with a problem, naming its index', () => {
    rejects({ ...SETUP, rules: [RULE, { ...RULE, prefix: 6 }] }, /rules\[1\].address has host bits/);
  });

  it.each([
    ['__proto__', '{"version":1,"method":"nat","port":1,"routerMode":false,"rules":[],"__proto__":{"bypassGid":1}}'],
    ['constructor', '{"version":1,"method":"nat","port":1,"routerMode":false,"rules":[],"constructor":1}'],
    ['__proto__ in a rule', `{"version":1,"method":"nat","port":1,"routerMode":false,"rules":[{"__proto__":${JSON.stringify(RULE)}}]}`],
  ])('prototype tricks: %s', (_name, line) => {
    expect(() => parseSetupLine(line)).toThrow(/unknown key/);
  });

  it('bad JSON with a fixed message, without echoing the input', () => {
    expect(() => parseSetupLine('{"port": 1, ; rm -rf /')).toThrow(/^setup is not valid JSON$/);
  });

  it('with one-line messages that never echo the offending value', () => {
    const hostile = 'x\nREADY\n$(reboot)';
    for (const value of [withRule({ address: hostile }), { ...SETUP, method: hostile }, { ...SETUP, [hostile]: 1 }]) {
      try {
        validateSetup(value);
        expect.unreachable();
      } catch (e) {
        expect((e as Error).message).not.toMatch(/[\n\r]|reboot|READY/);
      }
    }
  });
});

describe('validateSetup against hostile input (property tests, fixed seeds)', () => {
  it('never throws anything but a one-line SetupValidationError on arbitrary JSON', () => {
    fc.assert(
      fc.property(fc.jsonValue(), (value) => {
        try {
          expectSafeRules(validateSetup(value));
        } catch (e) {
          expect(e).toBeInstanceOf(SetupValidationError);
          expect((e as Error).message).not.toMatch(/[\n\r]/);
        }
      }),
      { seed: 1337, numRuns: 3000 },
    );
  });

  it('never lets an altered field through unless it is still valid, and the rules stay safe', () => {
    const paths = ['version', 'method', 'port', 'routerMode', 'bypassGid', 'rules', 'family', 'address', 'prefix', 'portLow', 'portHigh', 'exclude'];
    const hostileValue = fc.oneof(
      fc.jsonValue(),
      fc.string(),
      fc.constantFrom('10.0.0.0 -j ACCEPT', '10.0.0.0\n-A OUTPUT -j DROP', '0.0.0.0/0', '::1 ', '1e3', '-1', 'fd00::/8'),
      fc.double(),
      fc.integer(),
    );
    fc.assert(
      fc.property(fc.constantFrom(...paths), hostileValue, (path, value) => {
        const setup: Record<string, unknown> = { ...SETUP, bypassGid: 1000 };
        const rule: Record<string, unknown> = { ...RULE };
        if (path in setup) setup[path] = value;
        else rule[path] = value;
        if (path !== 'rules') setup.rules = [rule];
        try {
          expectSafeRules(validateSetup(setup));
        } catch (e) {
          expect(e).toBeInstanceOf(SetupValidationError);
        }
      }),
      { seed: 4242, numRuns: 5000 },
    );
  });

  it('never throws anything but SetupValidationError on arbitrary lines', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.json(), fc.string({ unit: 'binary' })), (line) => {
        try {
          parseSetupLine(line);
        } catch (e) {
          expect(e).toBeInstanceOf(SetupValidationError);
        }
      }),
      { seed: 99, numRuns: 3000 },
    );
  });

  it('accepts every well-formed setup and keeps it unchanged', () => {
    const ruleArb = fc
      .record({
        family: fc.constantFrom(4 as const, 6 as const),
        seed: fc.uint8Array({ minLength: 16, maxLength: 16 }),
        prefixFraction: fc.double({ min: 0, max: 1, noNaN: true }),
        ports: fc.option(fc.tuple(fc.integer({ min: 1, max: 65535 }), fc.integer({ min: 0, max: 65534 }))),
        exclude: fc.boolean(),
      })
      .map(({ family, seed, prefixFraction, ports, exclude }): SubnetRule => {
        const bytes = seed.subarray(0, family === 4 ? 4 : 16);
        const prefix = Math.round(prefixFraction * bytes.length * 8);
        for (let bit = prefix; bit < bytes.length * 8; bit++) bytes[bit >> 3]! &= ~(0x80 >> (bit & 7));
        const [low, span] = ports ?? [0, 0];
        const portHigh = ports ? Math.min(65535, low + span) : 0;
        return { family, address: formatIp(bytes), prefix, portLow: low, portHigh, exclude };
      });
    fc.assert(
      fc.property(fc.array(ruleArb, { maxLength: 20 }), fc.integer({ min: 1, max: 65535 }), fc.boolean(), (rules, port, routerMode) => {
        const setup: FirewallSetup = { version: 1, method: 'nat', port, routerMode, rules };
        expect(parseSetupLine(JSON.stringify(setup))).toEqual(setup);
        expectSafeRules(setup);
      }),
      { seed: 7, numRuns: 1000 },
    );
  });
});
