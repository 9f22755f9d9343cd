import { isIP } from 'node:net';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { embeddedIpv4, formatIp, hasHostBits, inPrefix, isCanonicalIp, normaliseIp, parseIp } from '../../src/shared/ip.js';

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
