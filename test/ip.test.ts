import { isIP } from 'node:net';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { formatIp, hasHostBits, isCanonicalIp, parseIp } from '../src/ip.js';

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
