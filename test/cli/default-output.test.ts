// What rxshuttle prints without -v: a line once the tunnel is up (and again after a reconnect),
// a line when a signal stops it; the -v lines stay as they were.
import { describe, expect, it } from 'vitest';
import { readyLine, render, stopLine } from '../../src/cli/render.js';
import type { SubnetRule } from '../../src/firewall/types.js';
import type { TunnelEvent } from '../../src/shared/events.js';
import { parseListen, parseSubnet } from '../../src/shared/options.js';

type Ready = Extract<TunnelEvent, { kind: 'firewall-ready' }>;

const ready = (rules: SubnetRule[], extra: Partial<Ready> = {}): Ready => ({ kind: 'firewall-ready', method: 'nat', port: 12300, rules, ...extra });
const options = (listen: string, subnets: SubnetRule[]) => ({ listen: parseListen(listen), subnets });

describe('the line when the tunnel is up', () => {
  const one = [parseSubnet('10.98.0.0/24'), parseSubnet('10.98.0.4/32', true), parseSubnet('192.0.2.1/32', true)];

  it('names the server, what is tunneled (excludes not counted) and where it listens', () => {
    expect(readyLine(ready(one), 'bastion', options('0', one))).toBe('Connected to bastion; tunneling 1 subnet on 127.0.0.1:12300.');
    const two = [...one, parseSubnet('10.1.0.0/16')];
    expect(readyLine(ready(two, { port: 12301 }), 'the local server', options('0', two))).toBe(
      'Connected to the local server; tunneling 2 subnets on 127.0.0.1:12301.',
    );
  });

  it('says DNS when queries are captured; -N routes count as subnets', () => {
    const dns = { port: 12302, nameservers: ['10.0.0.53'] };
    expect(readyLine(ready([], { dns }), 'bastion', options('0', []))).toBe('Connected to bastion; tunneling 0 subnets and DNS on 127.0.0.1:12300.');
    const routes = [parseSubnet('10.1.0.0/16'), parseSubnet('10.2.0.0/16'), parseSubnet('10.3.0.0/16')];
    expect(readyLine(ready(routes), 'bastion', options('0', []))).toMatch(/tunneling 3 subnets on/);
  });

  it('every listen address: those of -l, and ::1 when IPv6 subnets are tunneled', () => {
    const v6 = [parseSubnet('fd00:98::/64')];
    expect(readyLine(ready(v6), 'bastion', options('0', v6))).toBe('Connected to bastion; tunneling 1 subnet on 127.0.0.1:12300, [::1]:12300.');
    expect(readyLine(ready(one), 'bastion', options('localhost,[::1]', one))).toMatch(/ on 127\.0\.0\.1:12300, \[::1\]:12300\.$/);
    expect(readyLine(ready(one), 'bastion', options('0.0.0.0:0', one))).toMatch(/ on 0\.0\.0\.0:12300\.$/);
  });

  it('is printable whatever the host name holds', () => {
    expect(readyLine(ready(one), 'evil\nrxshuttle: forged', options('0', one))).not.toContain('\n');
  });

  it('the -v lines are unchanged: "Connected to" and "Firewall ready" show from -v only', () => {
    expect(render({ kind: 'connected', remote: 'bastion', window: 0 }, 0)).toBeNull();
    expect(render({ kind: 'connected', remote: 'bastion', window: 0 }, 1)).toBe('Connected to bastion.');
    expect(render(ready(one), 0)).toBeNull();
    expect(render(ready(one), 1)).toBe('Firewall ready: chain rxshuttle-12300, 1 subnet(s) tunneled, 2 excluded.');
  });
});

describe('the line when a signal stops it', () => {
  it('"Stopping." by default; -v names the signal as before', () => {
    expect(stopLine('SIGINT', 0)).toBe('Stopping.');
    expect(stopLine('SIGTERM', 0)).toBe('Stopping.');
    expect(stopLine('SIGTERM', 1)).toBe('SIGTERM: shutting down.');
    expect(stopLine('SIGHUP', 2)).toBe('SIGHUP: shutting down.');
  });
});
