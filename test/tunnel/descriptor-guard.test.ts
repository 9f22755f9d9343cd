// Out of file descriptors: connections beyond the cap are refused with one warning per interval,
// the existing ones keep working.
import { connect, createServer, type Server, type Socket } from 'node:net';
import { firstValueFrom, of, Subject, toArray } from 'rxjs';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { TunnelEvent } from '../../src/shared/events.js';
import { connectionLimit, descriptorBudget, FD_RESERVE, guardDescriptors, openFileLimit, WARN_INTERVAL_MS } from '../../src/tunnel/descriptor-guard.js';
import { unexpectedError } from '../support/unexpected-error.js';

const servers: Server[] = [];
afterEach(() => {
  for (const s of servers.splice(0)) s.close();
});

async function echoServer(): Promise<Server> {
  const server = createServer((s) => s.on('data', (d) => s.write(d)).on('error', () => {}));
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return server;
}

/** How many connections the server has open. */
const connections = (server: Server) =>
  new Promise<number>((resolve, reject) => server.getConnections((err, count) => (err ? reject(err) : resolve(count))));

/** Connects and waits for the first echo (true) or the connection's end (false). */
function echo(port: number, keep: Socket[]): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    s.on('error', () => resolve(false));
    s.once('close', () => resolve(false));
    s.once('connect', () => s.write('x'));
    s.once('data', () => {
      keep.push(s);
      resolve(true);
    });
  });
}

describe('connectionLimit', () => {
  it(`keeps ${FD_RESERVE} descriptors free (half of a small limit), shared among the listeners`, () => {
    expect(connectionLimit(1024, 1)).toBe(1024 - FD_RESERVE);
    expect(connectionLimit(1024, 2)).toBe((1024 - FD_RESERVE) / 2);
    expect(connectionLimit(100, 1)).toBe(50);
    expect(connectionLimit(1, 1)).toBe(1);
    expect(connectionLimit(1024, 1, 3)).toBe(320);
  });

  it('reads the open-file limit of this process', () => {
    expect(openFileLimit()).toBeGreaterThan(0);
  });
});

describe('guardDescriptors', () => {
  it('refuses connections beyond the cap with a rate-limited warning; existing ones go on; the cap goes with the tunnel', async () => {
    const server = await echoServer();
    const port = (server.address() as { port: number }).port;
    const events: TunnelEvent[] = [];
    let clock = 0;
    const tunnel$ = new Subject<TunnelEvent>();
    // open-file limit 8 → 4 connections
    const sub = tunnel$.pipe(guardDescriptors([server], { fileLimit: 8, now: () => clock })).subscribe({ next: (e) => events.push(e), error: unexpectedError });
    const keep: Socket[] = [];
    const first = await Promise.all(Array.from({ length: 4 }, () => echo(port, keep)));
    expect(first).toEqual([true, true, true, true]);
    expect(await echo(port, keep)).toBe(false);
    expect(await echo(port, keep)).toBe(false);
    expect(events).toEqual([
      { kind: 'warning', message: expect.stringMatching(/too many open connections: refused 1 new one\(s\); at most 4 at a time under the open-file limit of 8/) },
    ]);
    clock += WARN_INTERVAL_MS;
    expect(await echo(port, keep)).toBe(false);
    expect(events[1]).toEqual({ kind: 'warning', message: expect.stringMatching(/refused 2 new one/) });
    // the four keep working
    const again = await Promise.all(
      keep.map((s) => new Promise<boolean>((r) => (s.once('data', () => r(true)), s.write('y')))),
    );
    expect(again).toEqual([true, true, true, true]);
    // one closes: a new one fits again
    keep.pop()?.destroy();
    await vi.waitFor(async () => expect(await connections(server)).toBe(3)); // the server has seen it go
    expect(await echo(port, keep)).toBe(true);
    sub.unsubscribe();
    expect(server.maxConnections).toBeUndefined();
    for (const s of keep) s.destroy();
  });

  it("warns when the server's connects fail for want of descriptors", async () => {
    const dst = { family: 4 as const, address: '10.0.0.1', port: 80 };
    const close = (detail: string): TunnelEvent => ({ kind: 'close', id: 1, destination: dst, reason: 'refused', detail, bytesSent: 0, bytesReceived: 0 });
    const events = await firstValueFrom(
      of(close('ECONNREFUSED'), close('EMFILE'), close('ENFILE')).pipe(guardDescriptors([], { now: () => 0 }), toArray()),
    );
    expect(events.filter((e) => e.kind === 'warning')).toEqual([
      { kind: 'warning', message: 'the server is out of file descriptors: refused 1 new connection(s); existing connections go on' },
    ]);
    expect(events.filter((e) => e.kind === 'close')).toHaveLength(3);
  });
});

describe('descriptorBudget', () => {
  it('without hand-off, every usable descriptor is a connection', () => {
    expect(descriptorBudget(20000, false)).toEqual({ connections: 19936, handOffs: 0 });
  });

  it('with hand-off, ssh gets a third (three descriptors each) and the mux the rest: 10 000 fit under 20 000', () => {
    const budget = descriptorBudget(20000, true);
    expect(budget).toEqual({ handOffs: 6645, connections: 13291 });
    // client: two per hand-off, one per mux connection; ssh: three per hand-off
    expect(2 * budget.handOffs + (budget.connections - budget.handOffs)).toBeLessThanOrEqual(19936);
    expect(3 * budget.handOffs).toBeLessThanOrEqual(19936);
    expect(budget.connections).toBeGreaterThanOrEqual(10000);
  });
});
