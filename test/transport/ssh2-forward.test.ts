// ssh2Forward$ against an in-process ssh2 server (ssh2-lab.ts): a redirected socket carried in
// a direct-tcpip channel, both directions, half-close, refusals and resets.
import { lastValueFrom, toArray } from 'rxjs';
import type { TcpipRequestInfo } from 'ssh2';
import { describe, expect, it } from 'vitest';
import type { HandOff } from '../../src/transport/control-master.js';
import { ssh2Forward$ } from '../../src/transport/ssh2-forward.js';
import type { Ssh2Inbound } from '../../src/transport/ssh2-inbound.js';
import { waitUntil } from '../support/wait-until.js';
import { bounded, destination, kinds, stream, useSsh2Lab } from './ssh2-lab.js';
import { prng } from './test-data.js';

/** The in-process ssh server and connections these tests run against (ssh2-lab.ts). */
const lab = useSsh2Lab();

describe('ssh2Forward$', () => {
  it('emits refused and completes when the server rejects the channel, leaving the socket alone', async () => {
    const { port } = await lab.startServer({ onTcpip: (_accept, reject) => reject() });
    const connection = await lab.connect(lab.configFor(port));
    const { program, accepted } = await lab.socketPair();
    const handOffs = await lastValueFrom(bounded(ssh2Forward$(connection, accepted, destination), 3000, 'forward').pipe(toArray()));
    expect(kinds(handOffs)).toEqual(['refused']);
    // The socket now belongs to someone else (the mux): still open, and still working.
    await new Promise((resolve) => setImmediate(resolve));
    expect(accepted.destroyed).toBe(false);
    const received = new Promise<string>((resolve) => accepted.once('data', (chunk: Buffer) => resolve(chunk.toString())));
    accepted.resume();
    program.write('still here');
    expect(await received).toBe('still here');
  }, 10_000);

  it('carries both directions and passes each EOF on as a half-close', async () => {
    let serverReceived = '';
    let serverSawEof = false;
    let requested: TcpipRequestInfo | undefined;
    const { port } = await lab.startServer({
      onTcpip: (accept, _reject, info) => {
        requested = info;
        const channel = accept();
        // A reset before our EOF ends the channel under the 'end' handler's write; the assertions say so.
        channel.on('error', () => undefined);
        channel.on('data', (chunk: Buffer) => (serverReceived += chunk.toString()));
        // Answers only once our EOF arrived: its reply proves the half-close kept the way back open.
        channel.on('end', () => {
          serverSawEof = true;
          channel.end(`${serverReceived}+bye`);
        });
      },
    });
    const connection = await lab.connect(lab.configFor(port));
    const { program, accepted } = await lab.socketPair();
    let programReceived = '';
    program.on('data', (chunk: Buffer) => (programReceived += chunk.toString()));
    const programSawEof = new Promise<void>((resolve) => program.once('end', () => resolve()));
    const handOffs$ = bounded(ssh2Forward$(connection, accepted, destination), 3000, 'forward').pipe(toArray());
    const done = lastValueFrom(handOffs$);
    program.end('hello');
    const handOffs = await done;
    await programSawEof;
    expect(requested).toMatchObject({ destIP: destination.address, destPort: destination.port });
    expect(serverSawEof).toBe(true);
    expect(serverReceived).toBe('hello');
    expect(programReceived).toBe('hello+bye');
    expect(handOffs).toEqual([{ kind: 'opened' }, { kind: 'closed', bytesSent: 5, bytesReceived: 9 }]);
  }, 10_000);

  it('closes and completes when the local program resets while the server streams', async () => {
    const data = Buffer.alloc(16 * 1024 * 1024, 0x61);
    const { port } = await lab.startServer({ onTcpip: (accept) => stream(accept(), data) });
    const connection = await lab.connect(lab.configFor(port));
    const { program, accepted } = await lab.socketPair();
    // The program reads nothing: the bytes back up until our side of the socket needs a drain
    // (and the channel is paused); then it resets the connection.
    const handOffs: HandOff[] = [];
    const done = lastValueFrom(bounded(ssh2Forward$(connection, accepted, destination), 3000, 'forward').pipe(toArray()));
    void done.then((all) => handOffs.push(...all), () => {});
    await waitUntil(() => accepted.writableNeedDrain, { what: 'our end of the socket to need a drain' });
    expect(accepted.writableNeedDrain).toBe(true);
    expect(handOffs).toEqual([]);
    program.resetAndDestroy();
    const all = await done;
    expect(kinds(all)).toEqual(['opened', 'closed']);
    // What waited in the channel and the socket went nowhere, but its slabs were let go.
    expect((connection.inbound as Ssh2Inbound).heldChunks).toBe(0);
  }, 10_000);

  it('lets go of every chunk when many local programs reset or close mid-download at random points', async () => {
    const data = Buffer.alloc(4 * 1024 * 1024, 0x62);
    const { port } = await lab.startServer({ onTcpip: (accept) => stream(accept(), data) });
    const connection = await lab.connect(lab.configFor(port));
    const inbound = connection.inbound as Ssh2Inbound;
    const random = prng(7);
    const one = async (i: number) => {
      const { program, accepted } = await lab.socketPair();
      const done = lastValueFrom(bounded(ssh2Forward$(connection, accepted, destination), 10_000, `forward ${i}`).pipe(toArray()));
      // Reads a random amount (sometimes nothing), then resets, or closes with data unread, or pauses and resets.
      const stopAfter = Math.floor(random() * 2 * 1024 * 1024);
      const how = i % 3;
      let got = 0;
      await new Promise<void>((resolve) => {
        const stop = () => {
          program.off('data', onData);
          if (how === 0) program.resetAndDestroy();
          else if (how === 1) program.destroy();
          else {
            program.pause();
            setTimeout(() => program.resetAndDestroy(), 20);
          }
          resolve();
        };
        const onData = (chunk: Buffer) => {
          got += chunk.length;
          if (got >= stopAfter) stop();
        };
        program.on('data', onData);
        if (stopAfter === 0) stop();
      });
      expect(kinds(await done)).toEqual(['opened', 'closed']);
    };
    // Eight at a time, so chunks of different channels share slabs.
    for (let round = 0; round < 3; round++) await Promise.all(Array.from({ length: 8 }, (_, k) => one(round * 8 + k)));
    expect(inbound.stats.reused).toBeGreaterThan(0);
    expect(inbound.heldChunks).toBe(0);
  }, 60_000);
});
