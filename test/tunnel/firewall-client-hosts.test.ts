/**
 * firewall$ with -H: HOST lines go out only after READY (earlier ones wait), and an ERROR for
 * one of them is a warning, not the end of the tunnel. A scripted stand-in plays the helper.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { Subject } from 'rxjs';
import { afterAll, describe, expect, it } from 'vitest';
import type { FirewallSetup, HostsEntry } from '../../src/firewall/types.js';
import { type FirewallEvent, firewall$, hostsSender, MAX_WAITING_HOSTS } from '../../src/tunnel/firewall-client.js';
import { waitUntil } from '../support/wait-until.js';

const SETUP: FirewallSetup = { version: 1, method: 'nat', port: 12300, routerMode: false, rules: [], hosts: true };

const dir = mkdtempSync(join(tmpdir(), 'rxs-fwclient-hosts-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const FAKE = join(dir, 'fake-helper.mjs');
writeFileSync(
  FAKE,
  `
import { appendFileSync } from 'node:fs';
const [logFile, delay] = process.argv.slice(2);
const log = (s) => appendFileSync(logFile, s + '\\n');
const say = (s) => process.stdout.write(s + '\\n');
say('HELLO rxshuttle-fw 1');
let buf = '';
let setup = false;
process.stdin.on('data', (c) => {
  buf += c;
  let nl;
  while ((nl = buf.indexOf('\\n')) >= 0) {
    const line = buf.slice(0, nl);
    buf = buf.slice(nl + 1);
    if (!setup) { setup = true; log('setup'); setTimeout(() => say('READY'), Number(delay)); continue; }
    log(line);
    if (line.startsWith('HOST ')) say(line.includes('bad') ? 'ERROR invalid HOST line: not an acceptable host name' : 'OK');
  }
});
process.stdin.on('end', () => { log('eof'); process.exit(0); });
`,
);

describe('firewall$ with hosts$', () => {
  it('sends HOST lines after READY (holding earlier ones back); an ERROR is a warning; QUIT/EOF at the end', async () => {
    const logFile = join(dir, 'log1');
    writeFileSync(logFile, '');
    const hosts$ = new Subject<HostsEntry>();
    const events: FirewallEvent[] = [];
    let failed: unknown;
    const sub = firewall$(SETUP, { helperArgv: [process.execPath, FAKE, logFile, '200'], hosts$ }).subscribe({
      next: (e) => events.push(e),
      error: (e: unknown) => (failed = e),
    });
    await waitUntil(() => readFileSync(logFile, 'utf8').includes('setup'), { what: 'the setup at the helper' });
    hosts$.next({ address: '10.98.0.3', name: 'target' }); // before READY: waits
    expect(readFileSync(logFile, 'utf8')).toBe('setup\n');
    await waitUntil(() => events.length === 1, { what: 'ready' });
    expect(events).toEqual(['ready']);
    hosts$.next({ address: '10.98.0.4', name: 'bad' });
    await waitUntil(() => events.length === 2, { what: 'the warning' });
    expect(events[1]).toEqual({ kind: 'warning', message: 'firewall helper: invalid HOST line: not an acceptable host name' });
    expect(readFileSync(logFile, 'utf8')).toBe('setup\nHOST 10.98.0.3 target\nHOST 10.98.0.4 bad\n');
    expect(failed).toBeUndefined();
    sub.unsubscribe();
    await waitUntil(() => readFileSync(logFile, 'utf8').includes('eof'), { what: 'EOF at the helper' });
    hosts$.next({ address: '10.98.0.5', name: 'late' }); // after the end: nobody listens
    expect(readFileSync(logFile, 'utf8')).not.toContain('late');
  });
});

// Issue 17, finding 7: a flood of HOST frames from the server grew the client to 4.4 GiB, every
// line written to the helper's stdin whether it read them or not.
describe('hostsSender: HOST lines with backpressure', () => {
  /** A stdin whose writes complete only when told to (a helper that does not read). */
  function stuckStdin() {
    const chunks: string[] = [];
    let release: Array<() => void> = [];
    const stdin = new Writable({
      highWaterMark: 16 * 1024,
      write(chunk: Buffer, _encoding, callback) {
        chunks.push(chunk.toString());
        release.push(() => callback());
      },
    });
    const drain = async () => {
      while (release.length > 0) {
        const pending = release;
        release = [];
        for (const done of pending) done();
        await new Promise((r) => setImmediate(r));
      }
    };
    return { stdin, chunks, drain };
  }

  it('writes only while the stdin takes more; a name flipping between addresses waits as one entry', async () => {
    const t = stuckStdin();
    const sender = hostsSender(t.stdin);
    sender.add({ address: '10.0.0.9', name: 'early' }); // before READY: waits
    expect(t.stdin.writableLength).toBe(0);
    sender.start();
    for (let i = 0; i < 1000; i++) sender.add({ address: `10.0.${i >> 8}.${i & 255}`, name: `host-${i}` });
    const bound = 16 * 1024 + 64;
    expect(t.stdin.writableLength).toBeLessThan(bound);
    const waitingBefore = sender.waiting;
    for (let i = 0; i < 100_000; i++) sender.add({ address: i % 2 ? '10.1.0.2' : '10.1.0.1', name: 'flip' });
    expect(sender.waiting).toBe(waitingBefore + 1);
    expect(t.stdin.writableLength).toBeLessThan(bound);
    await t.drain();
    const lines = t.chunks.join('').split('\n').filter(Boolean);
    expect(lines).toHaveLength(1002);
    expect(lines[0]).toBe('HOST 10.0.0.9 early');
    expect(lines.filter((l) => l.endsWith(' flip'))).toEqual(['HOST 10.1.0.2 flip']); // the last address counts
    expect(sender.waiting).toBe(0);
  });

  it(`holds at most ${MAX_WAITING_HOSTS} names while the helper does not read, dropping new ones, never updates of waiting ones`, () => {
    const t = stuckStdin();
    const sender = hostsSender(t.stdin);
    sender.start();
    let dropped = 0;
    let lastWaiting = '';
    for (let i = 0; i < 50_000; i++) {
      const name = `n${i}.${'x'.repeat(200)}`;
      if (sender.add({ address: '10.2.0.1', name })) lastWaiting = name;
      else dropped++;
    }
    expect(sender.waiting).toBe(MAX_WAITING_HOSTS);
    expect(dropped).toBeGreaterThanOrEqual(50_000 - MAX_WAITING_HOSTS - 100);
    expect(t.stdin.writableLength).toBeLessThan(16 * 1024 + 300);
    expect(sender.add({ address: '10.2.0.2', name: lastWaiting })).toBe(true); // waiting: updated
    expect(sender.waiting).toBe(MAX_WAITING_HOSTS);
    expect(sender.add({ address: '10.2.0.2', name: 'new' })).toBe(false);
  });

  it('stops writing once the stdin has ended', () => {
    const t = stuckStdin();
    const sender = hostsSender(t.stdin);
    for (let i = 0; i < 5000; i++) sender.add({ address: '10.3.0.1', name: `h${i}` });
    t.stdin.end();
    sender.start();
    expect(sender.waiting).toBe(0);
  });
});

const FLOOD = join(dir, 'flood-helper.mjs');
writeFileSync(
  FLOOD,
  `
import { writeFileSync } from 'node:fs';
const [logFile, stallMs] = process.argv.slice(2);
process.stdout.write('HELLO rxshuttle-fw 1\\n');
let buf = '';
let setup = false;
let hosts = 0;
const onData = (c) => {
  buf += c;
  let nl;
  while ((nl = buf.indexOf('\\n')) >= 0) {
    const line = buf.slice(0, nl);
    buf = buf.slice(nl + 1);
    if (!setup) {
      setup = true;
      process.stdout.write('READY\\n');
      // Reads nothing for a while: the client must not buffer what it cannot write.
      process.stdin.pause();
      setTimeout(() => process.stdin.resume(), Number(stallMs));
      continue;
    }
    if (line.startsWith('HOST ')) { hosts++; process.stdout.write('OK\\n'); }
  }
  writeFileSync(logFile, String(hosts));
};
process.stdin.on('data', onData);
process.stdin.on('end', () => process.exit(0));
`,
);

describe('firewall$ with a flood of hosts entries', () => {
  it('a helper that does not read gets at most the waiting entries later; one warning says names were dropped', async () => {
    const logFile = join(dir, 'flood');
    writeFileSync(logFile, '0');
    const hosts$ = new Subject<HostsEntry>();
    const events: FirewallEvent[] = [];
    let failed: unknown;
    const sub = firewall$(SETUP, { helperArgv: [process.execPath, FLOOD, logFile, '500'], hosts$ }).subscribe({
      next: (e) => events.push(e),
      error: (e: unknown) => (failed = e),
    });
    await waitUntil(() => events.includes('ready'), { what: 'ready' });
    for (let i = 0; i < 40_000; i++) hosts$.next({ address: `10.4.${(i >> 8) & 255}.${i & 255}`, name: `host-${i}.corp.example` });
    for (let i = 0; i < 40_000; i++) hosts$.next({ address: i % 2 ? '10.5.0.2' : '10.5.0.1', name: 'host-39999.corp.example' });
    // Once it reads again it gets what waited (and what the pipe held), not all 80 000 lines.
    let last = -1;
    await waitUntil(
      () => {
        const now = Number(readFileSync(logFile, 'utf8'));
        const stable = now === last && now >= 10_000;
        last = now;
        return stable;
      },
      { timeoutMs: 20_000, intervalMs: 300, what: () => `the count of lines read to settle at 10 000 or more (${last})` },
    );
    expect(last).toBeLessThan(10_000 + 5000);
    const warnings = events.filter((e) => e !== 'ready');
    expect(warnings).toEqual([
      { kind: 'warning', message: '-H: 10000 hosts entries are waiting for the firewall helper; new names are dropped' },
    ]);
    expect(failed).toBeUndefined();
    sub.unsubscribe();
  });
});

