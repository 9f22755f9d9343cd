/**
 * --kill-switch (issue 14): the rules that block the tunneled subnets when the client dies
 * without an orderly end, in-process against a fake iptables. Against the real iptables in a
 * namespace: helper.netns.test.ts.
 */
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { runFirewallHelper } from '../../src/firewall/helper.js';
import { installKillSwitch, killSwitchScript, removeKillSwitches } from '../../src/firewall/kill-switch.js';
import type { FirewallSetup } from '../../src/firewall/types.js';
import { parseOrders } from '../../src/firewall/watchdog.js';
import { FakeIptables } from './support/fake-iptables.js';
import { outputLines } from './support/output-lines.js';

const SETUP: FirewallSetup = {
  version: 1,
  method: 'nat',
  port: 12300,
  routerMode: false,
  rules: [
    { family: 4, address: '10.0.0.0', prefix: 8, portLow: 0, portHigh: 0, exclude: false },
    { family: 4, address: '10.1.0.0', prefix: 16, portLow: 0, portHigh: 0, exclude: true },
    { family: 6, address: 'fd00::', prefix: 8, portLow: 443, portHigh: 443, exclude: false },
  ],
  dnsPort: 12301,
  dnsServers: ['10.0.0.53'],
  killSwitch: true,
};

describe('killSwitchScript', () => {
  it('rejects the included subnets and the captured nameservers, after the excludes and local addresses', () => {
    expect(killSwitchScript(SETUP, 4)).toBe(
      [
        '*filter',
        ':rxshuttle-ks-12300 - [0:0]',
        '-A rxshuttle-ks-12300 -d 10.0.0.53/32 -p udp --dport 53 -j REJECT',
        '-A rxshuttle-ks-12300 -d 10.0.0.53/32 -p tcp --dport 53 -j REJECT --reject-with tcp-reset',
        '-A rxshuttle-ks-12300 -m addrtype --dst-type LOCAL -j RETURN',
        '-A rxshuttle-ks-12300 -d 10.1.0.0/16 -p tcp -j RETURN',
        '-A rxshuttle-ks-12300 -d 10.0.0.0/8 -p tcp -j REJECT --reject-with tcp-reset',
        '-I OUTPUT 1 -j rxshuttle-ks-12300',
        'COMMIT',
        '',
      ].join('\n'),
    );
    expect(killSwitchScript(SETUP, 6)).toContain('-A rxshuttle-ks-12300 -d fd00::/8 -p tcp --dport 443 -j REJECT --reject-with tcp-reset');
  });

  it("restricted mode: only the user's traffic; router mode: forwarded traffic too; nothing of a family without includes", () => {
    expect(killSwitchScript(SETUP, 4, 1000)).toContain('-I OUTPUT 1 -m owner --uid-owner 1000 -j rxshuttle-ks-12300');
    expect(killSwitchScript({ ...SETUP, routerMode: true }, 4)).toContain('-I FORWARD 1 -j rxshuttle-ks-12300');
    expect(killSwitchScript({ ...SETUP, rules: SETUP.rules.slice(0, 2), dnsServers: ['10.0.0.53'] }, 6)).toBeNull();
  });
});

describe('installKillSwitch and removeKillSwitches', () => {
  it('install replaces an older one of the port; remove by port or all', async () => {
    const fake = new FakeIptables();
    await installKillSwitch(SETUP, fake.run);
    await installKillSwitch(SETUP, fake.run);
    await installKillSwitch({ ...SETUP, port: 12400, dnsPort: 12401 }, fake.run);
    expect(fake.filterTables[4].chains.get('OUTPUT')).toEqual(['-j rxshuttle-ks-12400', '-j rxshuttle-ks-12300']);
    expect(await removeKillSwitches(fake.run, 12300)).toBe(true);
    expect(fake.filterTables[4].chains.has('rxshuttle-ks-12300')).toBe(false);
    expect(fake.filterTables[4].chains.has('rxshuttle-ks-12400')).toBe(true);
    expect(await removeKillSwitches(fake.run, null)).toBe(true);
    expect(fake.filterTables[4].chains.get('OUTPUT')).toEqual([]);
    expect(fake.filterTables[6].chains.get('OUTPUT')).toEqual([]);
    expect(await removeKillSwitches(fake.run, null)).toBe(false);
  });
});

describe('the helper with --kill-switch', () => {
  async function run(end: string) {
    const fake = new FakeIptables();
    const input = new PassThrough();
    const output = new PassThrough();
    const { nextLine } = outputLines(output);
    const notices: string[] = [];
    const done = runFirewallHelper(input, output, { run: fake.run, handleSignals: false, warn: () => {}, notice: (m) => notices.push(m), conntrackPath: '/nonexistent' });
    expect(await nextLine()).toBe('HELLO rxshuttle-fw 1');
    input.write(`${JSON.stringify(SETUP)}\n`);
    expect(await nextLine()).toBe('READY');
    expect(fake.filterTables[4].chains.has('rxshuttle-ks-12300')).toBe(false);
    input.end(end);
    expect(await done).toBe(0);
    return { fake, notices };
  }

  it('the client dies (input ends without QUIT): the redirect goes, the subnets stay blocked, and it says how to lift it', async () => {
    const { fake, notices } = await run('');
    expect(fake.tables[4].chains.has('rxshuttle-12300')).toBe(false);
    expect(fake.filterTables[4].chains.get('OUTPUT')).toEqual(['-j rxshuttle-ks-12300']);
    expect(fake.filterTables[6].chains.get('OUTPUT')).toEqual(['-j rxshuttle-ks-12300']);
    expect(notices.join('\n')).toMatch(/--kill-switch: the tunneled subnets of port 12300 stay blocked; rxshuttle --flush \(or the next start\) lifts it/);
    // The next instance on the port lifts it.
    const next = await run('QUIT\n').catch((e: unknown) => e);
    expect(next).not.toBeInstanceOf(Error);
  });

  it('blocks the addresses of host names too (the rules of the last RULES line)', async () => {
    const fake = new FakeIptables();
    const input = new PassThrough();
    const output = new PassThrough();
    const { nextLine } = outputLines(output);
    const done = runFirewallHelper(input, output, { run: fake.run, handleSignals: false, warn: () => {}, notice: () => {}, conntrackPath: '/nonexistent' });
    expect(await nextLine()).toBe('HELLO rxshuttle-fw 1');
    input.write(`${JSON.stringify(SETUP)}\n`);
    expect(await nextLine()).toBe('READY');
    input.write(`RULES ${JSON.stringify([{ family: 4, address: '192.168.9.9', prefix: 32, portLow: 443, portHigh: 443, exclude: false }])}\n`);
    expect(await nextLine()).toBe('OK');
    input.end();
    expect(await done).toBe(0);
    expect(fake.filterTables[4].chains.get('rxshuttle-ks-12300')).toContain('-d 192.168.9.9/32 -p tcp --dport 443 -j REJECT --reject-with tcp-reset');
  });

  it('an orderly end (QUIT) leaves no kill switch', async () => {
    const { fake } = await run('QUIT\n');
    expect(fake.filterTables[4].chains.get('OUTPUT')).toEqual([]);
    expect(fake.tables[4].chains.get('OUTPUT')).toEqual([]);
  });

  it('the next instance on the port removes a kill switch left behind', async () => {
    const fake = new FakeIptables();
    await installKillSwitch(SETUP, fake.run);
    const input = new PassThrough();
    const output = new PassThrough();
    const { nextLine } = outputLines(output);
    const done = runFirewallHelper(input, output, { run: fake.run, handleSignals: false, warn: () => {}, notice: () => {} });
    expect(await nextLine()).toBe('HELLO rxshuttle-fw 1');
    input.write(`${JSON.stringify({ ...SETUP, killSwitch: false })}\n`);
    expect(await nextLine()).toBe('READY');
    expect(fake.filterTables[4].chains.has('rxshuttle-ks-12300')).toBe(false);
    input.end('QUIT\n');
    expect(await done).toBe(0);
  });

  it('the watchdog gets the setup to block with, checked as strictly as the helper checks its input', () => {
    const orders = { port: 12300, method: 'nat', hostsPath: null, dns: true, lockDirs: null, killSwitch: { setup: SETUP, ownerUid: 1000 } };
    expect(parseOrders(JSON.stringify(orders)).killSwitch).toEqual({ setup: SETUP, ownerUid: 1000 });
    for (const bad of [
      { ...orders, killSwitch: { setup: { ...SETUP, port: 22 } } },
      { ...orders, killSwitch: { setup: { ...SETUP, rules: [{ family: 4, address: '10.0.0.0; echo', prefix: 8, portLow: 0, portHigh: 0, exclude: false }] } } },
      { ...orders, killSwitch: { setup: SETUP, ownerUid: 0 } },
      { ...orders, killSwitch: { setup: SETUP, extra: 1 } },
    ]) {
      expect(() => parseOrders(JSON.stringify(bad))).toThrow();
    }
  });
});
