import { isIPv6 } from 'node:net';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ProtocolError } from '../../src/shared/errors.js';
import { decodeDestination, encodeDestination, formatDestination } from '../../src/streams/destination.js';
import type { Destination } from '../../src/streams/frame.js';

/** WHATWG URL serialises IPv6 hosts in RFC 5952 form: an independent canonicaliser. */
const canonical6 = (v6: string): string => new URL(`http://[${v6}]/`).hostname.slice(1, -1);

const roundTrip = (dst: Destination): Destination => decodeDestination(encodeDestination(dst));

describe('destination (OPEN payload)', () => {
  it('IPv4: u8 family, u16 port, 4 address bytes', () => {
    const dst: Destination = { family: 4, address: '192.168.1.20', port: 8080 };
    expect([...encodeDestination(dst)]).toEqual([4, 0x1f, 0x90, 192, 168, 1, 20]);
    expect(roundTrip(dst)).toEqual(dst);
  });

  it.each(['0.0.0.0', '255.255.255.255', '10.0.0.1', '127.0.0.1'])('IPv4 %s round-trips', (address) => {
    for (const port of [0, 1, 80, 65535]) expect(roundTrip({ family: 4, address, port })).toEqual({ family: 4, address, port });
  });

  it('IPv6: u8 family, u16 port, 16 address bytes', () => {
    const bytes = encodeDestination({ family: 6, address: 'fe80::1:2', port: 443 });
    expect(bytes.length).toBe(19);
    expect([...bytes.subarray(0, 3)]).toEqual([6, 0x01, 0xbb]);
    expect(bytes.subarray(3).toString('hex')).toBe('fe800000000000000000000000010002');
  });

  it.each([
    ['::', '00000000000000000000000000000000', '::'],
    ['::1', '00000000000000000000000000000001', '::1'],
    ['1::', '00010000000000000000000000000000', '1::'],
    ['fe80::1:2', 'fe800000000000000000000000010002', 'fe80::1:2'],
    ['::ffff:1.2.3.4', '00000000000000000000ffff01020304', '::ffff:102:304'],
    ['0:0:0:0:0:ffff:10.0.0.1', '00000000000000000000ffff0a000001', '::ffff:a00:1'],
    ['2001:db8:1:2:3:4:5:6', '20010db8000100020003000400050006', '2001:db8:1:2:3:4:5:6'],
    ['2001:0DB8:0000:0000:0000:0000:0000:0001', '20010db8000000000000000000000001', '2001:db8::1'],
    ['ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', 'ffffffffffffffffffffffffffffffff', 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff'],
    ['2001:db8:0:0:1:0:0:1', '20010db8000000000001000000000001', '2001:db8::1:0:0:1'], // first of two equal runs
    ['1:0:0:2:0:0:0:3', '00010000000000020000000000000003', '1:0:0:2::3'], // the longest run wins
    ['2001:db8:0:1:1:1:1:1', '20010db8000000010001000100010001', '2001:db8:0:1:1:1:1:1'], // one zero group stays
  ])('IPv6 %s encodes to %s and decodes as %s', (address, hex, decoded) => {
    const dst: Destination = { family: 6, address, port: 22 };
    const bytes = encodeDestination(dst);
    expect(bytes.subarray(3).toString('hex')).toBe(hex);
    const back = decodeDestination(bytes);
    expect(back).toEqual({ family: 6, address: decoded, port: 22 });
    expect(back.address).toBe(canonical6(address));
    expect(encodeDestination(back)).toEqual(bytes);
  });

  it('IPv6 round-trips any 16 bytes into the canonical (RFC 5952) text (property)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 16, maxLength: 16 }), fc.integer({ min: 0, max: 65535 }), (raw, port) => {
        const payload = Buffer.concat([Buffer.from([6, port >> 8, port & 0xff]), Buffer.from(raw)]);
        const dst = decodeDestination(payload);
        expect(isIPv6(dst.address)).toBe(true);
        expect(dst.address).toBe(canonical6(dst.address));
        expect(dst.port).toBe(port);
        expect(encodeDestination(dst)).toEqual(payload);
      }),
      { seed: 7, numRuns: 500 },
    );
  });

  it.each([
    ['empty', Buffer.alloc(0)],
    ['unknown family', Buffer.from([5, 0, 80, 1, 2, 3, 4])],
    ['IPv4 too short', Buffer.from([4, 0, 80, 1, 2, 3])],
    ['IPv4 too long', Buffer.from([4, 0, 80, 1, 2, 3, 4, 5])],
    ['IPv6 too short', Buffer.concat([Buffer.from([6, 0, 80]), Buffer.alloc(15)])],
    ['IPv6 with v4 length', Buffer.from([6, 0, 80, 1, 2, 3, 4])],
  ])('a malformed payload (%s) throws ProtocolError', (_name, payload) => {
    expect(() => decodeDestination(payload)).toThrow(ProtocolError);
    expect(() => decodeDestination(payload)).toThrow(/malformed OPEN/);
  });

  it('refuses to encode an address of the wrong family', () => {
    expect(() => encodeDestination({ family: 4, address: '::1', port: 1 })).toThrow(TypeError);
    expect(() => encodeDestination({ family: 6, address: '1.2.3.4', port: 1 })).toThrow(TypeError);
    expect(() => encodeDestination({ family: 4, address: '1.2.3', port: 1 })).toThrow(TypeError);
  });

  it('formats v4 as host:port and v6 as [host]:port', () => {
    expect(formatDestination({ family: 4, address: '10.0.0.1', port: 80 })).toBe('10.0.0.1:80');
    expect(formatDestination({ family: 6, address: 'fe80::1', port: 443 })).toBe('[fe80::1]:443');
  });
});
