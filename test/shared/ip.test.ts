import { isIP } from 'node:net';
import fc from 'fast-check';
import { collapseIPv6Number, IPv4, IPv4CidrRange, IPv4Mask, IPv4Prefix, IPv6, IPv6CidrRange, IPv6Mask, IPv6Prefix } from 'ip-num';
import { describe, expect, it } from 'vitest';
import { embeddedIpv4, formatIp, hasHostBits, inPrefix, isCanonicalIp, isLoopbackHost, networkOf, normaliseIp, parseIp, prefixOfMask } from '../../src/shared/ip.js';

/** WHATWG URL serialises IPv6 hosts in RFC 5952 form: an independent canonicaliser. */
function urlCanonical(v6: string): string {
  return new URL(`http://[${v6}]/`).hostname.slice(1, -1);
}

describe('parseIp / formatIp', () => {
  it.each([
    ['0.0.0.0', [0, 0, 0, 0]],
    ['255.255.255.255', [255, 255, 255, 255]],
    ['10.98.0.1', [10, 98, 0, 1]],
  ])('IPv4 %s', (text, bytes) => {
    expect(parseIp(text)).toEqual({ family: 4, bytes: Uint8Array.from(bytes) });
    expect(formatIp(Uint8Array.from(bytes))).toBe(text);
  });

  it.each([
    ['::', '::'],
    ['::1', '::1'],
    ['fd00::', 'fd00::'],
    ['FD00:0:0:0:0:0:0:1', 'fd00::1'],
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'], // first of two equal runs
    ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'], // a single zero group is not compressed
    ['2001:0db8::0001', '2001:db8::1'],
    ['1:0:0:2:0:0:0:3', '1:0:0:2::3'], // the longest run wins
  ])('IPv6 %s is %s canonically', (text, canonical) => {
    const parsed = parseIp(text);
    expect(parsed?.family).toBe(6);
    expect(formatIp(parsed!.bytes)).toBe(canonical);
  });

  it.each([
    ['::ffff:1.2.3.4', '::ffff:102:304'],
    ['::1.2.3.4', '::102:304'],
    ['1:2:3:4:5:6:10.0.0.1', '1:2:3:4:5:6:a00:1'],
  ])('IPv6 %s with a dotted tail is read as %s (never canonical)', (text, canonical) => {
    const parsed = parseIp(text);
    expect(parsed?.family).toBe(6);
    expect(formatIp(parsed!.bytes)).toBe(canonical);
    expect(isCanonicalIp(text, 6)).toBe(false);
  });

  it.each([
    '',
    '1.2.3',
    '1.2.3.4.5',
    '256.0.0.0',
    '1.2.3.-4',
    ' 1.2.3.4',
    '1.2.3.4 ',
    '1.2.3.4/8',
    ':::',
    '1::2::3',
    '1:2:3:4:5:6:7',
    '1:2:3:4:5:6:7:8:9',
    '1:2:3:4:5:6:7::8',
    '12345::',
    'g::',
    '::ffff:1.2.3.256',
    '::ffff:1.2.3',
    '1.2.3.4::',
    '::1.2.3.4:1',
    '1:2:3:4:5:6:7:1.2.3.4',
    'fe80::1%eth0',
    '0x10.0.0.1',
  ])('refuses %j', (text) => {
    expect(parseIp(text)).toBeNull();
  });

  it('formats random IPv6 bytes exactly like the WHATWG URL serialiser', () => {
    fc.assert(
      fc.property(
        fc.array(fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 0xffff })), { minLength: 8, maxLength: 8 }),
        (groups) => {
          const bytes = new Uint8Array(16);
          groups.forEach((g, i) => {
            bytes[2 * i] = g >> 8;
            bytes[2 * i + 1] = g & 0xff;
          });
          const text = formatIp(bytes);
          expect(text).toBe(urlCanonical(text));
          expect(isIP(text)).toBe(6);
          expect(parseIp(text)?.bytes).toEqual(bytes);
        },
      ),
      { seed: 20240601, numRuns: 2000 },
    );
  });
});

describe('isCanonicalIp', () => {
  it('accepts only the canonical spelling of the right family', () => {
    expect(isCanonicalIp('10.0.0.0', 4)).toBe(true);
    expect(isCanonicalIp('010.0.0.0', 4)).toBe(false);
    expect(isCanonicalIp('10.0.0.0', 6)).toBe(false);
    expect(isCanonicalIp('fd00::', 6)).toBe(true);
    expect(isCanonicalIp('fd00:0::', 6)).toBe(false);
    expect(isCanonicalIp('FD00::', 6)).toBe(false);
    expect(isCanonicalIp('fd00::', 4)).toBe(false);
  });

  it('agrees with Node and URL on arbitrary strings', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string({ unit: fc.constantFrom(...'0123456789abcdefABCDEF:.%x ') }), fc.ipV6(), fc.ipV4()), (s) => {
        for (const family of [4, 6] as const) {
          if (!isCanonicalIp(s, family)) continue;
          expect(isIP(s)).toBe(family);
          if (family === 6) expect(urlCanonical(s)).toBe(s);
        }
      }),
      { seed: 424242, numRuns: 5000 },
    );
  });
});

describe('hasHostBits', () => {
  it.each([
    ['10.0.0.0', 8, false],
    ['10.1.0.0', 8, true],
    ['10.1.0.0', 16, false],
    ['0.0.0.0', 0, false],
    ['128.0.0.0', 0, true],
    ['128.0.0.0', 1, false],
    ['10.0.0.1', 32, false],
    ['10.0.0.1', 31, true],
    ['fd00::', 8, false],
    ['fd00::', 7, true],
    ['fd00::1', 127, true],
    ['fd00::1', 128, false],
  ] as const)('%s/%d → %s', (address, prefix, expected) => {
    expect(hasHostBits(parseIp(address)!.bytes, prefix)).toBe(expected);
  });
});

describe('embeddedIpv4 / normaliseIp (issue 17, finding 5)', () => {
  const normalised = (text: string) => {
    const ip = normaliseIp(parseIp(text)!);
    return `${ip.family} ${formatIp(ip.bytes)}`;
  };

  it.each([
    ['::ffff:7f00:1', '127.0.0.1'], // IPv4-mapped
    ['::ffff:a9fe:a9fe', '169.254.169.254'],
    ['::ffff:10.98.0.3', '10.98.0.3'],
    ['::ffff:0:7f00:1', '127.0.0.1'], // IPv4-translated (SIIT)
    ['::7f00:1', '127.0.0.1'], // IPv4-compatible
    ['::a62:3', '10.98.0.3'],
    ['::2', '0.0.0.2'],
    ['64:ff9b::7f00:1', '127.0.0.1'], // NAT64 well-known prefix
    ['64:ff9b::a62:3', '10.98.0.3'],
    ['64:ff9b:1:ab:cd:ef:a62:3', '10.98.0.3'], // NAT64 local-use prefix, as a /96
    ['2002:7f00:1::', '127.0.0.1'], // 6to4
    ['2002:a62:3:1::5', '10.98.0.3'],
    ['2001:0:4136:e378:8000:63bf:80ff:fffe', '127.0.0.1'], // Teredo: the client address inverted
    ['2001:0:4136:e378:8000:63bf:f59d:fffc', '10.98.0.3'],
  ])('%s is %s', (text, v4) => {
    expect(normalised(text)).toBe(`4 ${v4}`);
    expect(embeddedIpv4(parseIp(text)!.bytes)).toEqual(parseIp(v4)!.bytes);
  });

  it.each([
    '::', // IPv6's own unspecified and loopback addresses stay IPv6
    '::1',
    'fd00:98::3',
    'fe80::1',
    '2001:db8::a62:3', // 2001:db8::/32 is not Teredo (2001:0::/32)
    '64:ff9b:2::a62:3', // neither NAT64 prefix
    '64:ff9c::a62:3',
    '::fffe:a62:3',
    '::1:ffff:a62:3',
  ])('%s stays itself', (text) => {
    expect(embeddedIpv4(parseIp(text)!.bytes)).toBeNull();
    expect(normalised(text)).toBe(`6 ${text}`);
  });

  it('an IPv4 address stays itself', () => {
    expect(normalised('10.98.0.3')).toBe('4 10.98.0.3');
    expect(embeddedIpv4(parseIp('10.98.0.3')!.bytes)).toBeNull();
  });
});

describe('isLoopbackHost', () => {
  it.each(['127.0.0.1', '127.0.0.2', '127.255.1.9', '::1', '0:0:0:0:0:0:0:1', '::0:1', 'localhost'])('%s is loopback', (host) => {
    expect(isLoopbackHost(host)).toBe(true);
  });
  it.each(['0.0.0.0', '::', '10.0.0.1', '128.0.0.1', '::2', '::ffff:127.0.0.1', '127.example.com', 'localhost.', '', '1::1'])('%s is not', (host) => {
    expect(isLoopbackHost(host)).toBe(false);
  });
});

describe('inPrefix', () => {
  it.each([
    ['10.98.0.3', '10.98.0.0', 24, true],
    ['10.98.1.3', '10.98.0.0', 24, false],
    ['10.98.0.3', '10.98.0.0', 23, true],
    ['10.99.0.3', '10.98.0.0', 15, true],
    ['10.100.0.3', '10.98.0.0', 15, false],
    ['200.1.2.3', '0.0.0.0', 0, true],
    ['10.98.0.3', '10.98.0.3', 32, true],
    ['10.98.0.2', '10.98.0.3', 32, false],
    ['fd00:98::3', 'fd00:98::', 64, true],
    ['fd00:99::3', 'fd00:98::', 64, false],
    ['fd00::1', 'fd00::', 127, true],
    ['fd00::2', 'fd00::', 127, false],
  ] as const)('%s in %s/%d: %s', (address, network, prefix, expected) => {
    expect(inPrefix(parseIp(address)!.bytes, parseIp(network)!.bytes, prefix)).toBe(expected);
  });

  it('never across families', () => {
    expect(inPrefix(parseIp('10.98.0.3')!.bytes, parseIp('::')!.bytes, 0)).toBe(false);
  });
});

describe('networkOf', () => {
  it.each([
    ['10.98.0.7', 24, '10.98.0.0'],
    ['10.98.0.7', 32, '10.98.0.7'],
    ['10.98.0.7', 0, '0.0.0.0'],
    ['255.255.255.255', 1, '128.0.0.0'],
    ['255.255.255.255', 31, '255.255.255.254'],
    ['10.98.200.7', 17, '10.98.128.0'],
    ['fd00::1', 8, 'fd00::'],
    ['fd00::1', 128, 'fd00::1'],
    ['2001:db8:abcd:12::1', 60, '2001:db8:abcd:10::'],
    ['ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', 127, 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe'],
  ] as const)('%s/%d is in %s', (address, prefix, network) => {
    expect(formatIp(networkOf(parseIp(address)!.bytes, prefix))).toBe(network);
  });

  it('returns a copy of the same kind, its argument untouched', () => {
    const bytes = Buffer.from([10, 98, 0, 7]);
    const network = networkOf(bytes, 8);
    expect(network).toBeInstanceOf(Buffer);
    expect([...network]).toEqual([10, 0, 0, 0]);
    expect([...bytes]).toEqual([10, 98, 0, 7]);
  });
});

describe('prefixOfMask', () => {
  it.each([
    ['255.255.255.0', 24],
    ['0.0.0.0', 0],
    ['255.255.255.255', 32],
    ['128.0.0.0', 1],
    ['255.255.255.254', 31],
    ['255.255.240.0', 20],
    ['255.0.255.0', null],
    ['0.0.0.1', null],
    ['0.255.255.255', null],
    ['255.255.255.253', null],
    ['ffff:ffff::', 32],
    ['::', 0],
    ['ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', 128],
    ['ffff::ffff', null],
  ] as const)('%s: %s', (mask, prefix) => {
    expect(prefixOfMask(parseIp(mask)!.bytes)).toBe(prefix);
  });
});

/**
 * ip-num (a library of its own, BigInt-based) as the reference: the functions above are
 * hand-written for speed (see src/ip.ts), so they must say what it says on any input.
 */
describe('against ip-num', () => {
  const toBytes = (value: bigint, length: number) => Uint8Array.from({ length }, (_, i) => Number((value >> BigInt(8 * (length - 1 - i))) & 0xffn));
  const ipNum = (bytes: Uint8Array) => (bytes.length === 4 ? new IPv4(formatIp(bytes)) : new IPv6(formatIp(bytes)));
  const range = (bytes: Uint8Array, prefix: number) =>
    bytes.length === 4 ? new IPv4CidrRange(new IPv4(formatIp(bytes)), new IPv4Prefix(BigInt(prefix))) : new IPv6CidrRange(new IPv6(formatIp(bytes)), new IPv6Prefix(BigInt(prefix)));
  const addressBytes = fc.oneof(fc.uint8Array({ minLength: 4, maxLength: 4 }), fc.uint8Array({ minLength: 16, maxLength: 16 }));
  /** IPv6 bytes with zero groups often, so that compression has runs to choose between. */
  const sparseV6 = fc.array(fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 0xffff })), { minLength: 8, maxLength: 8 }).map((groups) => Uint8Array.from(groups.flatMap((g) => [g >> 8, g & 0xff])));
  const withPrefix = fc.oneof(addressBytes, sparseV6).chain((bytes) => fc.tuple(fc.constant(bytes), fc.integer({ min: 0, max: bytes.length * 8 })));

  it('parseIp reads what ip-num reads, to the same value', () => {
    const text = fc.oneof(fc.ipV4(), fc.ipV6(), fc.ipV6().map((t) => t.toUpperCase()), fc.ipV4().map((t) => `::ffff:${t}`));
    fc.assert(
      fc.property(text, (t) => {
        const parsed = parseIp(t);
        const reference = t.includes(':') ? new IPv6(t) : new IPv4(t);
        expect(parsed?.bytes).toEqual(toBytes(reference.getValue(), t.includes(':') ? 16 : 4));
      }),
      { seed: 160116, numRuns: 1000 },
    );
  });

  it('formatIp writes what ip-num writes (IPv6 collapsed)', () => {
    fc.assert(
      fc.property(fc.oneof(addressBytes, sparseV6), (bytes) => {
        const reference = ipNum(bytes).toString();
        expect(formatIp(bytes)).toBe(bytes.length === 4 ? reference : collapseIPv6Number(reference));
      }),
      { seed: 160117, numRuns: 2000 },
    );
  });

  it('networkOf is the first address of the CIDR range, hasHostBits says whether it differs', () => {
    fc.assert(
      fc.property(withPrefix, ([bytes, prefix]) => {
        const first = range(bytes, prefix).getFirst();
        expect(networkOf(bytes, prefix)).toEqual(toBytes(first.getValue(), bytes.length));
        expect(hasHostBits(bytes, prefix)).toBe(!first.isEquals(ipNum(bytes)));
      }),
      { seed: 160118, numRuns: 1000 },
    );
  });

  it('inPrefix is CIDR range containment', () => {
    fc.assert(
      fc.property(withPrefix, fc.nat(), ([network, prefix], flips) => {
        // Near the network (a few bits flipped) as often as far from it.
        const bytes = network.map((byte, i) => byte ^ (i === flips % network.length ? 1 << (flips % 8) : 0));
        expect(inPrefix(bytes, network, prefix)).toBe(range(network, prefix).contains(ipNum(bytes)));
      }),
      { seed: 160119, numRuns: 1000 },
    );
  });

  it('prefixOfMask is ip-num\'s mask prefix, null where ip-num refuses the mask', () => {
    const masks = fc.oneof(
      fc.integer({ min: 0, max: 32 }).map((p) => networkOf(new Uint8Array(4).fill(0xff), p)),
      fc.integer({ min: 0, max: 128 }).map((p) => networkOf(new Uint8Array(16).fill(0xff), p)),
      addressBytes,
    );
    fc.assert(
      fc.property(masks, (mask) => {
        let reference: number | null;
        try {
          reference = mask.length === 4 ? new IPv4Mask(formatIp(mask)).prefix : new IPv6Mask(formatIp(mask)).prefix;
        } catch {
          reference = null;
        }
        expect(prefixOfMask(mask)).toBe(reference);
      }),
      { seed: 160120, numRuns: 2000 },
    );
  });
});
