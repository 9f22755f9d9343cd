import { describe, expect, it } from 'vitest';
import { parseProbe } from '../../../src/transport/remote-probe.js';
import { parseArpAn, parseIpAddr, remoteHostwatchSources, remoteRoutes } from '../../../src/tunnel/stock/discovery.js';

const PROC_ROUTE = [
  'Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT',
  's0\t00000000\t0263000A\t0003\t0\t0\t0\t00000000\t0\t0\t0',
  's1\t0000620A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0',
].join('\n');

const probe = (sections: Record<string, string>) => parseProbe(new Map(Object.entries(sections)), 'node');

describe('remoteRoutes (-N in stock-sshd mode)', () => {
  it('takes /proc/net/route first', () => {
    expect(remoteRoutes(probe({ route: PROC_ROUTE, 'ip-route': '10.1.0.0/16 dev x' }))).toEqual({
      routes: [{ family: 4, address: '10.98.0.0', prefix: 24 }],
      from: '/proc/net/route',
    });
  });

  it('ip route where /proc has none, then netstat -rn; duplicates once', () => {
    expect(remoteRoutes(probe({ route: '', 'ip-route': '10.1.0.0/16 dev x\n10.1.0.0/16 dev y\ndefault via 10.1.0.1 dev x\n' }))).toEqual({
      routes: [{ family: 4, address: '10.1.0.0', prefix: 16 }],
      from: 'ip route',
    });
    const netstat = 'Routing tables\n\nInternet:\nDestination        Gateway            Flags        Netif Expire\n10.2/16            link#4             UCS            en0\n';
    expect(remoteRoutes(probe({ netstat }))).toEqual({ routes: [{ family: 4, address: '10.2.0.0', prefix: 16 }], from: 'netstat -rn' });
  });

  it('none of them: no routes, and it says so', () => {
    expect(remoteRoutes(probe({ route: '', 'ip-route': '\n', netstat: '' }))).toEqual({ routes: [], from: null });
  });
});

describe('the parsers of the hosts scan', () => {
  it('ip -o addr show', () => {
    const text = [
      '1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever',
      '2: s0    inet 10.99.0.2/24 scope global s0\\       valid_lft forever preferred_lft forever',
      '2: s0    inet6 fd00:99::2/64 scope global \\       valid_lft forever preferred_lft forever',
    ].join('\n');
    expect(parseIpAddr(text)).toEqual(['127.0.0.1', '10.99.0.2', 'fd00:99::2']);
  });

  it('BSD arp -an: complete entries only', () => {
    const text = '? (10.0.0.1) at 0:1:2:3:4:5 on en0 ifscope [ethernet]\n? (10.0.0.9) at (incomplete) on en0 ifscope [ethernet]\n';
    expect(parseArpAn(text)).toEqual(['10.0.0.1']);
  });
});

describe('remoteHostwatchSources', () => {
  it('one exec per scan (refresh); the rest answers from its output; says once what is missing', async () => {
    const commands: string[] = [];
    const notices: string[] = [];
    let output = '';
    const sources = remoteHostwatchSources(
      {
        probe: probe({ hostname: 'fallback\n' }),
        exec: async (command) => {
          commands.push(command);
          return { stdout: output, code: 0, cut: false };
        },
      },
      { reverse: async () => [], lookup: async () => [] },
      (message) => notices.push(message),
    );
    // The marker is in the command: build the output the remote would print.
    const marker = () => /(@@rxs-[0-9a-f]+) hosts/.exec(commands[0] ?? '')?.[1] ?? '';
    await sources.refresh?.();
    expect(commands).toHaveLength(1);
    expect(notices).toEqual(['no /etc/hosts entries to read', 'no neighbour table to read (no ip neigh, /proc/net/arp or arp)']);
    expect(sources.hostname()).toBe('fallback');

    const m = marker();
    output = [
      `${m} hosts`,
      '10.98.0.4 echo4-srv',
      `${m} hostname`,
      'srvhost',
      `${m} addr`,
      '2: s0    inet 10.99.0.2/24 scope global s0',
      `${m} neigh`,
      '[{"dst":"10.99.0.1","state":["REACHABLE"]}]',
      `${m} arp`,
      'IP address       HW type     Flags       HW address            Mask     Device',
      '10.98.0.3        0x1         0x2         aa:bb:cc:dd:ee:ff     *        s1',
    ].join('\n');
    await sources.refresh?.();
    expect(commands).toHaveLength(2);
    expect(await sources.readFile('/etc/hosts')).toBe('10.98.0.4 echo4-srv');
    expect(await sources.readFile('/etc/passwd')).toBeNull();
    expect(sources.hostname()).toBe('srvhost');
    expect(sources.ownAddresses()).toEqual(['10.99.0.2']);
    expect(await sources.neighbours()).toEqual(['10.99.0.1', '10.98.0.3']);
    expect(notices).toHaveLength(2);
  });
});
