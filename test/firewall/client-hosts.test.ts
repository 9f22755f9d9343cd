/**
 * firewall$ with -H: HOST lines go out only after READY (earlier ones wait), and an ERROR for
 * one of them is a warning, not the end of the tunnel. A scripted stand-in plays the helper.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Subject } from 'rxjs';
import { afterAll, describe, expect, it } from 'vitest';
import { type FirewallEvent, firewall$ } from '../../src/firewall/client.js';
import type { FirewallSetup, HostsEntry } from '../../src/firewall/types.js';

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

const waitFor = async (check: () => boolean, ms = 5000) => {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('timeout');
    await new Promise((r) => setTimeout(r, 10));
  }
};

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
    await waitFor(() => readFileSync(logFile, 'utf8').includes('setup'));
    hosts$.next({ address: '10.98.0.3', name: 'target' }); // before READY: waits
    expect(readFileSync(logFile, 'utf8')).toBe('setup\n');
    await waitFor(() => events.length === 1);
    expect(events).toEqual(['ready']);
    hosts$.next({ address: '10.98.0.4', name: 'bad' });
    await waitFor(() => events.length === 2);
    expect(events[1]).toEqual({ kind: 'warning', message: 'firewall helper: invalid HOST line: not an acceptable host name' });
    expect(readFileSync(logFile, 'utf8')).toBe('setup\nHOST 10.98.0.3 target\nHOST 10.98.0.4 bad\n');
    expect(failed).toBeUndefined();
    sub.unsubscribe();
    await waitFor(() => readFileSync(logFile, 'utf8').includes('eof'));
    hosts$.next({ address: '10.98.0.5', name: 'late' }); // after the end: nobody listens
    expect(readFileSync(logFile, 'utf8')).not.toContain('late');
  });
});
