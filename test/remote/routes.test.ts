import { describe, expect, it } from 'vitest';
import { listRoutes, parseProcIpv6Route, parseProcRoute } from '../../src/remote/routes.js';

// Taken from the e2e lab's srv namespace (plus a default route, loopback and link-local ones).
const PROC_ROUTE = `Iface	Destination	Gateway 	Flags	RefCnt	Use	Metric	Mask		MTU	Window	IRTT
eth0	00000000	0100A8C0	0003	0	0	0	00000000	0	0	0
s1	0000620A	00000000	0001	0	0	0	00FFFFFF	0	0	0
s0	0000630A	00000000	0001	0	0	0	00FFFFFF	0	0	0
eth0	0000FEA9	00000000	0001	0	0	1000	0000FFFF	0	0	0
eth0	0000A8C0	00000000	0001	0	0	0	00FFFFFF	0	0	0
down	000010AC	00000000	0000	0	0	0	0000FFFF	0	0	0
blackhole	000011AC	00000000	0201	0	0	0	0000FFFF	0	0	0
lo	0000007F	00000000	0001	0	0	0	000000FF	0	0	0
odd	0000620A	00000000	0001	0	0	0	00FF00FF	0	0	0
`;

const PROC_IPV6_ROUTE = `fd000098000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001 s1
fe800000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001 s0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003 eth0
00000000000000000000000000000001 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000004 00000000 80200001 lo
fd000098000000000000000000000002 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000002 00000000 80200001 s1
ff000000000000000000000000000000 08 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000004 00000000 00000001 s1
20010db8000000000000000000000000 20 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001 eth0
`;

describe('routes (-N)', () => {
  it('reads /proc/net/route in host byte order, without default, loopback, link-local, down and reject routes', () => {
    expect(parseProcRoute(PROC_ROUTE, 'LE')).toEqual([
      { family: 4, address: '10.98.0.0', prefix: 24 },
      { family: 4, address: '10.99.0.0', prefix: 24 },
      { family: 4, address: '192.168.0.0', prefix: 24 },
    ]);
  });

  it('big-endian hosts print the address as is', () => {
    const be = 'Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\nx\t0A620000\t00000000\t0001\t0\t0\t0\tFFFFFF00\n';
    expect(parseProcRoute(be, 'BE')).toEqual([{ family: 4, address: '10.98.0.0', prefix: 24 }]);
  });

  it('reads /proc/net/ipv6_route without default, local, loopback, link-local and multicast routes', () => {
    expect(parseProcIpv6Route(PROC_IPV6_ROUTE)).toEqual([
      { family: 6, address: 'fd00:98::', prefix: 64 },
      { family: 6, address: '2001:db8::', prefix: 32 },
    ]);
  });

  it('listRoutes: both families, each route once; nothing where /proc has no routing table', () => {
    const files: Record<string, string> = { '/proc/net/route': PROC_ROUTE + PROC_ROUTE.split('\n').slice(2, 3).join('\n'), '/proc/net/ipv6_route': PROC_IPV6_ROUTE };
    expect(listRoutes((p) => files[p] ?? '')).toEqual([
      { family: 4, address: '10.98.0.0', prefix: 24 },
      { family: 4, address: '10.99.0.0', prefix: 24 },
      { family: 4, address: '192.168.0.0', prefix: 24 },
      { family: 6, address: 'fd00:98::', prefix: 64 },
      { family: 6, address: '2001:db8::', prefix: 32 },
    ]);
    expect(listRoutes(() => '')).toEqual([]);
  });

  it('this machine: whatever it routes parses', () => {
    for (const route of listRoutes()) expect(route.prefix).toBeGreaterThan(0);
  });
});
