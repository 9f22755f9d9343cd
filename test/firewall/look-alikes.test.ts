/**
 * Issue 16, finding 2: every cleanup removes only what is the instance's own, by exact name: the
 * chains `rxshuttle-P`, `rxshuttle-tproxy-P`, `rxshuttle-mark-P`, `rxshuttle-ks-P`, the rules whose
 * target (`-j`/`-g`, a whole word) is one of them, the nft table `inet rxshuttle-P`, route table
 * 0x72780000 + P. Never another tool's rule that only mentions a name (in a comment, even one
 * reading `-j rxshuttle-12300`), a chain or table whose name merely starts like ours
 * (`rxshuttle-123000` for port 12300), or another port's. Each path is run against tables full of
 * such look-alikes, which must come out byte for byte as they went in: the helper's start (the
 * leftovers of the port) and end, for each method; the client dying with --kill-switch and the
 * next start lifting it; the watchdog's removal. The same against the real kernel, for the nat
 * table's comments: helper.netns.test.ts.
 */
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { runFirewallHelper } from '../../src/firewall/helper.js';
import { removeKillSwitches } from '../../src/firewall/kill-switch.js';
import { removeInstanceRules } from '../../src/firewall/methods.js';
import { routeTable } from '../../src/firewall/policy-routing.js';
import type { FirewallMethod, FirewallSetup } from '../../src/firewall/types.js';
import { FakeIptables } from './support/fake-iptables.js';
import { outputLines } from './support/output-lines.js';

const PORT = 12300;

function setupFor(method: FirewallMethod, killSwitch = false): FirewallSetup {
  return {
    version: 1,
    method,
    port: PORT,
    routerMode: true,
    rules: [
      { family: 4, address: '10.0.0.0', prefix: 8, portLow: 0, portHigh: 0, exclude: false },
      { family: 6, address: 'fd00::', prefix: 8, portLow: 0, portHigh: 0, exclude: false },
    ],
    ...(method === 'tproxy' ? { tmark: 1, udpPort: PORT } : {}),
    ...(killSwitch ? { killSwitch: true } : {}),
  };
}

/** Tables of both families holding, besides the builtin chains, nothing but look-alikes of port 12300's names. */
function withLookAlikes(): FakeIptables {
  const fake = new FakeIptables();
  for (const family of [4, 6] as const) {
    const lookAlike = (chains: Map<string, string[]>, ours: string) => {
      for (const other of [`${ours}0`, ours.slice(0, -1), `x${ours}`]) {
        chains.set(other, ['-p tcp -j RETURN']);
        chains.get('OUTPUT')?.push(`-p tcp -j ${other}`);
        chains.get('PREROUTING')?.push(`-p tcp -g ${other}`);
      }
      chains.get('OUTPUT')?.push(
        `-p tcp -m comment --comment ${ours} -j ACCEPT`,
        `-p tcp -m comment --comment "see ${ours} docs" -j ACCEPT`,
        `-p tcp -m comment --comment "not -j ${ours} at all" -j RETURN`,
        `-p udp -m comment --comment "-g ${ours}" -j RETURN`,
      );
    };
    lookAlike(fake.tables[family].chains, `rxshuttle-${PORT}`);
    lookAlike(fake.mangleTables[family].chains, `rxshuttle-tproxy-${PORT}`);
    lookAlike(fake.mangleTables[family].chains, `rxshuttle-mark-${PORT}`);
    lookAlike(fake.filterTables[family].chains, `rxshuttle-ks-${PORT}`);
    // Policy routing of another port, and of other software (the sshuttle manual's table 100), at our priority.
    fake.ip[family].addRule({ priority: 120, fwmark: '0x1/0x1', table: String(routeTable(1230)) });
    fake.ip[family].addRule({ priority: 120, fwmark: '0x1/0x1', table: '100' });
  }
  for (const name of [`rxshuttle-${PORT}0`, `rxshuttle-${Math.floor(PORT / 10)}`, `xrxshuttle-${PORT}`, `rxshuttle-${PORT}-x`]) {
    fake.nftTables.set(name, `table inet ${name} {\n}\n`);
  }
  return fake;
}

/** Everything the fake holds, as text. */
function everything(fake: FakeIptables): string {
  const parts: string[] = [];
  for (const family of [4, 6] as const) {
    parts.push(fake.tables[family].save(), fake.mangleTables[family].save(), fake.filterTables[family].save());
    // A route table flushed empty is as good as none (the fake keeps its name).
    parts.push(JSON.stringify(fake.ip[family].rules), JSON.stringify([...fake.ip[family].routes].filter(([, routes]) => routes.length > 0)));
  }
  parts.push(JSON.stringify([...fake.nftTables]));
  return parts.join('\n');
}

/** One helper from HELLO to its end: QUIT, or the pipe closing as when the client dies. */
async function helperSession(fake: FakeIptables, setup: FirewallSetup, end: 'quit' | 'client died'): Promise<void> {
  const input = new PassThrough();
  const output = new PassThrough();
  const { nextLine } = outputLines(output);
  const done = runFirewallHelper(input, output, { run: fake.run, handleSignals: false, warn: () => {}, notice: () => {}, conntrackPath: '/nonexistent' });
  expect(await nextLine()).toBe('HELLO rxshuttle-fw 1');
  input.write(`${JSON.stringify(setup)}\n`);
  expect(await nextLine()).toBe('READY');
  input.end(end === 'quit' ? 'QUIT\n' : '');
  expect(await done).toBe(0);
}

describe('cleanups leave look-alikes of the instance alone (issue 16, finding 2)', () => {
  it.each(['nat', 'nft', 'tproxy'] as const)('%s: the helper installs and removes its own, and only those', async (method) => {
    const fake = withLookAlikes();
    const before = everything(fake);
    await helperSession(fake, setupFor(method), 'quit');
    expect(everything(fake)).toBe(before);
  });

  it.each(['nat', 'nft', 'tproxy'] as const)('%s: what was installed went in beside the look-alikes (the check above checks something)', async (method) => {
    const fake = withLookAlikes();
    const input = new PassThrough();
    const output = new PassThrough();
    const { nextLine } = outputLines(output);
    const done = runFirewallHelper(input, output, { run: fake.run, handleSignals: false, warn: () => {}, notice: () => {} });
    await nextLine();
    input.write(`${JSON.stringify(setupFor(method))}\n`);
    expect(await nextLine()).toBe('READY');
    const own = method === 'nft' ? [...fake.nftTables.keys()].filter((t) => t === `rxshuttle-${PORT}`) : fake.rxshuttleLines(4, method === 'nat' ? 'nat' : 'mangle').filter((l) => l.endsWith(`-${PORT}`));
    expect(own.length).toBeGreaterThan(0);
    input.end('QUIT\n');
    expect(await done).toBe(0);
  });

  it('--kill-switch: the client dies, its kill switch goes in, and the next start on the port lifts it: nothing else changes', async () => {
    const fake = withLookAlikes();
    const before = everything(fake);
    await helperSession(fake, setupFor('nat', true), 'client died');
    expect(fake.rxshuttleLines(4, 'filter')).toContain(`:rxshuttle-ks-${PORT} - [0:0]`);
    await helperSession(fake, setupFor('nat'), 'quit');
    expect(everything(fake)).toBe(before);
  });

  it('rxshuttle --flush removes every kill switch, and only chains named like one (a port 1..65535)', async () => {
    const fake = withLookAlikes();
    await helperSession(fake, setupFor('tproxy', true), 'client died');
    expect(fake.rxshuttleLines(4, 'filter')).toContain(`:rxshuttle-ks-${PORT} - [0:0]`);
    expect(await removeKillSwitches(fake.run, null)).toBe(true);
    for (const family of [4, 6] as const) {
      const chains = [...fake.filterTables[family].chains.keys()].filter((c) => c.includes('rxshuttle'));
      // rxshuttle-ks-1230 is port 1230's kill switch: --flush lifts every one.
      expect(chains).toEqual([`rxshuttle-ks-${PORT}0`, `xrxshuttle-ks-${PORT}`]);
    }
  });

  it('the watchdog (every method on the port) removes exactly ours', async () => {
    const fake = withLookAlikes();
    const before = everything(fake);
    await helperSession(fake, setupFor('tproxy', true), 'client died');
    expect(await removeKillSwitches(fake.run, PORT)).toBe(true);
    expect(everything(fake)).toBe(before);

    for (const method of ['nat', 'nft', 'tproxy'] as const) {
      // What a helper SIGKILLed with its rules in place leaves to its watchdog.
      const input = new PassThrough();
      const output = new PassThrough();
      const { nextLine } = outputLines(output);
      const abandoned = runFirewallHelper(input, output, { run: fake.run, handleSignals: false });
      await nextLine();
      input.write(`${JSON.stringify(setupFor(method))}\n`);
      expect(await nextLine()).toBe('READY');
      expect(everything(fake)).not.toBe(before);
      expect(await removeInstanceRules(method, fake.run, PORT)).toBe(true);
      expect(everything(fake)).toBe(before);
      expect(await removeInstanceRules(method, fake.run, PORT)).toBe(false);
      input.end('QUIT\n');
      expect(await abandoned).toBe(0);
    }
  });
});
