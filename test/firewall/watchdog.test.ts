/**
 * The helper's watchdog (issue 17, finding 1), in-process against a fake iptables and a hosts
 * file of the test's own: it does nothing when the helper said DONE, and removes the instance's
 * chain and hosts block when its input ends without it (the helper died). SIGKILL of the real
 * helper in a namespace, with the real watchdog: helper.netns.test.ts.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { afterAll, describe, expect, it } from 'vitest';
import { runFirewallHelper } from '../../src/firewall/helper.js';
import { hostsBlockName, withBlock } from '../../src/firewall/hosts-file.js';
import { installNat } from '../../src/firewall/nat.js';
import type { FirewallSetup } from '../../src/firewall/types.js';
import { parseOrders, runWatchdog, type StartWatchdog, type WatchdogOrders } from '../../src/firewall/watchdog.js';
import { FakeIptables } from './support/fake-iptables.js';
import { outputLines } from './support/output-lines.js';

const SETUP: FirewallSetup = {
  version: 1,
  method: 'nat',
  port: 12300,
  routerMode: false,
  rules: [
    { family: 4, address: '10.0.0.0', prefix: 8, portLow: 0, portHigh: 0, exclude: false },
    { family: 6, address: 'fd00::', prefix: 8, portLow: 0, portHigh: 0, exclude: false },
  ],
};
const dir = mkdtempSync(join(tmpdir(), 'rxs-watchdog-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const ORIGINAL = '127.0.0.1\tlocalhost\n';

async function installed(): Promise<{ fake: FakeIptables; hostsPath: string }> {
  const fake = new FakeIptables();
  await installNat(SETUP, fake.run);
  fake.calls.length = 0;
  const hostsPath = join(dir, `hosts-${Math.random().toString(36).slice(2)}`);
  writeFileSync(hostsPath, withBlock(ORIGINAL, hostsBlockName(12300), [{ address: '10.0.0.3', name: 'target' }]));
  return { fake, hostsPath };
}

const orders = (hostsPath: string | null): WatchdogOrders => ({ port: 12300, method: 'nat', hostsPath, dns: false, lockDirs: null, killSwitch: null });

describe('runWatchdog', () => {
  it('DONE before the end of its input: touches nothing, says nothing', async () => {
    const { fake, hostsPath } = await installed();
    const input = new PassThrough();
    const said: string[] = [];
    const done = runWatchdog(input, { run: fake.run, say: (m) => said.push(m) });
    input.write(`${JSON.stringify(orders(hostsPath))}\n`);
    input.end('DONE\n');
    expect(await done).toBe(0);
    expect(fake.calls).toEqual([]);
    expect(said).toEqual([]);
  });

  it('input ends without DONE (the helper died): removes the chain in both families and the hosts block, and says so', async () => {
    const { fake, hostsPath } = await installed();
    const input = new PassThrough();
    const said: string[] = [];
    const done = runWatchdog(input, { run: fake.run, say: (m) => said.push(m) });
    // The orders may arrive in pieces.
    const line = `${JSON.stringify(orders(hostsPath))}\n`;
    input.write(line.slice(0, 7));
    input.end(line.slice(7));
    expect(await done).toBe(0);
    for (const family of [4, 6] as const) {
      expect(fake.tables[family].chains.has('rxshuttle-12300')).toBe(false);
      expect(fake.tables[family].chains.get('OUTPUT')).toEqual([]);
    }
    expect(readFileSync(hostsPath, 'utf8')).toBe(ORIGINAL);
    expect(said).toEqual(['the helper of port 12300 ended without removing its rules; its watchdog removed them']);
  });

  it('nothing there (a helper refused its setup, or already cleaned): quiet', async () => {
    const fake = new FakeIptables();
    const input = new PassThrough();
    const said: string[] = [];
    const done = runWatchdog(input, { run: fake.run, say: (m) => said.push(m) });
    input.end(`${JSON.stringify(orders(null))}\n`);
    expect(await done).toBe(0);
    expect(said).toEqual([]);
  });

  it('later orders replace the earlier (a RULES line moved the kill switch): the last that parses counts', async () => {
    const fake = new FakeIptables();
    const input = new PassThrough();
    const done = runWatchdog(input, { run: fake.run, say: () => {} });
    const killSwitch = (address: string) => ({ setup: { ...SETUP, killSwitch: true, rules: [{ family: 4 as const, address, prefix: 32, portLow: 0, portHigh: 0, exclude: false }] } });
    input.write(`${JSON.stringify({ ...orders(null), killSwitch: killSwitch('10.1.1.1') })}\n`);
    input.write(`${JSON.stringify({ ...orders(null), killSwitch: killSwitch('10.2.2.2') })}\n`);
    // Not ours (another port), and malformed: both ignored.
    input.write(`${JSON.stringify({ ...orders(null), port: 999, killSwitch: null })}\n`);
    input.write('{"port":\n');
    input.end();
    expect(await done).toBe(0);
    expect(fake.filterTables[4].chains.get('rxshuttle-ks-12300')?.filter((r) => r.includes('REJECT'))).toEqual(['-d 10.2.2.2/32 -p tcp -j REJECT --reject-with tcp-reset']);
  });

  it('no orders, or orders that are not exactly ours: does nothing', async () => {
    const { fake } = await installed();
    for (const text of ['', '{"port":12300}\n', 'x'.repeat(10_000), `${JSON.stringify({ ...orders(null), extra: 1 })}\n`]) {
      const input = new PassThrough();
      const done = runWatchdog(input, { run: fake.run, say: () => {} });
      input.end(text);
      expect(await done).toBe(0);
    }
    expect(fake.calls).toEqual([]);
  });

  it('parseOrders: exact keys, a port, absolute paths', () => {
    expect(parseOrders(JSON.stringify({ port: 1, method: 'nft', hostsPath: '/etc/hosts', dns: true, lockDirs: ['/run/rxshuttle'], killSwitch: null }))).toEqual({
      port: 1,
      method: 'nft',
      hostsPath: '/etc/hosts',
      dns: true,
      lockDirs: ['/run/rxshuttle'],
      killSwitch: null,
    });
    expect(parseOrders(JSON.stringify({ port: 2, method: 'tproxy', hostsPath: null, dns: false, lockDirs: null, killSwitch: null })).method).toBe('tproxy');
    for (const bad of [
      { port: 0, method: 'nat', hostsPath: null, dns: false, lockDirs: null, killSwitch: null },
      { port: 1, method: 'pf', hostsPath: null, dns: false, lockDirs: null, killSwitch: null },
      { port: 1, hostsPath: null, dns: false, lockDirs: null, killSwitch: null },
      { port: 1.5, hostsPath: null, dns: false, lockDirs: null, killSwitch: null },
      { port: 1, hostsPath: 'etc/hosts', dns: false, lockDirs: null, killSwitch: null },
      { port: 1, hostsPath: null, dns: 'yes', lockDirs: null, killSwitch: null },
      { port: 1, hostsPath: null, dns: false, lockDirs: ['run'], killSwitch: null },
      { port: 1, hostsPath: null, dns: false },
    ]) {
      expect(() => parseOrders(JSON.stringify(bad)), JSON.stringify(bad)).toThrow(/malformed watchdog orders/);
    }
  });
});

describe('runFirewallHelper and its watchdog', () => {
  function start(startWatchdog: StartWatchdog) {
    const fake = new FakeIptables();
    const input = new PassThrough();
    const output = new PassThrough();
    const { nextLine } = outputLines(output);
    const done = runFirewallHelper(input, output, { run: fake.run, handleSignals: false, warn: () => {}, notice: () => {}, startWatchdog });
    return { fake, input, nextLine, done };
  }

  it('starts it with the orders before installing anything, and releases it only once everything is removed', async () => {
    const events: string[] = [];
    let fake: FakeIptables | undefined;
    const h = start(async (o) => {
      events.push(`start ${JSON.stringify(o)} (rules installed: ${fake?.calls.some((c) => c.file.endsWith('-restore')) ?? false})`);
      return {
        release: () => events.push(`release (chain left: ${fake?.tables[4].chains.has('rxshuttle-12300')})`),
        updateKillSwitch: () => events.push('update'),
      };
    });
    fake = h.fake;
    expect(await h.nextLine()).toBe('HELLO rxshuttle-fw 1');
    h.input.write(`${JSON.stringify({ ...SETUP, dnsPort: 12301, dnsServers: ['10.0.0.53'] })}\n`);
    expect(await h.nextLine()).toBe('READY');
    h.input.end('QUIT\n');
    expect(await h.done).toBe(0);
    expect(events).toEqual([
      'start {"port":12300,"method":"nat","hostsPath":null,"dns":true,"lockDirs":null,"killSwitch":null} (rules installed: false)',
      'release (chain left: false)',
    ]);
  });

  it('not released when the removal failed: it tries again once the helper has exited', async () => {
    const released: boolean[] = [];
    const h = start(async () => ({ release: () => released.push(true), updateKillSwitch: () => undefined }));
    expect(await h.nextLine()).toBe('HELLO rxshuttle-fw 1');
    h.input.write(`${JSON.stringify(SETUP)}\n`);
    expect(await h.nextLine()).toBe('READY');
    h.fake.failRestore = () => 'the table is busy';
    h.input.end('QUIT\n');
    expect(await h.done).toBe(1);
    expect(released).toEqual([]);
  });

  it('--kill-switch: each RULES line that worked sends the watchdog the setup as it now stands', async () => {
    const updates: unknown[] = [];
    const h = start(async () => ({ release: () => undefined, updateKillSwitch: (k) => updates.push(k) }));
    expect(await h.nextLine()).toBe('HELLO rxshuttle-fw 1');
    h.input.write(`${JSON.stringify({ ...SETUP, killSwitch: true })}\n`);
    expect(await h.nextLine()).toBe('READY');
    const extra = { family: 4, address: '192.168.9.9', prefix: 32, portLow: 0, portHigh: 0, exclude: false };
    h.input.write(`RULES ${JSON.stringify([extra])}\n`);
    expect(await h.nextLine()).toBe('OK');
    h.input.write('RULES [1]\n');
    expect(await h.nextLine()).toMatch(/^ERROR/);
    expect(updates).toEqual([{ setup: { ...SETUP, killSwitch: true, rules: [...SETUP.rules, extra] } }]);
    h.input.end('QUIT\n');
    expect(await h.done).toBe(0);
  });

  it('a watchdog that cannot start: ERROR, nothing installed', async () => {
    const h = start(async () => {
      throw new Error('cannot start the firewall watchdog: EAGAIN');
    });
    expect(await h.nextLine()).toBe('HELLO rxshuttle-fw 1');
    h.input.write(`${JSON.stringify(SETUP)}\n`);
    expect(await h.nextLine()).toBe('ERROR cannot start the firewall watchdog: EAGAIN');
    expect(await h.done).toBe(1);
    expect(h.fake.calls).toEqual([]);
  });
});
