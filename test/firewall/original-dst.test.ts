import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseSockaddr } from '../../src/firewall/original-dst.js';
import { skipBecause } from '../support/skip.js';
import { type Bundle, bundleFixture } from './support/bundle.js';
import { Netns, netnsSkip } from './support/netns.js';
import { runProbe } from './support/probe.js';

describe('parseSockaddr', () => {
  it('decodes sockaddr_in', () => {
    const buf = Buffer.alloc(16);
    buf.writeUInt16LE(2, 0);
    buf.writeUInt16BE(8080, 2);
    buf.set([10, 123, 0, 5], 4);
    expect(parseSockaddr(buf)).toEqual({ address: '10.123.0.5', port: 8080, family: 4 });
  });

  it('decodes sockaddr_in6 into canonical text', () => {
    const buf = Buffer.alloc(28);
    buf.writeUInt16LE(10, 0);
    buf.writeUInt16BE(443, 2);
    buf.set([0xfd, 0, 0, 0x12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5], 8);
    expect(parseSockaddr(buf)).toEqual({ address: 'fd00:12::5', port: 443, family: 6 });
  });

  it('refuses other families', () => {
    expect(() => parseSockaddr(Buffer.alloc(16))).toThrow(/unexpected address family 0/);
  });
});

describe('originalDestination in a namespace', skipBecause(netnsSkip()), () => {
  let ns: Netns | undefined;
  let probe: Bundle | undefined;
  const port = 40_000 + Math.floor(Math.random() * 1000);

  beforeAll(async () => {
    probe = await bundleFixture('probe-main');
    ns = await Netns.create();
    // A veth pair (this kernel has no dummy driver) gives 10.123.0.0/24 and fd00:123::/64 a
    // route; REDIRECT then sends the connection to our loopback listener before any packet leaves.
    await ns.ip('link', 'add', 'v0', 'type', 'veth', 'peer', 'name', 'v1');
    await ns.ip('addr', 'add', '10.123.0.1/24', 'dev', 'v0');
    await ns.ip('addr', 'add', 'fd00:123::1/64', 'dev', 'v0', 'nodad');
    await ns.ip('link', 'set', 'v0', 'up');
    await ns.ip('link', 'set', 'v1', 'up');
    await ns.exec(['iptables', '-t', 'nat', '-A', 'OUTPUT', '-p', 'tcp', '-d', '10.123.0.0/24', '-j', 'REDIRECT', '--to-ports', String(port)]);
    await ns.exec(['ip6tables', '-t', 'nat', '-A', 'OUTPUT', '-p', 'tcp', '-d', 'fd00:123::/64', '-j', 'REDIRECT', '--to-ports', String(port)]);
  }, 30_000);

  afterAll(async () => {
    await ns?.delete();
    probe?.remove();
  });

  it('reads the IPv4 original destination of a redirected socket', async () => {
    const results = await runProbe(ns!, probe!, {
      listen: [{ host: '127.0.0.1', port, label: 'redirect' }],
      connect: [{ host: '10.123.0.5', port: 80 }],
    });
    expect(results).toEqual([{ target: '10.123.0.5:80', reply: 'redirect 10.123.0.5:80 v4' }]);
  });

  it('reads the IPv6 original destination of a redirected socket', async () => {
    const results = await runProbe(ns!, probe!, {
      listen: [{ host: '::1', port, label: 'redirect' }],
      connect: [{ host: 'fd00:123::5', port: 8443 }],
    });
    expect(results).toEqual([{ target: '[fd00:123::5]:8443', reply: 'redirect [fd00:123::5]:8443 v6' }]);
  });

  it('reads an IPv4 destination accepted on a dual-stack listener', async () => {
    const results = await runProbe(ns!, probe!, {
      listen: [{ host: '::', port, label: 'redirect' }],
      connect: [{ host: '10.123.0.77', port: 22 }],
    });
    expect(results).toEqual([{ target: '10.123.0.77:22', reply: 'redirect 10.123.0.77:22 v4' }]);
  });

  it('fails with an errno name when the socket was not redirected', async () => {
    const results = await runProbe(ns!, probe!, {
      listen: [{ host: '127.0.0.1', port, label: 'direct' }],
      connect: [{ host: '127.0.0.1', port }],
    });
    // Conntrack still knows the flow, un-NATed, so the kernel may answer with the real address.
    const reply = results[0]?.reply ?? '';
    expect(reply === `direct 127.0.0.1:${port} v4` || /^direct none .*getsockopt\(SO_ORIGINAL_DST\) failed: E[A-Z]+/.test(reply)).toBe(true);
  });
});
