import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { worthTunneling } from '../../../src/remote/routes.js';
import { hasHostBits, isCanonicalIp, parseIp } from '../../../src/shared/ip.js';
import type { Route } from '../../../src/streams/discovery.js';
import { parseIpRoute, parseNetstatRoutes } from '../../../src/tunnel/stock/route-text.js';

const v4 = (address: string, prefix: number): Route => ({ family: 4, address, prefix });
const v6 = (address: string, prefix: number): Route => ({ family: 6, address, prefix });

// iproute2 6.x on Debian (the e2e lab's srv namespace plus a few more), `ip -4 route show table
// main; ip -6 route show table main` as the probe runs it. iproute2 ends many lines with a space.
const IPROUTE2 = `default via 10.99.0.1 dev eth0 proto dhcp src 10.99.0.2 metric 100 
10.98.0.0/24 dev s1 proto kernel scope link src 10.98.0.2 
10.99.0.0/24 dev eth0 proto kernel scope link src 10.99.0.2 metric 100 
10.20.0.0/16 proto static metric 20 
	nexthop via 10.99.0.3 dev eth0 weight 1 
	nexthop via 10.99.0.4 dev eth0 weight 1 
169.254.0.0/16 dev eth0 scope link metric 1000 
172.17.0.0/16 dev docker0 proto kernel scope link src 172.17.0.1 linkdown 
192.168.1.7 via 10.99.0.1 dev eth0 
unreachable 10.1.0.0/16 
blackhole 10.2.0.0/16 
prohibit 10.3.0.0/16 
throw 10.4.0.0/16 
unicast 10.5.0.0/16 via 10.99.0.1 dev eth0 proto static 
224.0.0.0/4 dev eth0 scope link 
::1 dev lo proto kernel metric 256 pref medium
fd00:98::/64 dev s1 proto kernel metric 256 pref medium
fe80::/64 dev eth0 proto kernel metric 256 pref medium
2001:db8:1::/48 proto static metric 1024 pref medium
	nexthop via fe80::2 dev eth0 weight 1 
	nexthop via fe80::3 dev eth1 weight 1 
2001:db8:2::5 via fe80::2 dev eth0 metric 1024 pref medium
unreachable 2001:db8:dead::/48 dev lo metric 1024 error -113 pref medium
multicast ff00::/8 dev eth0 table local proto kernel metric 256 pref medium
default via fe80::1 dev eth0 proto ra metric 1024 expires 1795sec hoplimit 64 pref medium
`;

// busybox 1.36 `ip route` (Alpine, OpenWrt): two spaces before src, no IPv6 table on this one.
const BUSYBOX_IP = `default via 10.0.2.2 dev eth0 
10.0.2.0/24 dev eth0 scope link  src 10.0.2.15 
192.168.100.0/24 via 10.0.2.3 dev eth0 
`;

describe('parseIpRoute', () => {
  it('reads iproute2: networks, hosts, multipath heads, linkdown routes; no typed, default, link-local, loopback, multicast', () => {
    expect(parseIpRoute(IPROUTE2)).toEqual([
      v4('10.98.0.0', 24),
      v4('10.99.0.0', 24),
      v4('10.20.0.0', 16),
      v4('172.17.0.0', 16),
      v4('192.168.1.7', 32),
      v4('10.5.0.0', 16),
      v6('fd00:98::', 64),
      v6('2001:db8:1::', 48),
      v6('2001:db8:2::5', 128),
    ]);
  });

  it('reads busybox ip output', () => {
    expect(parseIpRoute(BUSYBOX_IP)).toEqual([v4('10.0.2.0', 24), v4('192.168.100.0', 24)]);
  });

  it('skips every route type but unicast', () => {
    const typed = ['unreachable', 'blackhole', 'prohibit', 'throw', 'local', 'broadcast', 'multicast', 'anycast', 'nat', '12'];
    const text = typed.map((type, i) => `${type} 10.${i + 1}.0.0/16 dev eth0 proto static`).join('\n');
    expect(parseIpRoute(text)).toEqual([]);
    expect(parseIpRoute('unicast 10.1.0.0/16 dev eth0\nunicast fd00:1::/64 dev eth0\n')).toEqual([
      v4('10.1.0.0', 16),
      v6('fd00:1::', 64),
    ]);
  });

  it('skips nexthop lines, indented or not', () => {
    const text = '\tnexthop via 10.0.0.1 dev eth0 weight 1\nnexthop via 10.0.0.2 dev eth1 weight 1\n    10.7.0.0/16 dev eth0\n';
    expect(parseIpRoute(text)).toEqual([]);
  });

  it('masks addresses to their prefix and writes them canonically', () => {
    const text = [
      '10.98.0.7/24 dev eth0',
      '10.9.255.255/12 dev eth0',
      '2001:DB8:0:0:1::7/64 dev eth0',
      'fd00:0098:0000:0000::/48 dev eth0',
      '10.0.0.1/0 dev eth0',
    ].join('\n');
    expect(parseIpRoute(text)).toEqual([
      v4('10.98.0.0', 24),
      v4('10.0.0.0', 12),
      v6('2001:db8::', 64),
      v6('fd00:98::', 48),
    ]);
  });

  it('skips prefixes out of range and malformed destinations', () => {
    const text = [
      '10.0.0.0/33 dev eth0',
      'fd00::/129 dev eth0',
      '10.0.0.0/ dev eth0',
      '10.0.0.0/x dev eth0',
      '10.0.0.0/24/8 dev eth0',
      '10.0.0.0/1000 dev eth0',
      '10.0.0.256/24 dev eth0',
      '10.0.0/24 dev eth0',
      'fd00::1::2/64 dev eth0',
      'fe80::1%eth0/64 dev eth0',
    ].join('\n');
    expect(parseIpRoute(text)).toEqual([]);
  });

  it('lists each network once, in input order', () => {
    const text = '10.1.0.0/16 dev a\nfd00::/64 dev a\n10.1.7.7/16 dev b\n10.2.0.0/16 dev a\nfd00::1/64 dev b\n';
    expect(parseIpRoute(text)).toEqual([
      v4('10.1.0.0', 16),
      v6('fd00::', 64),
      v4('10.2.0.0', 16),
    ]);
  });

  it('takes Windows line ends', () => {
    expect(parseIpRoute('10.1.0.0/16 dev eth0\r\n192.168.5.5 via 10.1.0.1 dev eth0\r\n')).toEqual([
      v4('10.1.0.0', 16),
      v4('192.168.5.5', 32),
    ]);
  });

  it('returns nothing for empty input and garbage', () => {
    expect(parseIpRoute('')).toEqual([]);
    expect(parseIpRoute('\n\n   \n')).toEqual([]);
    const garbage = 'ip: command not found\nRTNETLINK answers: Operation not permitted\n\0\x01\x02 \u{1F600}\n/24 dev eth0\n:: /\n';
    expect(parseIpRoute(garbage)).toEqual([]);
  });

  it('reads a huge line by its head only, and a huge input in linear time', () => {
    const tail = 'x'.repeat(5_000_000);
    const huge = `10.1.0.0/16 dev eth0 ${tail}\n${tail}\n${' '.repeat(1_000_000)}10.2.0.0/16\n10.3.0.0/16${tail}\n`;
    expect(parseIpRoute(huge)).toEqual([v4('10.1.0.0', 16)]);
    const many = Array.from({ length: 200_000 }, (_, i) => `10.${(i >> 8) & 255}.${i & 255}.0/24 dev eth0 proto static`).join('\n');
    const started = performance.now();
    expect(parseIpRoute(many)).toHaveLength(65_536);
    expect(performance.now() - started).toBeLessThan(5_000);
  });
});

// net-tools 2.10 `netstat -rn` on Linux (a reject route, a down one with no flags, a host route).
const NET_TOOLS = `Kernel IP routing table
Destination     Gateway         Genmask         Flags   MSS Window  irtt Iface
0.0.0.0         10.99.0.1       0.0.0.0         UG        0 0          0 eth0
10.98.0.0       0.0.0.0         255.255.255.0   U         0 0          0 s1
10.99.0.0       0.0.0.0         255.255.255.0   U         0 0          0 eth0
10.1.0.0        -               255.255.0.0     !         0 0          0 -
10.40.0.0       0.0.0.0         255.255.0.0               0 0          0 eth1
10.41.0.0       0.0.0.0         255.0.255.0     U         0 0          0 eth1
10.42.0.0       10.99.0.3       255.254.0.0     UG        0 0          0 eth0
127.0.0.0       0.0.0.0         255.0.0.0       U         0 0          0 lo
169.254.0.0     0.0.0.0         255.255.0.0     U         0 0          0 eth0
192.168.1.7     10.99.0.1       255.255.255.255 UGH       0 0          0 eth0
`;

// net-tools `netstat -rn -A inet6`: it lists the local table too (own addresses, on lo).
const NET_TOOLS_V6 = `Kernel IPv6 routing table
Destination                    Next Hop                   Flag Met Ref Use If
::1/128                        ::                         U    256 2     0 lo
fd00:98::/64                   ::                         U    256 1     0 s1
2001:db8:3::/48                fd00:98::1                 UG   1024 1    0 s1
2001:db8:4::1/128              fd00:98::1                 UGC  0   1     0 s1
fe80::/64                      ::                         U    256 1     0 eth0
::/0                           fe80::1                    UGDAe 1024 2   0 eth0
::1/128                        ::                         Un   0   4     0 lo
fd00:98::2/128                 ::                         Un   0   3     0 lo
ff00::/8                       ::                         U    256 3     0 eth0
::/0                           ::                         !n   -1  1     0 lo
`;

// busybox `route -n` (the same table as net-tools with other columns).
const BUSYBOX_ROUTE = `Kernel IP routing table
Destination     Gateway         Genmask         Flags Metric Ref    Use Iface
0.0.0.0         10.0.2.2        0.0.0.0         UG    0      0        0 eth0
10.0.2.0        0.0.0.0         255.255.255.0   U     0      0        0 eth0
`;

// macOS 14 `netstat -rn`.
const MACOS = `Routing tables

Internet:
Destination        Gateway            Flags               Netif Expire
default            192.168.1.1        UGScg                 en0       
10/8               192.168.1.254      UGSc                  en0       
127                127.0.0.1          UCS                   lo0       
127.0.0.1          127.0.0.1          UH                    lo0       
169.254            link#6             UCS                   en0      !
172.20             192.168.1.254      UGSc                  en0       
192.168.1          link#6             UCS                   en0      !
192.168.1.1/32     link#6             UCS                   en0      !
192.168.1.1        a4:2b:b0:c3:11:2f  UHLWIir               en0   1183
192.168.1.23/32    link#6             UCS                   en0      !
192.168.1.255      ff:ff:ff:ff:ff:ff  UHLWbI                en0      !
203.0.113.9        192.168.1.254      UGHWIig               en0    742
224.0.0/4          link#6             UmCS                  en0      !
224.0.0.251        1:0:5e:0:0:fb      UHmLWI                en0       
255.255.255.255/32 link#6             UCS                   en0      !

Internet6:
Destination                             Gateway                                 Flags               Netif Expire
default                                 fe80::1%en0                             UGcg                  en0       
::1                                     ::1                                     UHL                   lo0       
2001:db8:5::1                           fe80::1%en0                             UGHS                  en0       
fd00:98::/64                            link#6                                  UC                    en0       
fd00:98::1c2a:5f1b:e4d3:a8b1            a4:83:e7:1c:22:9f                       UHL                   lo0       
fe80::%lo0/64                           fe80::1%lo0                             UcI                   lo0       
fe80::1%lo0                             link#1                                  UHLI                  lo0       
fe80::%en0/64                           link#6                                  UCI                   en0       
ff00::/8                                ::1                                     UmCI                  lo0       
ff01::%lo0/32                           ::1                                     UmCI                  lo0       
ff02::%lo0/32                           ::1                                     UmCI                  lo0       
`;

// FreeBSD 14 `netstat -rn`: own addresses as host routes on lo0, reject and blackhole routes.
const FREEBSD = `Routing tables

Internet:
Destination        Gateway            Flags     Netif Expire
default            10.0.2.2           UGS         em0
10.0.2.0/24        link#1             U           em0
10.0.2.15          link#2             UHS         lo0
10.66.0.0/16       10.0.2.3           UGS         em0
10.67.0.0/16       127.0.0.1          UGRS        lo0
10.68.0.0/16       10.0.2.3           UGBS        em0
10.69.0.0/16       10.0.2.3           GS          em0
127.0.0.1          link#2             UH          lo0

Internet6:
Destination                       Gateway                       Flags     Netif Expire
::/96                             ::1                           UGRS        lo0
::1                               link#2                        UHS         lo0
::ffff:0.0.0.0/96                 ::1                           UGRS        lo0
fd00:66::/64                      link#1                        U           em0
fd00:66::a00:27ff:fe8c:9d2f       link#2                        UHS         lo0
fe80::/10                         ::1                           UGRS        lo0
fe80::%em0/64                     link#1                        U           em0
fe80::a00:27ff:fe8c:9d2f%lo0      link#2                        UHS         lo0
ff02::/16                         ::1                           UGRS        lo0
`;

// OpenBSD 7 `netstat -rn`: Refs, Use, Mtu and Prio columns before Iface; l = local, b = broadcast.
const OPENBSD = `Routing tables

Internet:
Destination        Gateway            Flags   Refs      Use   Mtu  Prio Iface
default            10.0.2.2           UGS        4       50     -     8 em0  
224/4              127.0.0.1          URS        0        0 32768     8 lo0  
10.0.2/24          10.0.2.15          UCn        1        0     -     4 em0  
10.0.2.2           52:54:00:12:35:02  UHLch      1        4     -     3 em0  
10.0.2.15          08:00:27:8c:9d:2f  UHLl       0       20     -     1 em0  
10.0.2.255         10.0.2.15          UHb        0        0     -     1 em0  
10.77/16           10.0.2.3           UGS        0        0     -     8 em0  
127/8              127.0.0.1          UGRS       0        0 32768     8 lo0  
127.0.0.1          127.0.0.1          UHhl       1        2 32768     1 lo0  

Internet6:
Destination                        Gateway                        Flags   Refs      Use   Mtu  Prio Iface
::/104                             ::1                            UGRS       0        0 32768     8 lo0  
::1                                ::1                            UHhl      10       12 32768     1 lo0  
fd00:77::/64                       fd00:77::1                     UCn        1        0     -     4 em0  
fd00:77::1                         08:00:27:8c:9d:2f              UHLl       0        0     -     1 em0  

Encap:
Source             Port  Destination        Port  Proto SA(Address/Proto/Type/Direction)
10.5/16            0     10.6/16            0     0     192.0.2.1/esp/use/in
`;

describe('parseNetstatRoutes', () => {
  it('reads Linux net-tools: prefix from a contiguous Genmask, only up routes, no reject ones', () => {
    expect(parseNetstatRoutes(NET_TOOLS)).toEqual([
      v4('10.98.0.0', 24),
      v4('10.99.0.0', 24),
      v4('10.42.0.0', 15),
      v4('192.168.1.7', 32),
    ]);
  });

  it('reads the Linux net-tools IPv6 table without own addresses (lo), cache clones or reject routes', () => {
    expect(parseNetstatRoutes(NET_TOOLS_V6)).toEqual([v6('fd00:98::', 64), v6('2001:db8:3::', 48)]);
  });

  it('reads both Linux tables in one output, and busybox route -n', () => {
    expect(parseNetstatRoutes(`${NET_TOOLS}\n${NET_TOOLS_V6}`)).toEqual([
      ...parseNetstatRoutes(NET_TOOLS),
      ...parseNetstatRoutes(NET_TOOLS_V6),
    ]);
    expect(parseNetstatRoutes(BUSYBOX_ROUTE)).toEqual([v4('10.0.2.0', 24)]);
  });

  it('reads macOS: abbreviated destinations, zones dropped, no link-layer, cloned or broadcast entries', () => {
    expect(parseNetstatRoutes(MACOS)).toEqual([
      v4('10.0.0.0', 8),
      v4('172.20.0.0', 16),
      v4('192.168.1.0', 24),
      v4('192.168.1.1', 32),
      v4('192.168.1.23', 32),
      v6('2001:db8:5::1', 128),
      v6('fd00:98::', 64),
    ]);
  });

  it('reads FreeBSD: no reject, blackhole, down or loopback-interface routes', () => {
    expect(parseNetstatRoutes(FREEBSD)).toEqual([v4('10.0.2.0', 24), v4('10.66.0.0', 16), v6('fd00:66::', 64)]);
  });

  it('reads OpenBSD: the Iface column after Refs/Use/Mtu/Prio, no local or broadcast entries, no Encap section', () => {
    expect(parseNetstatRoutes(OPENBSD)).toEqual([v4('10.0.2.0', 24), v4('10.77.0.0', 16), v6('fd00:77::', 64)]);
  });

  it('expands abbreviated IPv4 destinations: missing octets are zero, 8 bits per octet given without /n', () => {
    const table = (destinations: string[]) =>
      `Internet:\nDestination Gateway Flags Netif Expire\n${destinations.map((d) => `${d} 192.0.2.1 UGS en0`).join('\n')}\n`;
    const good = ['10/8', '10.0.0/8', '11', '172.16/12', '192.168.1', '192.168.2.1/32', '192.168.3.1', '192.168.4.9/24'];
    const bad = ['10.1.2.3.4', '10..1', '300/8', '12/33', '10/', '10.1.2.3/'];
    expect(parseNetstatRoutes(table([...good, ...bad]))).toEqual([
      v4('10.0.0.0', 8),
      v4('11.0.0.0', 8),
      v4('172.16.0.0', 12),
      v4('192.168.1.0', 24),
      v4('192.168.2.1', 32),
      v4('192.168.3.1', 32),
      v4('192.168.4.0', 24),
    ]);
  });

  it('takes IPv6 hosts as /128, drops zones, and skips prefixes out of range', () => {
    const table = `Internet6:\nDestination Gateway Flags Netif Expire
2001:db8::1 fe80::1%en0 UGHS en0
fd00:1::%en0/48 link#6 UC en0
fd00:2::/129 link#6 UC en0
fd00:3::%en0/ link#6 UC en0
2001:DB8:0:0:0:0:0:7/64 link#6 UC en0
10.1.0.0/16 link#6 UC en0
`;
    expect(parseNetstatRoutes(table)).toEqual([v6('2001:db8::1', 128), v6('fd00:1::', 48), v6('2001:db8::', 64)]);
    const linux = 'Kernel IPv6 routing table\nDestination Next Hop Flag Met Ref Use If\n';
    expect(parseNetstatRoutes(`${linux}fd00:4::/129 :: U 256 1 0 s1\nfd00:5:: :: U 256 1 0 s1\nfd00:6::/64 :: U 256 1 0 s1\n`)).toEqual([
      v6('fd00:6::', 64),
    ]);
  });

  it('needs U and skips R, B, W and L (BSD) whatever else is set', () => {
    const table = (flags: string[]) =>
      `Internet:\nDestination Gateway Flags Netif Expire\n${flags.map((f, i) => `10.${i}/16 192.0.2.1 ${f} en0`).join('\n')}\n`;
    expect(parseNetstatRoutes(table(['UGS', 'GS', 'UGRS', 'UGBS', 'UGWS', 'UHLW', 'UGSc', 'u', 'U-G']))).toEqual([
      v4('10.0.0.0', 16),
      v4('10.6.0.0', 16),
    ]);
  });

  it('skips a non-contiguous or malformed Genmask and Linux prefixes out of range', () => {
    const header = 'Kernel IP routing table\nDestination Gateway Genmask Flags MSS Window irtt Iface\n';
    const rows = [
      '10.1.0.0 0.0.0.0 255.255.0.255 U 0 0 0 eth0',
      '10.2.0.0 0.0.0.0 255.255.0 U 0 0 0 eth0',
      '10.3.0.0 0.0.0.0 fd00:: U 0 0 0 eth0',
      '10.4.0.0/16 0.0.0.0 255.255.0.0 U 0 0 0 eth0',
      '10.5.9.9 0.0.0.0 255.255.0.0 U 0 0 0 eth0',
    ];
    expect(parseNetstatRoutes(header + rows.join('\n'))).toEqual([v4('10.5.0.0', 16)]);
  });

  it('reads no rows before a header or in an unknown section', () => {
    expect(parseNetstatRoutes('10.0.2.0 0.0.0.0 255.255.255.0 U 0 0 0 eth0\n10/8 192.0.2.1 UGS en0\n')).toEqual([]);
    const header = 'Destination Gateway Flags Netif\n';
    const sections = `AppleTalk:\n${header}10/8 192.0.2.1 UGS en0\nInternet:\n${header}11/8 192.0.2.1 UGS en0\n`;
    expect(parseNetstatRoutes(sections)).toEqual([v4('11.0.0.0', 8)]);
  });

  it('lists each network once, in input order', () => {
    const text = 'Internet:\nDestination Gateway Flags Netif\n10/8 a UGS en0\n10.0.0/8 b UGS en1\n10.9.9.9/8 c UGS en2\n11/8 a UGS en0\n';
    expect(parseNetstatRoutes(text)).toEqual([v4('10.0.0.0', 8), v4('11.0.0.0', 8)]);
  });

  it('returns nothing for empty input and garbage', () => {
    expect(parseNetstatRoutes('')).toEqual([]);
    expect(parseNetstatRoutes('sh: netstat: not found\n')).toEqual([]);
    const garbage = 'Destination\nDestination Flags\nU U U U\n: U\nInternet6:\nDestination Gateway Flags Netif\n\0 \x01 U lo\n:: :: U en0\n';
    expect(parseNetstatRoutes(garbage)).toEqual([]);
  });

  it('reads a huge line by its head only', () => {
    const tail = 'U'.repeat(5_000_000);
    const header = 'Internet:\nDestination Gateway Flags Netif Expire\n';
    const text = `${header}10/8 192.0.2.1 UGS en0 ${tail}\n11/8 192.0.2.1 ${tail}\n${tail}\n12/8 192.0.2.1 UGS en0\n`;
    expect(parseNetstatRoutes(text)).toEqual([v4('10.0.0.0', 8), v4('12.0.0.0', 8)]);
  });
});

describe('route text parsers on hostile input', () => {
  // Words of real route tables, so that some generated lines parse.
  const tokens = fc.constantFrom(
    ...['default', 'unicast', 'nexthop', 'dev', 'eth0', 'lo0', 'U', 'UGS', 'UHLW', 'Destination', 'Gateway', 'Genmask', 'Flags'],
    ...['Netif', 'Next', 'Hop', 'Internet:', 'Internet6:', '10/8', '10.1.2.3/24', '255.255.0.0', 'fd00::/64', 'fe80::%lo0/64'],
    ...['2001:db8::1', '/', '%', ':', '\t', '\r', '\n'],
  );
  const line = fc.array(fc.oneof(tokens, fc.string({ maxLength: 12 })), { maxLength: 10 }).map((parts) => parts.join(' '));
  const text = fc.array(line, { maxLength: 30 }).map((lines) => lines.join('\n'));

  it('never throws, and returns canonical, masked, worthwhile, distinct networks', () => {
    let found = 0;
    fc.assert(
      fc.property(text, (input) => {
        for (const routes of [parseIpRoute(input), parseNetstatRoutes(input)]) {
          found += routes.length;
          const keys = routes.map((r) => `${r.family} ${r.address}/${r.prefix}`);
          expect(new Set(keys).size).toBe(keys.length);
          for (const route of routes) {
            expect(isCanonicalIp(route.address, route.family)).toBe(true);
            const bytes = parseIp(route.address)?.bytes ?? new Uint8Array();
            expect(route.prefix).toBeLessThanOrEqual(bytes.length * 8);
            expect(hasHostBits(bytes, route.prefix)).toBe(false);
            expect(worthTunneling(route)).toBe(true);
          }
        }
      }),
      { numRuns: 500 },
    );
    expect(found).toBeGreaterThan(0);
  });
});
