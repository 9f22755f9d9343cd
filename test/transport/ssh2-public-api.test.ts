// A connection whose capability check fails runs on ssh2's public API alone: it says so once,
// touches none of ssh2's private fields, and carries data intact both ways, with backpressure,
// a re-key and half-close. Failed two ways: a private field the check does not find on the real
// client (it sees the client through a view without it; ssh2 goes on with the real one), and
// RXSHUTTLE_SSH2_INTERNALS=off.
import type { Socket } from 'node:net';
import { lastValueFrom, toArray } from 'rxjs';
import type { Client, ClientChannel } from 'ssh2';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { Ssh2Connection } from '../../src/transport/ssh2.js';
import { ssh2Forward$ } from '../../src/transport/ssh2-forward.js';
import { INTERNALS_VARIABLE } from '../../src/transport/ssh2-internals.js';
import { captureDebug } from './debug-lines.js';
import { bounded, destination, slowReader, useSsh2Lab } from './ssh2-lab.js';
import { content, firstDifference } from './test-data.js';

/** The path of the private field of ssh2's Client that the check is not to find (none: all found). */
const hidden = vi.hoisted(() => ({ path: undefined as readonly string[] | undefined }));

vi.mock('../../src/transport/ssh2-internals.js', async (importOriginal) => {
  const real = await importOriginal<typeof import('../../src/transport/ssh2-internals.js')>();
  const { without } = await import('./without-field.js');
  return {
    ...real,
    ssh2Hooks: (client: Client, socket: Socket) => real.ssh2Hooks(hidden.path ? (without(client, hidden.path) as Client) : client, socket),
  };
});

const lab = useSsh2Lab();

afterEach(() => {
  hidden.path = undefined;
  vi.unstubAllEnvs();
});

const MB5 = 5 * 1024 * 1024;

/** Own properties ssh2Forward$ and the fast path would set on ssh2's objects, if any. */
function touched(connection: Ssh2Connection, channel: ClientChannel | undefined): string[] {
  const client = connection.client as unknown as { _protocol: object; _sock: Socket };
  return [
    Object.hasOwn(client._sock, 'write') ? 'socket.write' : '',
    // ssh2's own handler is a bound function named after its source.
    !/onPayload/.test((client._protocol as { _onPayload: { name: string } })._onPayload.name) ? 'protocol._onPayload' : '',
    channel && Object.hasOwn(channel, 'push') ? 'channel.push' : '',
    channel && (channel as unknown as { _readableState: { autoDestroy: boolean } })._readableState.autoDestroy === false ? 'channel autoDestroy' : '',
    // Our credit would have added its headroom (2^30) to ssh2's count of the window.
    channel && (channel as unknown as { incoming: { window: number } }).incoming.window > 2 ** 29 ? 'channel.incoming.window' : '',
  ].filter(Boolean);
}

describe.each([
  ['client._chanMgr.get is not found', () => (hidden.path = ['_chanMgr', 'get']), /not as expected: client\._chanMgr\.get/],
  ['client._protocol._onPayload is not found', () => (hidden.path = ['_protocol', '_onPayload']), /not as expected: client\._protocol\._onPayload/],
  [`${INTERNALS_VARIABLE}=off`, () => vi.stubEnv(INTERNALS_VARIABLE, 'off'), new RegExp(`${INTERNALS_VARIABLE}=off`)],
] as const)('when %s', (_name, failCheck, why) => {
  it("the connection runs on ssh2's public API, says so once, and carries 5 MiB up and 5 MiB down intact, through a re-key and a slow reader, each EOF passed on", async () => {
    failCheck();
    const up = content(51, MB5);
    const down = content(52, MB5);
    let serverGot: Promise<Buffer> = new Promise(() => {});
    let serverSawEof = false;
    let channelOpened: () => void = () => {};
    const opened = new Promise<void>((resolve) => (channelOpened = resolve));
    const { port } = await lab.startServer({
      onTcpip: (accept, _reject, _info, connection) => {
        const channel = accept();
        channel.on('error', () => {});
        const chunks: Buffer[] = [];
        channel.on('data', (chunk: Buffer) => chunks.push(Buffer.from(chunk)));
        const upEnded = new Promise<void>((resolve) => channel.once('end', () => resolve()));
        serverGot = upEnded.then(() => {
          serverSawEof = true;
          return Buffer.concat(chunks);
        });
        // The download, as the window allows; the server's EOF once both directions are done (an
        // ssh2 server closes a channel as soon as it has ended its side, as sshd does not).
        let at = 0;
        let rekeyed = false;
        const pump = () => {
          while (at < down.length) {
            const chunk = down.subarray(at, at + 64 * 1024);
            at += chunk.length;
            // Half way, the server re-keys: the rest comes with the new keys.
            if (at >= MB5 / 2 && !rekeyed) {
              rekeyed = true;
              connection.rekey();
            }
            if (!channel.write(chunk)) return void channel.once('drain', pump);
          }
          void upEnded.then(() => channel.end());
        };
        pump();
        channelOpened();
      },
    });
    const debug = captureDebug('rxshuttle:ssh2');
    lab.cleanups.push(() => debug.stop());
    const connection = await lab.connect(lab.configFor(port));
    expect(connection.hooks).toBeUndefined();
    expect(connection.publicApi).toMatch(why);

    let rekeys = 0;
    connection.client.on('handshake', () => rekeys++);
    let channel: ClientChannel | undefined;
    const forwardOut = connection.client.forwardOut.bind(connection.client);
    // Only to look at the channel afterwards (what the fast path would have changed on it).
    vi.spyOn(connection.client, 'forwardOut').mockImplementation(((...args: Parameters<Client['forwardOut']>) => {
      const [boundAddr, boundPort, remoteAddr, remotePort, callback] = args;
      return forwardOut(boundAddr, boundPort, remoteAddr, remotePort, (err, opened) => {
        channel = opened;
        callback?.(err, opened);
      });
    }) as Client['forwardOut']);
    const pair = await lab.socketPair();
    // The program reads slowly (the channel pauses, ssh2's own window fills) while it uploads.
    const received = slowReader(pair, { burst: 1024 * 1024, restMs: 10 });
    const handOffs = lastValueFrom(bounded(ssh2Forward$(connection, pair.accepted, destination), 20_000, 'forward').pipe(toArray()));
    await opened;
    pair.program.end(up);
    const [uploaded, downloaded, all] = await Promise.all([serverGot, received, handOffs]);
    expect(serverSawEof).toBe(true);
    expect(uploaded.length).toBe(MB5);
    expect(firstDifference(uploaded, up), 'first corrupted byte up').toBe(-1);
    expect(downloaded.bytes.length).toBe(MB5);
    expect(firstDifference(downloaded.bytes, down), 'first corrupted byte down').toBe(-1);
    expect(downloaded.backedUp).toBe(true);
    expect(rekeys).toBe(1);
    expect(all).toEqual([{ kind: 'opened' }, { kind: 'closed', bytesSent: MB5, bytesReceived: MB5 }]);
    expect(touched(connection, channel)).toEqual([]);
    // Said once, at the start, for the whole connection.
    const said = debug.lines.filter((line) => /public API|not as expected/.test(line));
    expect(said).toHaveLength(1);
    expect(said[0]).toMatch(why);
  }, 30_000);
});
