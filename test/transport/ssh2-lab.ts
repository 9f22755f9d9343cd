// The ssh2 transport's test bench: an in-process ssh2 server (keys made with ssh-keygen) that
// ssh2Connection$ connects to over loopback, connected socket pairs for the local programs, and
// the server-side streams the transfer tests use. useSsh2Lab() registers its hooks in the test
// file that calls it; connections, servers and sockets end after each test.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { type AddressInfo, type Server as NetServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { firstValueFrom, type Observable, throwError, timeout } from 'rxjs';
import ssh2, { type AcceptConnection, type Algorithms, type Connection, type RejectConnection, type ServerChannel, type TcpipRequestInfo } from 'ssh2';
import { afterAll, afterEach, beforeAll, expect } from 'vitest';
import type { HandOff } from '../../src/transport/control-master.js';
import { knownHostsNames } from '../../src/transport/known-hosts.js';
import type { ResolvedSshConfig, StrictHostKeyChecking } from '../../src/transport/ssh-config.js';
import { type Ssh2Connection, ssh2Connection$ } from '../../src/transport/ssh2.js';
import { ssh2Forward$ } from '../../src/transport/ssh2-forward.js';
import { socketPair as makeSocketPair } from '../support/socket-pair.js';
import { waitUntil } from '../support/wait-until.js';

// ssh2 is CommonJS: its named exports exist only on the default export under ESM.
const { Server, utils } = ssh2;

export interface Key {
  /** The OpenSSH private key file. */
  readonly file: string;
  readonly privateKey: Buffer;
  /** The .pub text minus the comment: what a known_hosts line holds after the host field. */
  readonly publicLine: string;
  /** The SSH wire-format public key, as hostVerifier gets it. */
  readonly blob: Buffer;
}

export interface TestServer {
  readonly port: number;
  /** The name known_hosts uses for this server. */
  readonly knownName: string;
}

export interface ServerOptions {
  hostKeys?: readonly Key[];
  /** What the server accepts (ssh2Connection$ offers ssh2's defaults: this picks among them). */
  algorithms?: Algorithms;
  /** `connection`: the server's side of the ssh connection (to re-key from there). */
  onTcpip?: (accept: AcceptConnection<ServerChannel>, reject: RejectConnection, info: TcpipRequestInfo, connection: Connection) => void;
}

export const listen = async (server: NetServer): Promise<number> => {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  return (server.address() as AddressInfo).port;
};

/**
 * Fails `source` if its first value takes longer than `ms`. Only the first: with `each`, the
 * timer starts again after every value, and a connection (one value, then nothing) was torn down
 * `ms` after it connected, silently (the promise had resolved): an upload still running then
 * arrived cut short, which looked like corruption on a loaded machine.
 */
export const bounded = <T>(source: Observable<T>, ms: number, what: string): Observable<T> =>
  source.pipe(timeout({ first: ms, with: () => throwError(() => new Error(`${what}: nothing within ${ms} ms`)) }));

export const destination = { family: 4 as const, address: '10.1.2.3', port: 80 };

export const kinds = (handOffs: readonly HandOff[]) => handOffs.map((h) => h.kind);

/** ssh2's Client has no public rekey(); its protocol has (the internals ssh2-internals.ts checks). */
export const clientRekey = (connection: Ssh2Connection) => (connection.client as unknown as { _protocol: { rekey(): void } })._protocol.rekey();

/**
 * A progress callback that re-keys at a quarter, half and three quarters of `total` bytes,
 * taking turns: ours, the server's, ours.
 */
export function rekeysAtQuarters(total: number, connection: Ssh2Connection, server: () => Connection | undefined): (bytes: number) => void {
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
export function stream(channel: ServerChannel, data: Buffer): void {
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
export function slowReader(
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
    // The program starts reading once our end has backed up (or 3 s have passed: `backedUp` says which).
    void waitUntil(() => accepted.writableNeedDrain, { timeoutMs: 3000, intervalMs: 5 })
      .then(() => true, () => false)
      .then((held) => {
        backedUp = held;
        setTimeout(() => program.resume(), restMs);
      });
  });
}

export interface Ssh2Lab {
  /** A directory for the test's files (known_hosts, Unix sockets), removed after the file's tests. */
  readonly dir: string;
  readonly keys: { readonly hostEd: Key; readonly hostEcdsa: Key; readonly otherEd: Key; readonly client: Key };
  /** Run after each test, last registered first: connections end before their servers. */
  readonly cleanups: (() => void | Promise<void>)[];
  /** An in-process sshd that lets in the client key and hands direct-tcpip requests to onTcpip (none: rejected). */
  startServer(options?: ServerOptions): Promise<TestServer>;
  /** What `ssh -G` would resolve for the test server on `port`: the client key, known_hosts of its own. */
  configFor(port: number, overrides?: Partial<ResolvedSshConfig>): ResolvedSshConfig;
  /** Connects and stays connected until the test's cleanup. */
  connect(config: ResolvedSshConfig): Promise<Ssh2Connection>;
  /** The error ssh2Connection$ ends with (fails the test if it connects instead). */
  connectError(config: ResolvedSshConfig, ms?: number): Promise<unknown>;
  /** A connected pair (see socket-pair.ts): `program` the local program's end, `accepted` ours. */
  socketPair(over?: 'tcp' | 'unix'): Promise<{ program: Socket; accepted: Socket }>;
  /** Runs the forward until the test's cleanup; fails the test if it errors. `receiveWindow` as ssh2Forward$'s (default if left out). */
  forward(connection: Ssh2Connection, accepted: Socket, to: typeof destination, receiveWindow?: number | null): void;
}

/** The bench for the calling test file: keys made once, everything else ended after each test. */
export function useSsh2Lab(): Ssh2Lab {
  const dir = mkdtempSync(join(tmpdir(), 'rxshuttle-ssh2-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const generateKey = (name: string, type: 'ed25519' | 'ecdsa'): Key => {
    const file = join(dir, name);
    execFileSync('ssh-keygen', ['-q', '-t', type, '-N', '', '-C', '', '-f', file]);
    const [keyType = '', base64 = ''] = readFileSync(`${file}.pub`, 'utf8').trim().split(' ');
    return { file, privateKey: readFileSync(file), publicLine: `${keyType} ${base64}`, blob: Buffer.from(base64, 'base64') };
  };
  let keys: Ssh2Lab['keys'] | undefined;
  beforeAll(() => {
    keys = {
      hostEd: generateKey('host_ed25519', 'ed25519'),
      hostEcdsa: generateKey('host_ecdsa', 'ecdsa'),
      otherEd: generateKey('other_ed25519', 'ed25519'),
      client: generateKey('id_ed25519', 'ed25519'),
    };
  });
  const keysMade = (): Ssh2Lab['keys'] => {
    if (!keys) throw new Error('the lab keys are made in beforeAll');
    return keys;
  };
  const cleanups: (() => void | Promise<void>)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  const startServer = async (options: ServerOptions = {}): Promise<TestServer> => {
    const allowed = utils.parseKey(keysMade().client.privateKey);
    if (allowed instanceof Error) throw allowed;
    const allowedKey = Array.isArray(allowed) ? allowed[0] : allowed;
    if (!allowedKey) throw new Error('no client key');
    const connections = new Set<Connection>();
    const hostKeys = (options.hostKeys ?? [keysMade().hostEd]).map((k) => k.privateKey);
    const server = new Server({ hostKeys, ...(options.algorithms ? { algorithms: options.algorithms } : {}) }, (client) => {
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
  };

  const configFor = (port: number, overrides: Partial<ResolvedSshConfig> = {}): ResolvedSshConfig => ({
    hostname: '127.0.0.1',
    port,
    user: 'test',
    identityFiles: [keysMade().client.file],
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
  });

  return {
    dir,
    get keys() {
      return keysMade();
    },
    cleanups,
    startServer,
    configFor,
    connect: (config) =>
      new Promise<Ssh2Connection>((resolve, reject) => {
        const subscription = bounded(ssh2Connection$(config, 'testhost'), 3000, 'connect').subscribe({ next: resolve, error: reject });
        cleanups.push(() => subscription.unsubscribe());
      }),
    connectError: (config, ms = 3000) =>
      firstValueFrom(bounded(ssh2Connection$(config, 'testhost'), ms, 'connect')).then(
        () => expect.fail('connected'),
        (err: unknown) => err,
      ),
    socketPair: async (over = 'tcp') => {
      const { client, accepted } = await makeSocketPair({ over, pauseOnConnect: true, noDelay: true });
      return { program: client, accepted };
    },
    forward: (connection, accepted, to, receiveWindow) => {
      const subscription = ssh2Forward$(connection, accepted, to, receiveWindow).subscribe({ error: (err: unknown) => expect.fail(`forward: ${String(err)}`) });
      cleanups.push(() => subscription.unsubscribe());
    },
  };
}
