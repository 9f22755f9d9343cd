/**
 * The programs' side of redirected connections when the client died (issue 14): found in the
 * conntrack table, ended with `ss -K`. The real thing: test/e2e/faults.test.ts ("never hang").
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { endRedirected, redirectedTo, ssKillArgs } from '../../src/firewall/redirected.js';

/** A connection from 10.99.0.1:40000 to 10.98.0.3:80 redirected to 127.0.0.1:12300, as /proc/net/nf_conntrack shows it. */
export const CONNTRACK_LINE =
  'ipv4     2 tcp      6 431999 ESTABLISHED src=10.99.0.1 dst=10.98.0.3 sport=40000 dport=80 src=127.0.0.1 dst=10.99.0.1 sport=12300 dport=40000 [ASSURED] mark=0 zone=0 use=2';
const V6 =
  'ipv6     10 tcp      6 299 ESTABLISHED src=fd00:99::1 dst=fd00:98::3 sport=50000 dport=443 packets=4 bytes=300 src=::1 dst=fd00:99::1 sport=12300 dport=50000 packets=3 bytes=200 [ASSURED] mark=0 zone=0 use=2';

const dir = mkdtempSync(join(tmpdir(), 'rxs-redirected-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('redirectedTo', () => {
  it("gives the program's end of a TCP connection redirected to the port, IPv4 and IPv6", () => {
    expect(redirectedTo(CONNTRACK_LINE, 12300)).toEqual({ src: '10.99.0.1', sport: 40000, dst: '10.98.0.3', dport: 80 });
    expect(redirectedTo(V6, 12300)).toEqual({ src: 'fd00:99::1', sport: 50000, dst: 'fd00:98::3', dport: 443 });
  });

  it('leaves everything else: another port, not translated (a direct connection to the port), UDP, garbage', () => {
    expect(redirectedTo(CONNTRACK_LINE, 12301)).toBeNull();
    const direct = 'ipv4 2 tcp 6 431999 ESTABLISHED src=127.0.0.1 dst=127.0.0.1 sport=40000 dport=12300 src=127.0.0.1 dst=127.0.0.1 sport=12300 dport=40000 [ASSURED] use=1';
    expect(redirectedTo(direct, 12300)).toBeNull();
    expect(redirectedTo(CONNTRACK_LINE.replace(' tcp      6', ' udp      17'), 12300)).toBeNull();
    for (const bad of ['', 'x', 'ipv4 2 tcp 6 1 ESTABLISHED src=10.0.0.1', CONNTRACK_LINE.replace('src=10.99.0.1', 'src=-K'), CONNTRACK_LINE.replace('sport=40000', 'sport=0')]) {
      expect(redirectedTo(bad, 12300), bad).toBeNull();
    }
  });
});

describe('ssKillArgs', () => {
  it('one filter expression for a batch, IPv6 addresses in brackets', () => {
    expect(ssKillArgs([redirectedTo(CONNTRACK_LINE, 12300)!, redirectedTo(V6, 12300)!])).toEqual([
      '-K', '-t', '-n',
      '(', 'src', '10.99.0.1', 'and', 'sport', '=', ':40000', 'and', 'dst', '10.98.0.3', 'and', 'dport', '=', ':80', ')',
      'or',
      '(', 'src', '[fd00:99::1]', 'and', 'sport', '=', ':50000', 'and', 'dst', '[fd00:98::3]', 'and', 'dport', '=', ':443', ')',
    ]);
  });
});

describe('endRedirected', () => {
  it('runs ss for the connections of its port only, in batches; a missing table or a failing ss is no error', async () => {
    const path = join(dir, 'nf_conntrack');
    const lines = [CONNTRACK_LINE, V6, CONNTRACK_LINE.replace('sport=12300', 'sport=9999')];
    for (let i = 0; i < 100; i++) lines.push(CONNTRACK_LINE.replace('sport=40000', `sport=${41000 + i}`).replace('dport=40000', `dport=${41000 + i}`));
    writeFileSync(path, `${lines.join('\n')}\n`);
    const calls: string[][] = [];
    const found = await endRedirected(async (name, args) => {
      calls.push([name, ...args]);
      throw new Error('ss: no kernel support');
    }, 12300, path);
    expect(found).toBe(102);
    expect(calls.map((c) => c[0])).toEqual(['ss', 'ss']);
    expect(calls.flat().filter((w) => w === '(')).toHaveLength(102);
    expect(await endRedirected(async () => '', 12300, join(dir, 'missing'))).toBe(0);
  });
});
