// sd_notify (issue 14): datagrams to NOTIFY_SOCKET, a path or an abstract name, received by socat
// as systemd would receive them.
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest';
import { notifyAddress, sdNotifier } from '../../src/cli/sd-notify.js';
import { waitUntil } from '../support/wait-until.js';

const dir = mkdtempSync(join(tmpdir(), 'rxs-notify-'));
const receivers: ChildProcess[] = [];
afterEach(() => {
  for (const r of receivers.splice(0)) r.kill('SIGKILL');
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** socat receiving datagrams at `address` (socat's syntax), once `bound()`; `text()`: what it received so far. */
async function receiver(address: string, bound: () => boolean): Promise<{ text(): string }> {
  const socat = spawn('socat', ['-u', address, 'STDOUT'], { stdio: ['ignore', 'pipe', 'pipe'] });
  receivers.push(socat);
  let out = '';
  socat.stdout.on('data', (c: Buffer) => (out += c.toString()));
  await waitUntil(bound, { what: `socat to bind ${address}` });
  return { text: () => out };
}

describe('sd_notify', () => {
  it('sends READY=1, STATUS=… and STOPPING=1 to a socket path', async () => {
    const path = join(dir, 'notify.sock');
    const r = await receiver(`UNIX-RECV:${path}`, () => existsSync(path));
    const notify = sdNotifier({ NOTIFY_SOCKET: path });
    for (const state of ['READY=1\n', 'STATUS=Connected to lab\n', 'STOPPING=1\n']) notify(state);
    await vi.waitFor(() => expect(r.text()).toBe('READY=1\nSTATUS=Connected to lab\nSTOPPING=1\n'), { timeout: 5000 });
  });

  it('to an abstract name (@name)', async () => {
    const name = `rxs-notify-${process.pid}`;
    const r = await receiver(`ABSTRACT-RECV:${name}`, () => readFileSync('/proc/net/unix', 'latin1').includes(`@${name}`));
    sdNotifier({ NOTIFY_SOCKET: `@${name}` })('READY=1\n');
    await vi.waitFor(() => expect(r.text()).toBe('READY=1\n'), { timeout: 5000 });
  });

  it('without NOTIFY_SOCKET, or with one it cannot use, it does nothing and never throws', () => {
    expect(() => sdNotifier({})('READY=1')).not.toThrow();
    expect(() => sdNotifier({ NOTIFY_SOCKET: join(dir, 'nobody-listens') })('READY=1')).not.toThrow();
    for (const bad of ['', 'relative', `/${'x'.repeat(200)}`]) expect(notifyAddress(bad)).toBeNull();
    expect(notifyAddress('/run/systemd/notify')?.length).toBe(2 + '/run/systemd/notify'.length + 1);
    expect(notifyAddress('@abc')?.length).toBe(2 + 4);
  });
});
