/**
 * Issue 16, finding 3: 10 000 IPv6 subnets, as a `-s` file of /128s (sshuttle takes that), from
 * the file through the client's encoding of the helper protocol (setupLine and rulesLine, what
 * firewall$ writes) into the helper's line splitter and validator, and out as rules (a fake
 * iptables), with the rules the client adds (the ssh server's address), a RULES line of host
 * names' addresses at its own limit, the watchdog's orders, and the kill switch. Beyond the
 * bounds: one line, before anything starts.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { firstValueFrom } from 'rxjs';
import { afterAll, describe, expect, it } from 'vitest';
import { runFirewallHelper } from '../../src/firewall/helper.js';
import { LineSplitter } from '../../src/firewall/lines.js';
import { MAX_LINE_BYTES, rulesLine, setupLine } from '../../src/firewall/protocol.js';
import type { FirewallSetup, SubnetRule } from '../../src/firewall/types.js';
import { MAX_EXTRA_RULES, MAX_RULES, MAX_SUBNETS } from '../../src/firewall/validate.js';
import { parseOrders, type StartWatchdog } from '../../src/firewall/watchdog.js';
import { readSubnetFile, resolveOptions } from '../../src/shared/options.js';
import { firewall$ } from '../../src/tunnel/firewall-client.js';
import { FakeIptables } from './support/fake-iptables.js';
import { outputLines } from './support/output-lines.js';

const dir = mkdtempSync(join(tmpdir(), 'rxs-many-rules-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** The n-th of 10 000 distinct /128s, each at the longest spelling (39 characters). */
const v6 = (n: number) => `fd00:ffff:ffff:ffff:ffff:ffff:${(0x1000 + (n >> 12)).toString(16)}:${(0xa000 + (n & 0xfff)).toString(16)}`;

describe(`${MAX_SUBNETS} IPv6 subnets through the helper protocol (issue 16, finding 3)`, () => {
  it('a -s file of 10 000 /128s: the client encodes one setup line, the helper takes it, installs all, updates, blocks on death', async () => {
    const file = join(dir, 'subnets');
    writeFileSync(file, `# 10 000 hosts\n${Array.from({ length: MAX_SUBNETS }, (_, i) => `${v6(i)}/128`).join('\n')}\n`);
    const options = resolveOptions({ subnets: readSubnetFile(file, false), remote: 'bastion' }, () => ['fw']);
    expect(options.subnets).toHaveLength(MAX_SUBNETS);
    // As connect.ts builds it: the ssh server's addresses excluded first, then the user's subnets.
    const server: SubnetRule[] = [
      { family: 4, address: '192.0.2.7', prefix: 32, portLow: 0, portHigh: 0, exclude: true },
      { family: 6, address: '2001:db8::7', prefix: 128, portLow: 0, portHigh: 0, exclude: true },
    ];
    const setup: FirewallSetup = { version: 1, method: 'nat', port: 12300, routerMode: false, rules: [...server, ...options.subnets], killSwitch: true };
    const line = Buffer.from(setupLine(setup));
    expect(line.length).toBeGreaterThan(1_000_000);
    expect(line.length).toBeLessThan(MAX_LINE_BYTES);

    const fake = new FakeIptables();
    const orders: string[] = [];
    const startWatchdog: StartWatchdog = async (first) => {
      orders.push(JSON.stringify(first));
      return { release: () => orders.push('DONE'), updateKillSwitch: (killSwitch) => orders.push(JSON.stringify({ ...first, killSwitch })) };
    };
    const input = new PassThrough();
    const output = new PassThrough();
    const { nextLine } = outputLines(output);
    const done = runFirewallHelper(input, output, { run: fake.run, handleSignals: false, notice: () => {}, warn: () => {}, startWatchdog, conntrackPath: '/nonexistent' });
    expect(await nextLine()).toBe('HELLO rxshuttle-fw 1');
    // In pieces, as a pipe delivers it.
    for (let at = 0; at < line.length; at += 64 * 1024) input.write(line.subarray(at, at + 64 * 1024));
    expect(await nextLine()).toBe('READY');
    const redirects = () => fake.rxshuttleLines(6).filter((l) => l.includes('-j REDIRECT --to-ports 12300'));
    expect(redirects()).toHaveLength(MAX_SUBNETS);
    expect(fake.rxshuttleLines(6)).toContain('-A rxshuttle-12300 -d 2001:db8::7/128 -p tcp -j RETURN');
    expect(parseOrders(orders[0] as string).killSwitch?.setup.rules).toHaveLength(MAX_SUBNETS + 2);

    // Host names' addresses at their own limit: one RULES line beside the setup's 10 002.
    const extra = Array.from({ length: MAX_EXTRA_RULES }, (_, i): SubnetRule => ({ family: 6, address: v6(MAX_SUBNETS + i), prefix: 128, portLow: 0, portHigh: 0, exclude: false }));
    input.write(rulesLine(extra));
    expect(await nextLine()).toBe('OK');
    expect(redirects()).toHaveLength(MAX_SUBNETS + MAX_EXTRA_RULES);
    // The watchdog's kill switch follows, and its orders still parse.
    expect(parseOrders(orders.at(-1) as string).killSwitch?.setup.rules).toHaveLength(MAX_SUBNETS + 2 + MAX_EXTRA_RULES);

    // The client dies: every one of them is blocked, then the redirect goes.
    input.end();
    expect(await done).toBe(0);
    expect(fake.rxshuttleLines(6)).toEqual([]);
    expect(fake.rxshuttleLines(6, 'filter').filter((l) => l.endsWith('-j REJECT --reject-with tcp-reset'))).toHaveLength(MAX_SUBNETS + MAX_EXTRA_RULES);
  });

  it(`the helper's bound: ${MAX_RULES} rules (the user's ${MAX_SUBNETS} and as many added), the longest line of them under MAX_LINE_BYTES`, async () => {
    const longest = (n: number): SubnetRule => ({ family: 6, address: `ffff:ffff:ffff:ffff:ffff:ffff:${(0x1000 + (n >> 12)).toString(16)}:${(0xa000 + (n & 0xfff)).toString(16)}`, prefix: 128, portLow: 10000, portHigh: 65535, exclude: false });
    const setup: FirewallSetup = { version: 1, method: 'nat', port: 65535, routerMode: true, rules: Array.from({ length: MAX_RULES }, (_, i) => longest(i)) };
    const items = new LineSplitter(MAX_LINE_BYTES).push(Buffer.from(setupLine(setup)));
    expect(items).toHaveLength(1);
    expect(typeof items[0]).toBe('string');
    const fake = new FakeIptables();
    const input = new PassThrough();
    const output = new PassThrough();
    const { nextLine } = outputLines(output);
    const done = runFirewallHelper(input, output, { run: fake.run, handleSignals: false });
    await nextLine();
    input.write(setupLine(setup));
    expect(await nextLine()).toBe('READY');
    expect(fake.rxshuttleLines(6).filter((l) => l.includes('-j REDIRECT'))).toHaveLength(MAX_RULES);
    input.end('QUIT\n');
    expect(await done).toBe(0);

    // One more: refused before anything is touched.
    const calls = fake.calls.length;
    const again = new PassThrough();
    const answers = new PassThrough();
    const refused = outputLines(answers);
    const helper = runFirewallHelper(again, answers, { run: fake.run, handleSignals: false });
    await refused.nextLine();
    again.write(setupLine({ ...setup, rules: [...setup.rules, longest(MAX_RULES)] }));
    expect(await refused.nextLine()).toBe(`ERROR invalid setup: rules must have at most ${MAX_RULES} entries`);
    expect(await helper).toBe(1);
    expect(fake.calls.length).toBe(calls);
  });

  it(`more than ${MAX_SUBNETS} subnets: one line, before anything starts`, () => {
    const subnets = Array.from({ length: MAX_SUBNETS + 1 }, (_, i) => `${v6(i)}/128`);
    expect(() => resolveOptions({ subnets, remote: 'bastion' }, () => ['fw'])).toThrow(
      `too many subnets: ${MAX_SUBNETS + 1} given (the command line, -s, -x and -X together), at most ${MAX_SUBNETS}`,
    );
  });

  it(`a setup of more than ${MAX_RULES} rules: firewall$ says so at once, without starting the helper (its sudo would ask in vain)`, async () => {
    const rules = Array.from({ length: MAX_RULES + 1 }, (_, i): SubnetRule => ({ family: 4, address: `10.${i >> 8}.${i & 255}.0`, prefix: 24, portLow: 0, portHigh: 0, exclude: false }));
    const setup: FirewallSetup = { version: 1, method: 'nat', port: 12300, routerMode: false, rules };
    await expect(firstValueFrom(firewall$(setup, { helperArgv: [join(dir, 'never-started')] }))).rejects.toThrow(
      `too many firewall rules: ${MAX_RULES + 1}, at most ${MAX_RULES} (${MAX_SUBNETS} subnets given, plus the ssh server's addresses and -N's routes)`,
    );
  });
});
