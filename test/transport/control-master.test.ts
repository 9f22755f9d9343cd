import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { concat, lastValueFrom, NEVER, type Observable, of, Subject, toArray } from 'rxjs';
import { afterEach, describe, expect, it } from 'vitest';
import { ControlPool, type HandOff, handOff$ } from '../../src/transport/control-master.js';
import type { Redirected } from '../../src/tunnel/listener.js';
import { type Carrier, controlMasterCarrier, routeRedirected } from '../../src/tunnel/route-connections.js';
import { socketPair } from '../support/socket-pair.js';
import { unexpectedError } from '../support/unexpected-error.js';
import { sleepForAbsence, waitUntil } from '../support/wait-until.js';

const DST = { family: 4 as const, address: '10.98.0.3', port: 80 };

const msg = (type: number, body: Buffer = Buffer.alloc(0)) => {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(4 + body.length, 0);
  head.writeUInt32BE(type, 4);
  return Buffer.concat([head, body]);
};
const u32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n, 0);
  return b;
};
const str = (s: string) => Buffer.concat([u32(Buffer.byteLength(s)), Buffer.from(s)]);

/**
 * A stand-in for an OpenSSH ControlMaster speaking PROTOCOL.mux: hello, then it answers a
 * NEW_STDIO_FWD with `answer` and records the request (host, port).
 */
function fakeMaster(path: string, answer: 'open' | 'fail') {
  const requests: { host: string; port: number }[] = [];
  const server: Server = createServer((control: Socket) => {
    control.write(msg(0x00000001, u32(4)));
    let buffered = Buffer.alloc(0);
    control.on('data', (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      while (buffered.length >= 8) {
        const length = buffered.readUInt32BE(0);
        if (buffered.length < 4 + length) return;
        const type = buffered.readUInt32BE(4);
        const body = buffered.subarray(8, 4 + length);
        buffered = buffered.subarray(4 + length);
        if (type !== 0x10000008) continue;
        const rid = body.readUInt32BE(0);
        const reservedLength = body.readUInt32BE(4);
        const hostAt = 8 + reservedLength;
        const hostLength = body.readUInt32BE(hostAt);
        const host = body.subarray(hostAt + 4, hostAt + 4 + hostLength).toString();
        requests.push({ host, port: body.readUInt32BE(hostAt + 4 + hostLength) });
        if (answer === 'open') {
          control.write(msg(0x80000006, Buffer.concat([u32(rid), u32(7)])));
          setTimeout(() => control.end(), 20); // the channel ends: the master closes the control connection
        } else control.write(msg(0x80000003, Buffer.concat([u32(rid), str('Session open refused by peer')])));
      }
    });
    control.on('error', () => {});
  });
  server.listen(path);
  return { server, requests };
}

/** A connected TCP socket pair on loopback (test/support/socket-pair.ts); the accepted end plays the redirected socket. */
const tcpPair = () => socketPair({ pauseOnConnect: true, allowHalfOpen: false });

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const cleanup of cleanups.splice(0)) cleanup();
});

function tempPath() {
  const dir = mkdtempSync(join(tmpdir(), 'rxs-ctl-test-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return join(dir, 'ctl');
}

describe('handOff$', () => {
  it('asks the master for a stdio forward to the destination and reports opened, then closed', async () => {
    const path = tempPath();
    const master = fakeMaster(path, 'open');
    cleanups.push(() => master.server.close());
    const pair = await tcpPair();
    const results = await lastValueFrom(handOff$(path, pair.accepted, DST).pipe(toArray()));
    expect(master.requests).toEqual([{ host: '10.98.0.3', port: 80 }]);
    expect(results.map((r: HandOff) => r.kind)).toEqual(['opened', 'closed']);
  });

  it('reports refused with the master reason, and leaves the socket to the caller', async () => {
    const path = tempPath();
    const master = fakeMaster(path, 'fail');
    cleanups.push(() => master.server.close());
    const pair = await tcpPair();
    const results = await lastValueFrom(handOff$(path, pair.accepted, DST).pipe(toArray()));
    expect(results).toEqual([{ kind: 'refused', reason: 'Session open refused by peer' }]);
    expect(pair.accepted.destroyed).toBe(false);
  });

  it('reports refused when there is no master at all', async () => {
    const pair = await tcpPair();
    const results = await lastValueFrom(handOff$(tempPath(), pair.accepted, DST).pipe(toArray()));
    expect(results).toEqual([{ kind: 'refused', reason: 'ssh closed the control connection' }]);
  });
});

describe('ControlPool', () => {
  it('keeps connections with the hellos done, and a hand-off over one of them works', async () => {
    const path = tempPath();
    const master = fakeMaster(path, 'open');
    cleanups.push(() => master.server.close());
    const pool = new ControlPool(path, 2);
    cleanups.push(() => pool.close());
    let prepared: ReturnType<ControlPool['take']>;
    await waitUntil(() => (prepared = pool.take()) !== undefined, { what: 'a prepared control connection' });
    const pair = await tcpPair();
    const results = await lastValueFrom(handOff$(path, pair.accepted, DST, prepared).pipe(toArray()));
    expect(results.map((r: HandOff) => r.kind)).toEqual(['opened', 'closed']);
    expect(master.requests).toEqual([{ host: '10.98.0.3', port: 80 }]);
  });

  it('gives nothing when there is no master, and does not spin', async () => {
    const pool = new ControlPool(tempPath(), 2);
    cleanups.push(() => pool.close());
    await sleepForAbsence(50);
    expect(pool.take()).toBeUndefined();
  });
});

describe('routeRedirected', () => {
  it('sends what ssh refuses to the mux, and stops trying after five refusals in a row', async () => {
    const path = tempPath();
    const master = fakeMaster(path, 'fail');
    cleanups.push(() => master.server.close());
    const redirected = new Subject<Redirected>();
    const toMux: Redirected[] = [];
    const events = lastValueFrom(routeRedirected(redirected, () => controlMasterCarrier(path), (r) => toMux.push(r)).pipe(toArray()));
    for (let i = 0; i < 7; i++) {
      const pair = await tcpPair();
      redirected.next({ socket: pair.accepted, destination: DST, source: `127.0.0.1:${i}` });
      await waitUntil(() => toMux.length === i + 1, { what: `connection ${i} to reach the mux` });
    }
    redirected.complete();
    const all = await events;
    expect(toMux).toHaveLength(7);
    expect(master.requests).toHaveLength(5);
    expect(all).toEqual([expect.objectContaining({ kind: 'warning' })]);
  });

  it('beyond maxHandOffs connections at once, new ones go to the mux (ssh would run out of descriptors)', async () => {
    const path = tempPath();
    const master = fakeMaster(path, 'open');
    cleanups.push(() => master.server.close());
    const redirected = new Subject<Redirected>();
    const toMux: Redirected[] = [];
    const events: string[] = [];
    const subscription = routeRedirected(redirected, () => controlMasterCarrier(path), (r) => toMux.push(r), 1).subscribe({ next: (e) => events.push(e.kind), error: unexpectedError });
    cleanups.push(() => subscription.unsubscribe());
    for (let i = 0; i < 2; i++) {
      const pair = await tcpPair();
      redirected.next({ socket: pair.accepted, destination: DST, source: `127.0.0.1:${i}` });
    }
    expect(toMux).toHaveLength(1);
    await waitUntil(() => events.includes('close'), { what: "the first one's channel to end" });
    const pair = await tcpPair();
    redirected.next({ socket: pair.accepted, destination: DST, source: '127.0.0.1:2' });
    expect(toMux).toHaveLength(1);
    await waitUntil(() => master.requests.length === 2, { what: 'the second request at the master' });
  });

  it.each([
    ['before ssh answered, destroys the socket (nobody else has it)', NEVER, { destroyed: true, toMux: 0 }],
    ['after opened, destroys our copy of the fd', concat(of<HandOff>({ kind: 'opened' }), NEVER), { destroyed: true, toMux: 0 }],
    ['after refused, leaves the socket to the mux', of<HandOff>({ kind: 'refused', reason: 'no' }), { destroyed: false, toMux: 1 }],
  ])('unsubscribing the tunnel %s', async (_name, answer: Observable<HandOff>, expected) => {
    let closed = false;
    const carrier: Carrier = { carry: () => answer, close: () => (closed = true) };
    const redirected = new Subject<Redirected>();
    const toMux: Redirected[] = [];
    const subscription = routeRedirected(redirected, () => carrier, (r) => toMux.push(r)).subscribe();
    const pair = await tcpPair();
    redirected.next({ socket: pair.accepted, destination: DST, source: '127.0.0.1:1' });
    subscription.unsubscribe();
    expect({ destroyed: pair.accepted.destroyed, toMux: toMux.length }).toEqual(expected);
    expect(closed).toBe(true);
  });

  it('without a control socket, everything goes to the mux', async () => {
    const redirected = new Subject<Redirected>();
    const toMux: Redirected[] = [];
    const done = lastValueFrom(routeRedirected(redirected, null, (r) => toMux.push(r)).pipe(toArray()));
    const pair = await tcpPair();
    redirected.next({ socket: pair.accepted, destination: DST, source: 'x' });
    redirected.complete();
    expect(await done).toEqual([]);
    expect(toMux).toHaveLength(1);
  });
});
