/**
 * firewall$ against scripted stand-ins for the helper (plain Node scripts), so every protocol
 * path is exercised with real processes and pipes. The real helper: helper.netns.test.ts.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BehaviorSubject, firstValueFrom } from 'rxjs';
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest';
import { FirewallError } from '../../src/firewall/errors.js';
import type { FirewallSetup } from '../../src/firewall/types.js';
import { chooseMethod, firewall$, helperCommand } from '../../src/tunnel/firewall-client.js';
import { sleepForAbsence, waitUntil } from '../support/wait-until.js';

const SETUP: FirewallSetup = {
  version: 1,
  method: 'nat',
  port: 12300,
  routerMode: false,
  rules: [{ family: 4, address: '10.0.0.0', prefix: 8, portLow: 0, portHigh: 0, exclude: false }],
};

const dir = mkdtempSync(join(tmpdir(), 'rxs-fwclient-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/**
 * A fake helper. argv: behaviour, log file. It logs what it receives and, on stdin EOF,
 * "eof" then (after a pause, like real cleanup) "cleaned" before exiting 0.
 */
const FAKE = join(dir, 'fake-helper.mjs');
writeFileSync(
  FAKE,
  `
import { appendFileSync } from 'node:fs';
const [behaviour, logFile] = process.argv.slice(2);
const log = (s) => appendFileSync(logFile, s + '\\n');
const say = (s) => process.stdout.write(s + '\\n');
if (behaviour === 'bad-hello') say('HELLO something-else 7');
else if (behaviour === 'exit-now') { say('HELLO rxshuttle-fw 1'); process.exit(3); }
else say('HELLO rxshuttle-fw 1');
let buf = '';
process.stdin.on('data', (c) => {
  buf += c;
  let nl;
  while ((nl = buf.indexOf('\\n')) >= 0) {
    const line = buf.slice(0, nl);
    buf = buf.slice(nl + 1);
    log('got ' + line);
    if (behaviour === 'error') { say('ERROR iptables-restore failed (exit 4): line 5: RULE_INSERT failed'); process.exit(1); }
    if (behaviour === 'exit-before-ready') process.exit(5);
    if (behaviour === 'rules' && line !== '' && !line.startsWith('{')) {
      // RULES and HOST lines are answered in order, slowly; 10.66.x.x is refused.
      setTimeout(() => say(line.includes('10.66.') ? 'ERROR invalid RULES line: refused' : 'OK'), 100);
      continue;
    }
    say('READY');
    if (behaviour === 'die-after-ready') setTimeout(() => process.kill(process.pid, 'SIGKILL'), 50);
  }
});
process.stdin.on('end', () => {
  log('eof');
  setTimeout(() => { log('cleaned'); process.exit(0); }, 200);
});
`,
);

let logCount = 0;
function fakeHelper(behaviour: string) {
  const logFile = join(dir, `log-${++logCount}.txt`);
  writeFileSync(logFile, '');
  return { argv: [process.execPath, FAKE, behaviour, logFile], log: () => readFileSync(logFile, 'utf8') };
}

function errorOf(argv: string[], setup = SETUP): Promise<unknown> {
  return new Promise((resolve) => {
    firewall$(setup, { helperArgv: argv }).subscribe({
      next: () => resolve(new Error('unexpected ready')),
      error: resolve,
      complete: () => resolve(new Error('unexpected complete')),
    });
  });
}

const hostRule = (address: string) => ({ family: 4 as const, address, prefix: 32, portLow: 0, portHigh: 0, exclude: false });

describe('chooseMethod (--method auto)', () => {
  it('nat where iptables is installed, else nft where that is, else nat (whose error says what to install); a named method as is', () => {
    const only = (...names: string[]) => (name: string) => names.includes(name);
    expect(chooseMethod('auto', only('iptables-restore', 'nft'))).toBe('nat');
    expect(chooseMethod('auto', only('nft'))).toBe('nft');
    expect(chooseMethod('auto', only())).toBe('nat');
    expect(chooseMethod('nft', only('iptables-restore'))).toBe('nft');
    expect(chooseMethod('nat', only('nft'))).toBe('nat');
  });
});

describe('firewall$ with extra rules (host names as subnets)', () => {
  it("the first list is in place before 'ready'; later lists go one at a time, only the latest of those waiting", async () => {
    const fake = fakeHelper('rules');
    const extra = new BehaviorSubject<readonly ReturnType<typeof hostRule>[]>([hostRule('10.5.0.1')]);
    const events: unknown[] = [];
    const sub = firewall$(SETUP, { helperArgv: fake.argv, extraRules$: extra }).subscribe({ next: (e) => events.push(e), error: (e: unknown) => events.push(e) });
    await waitUntil(() => events.length > 0, { what: 'the first event' });
    expect(events).toEqual(['ready']);
    expect(fake.log()).toBe(`got ${JSON.stringify(SETUP)}\ngot RULES ${JSON.stringify([hostRule('10.5.0.1')])}\n`);
    // Three lists while one is answered: the last of the waiting ones follows it, the middle one never goes.
    extra.next([hostRule('10.5.0.2')]);
    extra.next([hostRule('10.5.0.3')]);
    extra.next([hostRule('10.5.0.4')]);
    await waitUntil(() => fake.log().includes('10.5.0.4'), { what: 'the list with 10.5.0.4 at the helper' });
    await sleepForAbsence(250); // 10.5.0.3 never goes
    const sent = fake.log().split('\n').filter((l) => l.startsWith('got RULES'));
    expect(sent.map((l) => JSON.parse(l.slice('got RULES '.length))[0].address)).toEqual(['10.5.0.1', '10.5.0.2', '10.5.0.4']);
    // A refused list is a warning; the tunnel goes on.
    extra.next([hostRule('10.66.0.1')]);
    await waitUntil(() => events.length > 1, { what: 'the second event' });
    expect(events[1]).toEqual({ kind: 'warning', message: 'firewall helper: invalid RULES line: refused' });
    sub.unsubscribe();
  });

  it('a first list refused fails the start', async () => {
    const fake = fakeHelper('rules');
    const error = await new Promise((resolve) => {
      firewall$(SETUP, { helperArgv: fake.argv, extraRules$: new BehaviorSubject([hostRule('10.66.0.1')]) }).subscribe({ next: () => resolve('ready?'), error: resolve });
    });
    expect(error).toBeInstanceOf(FirewallError);
    expect(String(error)).toMatch(/invalid RULES line: refused/);
  });
});

describe('firewall$', () => {
  it('sends the setup after HELLO, emits ready, stays open, and on unsubscribe ends stdin without killing', async () => {
    const fake = fakeHelper('ok');
    const events: string[] = [];
    const sub = firewall$(SETUP, { helperArgv: fake.argv }).subscribe({
      next: (v) => events.push(v),
      error: (e: unknown) => events.push(`error ${(e as Error).message}`),
      complete: () => events.push('complete'),
    });
    await waitUntil(() => events.length > 0, { what: 'the first event' });
    expect(events).toEqual(['ready']);
    expect(fake.log()).toBe(`got ${JSON.stringify(SETUP)}\n`);
    await sleepForAbsence(100); // it stays open: nothing after ready
    expect(events).toEqual(['ready']);
    sub.unsubscribe();
    // The helper got EOF and was allowed to finish its (slow) cleanup.
    await waitUntil(() => fake.log().includes('cleaned'), { what: "the helper's cleanup" });
    expect(fake.log()).toMatch(/eof\ncleaned\n$/);
    expect(events).toEqual(['ready']);
  });

  it('fails with the helper ERROR reason as a FirewallError', async () => {
    const e = await errorOf(fakeHelper('error').argv);
    expect(e).toBeInstanceOf(FirewallError);
    expect(e).toMatchObject({
      code: 'RXS_ERR_FW_APPLY',
      message: 'iptables-restore failed (exit 4): line 5: RULE_INSERT failed',
    });
  });

  it('fails when the helper exits before READY', async () => {
    const e = await errorOf(fakeHelper('exit-before-ready').argv);
    expect(e).toBeInstanceOf(FirewallError);
    expect((e as Error).message).toBe('firewall helper exited with code 5 before the rules were installed');
  });

  it('fails when the helper dies while the rules are in place', async () => {
    const fake = fakeHelper('die-after-ready');
    const events: string[] = [];
    firewall$(SETUP, { helperArgv: fake.argv }).subscribe({
      next: (v) => events.push(v),
      error: (e: unknown) => events.push(`error ${(e as Error).message}`),
    });
    await waitUntil(() => events.length >= 2, { what: 'ready and the error' });
    expect(events).toEqual(['ready', 'error firewall helper was killed by SIGKILL while the rules were in place']);
  });

  it('fails on an unknown greeting', async () => {
    const e = await errorOf(fakeHelper('bad-hello').argv);
    expect((e as Error).message).toBe('unexpected greeting from the firewall helper: HELLO something-else 7');
  });

  it('fails when the helper cannot be started', async () => {
    const e = await errorOf(['/nonexistent/rxshuttle-helper']);
    expect(e).toBeInstanceOf(FirewallError);
    expect((e as Error).message).toMatch(/^cannot start the firewall helper \(\/nonexistent\/rxshuttle-helper\): spawn .* ENOENT$/);
    expect(await errorOf([])).toMatchObject({ message: 'firewall helper command is empty' });
  });

  it('survives EPIPE when the helper exits while a large setup is being written', async () => {
    const big: FirewallSetup = {
      ...SETUP,
      rules: Array.from({ length: 10_000 }, (_, i) => ({
        family: 4 as const,
        address: `10.${i >> 8}.${i & 255}.0`,
        prefix: 24,
        portLow: 0,
        portHigh: 0,
        exclude: false,
      })),
    };
    const e = await errorOf(fakeHelper('exit-now').argv, big);
    expect((e as Error).message).toBe('firewall helper exited with code 3 before the rules were installed');
    // Give a late EPIPE a chance to surface as an uncaught error (vitest would report it).
    await sleepForAbsence(100);
  });

  it('can be awaited for readiness with firstValueFrom', async () => {
    const fake = fakeHelper('ok');
    await expect(firstValueFrom(firewall$(SETUP, { helperArgv: fake.argv }))).resolves.toBe('ready');
    // firstValueFrom unsubscribes after the first value: the helper is told to clean up.
    await waitUntil(() => fake.log().includes('cleaned'), { what: "the helper's cleanup" });
  });
});

describe('helperCommand', () => {
  afterEach(() => vi.restoreAllMocks());

  const helper = [process.execPath, '--max-semi-space-size=1', '/opt/rxs/dist/firewall-helper.cjs'];
  const never = () => false;

  it("runs the helper's own program (beside the CLI) directly as root, asking sudo nothing", () => {
    vi.spyOn(process, 'getuid').mockReturnValue(0);
    const asked: string[][] = [];
    expect(helperCommand('/opt/rxs/dist/cli.js', (argv) => (asked.push([...argv]), true))).toEqual(helper);
    expect(asked).toEqual([]);
  });

  it('goes through sudo otherwise: unrestricted when sudo allows it without a password (an administrator)', () => {
    vi.spyOn(process, 'getuid').mockReturnValue(1000);
    expect(helperCommand('/opt/rxs/dist/cli.js', (argv) => argv.at(-1) !== '--restricted')).toEqual(['sudo', '-n', ...helper]);
  });

  it('restricted when only the rule of --sudoers allows it (issue 17, finding 3)', () => {
    vi.spyOn(process, 'getuid').mockReturnValue(1000);
    const asked: string[][] = [];
    const onlyRestricted = (argv: readonly string[]) => (asked.push([...argv]), argv.at(-1) === '--restricted');
    expect(helperCommand('/opt/rxs/dist/cli.js', onlyRestricted)).toEqual(['sudo', '-n', ...helper, '--restricted']);
    expect(asked).toEqual([helper, [...helper, '--restricted']]);
  });

  it('unrestricted through a sudo that may ask for the password when neither is allowed without one', () => {
    vi.spyOn(process, 'getuid').mockReturnValue(1000);
    expect(helperCommand('/opt/rxs/dist/cli.js', never)).toEqual(['sudo', ...helper]);
  });
});
