import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createNetServer, connect as netConnect, type AddressInfo, type Server as NetServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { firstValueFrom, lastValueFrom, type Observable, throwError, timeout, toArray } from 'rxjs';
import ssh2 from 'ssh2';
import type { AcceptConnection, Connection, RejectConnection, ServerChannel, TcpipRequestInfo } from 'ssh2';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { TransportError } from '../../src/errors.js';
import type { HandOff } from '../../src/transport/control-master.js';
import { checkHostKey, knownHostsNames, parseKnownHosts } from '../../src/transport/known-hosts.js';
import type { ResolvedSshConfig, StrictHostKeyChecking } from '../../src/transport/ssh-config.js';
import { type Ssh2Connection, ssh2Connection$, ssh2Forward$, Ssh2Unsuitable } from '../../src/transport/ssh2.js';

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
    onTcpip?: (accept: AcceptConnection<ServerChannel>, reject: RejectConnection, info: TcpipRequestInfo) => void;
  } = {},
): Promise<TestServer> {
  const allowed = utils.parseKey(keys.client.privateKey);
  if (allowed instanceof Error) throw allowed;
  const allowedKey = Array.isArray(allowed) ? allowed[0] : allowed;
  if (!allowedKey) throw new Error('no client key');
  const connections = new Set<Connection>();
  const server = new Server({ hostKeys: (options.hostKeys ?? [keys.hostEd]).map((k) => k.privateKey) }, (client) => {
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
      client.on('tcpip', (accept, reject, info) => (options.onTcpip ? options.onTcpip(accept, reject, info) : reject()));
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

const bounded = <T>(source: Observable<T>, ms: number, what: string): Observable<T> =>
  source.pipe(timeout({ each: ms, with: () => throwError(() => new Error(`${what}: nothing within ${ms} ms`)) }));

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

/**
 * A real connected TCP pair: `program` is the local program's end, `accepted` ours, paused as
 * the listener's pauseOnConnect leaves it.
 */
async function socketPair(): Promise<{ program: Socket; accepted: Socket }> {
  const listener = createNetServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true });
  const port = await listen(listener);
  const acceptedP = new Promise<Socket>((resolve) => listener.once('connection', resolve));
  const program = netConnect({ host: '127.0.0.1', port, allowHalfOpen: true });
  program.on('error', () => {});
  const accepted = await acceptedP;
  accepted.on('error', () => {});
  listener.close();
  cleanups.push(() => {
    program.destroy();
    accepted.destroy();
  });
  return { program, accepted };
}

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
    const total = 16 * 1024 * 1024;
    let serverSent = 0;
    let serverChannelClosed = false;
    const { port } = await startServer({
      onTcpip: (accept) => {
        const channel = accept();
        channel.on('error', () => {});
        channel.on('close', () => (serverChannelClosed = true));
        const chunk = Buffer.alloc(64 * 1024, 0x61);
        const pump = () => {
          while (!serverChannelClosed && serverSent < total) {
            serverSent += chunk.length;
            if (!channel.write(chunk)) return void channel.once('drain', pump);
          }
          if (serverSent >= total) channel.end();
        };
        pump();
      },
    });
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
  }, 10_000);
});
