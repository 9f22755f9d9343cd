import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  decodeHost,
  decodeHostsRequest,
  decodeRoutes,
  encodeHost,
  encodeHostsRequest,
  encodeRoutes,
  isValidHostName,
  type Route,
} from '../../src/streams/discovery.js';
import { Command, MAX_PAYLOAD } from '../../src/streams/frame.js';

describe('ROUTES', () => {
  it('round-trips IPv4 and IPv6 routes', () => {
    const routes: Route[] = [
      { family: 4, address: '10.98.0.0', prefix: 24 },
      { family: 6, address: 'fd00:98::', prefix: 64 },
      { family: 4, address: '192.168.1.7', prefix: 32 },
    ];
    const f = encodeRoutes(routes);
    expect(f.command).toBe(Command.ROUTES);
    expect(f.payload.length).toBe(2 + 4 + 2 + 16 + 2 + 4);
    expect(decodeRoutes(f.payload)).toEqual(routes);
    expect(decodeRoutes(Buffer.alloc(0))).toEqual([]);
  });

  it('clears host bits the sender left', () => {
    const payload = Buffer.from([4, 16, 10, 98, 7, 9]);
    expect(decodeRoutes(payload)).toEqual([{ family: 4, address: '10.98.0.0', prefix: 16 }]);
  });

  it('refuses malformed entries', () => {
    expect(() => decodeRoutes(Buffer.from([5, 8, 1, 2, 3, 4]))).toThrow(/malformed ROUTES/);
    expect(() => decodeRoutes(Buffer.from([4, 33, 1, 2, 3, 4]))).toThrow(/prefix \/33/);
    expect(() => decodeRoutes(Buffer.from([4, 8, 1, 2]))).toThrow(/malformed ROUTES/);
  });

  it('sends only as many routes as fit one frame', () => {
    const many: Route[] = Array.from({ length: 5000 }, (_, i) => ({ family: 6, address: `fd00:${(i + 1).toString(16)}::`, prefix: 32 }));
    const f = encodeRoutes(many);
    expect(f.payload.length).toBeLessThanOrEqual(MAX_PAYLOAD);
    expect(decodeRoutes(f.payload)).toEqual(many.slice(0, Math.floor(MAX_PAYLOAD / 18)));
  });

  it('property: any list of valid routes round-trips', () => {
    const v4 = fc.tuple(fc.integer({ min: 0, max: 0xffffffff }), fc.integer({ min: 0, max: 32 })).map(([n, prefix]): Route => {
      const masked = prefix === 0 ? 0 : (n >>> (32 - prefix)) << (32 - prefix);
      const b = Buffer.alloc(4);
      b.writeUInt32BE(masked >>> 0, 0);
      return { family: 4, address: [...b].join('.'), prefix };
    });
    fc.assert(fc.property(fc.array(v4, { maxLength: 50 }), (routes) => {
      expect(decodeRoutes(encodeRoutes(routes).payload)).toEqual(routes);
    }));
  });
});

describe('HOST and HOSTS_REQUEST', () => {
  it('round-trips a host', () => {
    const host = { family: 4, address: '10.98.0.3', name: 'target.lab' } as const;
    expect(decodeHost(encodeHost(host).payload)).toEqual(host);
    const host6 = { family: 6, address: 'fd00:98::3', name: 'db_1' } as const;
    expect(decodeHost(encodeHost(host6).payload)).toEqual(host6);
  });

  it('refuses names that do not belong in a hosts file', () => {
    expect(() => encodeHost({ family: 4, address: '10.0.0.1', name: 'a b' })).toThrow(TypeError);
    const bad = Buffer.concat([Buffer.from([4, 10, 0, 0, 1]), Buffer.from('evil\nname')]);
    expect(() => decodeHost(bad)).toThrow(/not a valid host name/);
    expect(() => decodeHost(Buffer.from([4, 10, 0, 0, 1]))).toThrow(/malformed HOST/);
    expect(() => decodeHost(Buffer.from([7, 1]))).toThrow(/malformed HOST/);
  });

  it('isValidHostName', () => {
    for (const ok of ['a', 'target', 'target.lab', 'my-host_2.corp.example', 'x'.repeat(63)]) expect(isValidHostName(ok), ok).toBe(true);
    for (const bad of ['', '-a', 'a-', 'a..b', '.a', 'a b', 'a\tb', '10.0.0.1', '::1', '123', 'x'.repeat(64), `${'a.'.repeat(127)}a`, 'é'])
      expect(isValidHostName(bad), bad).toBe(false);
  });

  it('HOSTS_REQUEST carries the seed hosts', () => {
    const f = encodeHostsRequest(['a.lab', 'b']);
    expect(f.command).toBe(Command.HOSTS_REQUEST);
    expect(decodeHostsRequest(f.payload)).toEqual(['a.lab', 'b']);
    expect(decodeHostsRequest(encodeHostsRequest([]).payload)).toEqual([]);
  });
});
