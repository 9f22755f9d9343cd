import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { type AddressInfo, createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { firstValueFrom, lastValueFrom, type Observable, throwError, timeout, toArray } from 'rxjs';
import type {
  AcceptConnection,
  Algorithms,
  CipherAlgorithm,
  ClientChannel,
  Connection,
  MacAlgorithm,
  NegotiatedAlgorithms,
  RejectConnection,
  ServerChannel,
  TcpipRequestInfo,
} from 'ssh2';
import ssh2 from 'ssh2';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { TransportError } from '../../src/errors.js';
import type { HandOff } from '../../src/transport/control-master.js';
import { checkHostKey, knownHostsNames, parseKnownHosts } from '../../src/transport/known-hosts.js';
import { SLAB_BYTES } from '../../src/transport/slabs.js';
import type { ResolvedSshConfig, StrictHostKeyChecking } from '../../src/transport/ssh-config.js';
import { type Ssh2Connection, Ssh2Unsuitable, ssh2Connection$, ssh2Forward$ } from '../../src/transport/ssh2.js';
import { LATENCY_CONTROL_WINDOW } from '../../src/transport/ssh2-credit.js';
import { Ssh2Inbound } from '../../src/transport/ssh2-inbound.js';
import { Ssh2Outbound } from '../../src/transport/ssh2-outbound.js';
import { fakeSsh2Client } from './fake-ssh2.js';
import { socketPair as makeSocketPair } from './socket-pair.js';
import { content, firstDifference, prng } from './test-data.js';

// ssh2 is CommonJS: its named exports exist only on the default export under ESM.
const { Server, utils } = ssh2;

const dir = mkdtempSync(join(tmpdir(), 'rxshuttle-ssh2-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

interface Key {
  /** The OpenSSH private key file. */
  readonly file: string;
  readonly privateKey: Buffer;
  /** The .pub text minus the comment: what a known_hosts line holds after the host field. */
  readonly publicLine: string;
  /** The SSH wire-format public key, as hostVerifier gets it. */
  readonly blob: Buffer;
}

function generateKey(name: string, type: 'ed25519' | 'ecdsa'): Key {
  const file = join(dir, name);
  execFileSync('ssh-keygen', ['-q', '-t', type, '-N', '', '-C', '', '-f', file]);
  const [keyType = '', base64 = ''] = readFileSync(`${file}.pub`, 'utf8').trim().split(' ');
  return { file, privateKey: readFileSync(file), publicLine: `${keyType} ${base64}`, blob: Buffer.from(base64, 'base64') };
}

let keys: { hostEd: Key; hostEcdsa: Key; otherEd: Key; client: Key };
beforeAll(() => {
  keys = {
    hostEd: generateKey('host_ed25519', 'ed25519'),
    hostEcdsa: generateKey('host_ecdsa', 'ecdsa'),
    otherEd: generateKey('other_ed25519', 'ed25519'),
    client: generateKey('id_ed25519', 'ed25519'),
  };
});

/** Run after each test, last registered first: connections end before their servers. */
const cleanups: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

const listen = async (server: NetServer): Promise<number> => {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  return (server.address() as AddressInfo).port;
};

interface TestServer {
  readonly port: number;
  /** The name known_hosts uses for this server. */
  readonly knownName: string;
}

/** An in-process sshd that lets in the client key and hands direct-tcpip requests to onTcpip (none: rejected). */
async function startServer(
  options: {
    hostKeys?: readonly Key[];
    /** What the server accepts (ssh2Connection$ offers ssh2's defaults: this picks among them). */
    algorithms?: Algorithms;
    /** `connection`: the server's side of the ssh connection (to re-key from there). */
    onTcpip?: (accept: AcceptConnection<ServerChannel>, reject: RejectConnection, info: TcpipRequestInfo, connection: Connection) => void;
  } = {},
): Promise<TestServer> {
  const allowed = utils.parseKey(keys.client.privateKey);
  if (allowed instanceof Error) throw allowed;
  const allowedKey = Array.isArray(allowed) ? allowed[0] : allowed;
  if (!allowedKey) throw new Error('no client key');
  const connections = new Set<Connection>();
  const server = new Server({ hostKeys: (options.hostKeys ?? [keys.hostEd]).map((k) => k.privateKey), ...(options.algorithms ? { algorithms: options.algorithms } : {}) }, (client) => {
    connections.add(client);
    client.on('error', () => {});
    client.on('close', () => connections.delete(client));
    client.on('authentication', (ctx) => {
      if (ctx.method !== 'publickey') return ctx.reject(['publickey']);
      const sameKey = ctx.key.algo === allowedKey.type && ctx.key.data.equals(allowedKey.getPublicSSH());
      const signed = ctx.signature === undefined || (ctx.blob !== undefined && allowedKey.verify(ctx.blob, ctx.signature, ctx.hashAlgo) === true);
      if (sameKey && signed) ctx.accept();
      else ctx.reject(['publickey']);
    });
    client.on('ready', () => {
      client.on('tcpip', (accept, reject, info) => (options.onTcpip ? options.onTcpip(accept, reject, info, client) : reject()));
    });
  });
  server.on('error', () => {});
  const port = await listen(server);
  cleanups.push(
    () =>
      new Promise<void>((resolve) => {
        for (const client of connections) client.end();
        server.close(() => resolve());
      }),
  );
  return { port, knownName: knownHostsNames('127.0.0.1', port)[0] ?? '' };
}

function configFor(port: number, overrides: Partial<ResolvedSshConfig> = {}): ResolvedSshConfig {
  return {
    hostname: '127.0.0.1',
    port,
    user: 'test',
    identityFiles: [keys.client.file],
    identitiesOnly: true,
    identityAgent: null,
    userKnownHostsFiles: [join(dir, `known_hosts_${port}`)],
    globalKnownHostsFiles: [],
    strictHostKeyChecking: 'no' as StrictHostKeyChecking,
    hashKnownHosts: false,
    hostKeyAlias: undefined,
    proxyJump: undefined,
    proxyCommand: undefined,
    connectTimeoutMs: undefined,
    batchMode: false,
    ...overrides,
  };
}

/**
 * Fails `source` if its first value takes longer than `ms`. Only the first: with `each`, the
 * timer starts again after every value, and a connection (one value, then nothing) was torn down
 * `ms` after it connected, silently (the promise had resolved): an upload still running then
 * arrived cut short, which looked like corruption on a loaded machine.
 */
const bounded = <T>(source: Observable<T>, ms: number, what: string): Observable<T> =>
  source.pipe(timeout({ first: ms, with: () => throwError(() => new Error(`${what}: nothing within ${ms} ms`)) }));

/** Connects and stays connected until the test's cleanup. */
async function connect(config: ResolvedSshConfig): Promise<Ssh2Connection> {
  return new Promise<Ssh2Connection>((resolve, reject) => {
    const subscription = bounded(ssh2Connection$(config, 'testhost'), 3000, 'connect').subscribe({ next: resolve, error: reject });
    cleanups.push(() => subscription.unsubscribe());
  });
}

/** The error ssh2Connection$ ends with (fails the test if it connects instead). */
async function connectError(config: ResolvedSshConfig, ms = 3000): Promise<unknown> {
  return firstValueFrom(bounded(ssh2Connection$(config, 'testhost'), ms, 'connect')).then(
    () => expect.fail('connected'),
    (err: unknown) => err,
  );
}

/** A connected pair (see socket-pair.ts): `program` the local program's end, `accepted` ours. */
const socketPair = (over: 'tcp' | 'unix' = 'tcp') => makeSocketPair({ cleanups, unixDir: dir }, over);

const destination = { family: 4 as const, address: '10.1.2.3', port: 80 };

const kinds = (handOffs: readonly HandOff[]) => handOffs.map((h) => h.kind);

describe('ssh2Connection$', () => {
  it('connects and authenticates with an unencrypted key file; the send queue starts uncongested', async () => {
    const { port } = await startServer();
    const connection = await connect(configFor(port));
    expect(connection.authenticatedWith).toBe(keys.client.file);
    expect(connection.sendQueue.congested()).toBe(false);
  }, 10_000);

  it('fails with Ssh2Unsuitable, promptly, when the server closes during the handshake', async () => {
    const fake = createNetServer((socket) => {
      socket.on('error', () => {});
      // Reads what the client sends (no reset), answers with an ident line only, then closes.
      socket.resume();
      socket.end('SSH-2.0-fake\r\n');
    });
    const port = await listen(fake);
    cleanups.push(() => new Promise<void>((resolve) => fake.close(() => resolve())));
    const started = Date.now();
    const err = await connectError(configFor(port), 2000);
    expect(err).toBeInstanceOf(Ssh2Unsuitable);
    expect(Date.now() - started).toBeLessThan(2000);
  }, 10_000);

  it('goes on with the key file when the identity agent is unusable (a regular file)', async () => {
    const { port } = await startServer();
    const notASocket = join(dir, 'not-an-agent');
    writeFileSync(notASocket, '');
    const connection = await connect(configFor(port, { identitiesOnly: false, identityAgent: notASocket }));
    expect(connection.authenticatedWith).toBe(keys.client.file);
  }, 10_000);

  describe('host key checking', () => {
    it('negotiates the key type known_hosts has when the server offers several', async () => {
      const { port, knownName } = await startServer({ hostKeys: [keys.hostEd, keys.hostEcdsa] });
      const knownHosts = join(dir, `known_hosts_ecdsa_${port}`);
      writeFileSync(knownHosts, `${knownName} ${keys.hostEcdsa.publicLine}\n`);
      const connection = await connect(configFor(port, { userKnownHostsFiles: [knownHosts], strictHostKeyChecking: 'yes' }));
      expect(connection.authenticatedWith).toBe(keys.client.file);
    }, 10_000);

    it('refuses a changed host key as final (a TransportError, not Ssh2Unsuitable) naming the file', async () => {
      const { port, knownName } = await startServer({ hostKeys: [keys.hostEd] });
      const knownHosts = join(dir, `known_hosts_changed_${port}`);
      writeFileSync(knownHosts, `${knownName} ${keys.otherEd.publicLine}\n`);
      const err = await connectError(configFor(port, { userKnownHostsFiles: [knownHosts], strictHostKeyChecking: 'yes' }));
      expect(err).toBeInstanceOf(TransportError);
      expect(err).not.toBeInstanceOf(Ssh2Unsuitable);
      expect((err as Error).message).toContain(knownHosts);
      expect((err as Error).message).toMatch(/CHANGED/);
    }, 10_000);

    it('refuses an unknown host under StrictHostKeyChecking yes with Ssh2Unsuitable', async () => {
      const { port } = await startServer();
      const knownHosts = join(dir, `known_hosts_empty_${port}`);
      writeFileSync(knownHosts, '');
      const err = await connectError(configFor(port, { userKnownHostsFiles: [knownHosts], strictHostKeyChecking: 'yes' }));
      expect(err).toBeInstanceOf(Ssh2Unsuitable);
      expect((err as Error).message).toMatch(/not known/);
    }, 10_000);

    it('accept-new appends on a line of its own when the file does not end with a newline', async () => {
      const { port, knownName } = await startServer({ hostKeys: [keys.hostEd] });
      const knownHosts = join(dir, `known_hosts_open_${port}`);
      const otherLine = `otherhost ${keys.otherEd.publicLine}`;
      writeFileSync(knownHosts, otherLine);
      await connect(configFor(port, { userKnownHostsFiles: [knownHosts], strictHostKeyChecking: 'accept-new' }));
      const text = readFileSync(knownHosts, 'utf8');
      expect(text.startsWith(`${otherLine}\n`)).toBe(true);
      expect(text.endsWith('\n')).toBe(true);
      const entries = parseKnownHosts(text, knownHosts);
      expect(entries).toHaveLength(2);
      expect(entries[0]?.names).toEqual({ kind: 'patterns', patterns: ['otherhost'] });
      expect(entries[0]?.key.equals(keys.otherEd.blob)).toBe(true);
      expect(checkHostKey(entries, ['otherhost'], keys.otherEd.blob).kind).toBe('match');
      expect(checkHostKey(entries, [knownName], keys.hostEd.blob)).toMatchObject({ kind: 'match', line: 2 });
    }, 10_000);
  });
});

describe('ssh2Forward$', () => {
  it('emits refused and completes when the server rejects the channel, leaving the socket alone', async () => {
    const { port } = await startServer({ onTcpip: (_accept, reject) => reject() });
    const connection = await connect(configFor(port));
    const { program, accepted } = await socketPair();
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
    const { port } = await startServer({
      onTcpip: (accept, _reject, info) => {
        requested = info;
        const channel = accept();
        channel.on('data', (chunk: Buffer) => (serverReceived += chunk.toString()));
        // Answers only once our EOF arrived: its reply proves the half-close kept the way back open.
        channel.on('end', () => {
          serverSawEof = true;
          channel.end(`${serverReceived}+bye`);
        });
      },
    });
    const connection = await connect(configFor(port));
    const { program, accepted } = await socketPair();
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
    const { port } = await startServer({ onTcpip: (accept) => stream(accept(), data) });
    const connection = await connect(configFor(port));
    const { program, accepted } = await socketPair();
    // The program reads nothing: the bytes back up until our side of the socket needs a drain
    // (and the channel is paused); then it resets the connection.
    const handOffs: HandOff[] = [];
    const done = lastValueFrom(bounded(ssh2Forward$(connection, accepted, destination), 3000, 'forward').pipe(toArray()));
    void done.then((all) => handOffs.push(...all), () => {});
    const deadline = Date.now() + 3000;
    while (!accepted.writableNeedDrain && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
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
    const { port } = await startServer({ onTcpip: (accept) => stream(accept(), data) });
    const connection = await connect(configFor(port));
    const inbound = connection.inbound as Ssh2Inbound;
    const random = prng(7);
    const one = async (i: number) => {
      const { program, accepted } = await socketPair();
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

/** Runs the forward until the test's cleanup; fails the test if it errors. `receiveWindow` as ssh2Forward$'s (default if left out). */
function forward(connection: Ssh2Connection, accepted: Socket, to: typeof destination, receiveWindow?: number | null): void {
  const subscription = ssh2Forward$(connection, accepted, to, receiveWindow).subscribe({ error: (err: unknown) => expect.fail(`forward: ${String(err)}`) });
  cleanups.push(() => subscription.unsubscribe());
}

/** ssh2's Client has no public rekey(); its protocol has (the internals ssh2-inbound.ts hooks into). */
const clientRekey = (connection: Ssh2Connection) => (connection.client as unknown as { _protocol: { rekey(): void } })._protocol.rekey();

/**
 * A progress callback that re-keys at a quarter, half and three quarters of `total` bytes,
 * taking turns: ours, the server's, ours.
 */
function rekeysAtQuarters(total: number, connection: Ssh2Connection, server: () => Connection | undefined): (bytes: number) => void {
  const rekeys = [
    { at: total / 4, by: () => clientRekey(connection) },
    { at: total / 2, by: () => server()?.rekey() },
    { at: (3 * total) / 4, by: () => clientRekey(connection) },
  ];
  return (bytes) => {
    while (rekeys[0] && bytes >= rekeys[0].at) rekeys.shift()?.by();
  };
}

/** The server's side: writes `data` into the channel as its window allows, then ends it (or stops when it closes). */
function stream(channel: ServerChannel, data: Buffer): void {
  channel.on('error', () => {});
  let closed = false;
  channel.on('close', () => (closed = true));
  let at = 0;
  const pump = () => {
    while (at < data.length) {
      if (closed) return;
      const chunk = data.subarray(at, at + 64 * 1024);
      at += chunk.length;
      if (!channel.write(chunk)) return void channel.once('drain', pump);
    }
    channel.end();
  };
  pump();
}

/**
 * The local program: reads nothing at first, until our side of the socket needs a drain
 * (chunks then wait in the channel), then reads in spurts of `burst` bytes with `restMs` of
 * rest between them. `onProgress` sees the byte count after each chunk. Resolves with all it
 * read once the stream ends, and whether our side of the socket did need a drain.
 */
function slowReader(
  { program, accepted }: { program: Socket; accepted: Socket },
  { burst, restMs, onProgress }: { burst: number; restMs: number; onProgress?: (received: number) => void },
): Promise<{ bytes: Buffer; backedUp: boolean }> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let backedUp = false;
    let received = 0;
    let sinceRest = 0;
    program.pause();
    program.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      received += chunk.length;
      sinceRest += chunk.length;
      onProgress?.(received);
      if (sinceRest >= burst) {
        sinceRest = 0;
        program.pause();
        setTimeout(() => program.resume(), restMs);
      }
    });
    program.once('end', () => resolve({ bytes: Buffer.concat(chunks), backedUp }));
    program.once('error', reject);
    const started = Date.now();
    const waitForBackPressure = () => {
      backedUp = accepted.writableNeedDrain;
      if (backedUp || Date.now() - started > 3000) setTimeout(() => program.resume(), restMs);
      else setTimeout(waitForBackPressure, 5);
    };
    waitForBackPressure();
  });
}

describe('ssh2Forward$ on reused read memory', () => {
  it('delivers a download intact through re-keys from both sides and a slow local reader, reusing slabs', async () => {
    const total = 12 * 1024 * 1024;
    const data = content(1, total);
    let serverSide: Connection | undefined;
    const { port } = await startServer({
      onTcpip: (accept, _reject, _info, connection) => {
        serverSide = connection;
        stream(accept(), data);
      },
    });
    const connection = await connect(configFor(port));
    let handshakes = 0;
    connection.client.on('handshake', () => handshakes++);
    const pair = await socketPair();
    const rekeyAt = rekeysAtQuarters(total, connection, () => serverSide);
    const received = slowReader(pair, {
      burst: 1024 * 1024,
      restMs: 20,
      onProgress: rekeyAt,
    });
    forward(connection, pair.accepted, destination);
    const { bytes, backedUp } = await received;
    expect(backedUp).toBe(true);
    expect(bytes.length).toBe(total);
    expect(firstDifference(bytes, data), 'first corrupted byte').toBe(-1);
    expect(handshakes).toBe(3);
    const inbound = connection.inbound as Ssh2Inbound;
    expect(inbound.reusing).toBe(true);
    expect(inbound.stats.reused).toBeGreaterThan(0);
    // What was read during the key exchanges is never reused.
    expect(inbound.stats.tainted).toBeGreaterThan(0);
  }, 60_000);

  it('gives each of two simultaneous forwards its own stream, intact', async () => {
    const total = 6 * 1024 * 1024;
    const dataFor = (port: number) => content(port, total);
    const { port } = await startServer({ onTcpip: (accept, _reject, info) => stream(accept(), dataFor(info.destPort)) });
    const connection = await connect(configFor(port));
    const first = await socketPair();
    const second = await socketPair();
    // Different rhythms, so their chunks interleave differently in the slabs.
    const receivedFirst = slowReader(first, { burst: 512 * 1024, restMs: 10 });
    const receivedSecond = slowReader(second, { burst: 1536 * 1024, restMs: 25 });
    forward(connection, first.accepted, { ...destination, port: 81 });
    forward(connection, second.accepted, { ...destination, port: 82 });
    const [firstReceived, secondReceived] = await Promise.all([receivedFirst, receivedSecond]);
    expect(firstReceived.backedUp || secondReceived.backedUp).toBe(true);
    expect(firstDifference(firstReceived.bytes, dataFor(81)), 'first corrupted byte of the first').toBe(-1);
    expect(firstDifference(secondReceived.bytes, dataFor(82)), 'first corrupted byte of the second').toBe(-1);
    expect((connection.inbound as Ssh2Inbound).stats.reused).toBeGreaterThan(0);
  }, 60_000);
});

describe('ssh2Forward$ channel credit (ssh2-credit.ts)', () => {
  /** What ssh2's forwardOut grants the server when it opens the channel (its MAX_WINDOW). */
  const INITIAL_GRANT = 2 * 1024 * 1024;
  /** ssh2's largest channel packet. */
  const PACKET = 32 * 1024;
  const modes = [
    ['credit (LATENCY_CONTROL_WINDOW)', LATENCY_CONTROL_WINDOW],
    ["ssh2's own windowing (null)", null],
  ] as const;

  interface ServerWindow {
    /** Bytes the server's channel has sent (handed to its connection), whether or not they reached us yet. */
    sent(): number;
    /** Window adjusts that reached the server. */
    adjusts(): number;
    /** The smallest adjust (Infinity before the first). */
    leastAdjust(): number;
    /** The most the server was allowed to have in flight once an adjust had come (0 before the first). */
    mostAfterAdjust(): number;
  }

  /**
   * Watches the server's view of a channel's window: ssh2 keeps it in `outgoing.window`, lowers
   * it as the channel sends and raises it as each of our adjusts arrives, right before sending
   * again; watching every assignment sees each adjust and the allowance at its peak. What the
   * server sent is then what it was granted minus what it may still send: its own count, with no
   * timing of ours in it.
   */
  function watchServerWindow(channel: ServerChannel): ServerWindow {
    const outgoing = (channel as unknown as { outgoing: { window: number } }).outgoing;
    let window = outgoing.window;
    let granted = window;
    let adjusts = 0;
    let leastAdjust = Infinity;
    let mostAfterAdjust = 0;
    Object.defineProperty(outgoing, 'window', {
      configurable: true,
      enumerable: true,
      get: () => window,
      set: (value: number) => {
        if (value > window) {
          adjusts++;
          granted += value - window;
          leastAdjust = Math.min(leastAdjust, value - window);
          mostAfterAdjust = Math.max(mostAfterAdjust, value);
        }
        window = value;
      },
    });
    return { sent: () => granted - window, adjusts: () => adjusts, leastAdjust: () => leastAdjust, mostAfterAdjust: () => mostAfterAdjust };
  }

  /** A server streaming `data` into each channel as its window allows; resolves with the first channel, watched. */
  async function streamingServer(data: Buffer) {
    let opened: (channel: { channel: ServerChannel; window: ServerWindow; connection: Connection }) => void = () => {};
    const channel = new Promise<Parameters<typeof opened>[0]>((resolve) => (opened = resolve));
    const { port } = await startServer({
      onTcpip: (accept, _reject, _info, connection) => {
        const accepted = accept();
        // Watched before the first write, so every byte sent is counted.
        const window = watchServerWindow(accepted);
        // Reads what we send (nothing): ssh2 emits a server channel's 'close' only after its 'end'.
        accepted.resume();
        stream(accepted, data);
        opened({ channel: accepted, window, connection });
      },
    });
    return { port, channel };
  }

  /** Resolves with `count()` once it is above 0 and has not changed for `quietMs`: the server sent all it may. */
  async function stalled(count: () => number, quietMs = 500, limitMs = 10_000): Promise<number> {
    const deadline = Date.now() + limitMs;
    let last = count();
    let since = Date.now();
    while (last === 0 || Date.now() - since < quietMs) {
      if (Date.now() > deadline) throw new Error(`the server did not stall within ${limitMs} ms (sent ${count()})`);
      await new Promise((resolve) => setTimeout(resolve, 10));
      const now = count();
      if (now !== last) {
        last = now;
        since = Date.now();
      }
    }
    return last;
  }

  /**
   * Streams 16 MiB to a program that reads nothing until the server has stalled, then reads it
   * all. Over a Unix socket pair, so that the kernel takes little off our socket meanwhile.
   */
  async function stoppedReader(receiveWindow: number | null) {
    const data = content(31, 16 * 1024 * 1024);
    const server = await streamingServer(data);
    const connection = await connect(configFor(server.port));
    const { program, accepted } = await socketPair('unix');
    program.pause();
    const chunks: Buffer[] = [];
    program.on('data', (chunk: Buffer) => chunks.push(chunk));
    const ended = new Promise<void>((resolve) => program.once('end', () => resolve()));
    forward(connection, accepted, destination, receiveWindow);
    const { window } = await server.channel;
    const whileStopped = await stalled(window.sent);
    // Bytes whose write to the program's socket completed (ssh2Forward$ credits them then).
    const inKernel = accepted.bytesWritten - accepted.writableLength;
    const adjustsWhileStopped = window.adjusts();
    program.resume();
    await ended;
    return { data, bytes: Buffer.concat(chunks), whileStopped, inKernel, adjustsWhileStopped, window };
  }

  it('with LATENCY_CONTROL_WINDOW: the server stalls at its initial grant while the program reads nothing, then never has more than the window to send', async () => {
    const { data, bytes, whileStopped, inKernel, adjustsWhileStopped, window } = await stoppedReader(LATENCY_CONTROL_WINDOW);
    // What the stall bound below rests on: the kernel took too little for any window to go back.
    expect(inKernel, 'bytes the kernel took off our socket').toBeLessThan(INITIAL_GRANT - LATENCY_CONTROL_WINDOW / 2);
    expect(adjustsWhileStopped, 'window adjusts while the program read nothing').toBe(0);
    expect(whileStopped, 'bytes the server sent while the program read nothing').toBeLessThanOrEqual(INITIAL_GRANT);
    // It did use its grant (else the stall says nothing).
    expect(whileStopped).toBeGreaterThan(INITIAL_GRANT - PACKET);
    expect(bytes.length).toBe(data.length);
    expect(firstDifference(bytes, data), 'first corrupted byte').toBe(-1);
    // After the initial grant, credit + unwritten <= the window: the server never may send more.
    expect(window.mostAfterAdjust(), 'most the server had to send after an adjust').toBeLessThanOrEqual(LATENCY_CONTROL_WINDOW);
    // In halves of the window, not an adjust per packet; enough of them to carry the rest.
    expect(window.leastAdjust()).toBeGreaterThanOrEqual(LATENCY_CONTROL_WINDOW / 2);
    expect(window.adjusts()).toBeGreaterThanOrEqual((data.length - INITIAL_GRANT) / LATENCY_CONTROL_WINDOW);
  }, 30_000);

  it("with null (ssh2's own windowing): ssh2 tops the window up on arrival, so far more reaches us while the program reads nothing", async () => {
    const { data, bytes, whileStopped, window } = await stoppedReader(null);
    // ssh2 tops up (back to 2 MiB when 1 MiB is left) until its channel buffers 2 MiB unread:
    // that 2 MiB, plus up to a packet short of a 1 MiB window still outstanding, plus what the
    // kernel and our socket hold. The credit test's bound is INITIAL_GRANT.
    expect(whileStopped, 'bytes the server sent while the program read nothing').toBeGreaterThanOrEqual(INITIAL_GRANT + INITIAL_GRANT / 2 - PACKET);
    // A top-up arrives with at most 1 MiB of the old window unused: at least 1 MiB to send.
    expect(window.mostAfterAdjust(), 'most the server had to send after an adjust').toBeGreaterThanOrEqual(INITIAL_GRANT / 2);
    expect(bytes.length).toBe(data.length);
    expect(firstDifference(bytes, data), 'first corrupted byte').toBe(-1);
  }, 30_000);

  it.each(modes)('%s: a download arrives intact through re-keys from both sides and a slow local reader', async (_name, receiveWindow) => {
    const total = 12 * 1024 * 1024;
    const data = content(32, total);
    const server = await streamingServer(data);
    const connection = await connect(configFor(server.port));
    let handshakes = 0;
    connection.client.on('handshake', () => handshakes++);
    const pair = await socketPair();
    let serverSide: Connection | undefined;
    void server.channel.then(({ connection: c }) => (serverSide = c));
    const rekeyAt = rekeysAtQuarters(total, connection, () => serverSide);
    const received = slowReader(pair, {
      burst: 768 * 1024,
      restMs: 15,
      onProgress: rekeyAt,
    });
    forward(connection, pair.accepted, destination, receiveWindow);
    const { bytes, backedUp } = await received;
    expect(backedUp).toBe(true);
    expect(bytes.length).toBe(total);
    expect(firstDifference(bytes, data), 'first corrupted byte').toBe(-1);
    expect(handshakes).toBe(3);
    const { window } = await server.channel;
    // Adjusts queued during a key exchange change nothing in the bound.
    if (receiveWindow !== null) expect(window.mostAfterAdjust(), 'most the server had to send after an adjust').toBeLessThanOrEqual(receiveWindow);
  }, 60_000);

  it.each(modes.flatMap(([name, receiveWindow]) => [
    [name, 'while the server waits for window (the program read nothing)', receiveWindow] as const,
    [name, 'after the program read 4 MiB, the stream flowing', receiveWindow] as const,
  ]))('%s: the channel closes and the forward completes when the program closes its socket %s', async (_name, when, receiveWindow) => {
    const total = 64 * 1024 * 1024;
    const server = await streamingServer(content(33, total));
    const connection = await connect(configFor(server.port));
    const { program, accepted } = await socketPair('unix');
    program.pause();
    let read = 0;
    const readEnough = new Promise<void>((resolve) =>
      program.on('data', (chunk: Buffer) => {
        read += chunk.length;
        if (read >= 4 * 1024 * 1024) resolve();
      }),
    );
    const done = lastValueFrom(bounded(ssh2Forward$(connection, accepted, destination, receiveWindow), 10_000, 'forward').pipe(toArray()));
    const { channel, window } = await server.channel;
    const serverClosed = new Promise<void>((resolve) => channel.once('close', () => resolve()));
    if (when.startsWith('while')) await stalled(window.sent);
    else {
      program.resume();
      await readEnough;
    }
    program.destroy();
    const handOffs = await done;
    expect(kinds(handOffs)).toEqual(['opened', 'closed']);
    await serverClosed;
    // The server stopped short: the close, not the end of the stream, ended the channel.
    expect(window.sent()).toBeLessThan(total);
  }, 30_000);
});

describe("Ssh2Inbound with ssh2's own AES-GCM decipher", () => {
  interface Ssh2Crypto {
    CIPHER_INFO: Record<string, { keyLen: number; ivLen: number }>;
    createCipher(config: object): { allocPacket(payloadLength: number): Buffer; encrypt(packet: Buffer): void };
    createDecipher(config: object): { decrypt(data: Buffer, start: number, end: number): void };
  }
  const sshCrypto = createRequire(import.meta.url)('ssh2/lib/protocol/crypto.js') as Ssh2Crypto;
  const CHANNEL_DATA = 94;
  const CHUNK = 32 * 1024;
  const TAG = 16;

  /**
   * The server's CHANNEL_DATA packets for channel 0, each CHUNK bytes of `data`, encrypted as
   * ssh2 does; each packet is [length][encrypted body][16-byte tag].
   */
  function encrypt(data: Buffer, keys: { cipherKey: Buffer; cipherIV: Buffer }): Buffer[] {
    const packets: Buffer[] = [];
    const cipher = sshCrypto.createCipher({
      outbound: { onWrite: (packet: Buffer) => packets.push(Buffer.from(packet)), seqno: 0, cipherInfo: sshCrypto.CIPHER_INFO['aes128-gcm@openssh.com'], ...keys },
    });
    for (let at = 0; at < data.length; at += CHUNK) {
      const chunk = data.subarray(at, at + CHUNK);
      const packet = cipher.allocPacket(9 + chunk.length);
      packet[5] = CHANNEL_DATA;
      packet.writeUInt32BE(0, 6);
      packet.writeUInt32BE(chunk.length, 10);
      chunk.copy(packet, 14);
      cipher.encrypt(packet);
    }
    return packets;
  }

  /**
   * Feeds the packets to Ssh2Inbound and ssh2's decipher one read at a time, each read ending
   * `tagInNextRead` ? just before a packet's tag (so ssh2 completes that packet while the next
   * read is passed on) : just after it. The local socket takes chunks at once, except that,
   * when not congested already, it congests as the first chunk completed in a read into a new
   * slab arrives, and drains 40 reads later. Returns what the socket wrote, and which chunks
   * had changed by the time it wrote them.
   */
  function download(data: Buffer, tagInNextRead: boolean): { written: Buffer; corrupted: number[] } {
    const keys = { cipherKey: randomBytes(16), cipherIV: randomBytes(12) };
    const wire = encrypt(data, keys);
    const inbound = new Ssh2Inbound();
    const channel = { push: (_chunk: Buffer): boolean => true };
    const { client, payloadHandler } = fakeSsh2Client(channel);
    inbound.hook(client);
    inbound.keyExchangeDone();
    expect(inbound.reusing).toBe(true);
    const queue: { chunk: Buffer; index: number }[] = [];
    const written: Buffer[] = [];
    const corrupted: number[] = [];
    let pushed = 0;
    let congestedFor = 0;
    let congestNow = false;
    const write = ({ chunk, index }: { chunk: Buffer; index: number }) => {
      if (!chunk.equals(data.subarray(index * CHUNK, (index + 1) * CHUNK))) corrupted.push(index);
      written.push(Buffer.from(chunk));
      inbound.release(chunk);
    };
    const originalPush = channel.push;
    channel.push = (chunk: Buffer) => {
      queue.push({ chunk, index: pushed++ });
      if (congestNow && congestedFor === 0) congestedFor = 40;
      congestNow = false;
      return originalPush(chunk);
    };
    inbound.keepChunks(channel as unknown as ClientChannel);
    const decipher = sshCrypto.createDecipher({
      inbound: { onPayload: payloadHandler(), seqno: 0, decipherInfo: sshCrypto.CIPHER_INFO['aes128-gcm@openssh.com'], decipherKey: keys.cipherKey, decipherIV: keys.cipherIV },
    });
    const stream = Buffer.concat(wire);
    // Where each read ends: before or after each packet's tag.
    const ends: number[] = [];
    let at = 0;
    for (const packet of wire) {
      at += packet.length;
      ends.push(tagInNextRead ? at - TAG : at);
    }
    ends.push(stream.length);
    let start = 0;
    let lastSlab: ArrayBufferLike | undefined;
    for (const end of ends) {
      if (end <= start) continue;
      const region = inbound.nextBuffer();
      expect(end - start).toBeLessThanOrEqual(region.length);
      stream.copy(region, 0, start, end);
      congestNow = lastSlab !== undefined && region.buffer !== lastSlab;
      lastSlab = region.buffer;
      inbound.read(end - start, (view) => decipher.decrypt(view, 0, view.length));
      start = end;
      if (congestedFor > 0) congestedFor--;
      if (congestedFor === 0) for (const queued of queue.splice(0)) write(queued);
    }
    for (const queued of queue.splice(0)) write(queued);
    expect(inbound.stats.reused).toBeGreaterThan(0);
    return { written: Buffer.concat(written), corrupted };
  }

  it.each([
    ['just after the tag', false],
    ['just before the tag (ssh2 keeps a view of the body until the tag comes in the next read)', true],
  ])('keeps chunks intact while the local socket congests, with reads ending %s', (_name, tagInNextRead) => {
    const data = content(7, 6 * 1024 * 1024);
    const { written, corrupted } = download(data, tagInNextRead);
    expect(corrupted, 'chunks that were overwritten before the socket wrote them').toEqual([]);
    expect(firstDifference(written, data)).toBe(-1);
  });
});

describe('ssh2Forward$ uploads from reused packet memory (Ssh2Outbound)', () => {
  /** Whether ssh2 has its compiled binding: only its ciphers encrypt in place, in packets we can lay out. */
  const binding = (createRequire(import.meta.url)('ssh2/lib/protocol/crypto.js') as { bindingAvailable: boolean }).bindingAvailable;
  const mode = binding ? "with ssh2's binding: every cipher taken over, packets in reused slabs" : "WITHOUT ssh2's binding: no cipher taken over (ssh2's own packets)";
  /**
   * The most slabs an upload may need: packets wait in our socket's buffer until written, each
   * keeping its slab. Local reads pause once more than SEND_QUEUE_HIGH (512 KiB) wait there or
   * CHANNEL_QUEUE_HIGH (256 KiB) wait in the channel (both in ssh2.ts); add a read of 64 KiB
   * that was under way, the slab being filled, and one partly before the first waiting packet.
   */
  const MOST_SLABS = Math.ceil((512 * 1024 + 256 * 1024 + 64 * 1024) / SLAB_BYTES) + 2;

  /**
   * Follows Ssh2Outbound.takeOverCipher (called after each key exchange): what each call
   * returned, and the connection's Ssh2Outbound (ssh2Connection$ keeps it to itself).
   */
  function watchOutbound() {
    const spy = vi.spyOn(Ssh2Outbound.prototype, 'takeOverCipher');
    cleanups.push(() => spy.mockRestore());
    return {
      returned: () => spy.mock.results.map((result) => (result.type === 'return' ? result.value : result.type)),
      outbound: (): Ssh2Outbound => {
        const instances = [...new Set(spy.mock.contexts)];
        expect(instances).toHaveLength(1);
        return instances[0] as Ssh2Outbound;
      },
    };
  }

  /** Slabs holding packets not yet written (the current one included): PacketSlabs' own count, read for the test. */
  const slabsInUse = (outbound: Ssh2Outbound): number =>
    (outbound as unknown as { slabs: { slabs: Map<ArrayBufferLike, unknown> } }).slabs.slabs.size;

  /** The server's side: collects what comes through a channel; `onProgress` sees the count after each chunk. */
  function collect(channel: ServerChannel, onProgress?: (bytes: number) => void): Promise<Buffer> {
    return new Promise((resolve) => {
      const chunks: Buffer[] = [];
      let received = 0;
      channel.on('error', () => {});
      channel.on('data', (chunk: Buffer) => {
        chunks.push(Buffer.from(chunk));
        received += chunk.length;
        onProgress?.(received);
      });
      channel.once('end', () => {
        channel.end();
        resolve(Buffer.concat(chunks));
      });
    });
  }

  /**
   * Holds our socket's writes back for `ms`, as a stalled network would: packets back up in its
   * buffer, each keeping its slab until written. `queued` gets how many bytes had backed up.
   */
  function stallWrites(connection: Ssh2Connection, ms: number, queued?: (bytes: number) => void): void {
    // ssh2's Client keeps the socket it was given (ssh2Connection$'s, with its write wrapped).
    const socket = (connection.client as unknown as { _sock: Socket })._sock;
    socket.cork();
    setTimeout(() => {
      queued?.(socket.writableLength);
      socket.uncork();
    }, ms);
  }

  /** An in-process server that accepts only `algorithms`, handing each channel to `onChannel`. */
  async function uploadServer(algorithms: Algorithms | undefined, onChannel: (channel: ServerChannel, connection: Connection) => void): Promise<number> {
    const { port } = await startServer({ ...(algorithms ? { algorithms } : {}), onTcpip: (accept, _reject, _info, connection) => onChannel(accept(), connection) });
    return port;
  }

  /** Every packet written by now has been released: only the slab being filled is in use. */
  async function expectAllReleased(outbound: Ssh2Outbound): Promise<void> {
    // The last write callbacks (e.g. of the channel's close) may come a tick after the data.
    await expect.poll(() => slabsInUse(outbound), { timeout: 2000, interval: 10 }).toBe(1);
  }

  const cases: { name: string; cipher: CipherAlgorithm; mac?: MacAlgorithm }[] = [
    { name: 'aes128-gcm@openssh.com', cipher: 'aes128-gcm@openssh.com' },
    { name: 'aes256-gcm@openssh.com', cipher: 'aes256-gcm@openssh.com' },
    { name: 'chacha20-poly1305@openssh.com', cipher: 'chacha20-poly1305@openssh.com' },
    { name: 'aes128-ctr + hmac-sha2-256', cipher: 'aes128-ctr', mac: 'hmac-sha2-256' },
    { name: 'aes128-ctr + hmac-sha2-256-etm@openssh.com', cipher: 'aes128-ctr', mac: 'hmac-sha2-256-etm@openssh.com' },
    { name: 'aes192-ctr + hmac-sha1', cipher: 'aes192-ctr', mac: 'hmac-sha1' },
    { name: 'aes256-ctr + hmac-sha2-512', cipher: 'aes256-ctr', mac: 'hmac-sha2-512' },
    { name: 'aes256-ctr + hmac-sha2-512-etm@openssh.com', cipher: 'aes256-ctr', mac: 'hmac-sha2-512-etm@openssh.com' },
  ];

  it.each(cases)(`$name, ${mode}: a 12 MiB upload arrives intact through re-keys from both sides and write stalls`, async ({ cipher, mac }) => {
    const watch = watchOutbound();
    const total = 12 * 1024 * 1024;
    const data = content(11, total);
    let clientConnection: Ssh2Connection | undefined;
    let arrived: Promise<Buffer> = new Promise(() => {});
    let gotChannel: () => void = () => {};
    const channelOpened = new Promise<void>((resolve) => (gotChannel = resolve));
    const port = await uploadServer({ cipher: [cipher], ...(mac ? { hmac: [mac] } : {}) }, (channel, serverSide) => {
      // As the server receives: re-keys at a quarter (ours), half (the server's) and three
      // quarters (ours); our writes held back for a while at an eighth and five eighths.
      const events = [
        { at: total / 8, then: (client: Ssh2Connection) => stallWrites(client, 30) },
        { at: total / 4, then: (client: Ssh2Connection) => clientRekey(client) },
        { at: total / 2, then: () => serverSide.rekey() },
        { at: (5 * total) / 8, then: (client: Ssh2Connection) => stallWrites(client, 30) },
        { at: (3 * total) / 4, then: (client: Ssh2Connection) => clientRekey(client) },
      ];
      arrived = collect(channel, (bytes) => {
        while (clientConnection && events[0] && bytes >= events[0].at) events.shift()?.then(clientConnection);
      });
      gotChannel();
    });
    const connection = await connect(configFor(port));
    clientConnection = connection;
    const negotiated: NegotiatedAlgorithms[] = [];
    connection.client.on('handshake', (algorithms) => negotiated.push(algorithms));
    const { program, accepted } = await socketPair();
    forward(connection, accepted, destination);
    await channelOpened;
    program.end(data);
    const bytes = await arrived;
    expect(bytes.length).toBe(total);
    expect(firstDifference(bytes, data), 'first corrupted byte').toBe(-1);
    // The three re-keys happened, with the algorithms under test.
    expect(negotiated.map((n) => [n.cs.cipher, mac ? n.cs.mac : undefined])).toEqual(Array(3).fill([cipher, mac]));
    // Taken over after every key exchange (the first one and the three re-keys), or never.
    expect(watch.returned(), mode).toEqual(Array(4).fill(binding));
    const outbound = watch.outbound();
    if (binding) {
      expect(outbound.stats.reused, 'packet slabs reused').toBeGreaterThan(0);
      // 12 MiB is 24 slabs' worth: a few slabs sufficed.
      expect(outbound.stats.allocated).toBeLessThanOrEqual(MOST_SLABS);
      await expectAllReleased(outbound);
    } else {
      // No packet of ours: only the slab PacketSlabs starts with, never used.
      expect(outbound.stats, mode).toEqual({ allocated: 1, reused: 0, tainted: 0 });
    }
  }, 30_000);

  it(`${mode}: a long upload through write stalls allocates a bounded number of slabs, and nothing stays pinned after it`, async () => {
    const watch = watchOutbound();
    const total = 48 * 1024 * 1024;
    const arrivals: Promise<Buffer>[] = [];
    // ssh2's default algorithms (what a real server would most likely negotiate). Every 4 MiB
    // the server receives, our socket holds its writes back for a while: packets back up in it
    // (as many as the send queue in ssh2.ts lets through), each keeping its slab until written.
    let clientConnection: Ssh2Connection | undefined;
    let mostQueued = 0;
    const port = await uploadServer(undefined, (channel) => {
      let stalls = 0;
      arrivals.push(
        collect(channel, (bytes) => {
          if (!clientConnection || bytes < (stalls + 1) * 4 * 1024 * 1024) return;
          stalls++;
          stallWrites(clientConnection, 50, (queued) => (mostQueued = Math.max(mostQueued, queued)));
        }),
      );
    });
    const connection = await connect(configFor(port));
    clientConnection = connection;
    /** Sends `data` through a new forward once the server has its channel; resolves with what arrived. */
    const upload = async (data: Buffer): Promise<Buffer> => {
      const { program, accepted } = await socketPair();
      const count = arrivals.length;
      forward(connection, accepted, destination);
      await expect.poll(() => arrivals.length, { timeout: 3000, interval: 5 }).toBe(count + 1);
      program.end(data);
      return (await Promise.all(arrivals))[count] ?? Buffer.alloc(0);
    };
    const first = content(12, total);
    expect(firstDifference(await upload(first), first), 'first corrupted byte of the long upload').toBe(-1);
    // The stalls did back packets up in our socket (else this test would show nothing).
    expect(mostQueued).toBeGreaterThan(256 * 1024);
    expect(watch.returned(), mode).toEqual([binding]);
    const outbound = watch.outbound();
    if (!binding) {
      expect(outbound.stats, mode).toEqual({ allocated: 1, reused: 0, tainted: 0 });
      return;
    }
    // 96 slabs' worth went out of a few; every packet was in a slab (no key exchange here).
    expect(outbound.stats.allocated).toBeLessThanOrEqual(MOST_SLABS);
    expect(outbound.stats.allocated + outbound.stats.reused).toBeGreaterThanOrEqual(total / SLAB_BYTES);
    await expectAllReleased(outbound);
    // Nothing pinned: another upload like it makes do with about as many slabs; the count does
    // not grow with the bytes sent.
    const second = content(13, 12 * 1024 * 1024);
    expect(firstDifference(await upload(second), second), 'first corrupted byte of the second upload').toBe(-1);
    expect(outbound.stats.allocated, 'slabs allocated after a second upload').toBeLessThanOrEqual(MOST_SLABS);
    await expectAllReleased(outbound);
  }, 60_000);
});

describe('ssh2Forward$ uploads through the shared read buffer (socket-reads.ts)', () => {
  /** One write ssh2Forward$ made to a channel, as the test's wrapper saw it. */
  interface ChannelWrite {
    readonly buffer: ArrayBufferLike;
    readonly length: number;
    /** The channel's outgoing window and queued bytes just before the write. */
    readonly windowBefore: number;
    readonly queuedBefore: number;
    /** Whether ssh2 still held (part of) the chunk when write() returned. */
    kept: boolean;
    /** Whether the write came after the channel's 'close'. */
    readonly afterClose: boolean;
  }
  interface WatchedChannel {
    readonly channel: ClientChannel;
    readonly writes: ChannelWrite[];
    closed: boolean;
  }

  type Outgoing = { window: number; state: string };
  const outgoingOf = (channel: ClientChannel) => (channel as unknown as { outgoing: Outgoing }).outgoing;

  /**
   * Wraps the client's forwardOut so that every channel ssh2Forward$ opens gets its write()
   * wrapped (before ssh2Forward$ sees the channel): records each chunk's memory and the state of
   * the channel around the write.
   */
  function watchChannels(connection: Ssh2Connection): WatchedChannel[] {
    const watched: WatchedChannel[] = [];
    const client = connection.client as unknown as { forwardOut: (...args: unknown[]) => unknown };
    const forwardOut = client.forwardOut.bind(client);
    client.forwardOut = (...args: unknown[]) => {
      const callback = args.pop() as (err: Error | undefined, channel?: ClientChannel) => void;
      return forwardOut(...args, (err: Error | undefined, channel?: ClientChannel) => {
        if (channel) {
          const entry: WatchedChannel = { channel, writes: [], closed: false };
          watched.push(entry);
          // First 'close' listener: runs before ssh2Forward$'s.
          channel.once('close', () => (entry.closed = true));
          const write = channel.write.bind(channel) as (chunk: Buffer, ...rest: unknown[]) => boolean;
          channel.write = ((chunk: Buffer, ...rest: unknown[]) => {
            const record: ChannelWrite = {
              buffer: chunk.buffer,
              length: chunk.length,
              windowBefore: outgoingOf(channel).window,
              queuedBefore: channel.writableLength,
              kept: false,
              afterClose: entry.closed,
            };
            const accepted = write(chunk, ...rest);
            record.kept = channel.writableLength > 0;
            entry.writes.push(record);
            return accepted;
          }) as typeof channel.write;
        }
        callback(err, channel);
      });
    };
    return watched;
  }

  /** Node's private field readIntoSharedBuffer sets (the buffer the socket reads into; null if none). */
  const readBufferOf = (socket: Socket): Buffer | null => {
    const symbol = Object.getOwnPropertySymbols(socket).find((s) => s.description === 'kBuffer');
    return symbol ? ((socket as unknown as Record<symbol, Buffer | null>)[symbol] ?? null) : null;
  };

  /** Counts the accepted socket's 'data' events (with pauseOnConnect, listening does not start reading). */
  const countData = (socket: Socket) => {
    let events = 0;
    socket.on('data', () => events++);
    return () => events;
  };

  /**
   * Splits the writes into views of `shared` (the read buffer) and copies; checks that ssh2 kept
   * no view past write() (it would be overwritten by the next read of any socket).
   */
  function paths(writes: readonly ChannelWrite[], shared: ArrayBufferLike) {
    const views = writes.filter((w) => w.buffer === shared);
    const copies = writes.filter((w) => w.buffer !== shared);
    expect(
      views.filter((w) => w.kept),
      'views of the shared buffer ssh2 kept past write()',
    ).toEqual([]);
    // A view only when ssh2 could send it all at once.
    expect(views.every((w) => w.queuedBefore === 0 && w.windowBefore >= w.length)).toBe(true);
    return { views: views.length, copies: copies.length, copiesForWindowOrQueue: copies.filter((w) => w.queuedBefore > 0 || w.windowBefore < w.length).length };
  }

  /** A pause of the server's reading at `at` bytes received: until `until()` holds (if given; at most 3 s), then `ms` more. */
  interface ServerPause {
    readonly at: number;
    readonly ms: number;
    readonly until?: () => boolean;
    /** Runs just before the server reads again; `held`: whether `until` came true. */
    readonly then?: (held: boolean) => void;
  }

  /**
   * The server's side of a channel: collects what arrives; `pauses` (by bytes received, or one
   * every so many bytes) stop it from reading for a while: ssh2 then stops granting us window
   * once its 2 MiB buffer is full.
   */
  function receive(channel: ServerChannel, pauses: { every: number; ms: number } | ServerPause[] = []): Promise<Buffer> {
    return new Promise((resolve) => {
      const chunks: Buffer[] = [];
      let received = 0;
      let next = Array.isArray(pauses) ? 0 : pauses.every;
      channel.on('error', () => {});
      const hold = async ({ ms, until, then }: Omit<ServerPause, 'at'>) => {
        channel.pause();
        const deadline = Date.now() + 3000;
        while (until && !until() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
        const held = until ? until() : true;
        await new Promise((r) => setTimeout(r, ms));
        then?.(held);
        channel.resume();
      };
      channel.on('data', (chunk: Buffer) => {
        chunks.push(Buffer.from(chunk));
        received += chunk.length;
        if (Array.isArray(pauses)) {
          const pause = pauses[0];
          if (!pause || received < pause.at) return;
          pauses.shift();
          void hold(pause);
        } else if (received >= next) {
          next += pauses.every;
          void hold({ ms: pauses.ms });
        }
      });
      channel.once('end', () => {
        channel.end();
        resolve(Buffer.concat(chunks));
      });
    });
  }

  it('a 16 MiB upload arrives intact while the server stops reading (window runs out: copies), then reads again (views), through a re-key', async () => {
    const total = 16 * 1024 * 1024;
    const data = content(41, total);
    let watched: WatchedChannel[] = [];
    /** Whether each stop of the server saw our window run out with chunks waiting in the channel. */
    const ranOut: boolean[] = [];
    let rekeyAt: (() => void) | undefined;
    let arrived: Promise<Buffer> = new Promise(() => {});
    let opened: () => void = () => {};
    const channelOpened = new Promise<void>((resolve) => (opened = resolve));
    const { port } = await startServer({
      onTcpip: (accept) => {
        const windowOut = () => {
          const channel = watched[0]?.channel;
          return channel !== undefined && outgoingOf(channel).window === 0 && channel.writableLength > 0;
        };
        const stop: ServerPause = { at: 0, ms: 50, until: windowOut, then: (held) => ranOut.push(held && windowOut()) };
        arrived = receive(accept(), [
          { ...stop, at: 2 * 1024 * 1024 },
          { at: 8 * 1024 * 1024, ms: 0, then: () => rekeyAt?.() },
          { ...stop, at: 11 * 1024 * 1024 },
        ]);
        opened();
      },
    });
    const connection = await connect(configFor(port));
    watched = watchChannels(connection);
    let handshakes = 0;
    connection.client.on('handshake', () => handshakes++);
    rekeyAt = () => clientRekey(connection);
    const { program, accepted } = await socketPair();
    const dataEvents = countData(accepted);
    forward(connection, accepted, destination);
    await channelOpened;
    // The server has the channel a moment before ssh2Forward$ does.
    await expect.poll(() => readBufferOf(accepted), { timeout: 3000, interval: 5 }).not.toBeNull();
    const shared = readBufferOf(accepted);
    expect(shared?.length).toBe(256 * 1024);
    program.end(data);
    const bytes = await arrived;
    expect(bytes.length).toBe(total);
    expect(firstDifference(bytes, data), 'first corrupted byte').toBe(-1);
    expect(handshakes).toBe(1);
    expect(dataEvents(), "the accepted socket's 'data' events").toBe(0);
    // While the server read nothing, our window ran out and chunks waited in the channel.
    expect(ranOut).toEqual([true, true]);
    const [entry] = watched;
    expect(watched).toHaveLength(1);
    const { views, copies, copiesForWindowOrQueue } = paths(entry?.writes ?? [], shared?.buffer ?? new ArrayBuffer(0));
    expect(views, 'writes that were views of the shared buffer').toBeGreaterThan(0);
    expect(copies, 'writes that were copies').toBeGreaterThan(0);
    expect(copiesForWindowOrQueue).toBe(copies);
    expect(entry?.writes.reduce((sum, w) => sum + w.length, 0)).toBe(total);
  }, 20_000);

  it('three uploads at once, read by the server at different paces, each arrive intact (one buffer, views in all of them)', async () => {
    const total = 6 * 1024 * 1024;
    const dataFor = (port: number) => content(port * 7, total);
    const arrivals = new Map<number, Promise<Buffer>>();
    const paces = new Map<number, { every: number; ms: number } | []>([
      [81, []],
      [82, { every: 1536 * 1024, ms: 100 }],
      [83, { every: 384 * 1024, ms: 25 }],
    ]);
    const { port } = await startServer({
      onTcpip: (accept, _reject, info) => arrivals.set(info.destPort, receive(accept(), paces.get(info.destPort) ?? [])),
    });
    const connection = await connect(configFor(port));
    const watched = watchChannels(connection);
    const ports = [...paces.keys()];
    const pairs = await Promise.all(ports.map(() => socketPair()));
    const dataEvents = pairs.map(({ accepted }) => countData(accepted));
    pairs.forEach(({ accepted }, i) => forward(connection, accepted, { ...destination, port: ports[i] ?? 0 }));
    await expect.poll(() => arrivals.size, { timeout: 3000, interval: 5 }).toBe(ports.length);
    // The server has the channels a moment before ssh2Forward$ does.
    await expect.poll(() => pairs.every(({ accepted }) => readBufferOf(accepted) !== null), { timeout: 3000, interval: 5 }).toBe(true);
    // All three read into the one buffer.
    const shared = readBufferOf(pairs[0]!.accepted);
    for (const { accepted } of pairs) expect(readBufferOf(accepted)).toBe(shared);
    pairs.forEach(({ program }, i) => program.end(dataFor(ports[i] ?? 0)));
    for (const destPort of ports) {
      const bytes = await arrivals.get(destPort);
      expect(bytes?.length, `bytes to port ${destPort}`).toBe(total);
      expect(firstDifference(bytes ?? Buffer.alloc(0), dataFor(destPort)), `first corrupted byte to port ${destPort}`).toBe(-1);
    }
    expect(dataEvents.map((count) => count())).toEqual([0, 0, 0]);
    expect(watched).toHaveLength(3);
    const each = watched.map((entry) => paths(entry.writes, shared?.buffer ?? new ArrayBuffer(0)));
    // Views in every forward (the buffer was shared in flight), and copies where the server paused.
    for (const [i, { views }] of each.entries()) expect(views, `views in forward ${i}`).toBeGreaterThan(0);
    expect(each.reduce((sum, { copies }) => sum + copies, 0), 'copies in all').toBeGreaterThan(0);
  }, 20_000);

  it('discards what the program still sends after the server closed the channel, and completes with closed', async () => {
    const total = 8 * 1024 * 1024;
    const data = content(43, total);
    let serverChannelClosed: Promise<void> = new Promise(() => {});
    let serverGot = 0;
    const firstBytes: Buffer[] = [];
    const { port } = await startServer({
      onTcpip: (accept) => {
        const channel = accept();
        channel.on('error', () => {});
        serverChannelClosed = new Promise((resolve) => channel.once('close', () => resolve()));
        let closing = false;
        channel.on('data', (chunk: Buffer) => {
          serverGot += chunk.length;
          firstBytes.push(Buffer.from(chunk));
          if (serverGot >= 1024 * 1024 && !closing) {
            closing = true;
            channel.close();
          }
        });
      },
    });
    const connection = await connect(configFor(port));
    const watched = watchChannels(connection);
    const { program, accepted } = await socketPair('unix');
    const dataEvents = countData(accepted);
    let programError: unknown;
    program.on('error', (err) => (programError = err));
    const programEnded = new Promise<void>((resolve) => program.once('end', () => resolve()));
    program.resume();
    let readAtClose = -1;
    const done = lastValueFrom(bounded(ssh2Forward$(connection, accepted, destination), 10_000, 'forward').pipe(toArray()));
    await expect.poll(() => watched.length, { timeout: 3000, interval: 5 }).toBe(1);
    watched[0]?.channel.once('close', () => (readAtClose = accepted.bytesRead));
    const allWritten = new Promise<void>((resolve) => program.end(data, () => resolve()));
    const handOffs = await done;
    await allWritten;
    await programEnded;
    await serverChannelClosed;
    expect(programError).toBeUndefined();
    // Every byte the program sent was read (none left to reset the connection with)...
    expect(handOffs).toEqual([{ kind: 'opened' }, { kind: 'closed', bytesSent: total, bytesReceived: 0 }]);
    // ... most of them after the close, and none of those went to the channel.
    expect(readAtClose).toBeGreaterThan(0);
    expect(readAtClose).toBeLessThan(total);
    const writes = watched[0]?.writes ?? [];
    expect(writes.filter((w) => w.afterClose)).toEqual([]);
    expect(writes.reduce((sum, w) => sum + w.length, 0)).toBeLessThanOrEqual(readAtClose);
    expect(dataEvents()).toBe(0);
    // What the server did get was the beginning of the data, intact.
    const got = Buffer.concat(firstBytes);
    expect(got.length).toBeLessThan(total);
    expect(firstDifference(got, data.subarray(0, got.length))).toBe(-1);
  }, 20_000);
});
