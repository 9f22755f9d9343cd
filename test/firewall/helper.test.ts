/**
 * The helper's protocol, in-process, against a fake iptables (no root, no real tables).
 * The same helper against the real iptables in a namespace: helper.netns.test.ts.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { appendFileSync, chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { afterAll, describe, expect, it } from 'vitest';
import { type FirewallHelperOptions, runFirewallHelper } from '../../src/firewall/helper.js';
import { hostsBlockName, withBlock } from '../../src/firewall/hosts-file.js';
import { LOCK_DIRS, lockFileName } from '../../src/firewall/port-lock.js';
import { MAX_LINE_BYTES } from '../../src/firewall/protocol.js';
import type { FirewallSetup } from '../../src/firewall/types.js';
import { FakeIptables } from './support/fake-iptables.js';
import { outputLines } from './support/output-lines.js';

const SETUP: FirewallSetup = {
  version: 1,
  method: 'nat',
  port: 12300,
  routerMode: false,
  bypassGid: 4242,
  rules: [
    { family: 4, address: '10.0.0.0', prefix: 8, portLow: 0, portHigh: 0, exclude: false },
    { family: 4, address: '10.1.0.0', prefix: 16, portLow: 0, portHigh: 0, exclude: true },
  ],
};
const V6_SETUP: FirewallSetup = {
  ...SETUP,
  rules: [...SETUP.rules, { family: 6, address: 'fd00::', prefix: 8, portLow: 0, portHigh: 0, exclude: false }],
};

/** Runs the helper on in-memory pipes; `lines()` waits for the next output line. */
function startHelper(fake: FakeIptables, opts: FirewallHelperOptions = {}) {
  const input = new PassThrough();
  const output = new PassThrough();
  const warnings: string[] = [];
  const { received, nextLine } = outputLines(output);
  const done = runFirewallHelper(input, output, {
    run: fake.run,
    handleSignals: false,
    warn: (m) => warnings.push(m),
    notice: () => {},
    ...opts,
  });
  return { input, output, done, nextLine, warnings, received };
}

describe('runFirewallHelper (fake iptables)', () => {
  it('greets, installs on a setup line, answers READY, removes everything on EOF', async () => {
    const fake = new FakeIptables();
    const h = startHelper(fake);
    expect(await h.nextLine()).toBe('HELLO rxshuttle-fw 1');
    h.input.write(`${JSON.stringify(SETUP)}\n`);
    expect(await h.nextLine()).toBe('READY');
    expect(fake.rxshuttleLines()).toEqual([
      ':rxshuttle-12300 - [0:0]',
      '-A OUTPUT -p tcp -m owner ! --gid-owner 4242 -j rxshuttle-12300',
      '-A rxshuttle-12300 -m addrtype --dst-type LOCAL -j RETURN',
      '-A rxshuttle-12300 -d 10.1.0.0/16 -p tcp -j RETURN',
      '-A rxshuttle-12300 -d 10.0.0.0/8 -p tcp -j REDIRECT --to-ports 12300',
    ]);
    expect(fake.rxshuttleLines(6)).toEqual([]);
    h.input.end();
    expect(await h.done).toBe(0);
    expect(fake.rxshuttleLines()).toEqual([]);
    expect(h.warnings).toEqual([]);
  });

  it('uses iptables-restore --noflush with --wait, and never a shell', async () => {
    const fake = new FakeIptables();
    const h = startHelper(fake);
    h.input.end(`${JSON.stringify(SETUP)}\n`);
    expect(await h.done).toBe(0);
    const programs = new Set(fake.calls.map((c) => c.file));
    // ip and nft: what other methods may have left on the port is looked for too.
    expect([...programs].sort()).toEqual(['ip', 'ip6tables-save', 'iptables-restore', 'iptables-save', 'nft']);
    for (const call of fake.calls.filter((c) => c.file.endsWith('-restore'))) {
      expect(call.args).toEqual(['--wait=10', '--noflush']);
    }
  });

  it('installs IPv6 rules with ip6tables when there is an IPv6 include, and removes them', async () => {
    const fake = new FakeIptables();
    const h = startHelper(fake);
    await h.nextLine();
    h.input.write(`${JSON.stringify(V6_SETUP)}\n`);
    expect(await h.nextLine()).toBe('READY');
    expect(fake.rxshuttleLines(6)).toContain('-A rxshuttle-12300 -d fd00::/8 -p tcp -j REDIRECT --to-ports 12300');
    expect(fake.rxshuttleLines(4)).toContain('-A rxshuttle-12300 -d 10.0.0.0/8 -p tcp -j REDIRECT --to-ports 12300');
    h.input.end();
    expect(await h.done).toBe(0);
    expect([...fake.rxshuttleLines(4), ...fake.rxshuttleLines(6)]).toEqual([]);
  });

  it('removes leftovers of a crashed instance with the same port first, and leaves other ports alone', async () => {
    const fake = new FakeIptables();
    fake.tables[4].restore(
      '*nat\n:rxshuttle-12300 - [0:0]\n:rxshuttle-999 - [0:0]\n-A rxshuttle-12300 -d 192.168.0.0/16 -p tcp -j REDIRECT --to-ports 12300\n' +
        '-I OUTPUT 1 -p tcp -j rxshuttle-12300\n-I PREROUTING 1 -p tcp -j rxshuttle-12300\n-I OUTPUT 1 -p tcp -j rxshuttle-999\nCOMMIT\n',
    );
    fake.tables[6].restore('*nat\n:rxshuttle-12300 - [0:0]\n-I OUTPUT 1 -p tcp -j rxshuttle-12300\nCOMMIT\n');
    const h = startHelper(fake);
    await h.nextLine();
    h.input.write(`${JSON.stringify(SETUP)}\n`);
    expect(await h.nextLine()).toBe('READY');
    const lines = fake.rxshuttleLines();
    expect(lines.filter((l) => l.includes('192.168'))).toEqual([]);
    expect(lines.filter((l) => l.includes('PREROUTING'))).toEqual([]);
    expect(lines.filter((l) => l.startsWith('-A OUTPUT') && l.endsWith('rxshuttle-12300'))).toHaveLength(1);
    expect(fake.rxshuttleLines(6)).toEqual([]);
    h.input.end();
    expect(await h.done).toBe(0);
    expect(fake.rxshuttleLines()).toEqual([':rxshuttle-999 - [0:0]', '-A OUTPUT -p tcp -j rxshuttle-999']);
  });

  it('RULES: the rules beyond the setup are put in place of the earlier ones, in the chain as it stands; a bad line changes nothing', async () => {
    const fake = new FakeIptables();
    const h = startHelper(fake);
    await h.nextLine();
    h.input.write(`${JSON.stringify(SETUP)}\n`);
    expect(await h.nextLine()).toBe('READY');
    const jumps = () => fake.rxshuttleLines().filter((l) => l.startsWith('-A OUTPUT'));
    const before = jumps();
    const name = (address: string, exclude = false, family: 4 | 6 = 4) => ({ family, address, prefix: family === 4 ? 32 : 128, portLow: 443, portHigh: 443, exclude });
    h.input.write(`RULES ${JSON.stringify([name('10.1.2.3'), name('192.168.7.7')])}\n`);
    expect(await h.nextLine()).toBe('OK');
    const chain = () => fake.rxshuttleLines().filter((l) => l.startsWith('-A rxshuttle-12300'));
    // Longest prefix first: the names' /32s come before the setup's /16 exclude and /8 include.
    expect(chain()).toEqual([
      '-A rxshuttle-12300 -m addrtype --dst-type LOCAL -j RETURN',
      '-A rxshuttle-12300 -d 10.1.2.3/32 -p tcp --dport 443 -j REDIRECT --to-ports 12300',
      '-A rxshuttle-12300 -d 192.168.7.7/32 -p tcp --dport 443 -j REDIRECT --to-ports 12300',
      '-A rxshuttle-12300 -d 10.1.0.0/16 -p tcp -j RETURN',
      '-A rxshuttle-12300 -d 10.0.0.0/8 -p tcp -j REDIRECT --to-ports 12300',
    ]);
    // The chain was rewritten in one restore, and the jumps never left.
    const update = fake.calls.filter((c) => c.file === 'iptables-restore').at(-1)?.input ?? '';
    expect(update.split('\n').slice(0, 2)).toEqual(['*nat', '-F rxshuttle-12300']);
    expect(jumps()).toEqual(before);
    // The next list replaces that one; an IPv6 address brings the IPv6 chain and its jumps.
    h.input.write(`RULES ${JSON.stringify([name('192.168.7.8'), name('fd00::7', false, 6)])}\n`);
    expect(await h.nextLine()).toBe('OK');
    expect(chain().filter((l) => l.includes('/32'))).toEqual(['-A rxshuttle-12300 -d 192.168.7.8/32 -p tcp --dport 443 -j REDIRECT --to-ports 12300']);
    expect(fake.rxshuttleLines(6)).toContain('-A rxshuttle-12300 -d fd00::7/128 -p tcp --dport 443 -j REDIRECT --to-ports 12300');
    // Refused: not canonical, host bits, not JSON, too many. What was there stays.
    const kept = [...fake.rxshuttleLines(), ...fake.rxshuttleLines(6)];
    for (const bad of [
      `RULES ${JSON.stringify([name('10.01.2.3')])}`,
      `RULES ${JSON.stringify([{ ...name('10.1.2.3'), prefix: 24 }])}`,
      'RULES [{',
      `RULES ${JSON.stringify(Array.from({ length: 1025 }, () => name('10.1.2.3')))}`,
    ]) {
      h.input.write(`${bad}\n`);
      expect(await h.nextLine()).toMatch(/^ERROR invalid RULES line: .* \(the earlier rules stay\)$/);
    }
    // A restore that fails: ERROR, and the rules as they were.
    fake.failRestore = () => 'RULE_APPEND failed';
    h.input.write(`RULES ${JSON.stringify([name('10.9.9.9')])}\n`);
    expect(await h.nextLine()).toMatch(/^ERROR iptables-restore failed .*RULE_APPEND failed \(the earlier rules stay\)$/);
    fake.failRestore = undefined;
    expect([...fake.rxshuttleLines(), ...fake.rxshuttleLines(6)]).toEqual(kept);
    h.input.end();
    expect(await h.done).toBe(0);
    expect([...fake.rxshuttleLines(), ...fake.rxshuttleLines(6)]).toEqual([]);
  });

  it('RULES: -H then accepts names at the new addresses', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'rxs-rules-hosts-'));
    try {
      const hostsPath = join(dir, 'hosts');
      writeFileSync(hostsPath, '127.0.0.1 localhost\n');
      const fake = new FakeIptables();
      const h = startHelper(fake, { hostsPath, lockDir: dir });
      await h.nextLine();
      h.input.write(`${JSON.stringify({ ...SETUP, hosts: true })}\n`);
      expect(await h.nextLine()).toBe('READY');
      h.input.write('HOST 192.168.7.7 wiki.corp\n');
      expect(await h.nextLine()).toMatch(/^ERROR invalid HOST line: the address is outside the tunneled subnets/);
      h.input.write(`RULES ${JSON.stringify([{ family: 4, address: '192.168.7.7', prefix: 32, portLow: 0, portHigh: 0, exclude: false }])}\n`);
      expect(await h.nextLine()).toBe('OK');
      h.input.write('HOST 192.168.7.7 wiki.corp\n');
      expect(await h.nextLine()).toBe('OK');
      expect(readFileSync(hostsPath, 'utf8')).toContain('192.168.7.7\twiki.corp');
      h.input.end();
      expect(await h.done).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('method nft: one table of the instance, RULES rewrite its capture chain, EOF deletes it; the other method\'s leftovers go first', async () => {
    const fake = new FakeIptables();
    // A chain left by an earlier nat instance on the port.
    fake.tables[4].restore('*nat\n:rxshuttle-12300 - [0:0]\n-A OUTPUT -p tcp -j rxshuttle-12300\nCOMMIT\n');
    const h = startHelper(fake);
    await h.nextLine();
    h.input.write(`${JSON.stringify({ ...SETUP, method: 'nft' })}\n`);
    expect(await h.nextLine()).toBe('READY');
    expect(fake.rxshuttleLines()).toEqual([]);
    expect([...fake.nftTables.keys()]).toEqual(['rxshuttle-12300']);
    expect(fake.nftTables.get('rxshuttle-12300')).toContain('meta l4proto tcp meta skgid != 4242 jump capture');
    h.input.write(`RULES ${JSON.stringify([{ family: 4, address: '192.168.7.7', prefix: 32, portLow: 443, portHigh: 443, exclude: false }])}\n`);
    expect(await h.nextLine()).toBe('OK');
    const update = fake.nftTables.get('rxshuttle-12300') ?? '';
    expect(update.split('\n')[0]).toBe('flush chain inet rxshuttle-12300 capture');
    expect(update).toContain('ip daddr 192.168.7.7/32 tcp dport 443 redirect to :12300');
    h.input.end('QUIT\n');
    expect(await h.done).toBe(0);
    expect([...fake.nftTables.keys()]).toEqual([]);
  });

  it('refuses further lines with ERROR but keeps the rules', async () => {
    const fake = new FakeIptables();
    const h = startHelper(fake);
    await h.nextLine();
    h.input.write(`${JSON.stringify(SETUP)}\n`);
    expect(await h.nextLine()).toBe('READY');
    h.input.write('HOSTS 10.0.0.1 a.example\n');
    expect(await h.nextLine()).toBe('ERROR unknown command (rules stay in place)');
    h.input.write(`${'x'.repeat(MAX_LINE_BYTES + 1)}\n`);
    expect(await h.nextLine()).toBe('ERROR line too long (rules stay in place)');
    expect(fake.rxshuttleLines()).toHaveLength(5);
    h.input.end();
    expect(await h.done).toBe(0);
    expect(fake.rxshuttleLines()).toEqual([]);
  });

  it.each([
    ['not JSON', 'hello', 'ERROR setup is not valid JSON'],
    ['a wrong version', JSON.stringify({ ...SETUP, version: 2 }), 'ERROR invalid setup: version must be 1 (helper protocol version)'],
    ['host bits', JSON.stringify({ ...SETUP, rules: [{ ...SETUP.rules[0], address: '10.0.0.1' }] }), 'ERROR invalid setup: rules[0].address has host bits set beyond /8'],
  ])('answers ERROR and exits 1 for %s, touching nothing', async (_name, line, reply) => {
    const fake = new FakeIptables();
    const h = startHelper(fake);
    await h.nextLine();
    h.input.write(`${line}\n`);
    expect(await h.nextLine()).toBe(reply);
    expect(await h.done).toBe(1);
    expect(fake.calls).toEqual([]);
  });

  it('refuses a setup line over MAX_LINE_BYTES without waiting for its end', async () => {
    const fake = new FakeIptables();
    const h = startHelper(fake);
    await h.nextLine();
    h.input.write(Buffer.alloc(MAX_LINE_BYTES + 10, 0x20));
    expect(await h.nextLine()).toBe(`ERROR setup line longer than ${MAX_LINE_BYTES} bytes`);
    expect(await h.done).toBe(1);
  });

  it('says what to install when iptables is missing', async () => {
    const fake = new FakeIptables();
    for (const p of ['iptables-save', 'iptables-restore', 'ip6tables-save', 'ip6tables-restore']) fake.missing.add(p);
    const h = startHelper(fake);
    await h.nextLine();
    h.input.write(`${JSON.stringify(SETUP)}\n`);
    expect(await h.nextLine()).toBe('ERROR iptables not found: install iptables');
    expect(await h.done).toBe(1);
  });

  it('says so when only ip6tables is missing and IPv6 is needed; without IPv6 it does not matter', async () => {
    const fake = new FakeIptables();
    fake.missing.add('ip6tables-save');
    fake.missing.add('ip6tables-restore');
    const h = startHelper(fake);
    await h.nextLine();
    h.input.write(`${JSON.stringify(V6_SETUP)}\n`);
    expect(await h.nextLine()).toBe('ERROR ip6tables not found: install iptables');
    expect(await h.done).toBe(1);
    expect(fake.rxshuttleLines()).toEqual([]);

    const h2 = startHelper(fake);
    await h2.nextLine();
    h2.input.write(`${JSON.stringify(SETUP)}\n`);
    expect(await h2.nextLine()).toBe('READY');
    h2.input.end();
    expect(await h2.done).toBe(0);
    expect(h2.warnings).toEqual([]);
  });

  it('undoes the IPv4 rules when the IPv6 rules fail, and reports the one-line reason', async () => {
    const fake = new FakeIptables();
    fake.failRestore = (file, script) =>
      file === 'ip6tables-restore' && script.includes('REDIRECT') ? 'line 5: RULE_INSERT failed (Invalid argument)\nsecond line' : undefined;
    const h = startHelper(fake);
    await h.nextLine();
    h.input.write(`${JSON.stringify(V6_SETUP)}\n`);
    expect(await h.nextLine()).toBe(
      'ERROR ip6tables-restore failed (exit 1): line 5: RULE_INSERT failed (Invalid argument) second line',
    );
    expect(await h.done).toBe(1);
    expect(fake.rxshuttleLines(4)).toEqual([]);
    expect(fake.rxshuttleLines(6)).toEqual([]);
  });

  it('retries without --wait for an iptables-restore that does not know it', async () => {
    const fake = new FakeIptables();
    fake.failRestore = (_file, _script) =>
      fake.calls.at(-1)?.args.includes('--wait=10') ? "unrecognized option '--wait=10'" : undefined;
    const h = startHelper(fake);
    await h.nextLine();
    h.input.write(`${JSON.stringify(SETUP)}\n`);
    expect(await h.nextLine()).toBe('READY');
    expect(fake.calls.filter((c) => c.file === 'iptables-restore').at(-1)?.args).toEqual(['--noflush']);
    h.input.end();
    expect(await h.done).toBe(0);
  });

  it('removes the rules and exits 0 when stopped (as by a signal)', async () => {
    const fake = new FakeIptables();
    const stop = new AbortController();
    const h = startHelper(fake, { stop: stop.signal });
    await h.nextLine();
    h.input.write(`${JSON.stringify(SETUP)}\n`);
    expect(await h.nextLine()).toBe('READY');
    stop.abort();
    expect(await h.done).toBe(0);
    expect(fake.rxshuttleLines()).toEqual([]);
  });

  it('finishes installing, then removes, when stopped in the middle of the setup', async () => {
    const fake = new FakeIptables();
    const stop = new AbortController();
    const run = fake.run;
    const h = startHelper(fake, {
      stop: stop.signal,
      run: async (file, args, input) => {
        if (file === 'iptables-restore') stop.abort();
        return run(file, args, input);
      },
    });
    await h.nextLine();
    h.input.write(`${JSON.stringify(SETUP)}\n`);
    expect(await h.nextLine()).toBe('READY');
    expect(await h.done).toBe(0);
    expect(fake.rxshuttleLines()).toEqual([]);
  });

  it('exits 1 without touching anything when the input ends before a setup', async () => {
    const fake = new FakeIptables();
    const h = startHelper(fake);
    await h.nextLine();
    h.input.end();
    expect(await h.done).toBe(1);
    expect(fake.calls).toEqual([]);
  });

  it('reports a failed removal on stderr and exits 1', async () => {
    const fake = new FakeIptables();
    const h = startHelper(fake);
    await h.nextLine();
    h.input.write(`${JSON.stringify(SETUP)}\n`);
    expect(await h.nextLine()).toBe('READY');
    fake.failRestore = () => 'resource busy';
    h.input.end();
    expect(await h.done).toBe(1);
    expect(h.warnings).toEqual([
      'failed to remove firewall rules: iptables-restore failed (exit 1): resource busy',
    ]);
  });

  it('survives an output whose reader is gone (EPIPE)', async () => {
    const fake = new FakeIptables();
    const h = startHelper(fake);
    await h.nextLine();
    h.output.destroy(Object.assign(new Error('write EPIPE'), { code: 'EPIPE' }));
    h.input.end(`${JSON.stringify(SETUP)}\n`);
    expect(await h.done).toBe(0);
    expect(fake.rxshuttleLines()).toEqual([]);
  });
});

describe('runFirewallHelper: how the client ended', () => {
  const setup = JSON.stringify({
    version: 1,
    method: 'nat',
    port: 12345,
    routerMode: false,
    rules: [{ family: 4, address: '10.0.0.0', prefix: 8, portLow: 0, portHigh: 0, exclude: false }],
  });

  for (const [how, input, said] of [
    ['QUIT, then EOF: an orderly end, nothing said', `${setup}\nQUIT\n`, []],
    ['EOF without QUIT: the client died; the helper says what became of its rules', `${setup}\n`, ['the client went away; firewall rules of port 12345 removed']],
  ] as const) {
    it(how, async () => {
      const fake = new FakeIptables();
      const notices: string[] = [];
      const input$ = new PassThrough();
      const done = runFirewallHelper(input$, new PassThrough(), { run: fake.run, handleSignals: false, notice: (m) => notices.push(m) });
      input$.end(input);
      expect(await done).toBe(0);
      expect(fake.rxshuttleLines()).toEqual([]);
      expect(notices).toEqual(said);
    });
  }
});

describe('runFirewallHelper: one helper per port', () => {
  const lockDir = mkdtempSync(join(tmpdir(), 'rxs-fwlock-'));
  afterAll(() => rmSync(lockDir, { recursive: true, force: true }));
  const lockPath = join(lockDir, lockFileName(12300));

  async function ready(fake: FakeIptables) {
    const h = startHelper(fake, { lockDir });
    await h.nextLine();
    h.input.write(`${JSON.stringify(SETUP)}\n`);
    return { h, reply: await h.nextLine() };
  }

  it('refuses a second helper for a held port before it touches any rule, and lets one start once the first ended', async () => {
    const fake = new FakeIptables();
    const first = await ready(fake);
    expect(first.reply).toBe('READY');
    expect(readFileSync(lockPath, 'utf8')).toBe(`${process.pid}\n`);
    const rules = fake.rxshuttleLines();
    const calls = fake.calls.length;

    // The same port on another address: the same chain name, so not ours to clean up.
    const second = await ready(fake);
    expect(second.reply).toBe(`ERROR port 12300 is already used by another rxshuttle (pid ${process.pid})`);
    expect(await second.h.done).toBe(1);
    expect(fake.calls.length).toBe(calls);
    expect(fake.rxshuttleLines()).toEqual(rules);

    first.h.input.end();
    expect(await first.h.done).toBe(0);
    expect(existsSync(lockPath)).toBe(false);

    const third = await ready(fake);
    expect(third.reply).toBe('READY');
    expect(fake.rxshuttleLines()).toEqual(rules);
    third.h.input.end();
    expect(await third.h.done).toBe(0);
    expect(readdirSync(lockDir)).toEqual([]);
  });

  it('releases the lock when stopped (as by a signal), when the setup fails, and lets other ports run alongside', async () => {
    const fake = new FakeIptables();
    const stop = new AbortController();
    const h = startHelper(fake, { lockDir, stop: stop.signal });
    await h.nextLine();
    h.input.write(`${JSON.stringify(SETUP)}\n`);
    expect(await h.nextLine()).toBe('READY');
    const other = startHelper(fake, { lockDir });
    await other.nextLine();
    other.input.write(`${JSON.stringify({ ...SETUP, port: 12301 })}\n`);
    expect(await other.nextLine()).toBe('READY');
    stop.abort();
    expect(await h.done).toBe(0);
    expect(readdirSync(lockDir)).toEqual([lockFileName(12301)]);
    other.input.end();
    expect(await other.done).toBe(0);

    fake.failRestore = () => 'no';
    const failing = await ready(fake);
    expect(failing.reply).toMatch(/^ERROR iptables-restore failed/);
    expect(await failing.h.done).toBe(1);
    expect(readdirSync(lockDir)).toEqual([]);
  });

  it('takes over the file a dead helper left behind (and makes it 0600 if it was not)', async () => {
    writeFileSync(lockPath, '999999999\n', { mode: 0o644 });
    chmodSync(lockPath, 0o644);
    const fake = new FakeIptables();
    const { h, reply } = await ready(fake);
    expect(reply).toBe('READY');
    expect(readFileSync(lockPath, 'utf8')).toBe(`${process.pid}\n`);
    expect(statSync(lockPath).mode & 0o777).toBe(0o600);
    h.input.end();
    expect(await h.done).toBe(0);
  });

  // Issue 17, finding 11: a lock file others could open (0644 in /run) could be locked by any
  // user (flock needs only a read-only open): every later helper for the port refused.
  it('keeps its lock files where no other user can open them: /run/rxshuttle, 0700, created if missing; files 0600', async () => {
    expect(LOCK_DIRS).toEqual(['/run/rxshuttle', '/tmp/rxshuttle']);
    const base = mkdtempSync(join(tmpdir(), 'rxs-fwlockdir-'));
    chmodSync(base, 0o755);
    try {
      const dir = join(base, 'rxshuttle');
      const fake = new FakeIptables();
      const h = startHelper(fake, { lockDir: dir });
      await h.nextLine();
      h.input.write(`${JSON.stringify(SETUP)}\n`);
      expect(await h.nextLine()).toBe('READY');
      expect(statSync(dir).mode & 0o7777).toBe(0o700);
      expect(statSync(dir).uid).toBe(process.geteuid?.());
      expect(statSync(join(dir, lockFileName(12300))).mode & 0o777).toBe(0o600);
      h.input.end();
      expect(await h.done).toBe(0);
      expect(readdirSync(dir)).toEqual([]);
    } finally {
      rmSync(base, { recursive: true, force: true });
    }
  });

  const spoiled: Array<[string, (dir: string) => void, RegExp]> = [
    ['others may enter it (0755)', (dir) => chmodSync(dir, 0o755), /it is owned by uid \d+, mode 0755/],
    ['it is sticky and world-writable, as /tmp', (dir) => chmodSync(dir, 0o1777), /mode 1777/],
  ];
  if (process.geteuid?.() === 0) spoiled.push(['another user owns it', (dir) => chownSync(dir, 65534, 65534), /it is owned by uid 65534, mode 0700/]);
  it.each(spoiled)('refuses a lock directory when %s, touching nothing', async (_what, spoil, detail) => {
    const base = mkdtempSync(join(tmpdir(), 'rxs-fwlockdir-'));
    try {
      const dir = join(base, 'rxshuttle');
      mkdirSync(dir, { mode: 0o700 });
      spoil(dir);
      const fake = new FakeIptables();
      const h = startHelper(fake, { lockDir: dir });
      await h.nextLine();
      h.input.write(`${JSON.stringify(SETUP)}\n`);
      const reply = await h.nextLine();
      expect(reply).toMatch(new RegExp(`^ERROR ${dir} must be a directory of (root|uid \\d+) with mode 0700 \\(`));
      expect(reply).toMatch(detail);
      expect(await h.done).toBe(1);
      expect(fake.calls).toEqual([]);
      expect(readdirSync(dir)).toEqual([]);
    } finally {
      rmSync(base, { recursive: true, force: true });
    }
  });

  it('refuses a lock directory that is a symbolic link (even to a fit one)', async () => {
    const base = mkdtempSync(join(tmpdir(), 'rxs-fwlockdir-'));
    try {
      const real = join(base, 'real');
      mkdirSync(real, { mode: 0o700 });
      symlinkSync(real, join(base, 'rxshuttle'));
      const fake = new FakeIptables();
      const h = startHelper(fake, { lockDir: join(base, 'rxshuttle') });
      await h.nextLine();
      h.input.write(`${JSON.stringify(SETUP)}\n`);
      expect(await h.nextLine()).toMatch(/^ERROR .*rxshuttle must be a directory of .* \(it is a symbolic link\); remove it$/);
      expect(await h.done).toBe(1);
      expect(fake.calls).toEqual([]);
    } finally {
      rmSync(base, { recursive: true, force: true });
    }
  });

  it('refuses a lock file that is a symbolic link, touching nothing', async () => {
    const target = join(lockDir, 'elsewhere');
    writeFileSync(target, 'precious\n');
    symlinkSync(target, lockPath);
    try {
      const fake = new FakeIptables();
      const { h, reply } = await ready(fake);
      expect(reply).toMatch(/^ERROR cannot open the lock file of port 12300: ELOOP/);
      expect(await h.done).toBe(1);
      expect(fake.calls).toEqual([]);
      expect(readFileSync(target, 'utf8')).toBe('precious\n');
    } finally {
      rmSync(lockPath);
      rmSync(target);
    }
  });
});

describe('runFirewallHelper -H: nothing another user does keeps its hosts block (issue 17, finding 4)', () => {
  const base = mkdtempSync(join(tmpdir(), 'rxs-fwhostsblock-'));
  afterAll(() => rmSync(base, { recursive: true, force: true }));
  const lockDir = join(base, 'rxshuttle');
  const ORIGINAL = '127.0.0.1\tlocalhost\n10.99.0.1\tcli\n';
  let n = 0;
  const hostsFile = () => {
    const path = join(base, `hosts${n++}`);
    writeFileSync(path, ORIGINAL);
    return path;
  };

  async function ready(hostsPath: string, port = 12300) {
    const h = startHelper(new FakeIptables(), { lockDir, hostsPath });
    await h.nextLine();
    h.input.write(`${JSON.stringify({ ...SETUP, port, hosts: true })}\n`);
    expect(await h.nextLine()).toBe('READY');
    return h;
  }

  it("a user's flock on the hosts file: HOST lines are answered OK and QUIT removes the block, for every instance", async () => {
    const path = hostsFile();
    // Any user who can read /etc/hosts can do this; before, every -H helper waited 10 s, then failed.
    const holder = spawn('flock', ['-s', path, '-c', 'echo locked; exec sleep 60'], { stdio: ['ignore', 'pipe', 'inherit'], detached: true });
    await once(holder.stdout, 'data');
    try {
      const a = await ready(path);
      const b = await ready(path, 12301);
      a.input.write('HOST 10.0.0.5 a.example\n');
      expect(await a.nextLine()).toBe('OK');
      b.input.write('HOST 10.0.0.6 b.example\n');
      expect(await b.nextLine()).toBe('OK');
      expect(readFileSync(path, 'utf8')).toBe(
        withBlock(withBlock(ORIGINAL, hostsBlockName(12300), [{ address: '10.0.0.5', name: 'a.example' }]), hostsBlockName(12301), [
          { address: '10.0.0.6', name: 'b.example' },
        ]),
      );
      a.input.end('QUIT\n');
      expect(await a.done).toBe(0);
      b.input.end('QUIT\n');
      expect(await b.done).toBe(0);
      expect(readFileSync(path, 'utf8')).toBe(ORIGINAL);
      expect([...a.warnings, ...b.warnings]).toEqual([]);
    } finally {
      process.kill(-holder.pid!, 'SIGKILL');
    }
  });

  it('HOST lines beyond the cap (1 MiB of entries) are all refused with the same ERROR; the block stays within it', async () => {
    const path = hostsFile();
    const h = await ready(path);
    const count = 4200;
    // Names of 253 characters, the most a HOST line may carry (labels of at most 63).
    const name = (i: number) => `${'a'.repeat(63)}.${'b'.repeat(63)}.${'c'.repeat(63)}.n${String(i).padStart(60, '0')}`;
    expect(name(0)).toHaveLength(253);
    for (let i = 0; i < count; i++) h.input.write(`HOST 10.0.0.5 ${name(i)}\n`);
    const replies: string[] = [];
    for (let i = 0; i < count; i++) replies.push(await h.nextLine());
    expect(replies.filter((r) => r === 'OK')).toHaveLength(Math.floor((1024 * 1024) / ('10.0.0.5'.length + 253 + 2)));
    expect(new Set(replies.filter((r) => r !== 'OK'))).toEqual(new Set(['ERROR too many hosts entries (at most 10000 names and 1 MiB per instance)']));
    expect(statSync(path).size).toBeLessThan(ORIGINAL.length + 1024 * 1024 + 200);
    h.input.end('QUIT\n');
    expect(await h.done).toBe(0);
    expect(readFileSync(path, 'utf8')).toBe(ORIGINAL);
  });

  it('a hosts file over 16 MiB: HOST lines are refused, and the block still goes at the end', async () => {
    const path = hostsFile();
    const h = await ready(path);
    h.input.write('HOST 10.0.0.5 a.example\n');
    expect(await h.nextLine()).toBe('OK');
    // Another instance (or the user) grows the file past 16 MiB: 8 helpers × 10 000 names of 253 characters did.
    const entries: string[] = [];
    for (let i = 0; i < 68_000; i++) entries.push(`10.0.0.7\tu${String(i).padStart(252, '0')}\n`);
    const big = `# BEGIN rxshuttle-12301-net1 (added by rxshuttle -H; removed when its tunnel stops)\n${entries.join('')}# END rxshuttle-12301-net1\n`;
    appendFileSync(path, big);
    expect(statSync(path).size).toBeGreaterThan(16 * 1024 * 1024);
    h.input.write('HOST 10.0.0.6 b.example\n');
    expect(await h.nextLine()).toMatch(/^ERROR cannot write the hosts file: .* is larger than 16 MiB: nothing more is added to it$/);
    h.input.end('QUIT\n');
    expect(await h.done).toBe(0);
    expect(h.warnings).toEqual([]);
    expect(readFileSync(path).equals(Buffer.from(ORIGINAL + big, 'latin1'))).toBe(true);
  });
});
