import { appendFileSync, existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { connect as netConnect, type Socket } from 'node:net';
import createDebug from 'debug';
import { catchError, concat, defer, EMPTY, Observable } from 'rxjs';
import type { AnyAuthMethod, Client, ClientChannel, ConnectConfig, NextAuthHandler } from 'ssh2';
import { errorMessage, TransportError } from '../errors.js';
import { printable } from '../printable.js';
import { corkForThisTick, corkForThisTurn } from '../streams/cork.js';
import type { Destination } from '../streams/frame.js';
import { frameWriter } from '../streams/frame-writer.js';
import { fromReadable } from '../streams/from-readable.js';
import { resetSocket } from '../streams/socket-end.js';
import { serverUpload } from './bundle.js';
import type { HandOff } from './control-master.js';
import {
  checkHostKey,
  hostKeyDecision,
  type KnownHostEntry,
  knownHostsLine,
  knownHostsNames,
  parseKnownHosts,
  preferredHostKeyAlgorithms,
} from './known-hosts.js';
import { ServerExit, type ServerProcess, stderrLines } from './server-process.js';
import { readIntoSharedBuffer, readWaiting } from './socket-reads.js';
import type { ResolvedSshConfig } from './ssh-config.js';
import { creditChannel, LATENCY_CONTROL_WINDOW } from './ssh2-credit.js';
import { Ssh2Inbound } from './ssh2-inbound.js';
import { loadSsh2, sshRandomFill } from './ssh2-module.js';
import { Ssh2Outbound } from './ssh2-outbound.js';

const debug = createDebug('rxshuttle:ssh2');
// Loaded through ssh2-module.ts (CommonJS, with its randomFillSync pooled).
const { Client: SshClient, utils: sshUtils } = loadSsh2();
/** Whether ssh2 found its compiled cipher binding (built at install time when a compiler was there). */
const sshCryptoBinding: boolean = (createRequire(import.meta.url)('ssh2/lib/protocol/crypto.js') as { bindingAvailable: boolean })
  .bindingAvailable;
const ignore = () => {};

/** Like ssh's default: give up on a server that does not finish the handshake. */
const DEFAULT_READY_TIMEOUT_MS = 20_000;
/** Bytes read from the ssh socket in one event-loop turn before other sockets get theirs. */
const READ_BYTES_PER_TURN = 512 * 1024;
/** A read at least this large means the socket has a backlog (a bulk transfer). */
const BULK_READ_BYTES = 64 * 1024;
/** ssh2's message when its keepalive requests went unanswered. */
const KEEPALIVE_TIMEOUT = 'Keepalive timeout';
/** ssh2's message when every authentication method has been tried. */
const AUTH_EXHAUSTED = /All configured authentication methods failed/;
/** ssh2 error levels that mean the host could not be reached at all. */
const UNREACHABLE_LEVELS = new Set(['client-socket', 'client-dns', 'client-timeout']);
/** Bytes queued on the ssh connection beyond which local readers pause (see SendQueue). */
const SEND_QUEUE_HIGH = 512 * 1024;
/** Bytes queued in one channel (waiting for its window) beyond which its local reader pauses. */
const CHANNEL_QUEUE_HIGH = 256 * 1024;

/**
 * `--transport ssh2`: the ssh connection lives in this process (the ssh2 library; OpenSSL does
 * the cipher). It saves the hop through the ssh binary, and TCP connections become direct-tcpip
 * channels that sshd connects itself, as with `ssh -L`, with half-close passed on both ways.
 * The user's configuration still decides where and as whom: `ssh -G` resolved it (ssh-config.ts).
 */
export interface Ssh2Connection {
  readonly client: Client;
  /** What authenticated us, for the log. */
  readonly authenticatedWith: string;
  /**
   * Whether more than SEND_QUEUE_HIGH bytes wait to go out on the ssh connection. ssh2 itself
   * writes whatever a channel's window allows, however slow the network; senders pause on this
   * instead, which bounds our memory and keeps bulk uploads from queueing ahead of keystrokes.
   */
  readonly sendQueue: SendQueue;
  /** Keeps a channel's incoming chunks intact until released (they are views of reused memory). */
  readonly inbound: Pick<Ssh2Inbound, 'keepChunks' | 'copyChunks' | 'release'>;
}

export interface SendQueue {
  congested(): boolean;
  /** Calls `resume` once, when the queue has drained; returns a cancel. Only paused senders wait. */
  whenDrained(resume: () => void): () => void;
}

/** ssh2 cannot do what this host needs (the ssh binary may): the reason, and the error if it is final. */
export class Ssh2Unsuitable extends TransportError {
  constructor(
    where: string,
    readonly reason: string,
  ) {
    super('RXS_ERR_SSH', `ssh to ${where} failed: ${reason}`);
  }
}

/** What in the user's configuration ssh2 cannot do at all; null when it can try. */
export function ssh2Unsuitable(config: ResolvedSshConfig): string | null {
  if (config.proxyJump) return `ssh2 cannot use ProxyJump (${config.proxyJump})`;
  if (config.proxyCommand) return 'ssh2 cannot use ProxyCommand';
  return null;
}

interface AuthAttempt {
  readonly label: string;
  readonly method: AnyAuthMethod;
}

function readKnownHosts(files: readonly string[]): KnownHostEntry[] {
  return files.flatMap((file) => {
    try {
      return parseKnownHosts(readFileSync(file, 'utf8'), file);
    } catch {
      return [];
    }
  });
}

/** The agent, then each identity file that exists and needs no passphrase, in ssh's order. */
function authAttempts(config: ResolvedSshConfig, username: string): AuthAttempt[] {
  const attempts: AuthAttempt[] = [];
  const agent = config.identityAgent === null ? undefined : (config.identityAgent ?? process.env.SSH_AUTH_SOCK);
  // IdentitiesOnly: ssh offers only the configured keys (using the agent only to sign those);
  // ssh2 cannot limit an agent that way, so it does without the agent.
  if (agent && existsSync(agent) && !config.identitiesOnly) {
    attempts.push({ label: 'the ssh agent', method: { type: 'agent', username, agent } });
  }
  for (const file of config.identityFiles) {
    if (!existsSync(file)) continue;
    let parsed;
    try {
      parsed = sshUtils.parseKey(readFileSync(file));
    } catch (err) {
      debug('identity %s: %s', file, errorMessage(err));
      continue;
    }
    const key = Array.isArray(parsed) ? parsed[0] : parsed;
    if (!key || key instanceof Error) {
      debug('identity %s unusable: %s', file, key instanceof Error ? key.message : 'no key');
      continue;
    }
    attempts.push({ label: file, method: { type: 'publickey', username, key } });
  }
  return attempts;
}

/** keepalive@openssh.com requests every `intervalMs`; `misses` unanswered in a row end the connection with `lost`. */
export interface Ssh2Keepalive {
  readonly intervalMs: number;
  readonly misses: number;
  readonly lost: string;
}

/**
 * Opens and authenticates the ssh connection; unsubscribing ends it. Errors are one-line
 * TransportErrors that say what to do (unknown host key, no usable key, unreachable host).
 */
export function ssh2Connection$(config: ResolvedSshConfig, where: string, keepalive?: Ssh2Keepalive): Observable<Ssh2Connection> {
  return new Observable<Ssh2Connection>((subscriber) => {
    const unsuitable = ssh2Unsuitable(config);
    if (unsuitable) {
      subscriber.error(new Ssh2Unsuitable(where, `${unsuitable}: use --transport ssh`));
      return;
    }
    const knownHostsFiles = [...config.userKnownHostsFiles, ...config.globalKnownHostsFiles];
    const entries = readKnownHosts(knownHostsFiles);
    const names = knownHostsNames(config.hostname, config.port, config.hostKeyAlias);
    let hostKeyRefusal: string | undefined;
    let hostKeyUnknown = false;
    /** The key the first key exchange accepted: every later one (rekey) must show the same. */
    let acceptedKey: Buffer | undefined;
    const attempts = authAttempts(config, config.user);
    const tried: string[] = [];
    let authenticatedWith = '';

    // Reads land in reused slabs; ssh2Inbound follows what ssh2 keeps of them (slabs.ts).
    const inbound = new Ssh2Inbound();
    const deliver = (view: Buffer) => socket.emit('data', view);
    // libuv reads up to 32 times in a row while the socket has data: at 4 Gbit/s that is 8 MiB
    // to decrypt and pass on before any other socket (an interactive one) gets a turn.
    let readThisTurn = 0;
    let pausedForTurn = false;
    const nextTurn = () => {
      readThisTurn = 0;
      if (!pausedForTurn) return;
      pausedForTurn = false;
      socket.resume();
    };
    const socket: Socket = netConnect({
      host: config.hostname,
      port: config.port,
      onread: {
        buffer: inbound.nextBuffer,
        callback: (bytes: number) => {
          inbound.read(bytes, deliver);
          // Small reads (no backlog) are left out: counting them would cost a setImmediate each.
          if (bytes < BULK_READ_BYTES) return true;
          if (readThisTurn === 0) setImmediate(nextTurn);
          readThisTurn += bytes;
          if (readThisTurn < READ_BYTES_PER_TURN) return true;
          pausedForTurn = true;
          return false;
        },
      },
    });
    // Channel opens are small packets answered by small packets: Nagle would hold each for an ACK.
    socket.setNoDelay(true);
    // ssh2 writes each ssh packet by itself: the packets of one event-loop turn (all channels)
    // leave in one writev instead.
    const write = socket.write.bind(socket) as (chunk: Buffer, written?: () => void) => boolean;
    // Packets in reused slabs, released when written (ssh2-outbound.ts).
    const outbound = new Ssh2Outbound(sshRandomFill);
    let congested = false;
    const waiting = new Set<() => void>();
    socket.write = ((chunk: Buffer) => {
      corkForThisTurn(socket);
      const accepted = outbound.owns(chunk) ? write(chunk, () => outbound.released(chunk)) : write(chunk);
      if (socket.writableLength > SEND_QUEUE_HIGH) congested = true;
      return accepted;
    }) as typeof socket.write;
    socket.on('drain', () => {
      congested = false;
      const resumes = [...waiting];
      waiting.clear();
      for (const resume of resumes) resume();
    });
    const sendQueue: SendQueue = {
      congested: () => congested,
      whenDrained(resume) {
        waiting.add(resume);
        return () => waiting.delete(resume);
      },
    };
    const client = new SshClient();
    let ready = false;
    client.on('error', (err: Error & { level?: string }) => {
      debug('ssh2 error (%s): %s', err.level, err.message);
      if (ready) {
        const why = keepalive && err.message === KEEPALIVE_TIMEOUT ? keepalive.lost : `connection to ${where} lost: ${printable(err.message)}`;
        subscriber.error(new TransportError('RXS_ERR_TRANSPORT_CLOSED', why));
        return;
      }
      // An agent that cannot sign, or a key that cannot: ssh2 goes on with the next method.
      if (err.level === 'agent' || (err.level === 'client-authentication' && !AUTH_EXHAUSTED.test(err.message))) return;
      if (hostKeyRefusal) {
        // A changed or revoked key is final: falling back would only ask ssh to overlook it.
        subscriber.error(hostKeyUnknown ? new Ssh2Unsuitable(where, hostKeyRefusal) : new TransportError('RXS_ERR_SSH', `ssh to ${where} failed: ${hostKeyRefusal}`));
      } else if (err.level === 'client-authentication') {
        const why =
          attempts.length === 0
            ? `no usable key: no ssh agent and no unencrypted identity file (${config.identityFiles.join(', ') || 'none'})`
            : `authentication failed (tried ${tried.join(', ')})`;
        subscriber.error(new Ssh2Unsuitable(where, `${why}; ssh2 cannot ask for passwords or passphrases`));
      } else if (UNREACHABLE_LEVELS.has(err.level ?? '')) {
        // A host that does not answer would not answer the ssh binary either.
        const why = err.level === 'client-timeout' ? 'timed out during the ssh handshake' : printable(err.message);
        subscriber.error(new TransportError('RXS_ERR_SSH', `ssh to ${where} failed: ${why}`));
      } else {
        // Algorithms, a disconnect ("too many authentication failures"), a protocol quirk: the
        // ssh binary may still manage.
        subscriber.error(new Ssh2Unsuitable(where, printable(err.message)));
      }
    });
    client.on('close', () => {
      // Before ssh2 ends every channel (it does so right after this event): ssh2Forward$ must not
      // take that for the server's EOF.
      lostClients.add(client);
      // As ssh words it when sshd ends the session.
      if (ready) subscriber.error(new TransportError('RXS_ERR_TRANSPORT_CLOSED', `connection to ${where} lost: connection closed by remote host`));
      // Closed before ready without an error (ssh2 then reports none, and stops its timer).
      else if (!subscriber.closed) subscriber.error(new Ssh2Unsuitable(where, 'the server closed the connection during the ssh handshake'));
    });
    client.on('handshake', (negotiated) => {
      inbound.keyExchangeDone();
      outbound.takeOverCipher(client);
      debug('ciphers: %s up, %s down (%s)', negotiated.cs.cipher, negotiated.sc.cipher, sshCryptoBinding ? "ssh2's binding" : 'OpenSSL');
    });
    client.on('ready', () => {
      ready = true;
      debug('connected to %s:%d as %s with %s', config.hostname, config.port, config.user, authenticatedWith);
      debug('read slabs %s', inbound.reusing ? 'reused' : 'not reused (ssh2 internals not as expected)');
      subscriber.next({ client, authenticatedWith, sendQueue, inbound });
    });
    const known = preferredHostKeyAlgorithms(entries, names);
    const teardown = () => {
      for (const [name, { stats }] of [['read', inbound], ['packet', outbound]] as const) {
        debug('%s slabs: %d allocated, %d reused, %d tainted', name, stats.allocated, stats.reused, stats.tainted);
      }
      ready = false;
      lostClients.add(client);
      client.end();
      socket.destroy();
    };
    try {
      client.connect({
      sock: socket,
      username: config.user,
      readyTimeout: config.connectTimeoutMs ?? DEFAULT_READY_TIMEOUT_MS,
      // At the ssh level, so that it works without the node server too (stock-sshd mode).
      // ssh2 gives up when more than keepaliveCountMax requests in a row went unanswered.
      keepaliveInterval: keepalive?.intervalMs ?? 0,
      keepaliveCountMax: Math.max(0, (keepalive?.misses ?? 1) - 1),
      algorithms: {
        // As ssh's default (Compression no): zlib would cost more CPU than it saves on a LAN.
        compress: ['none'],
        // The key types known_hosts has for this host first, so the one it knows is negotiated
        // (ssh2 applies remove, then prepend; prepend alone skips types already listed).
        ...(known.length > 0 ? { serverHostKey: { remove: known, prepend: known, append: [] } } : {}),
      },
      hostVerifier: (key: Buffer) => {
        if (acceptedKey) return acceptedKey.equals(key);
        const verdict = checkHostKey(entries, names, key);
        const decision = hostKeyDecision(verdict, config.strictHostKeyChecking, where);
        if (!decision.ok) {
          hostKeyRefusal = decision.message;
          hostKeyUnknown = verdict.kind === 'unknown';
          return false;
        }
        if (decision.learn) learnHostKey(config, names, key);
        acceptedKey = Buffer.from(key);
        return true;
      },
      authHandler: (_methodsLeft: unknown, _partial: boolean, next: NextAuthHandler) => {
        const attempt = attempts[tried.length];
        // ssh2 takes false for "nothing left to try" (its typings do not say so).
        if (!attempt) return (next as unknown as (done: false) => void)(false);
        tried.push(attempt.label);
        authenticatedWith = attempt.label;
        next(attempt.method);
      },
    } as ConnectConfig);
      inbound.hook(client);
    } catch (err) {
      // e.g. a known_hosts key type ssh2 does not know ("Unsupported algorithm").
      teardown();
      subscriber.error(new Ssh2Unsuitable(where, errorMessage(err)));
    }
    return teardown;
  });
}

/** accept-new: remember the key as ssh would, in the first user known_hosts file. */
function learnHostKey(config: ResolvedSshConfig, names: readonly string[], key: Buffer): void {
  const file = config.userKnownHostsFiles[0];
  if (!file || file === '/dev/null') return;
  try {
    // As ssh does: a last line without its newline must not swallow ours.
    const current = existsSync(file) ? readFileSync(file) : Buffer.alloc(0);
    const endsOpen = current.length > 0 && current[current.length - 1] !== 0x0a;
    appendFileSync(file, `${endsOpen ? '\n' : ''}${knownHostsLine(names, key, config.hashKnownHosts)}\n`, { mode: 0o600 });
    debug('added the host key of %s to %s', names[0], file);
  } catch (err) {
    debug('cannot add the host key to %s: %s', file, errorMessage(err));
  }
}

/**
 * Runs the server command in an exec channel and uploads the bundle, like serverProcess$ does
 * through the ssh binary. The channel's exit status ends bytes$ with a ServerExit.
 */
export function ssh2Server$(client: Client, command: string, inbound?: Pick<Ssh2Inbound, 'copyChunks'>): Observable<ServerProcess> {
  return new Observable<ServerProcess>((subscriber) => {
    let channel: ClientChannel | undefined;
    let closed = false;
    client.exec(command, (err, opened) => {
      if (err) {
        subscriber.error(new TransportError('RXS_ERR_SSH', `cannot start the server: ${printable(err.message)}`));
        return;
      }
      if (closed) {
        opened.close();
        return;
      }
      channel = opened;
      // The session's bytes go to the frame decoder, which may keep them: copied off the slabs.
      inbound?.copyChunks(opened);
      const errors = stderrLines(channel.stderr);
      let exitCode: number | null = null;
      let exitSignal: NodeJS.Signals | null = null;
      channel.on('exit', (code: number | null, signal?: string) => {
        exitCode = code;
        // ssh2 names it with the prefix already (SIGKILL); older versions did not.
        exitSignal = signal ? ((signal.startsWith('SIG') ? signal : `SIG${signal}`) as NodeJS.Signals) : null;
      });
      const ended = new Promise<void>((resolve) => channel?.once('close', () => resolve()));
      const bytes$ = concat(
        fromReadable(channel).pipe(catchError((e: unknown) => (debug('server output: %s', errorMessage(e)), EMPTY))),
        defer(async () => {
          await ended;
          throw new ServerExit(exitCode, exitSignal, errors.finish(), true);
        }),
      );
      channel.on('error', ignore);
      channel.write(serverUpload());
      const input = channel;
      subscriber.next({
        bytes$,
        sendRaw: (bytes) => input.write(bytes),
        writer: frameWriter(input),
        stderr$: errors.lines$,
        pid: undefined,
      });
    });
    return () => {
      closed = true;
      channel?.end();
    };
  });
}

/**
 * Carries one redirected socket in a direct-tcpip channel: sshd connects to the destination and
 * each side's EOF reaches the other as a half-close. 'refused' leaves the socket untouched (the
 * caller gives it to the mux, which answers with the real errno). Unsubscribing resets both.
 */
/** Connections that closed or are being closed: their channels end because of it, not by the server's EOF. */
const lostClients = new WeakSet<Client>();

export function ssh2Forward$(
  connection: Ssh2Connection,
  socket: Socket,
  destination: Destination,
  /** The channel's receive window under latency control (ssh2-credit.ts); null: ssh2's own. */
  receiveWindow: number | null = LATENCY_CONTROL_WINDOW,
): Observable<HandOff> {
  const { client, sendQueue, inbound } = connection;
  return new Observable<HandOff>((subscriber) => {
    let channel: ClientChannel | undefined;
    let done = false;
    let stopWaiting: (() => void) | undefined;
    const cancelWait = () => {
      stopWaiting?.();
      stopWaiting = undefined;
    };
    const origin = { host: socket.remoteAddress ?? '127.0.0.1', port: socket.remotePort ?? 0 };
    try {
      client.forwardOut(origin.host, origin.port, destination.address, destination.port, (err, opened) => {
        if (done) {
          opened?.close();
          return;
        }
        if (err) {
          // Done first: the socket now belongs to the mux, and the teardown must leave it alone.
          done = true;
          subscriber.next({ kind: 'refused', reason: printable(err.message) });
          subscriber.complete();
          return;
        }
        channel = opened;
        // ssh2 emits the channel's 'close' itself; a stream's own auto-destroy would only call
        // ssh2's destroy(), whose end() on an ended stream builds an error (a stack trace per
        // connection) that nobody sees.
        const states = opened as unknown as Record<'_readableState' | '_writableState', { autoDestroy: boolean } | undefined>;
        if (states._readableState) states._readableState.autoDestroy = false;
        if (states._writableState) states._writableState.autoDestroy = false;
        inbound.keepChunks(opened);
        const credit = receiveWindow === null ? undefined : creditChannel(client, opened, receiveWindow);
        subscriber.next({ kind: 'opened' });
        channel.on('error', ignore);
        socket.on('error', ignore);
        // Upstream: read only while both this channel and the shared connection have room; the
        // local EOF becomes the channel's EOF (half-close).
        // A reader paused by the shared queue waits for its drain (only paused readers wait, so
        // a drain costs what is paused, not every connection).
        const resumeUp = () => {
          if (opened.writableEnded || opened.writableLength >= CHANNEL_QUEUE_HIGH) return;
          if (!sendQueue.congested()) socket.resume();
          else if (!stopWaiting) {
            stopWaiting = sendQueue.whenDrained(() => {
              stopWaiting = undefined;
              resumeUp();
            });
          }
        };
        // The write callback, not 'drain' (which waits for the 2 MiB high-water mark), says a chunk left.
        const up = (chunk: Buffer) => {
          opened.write(chunk, resumeUp);
          if (sendQueue.congested() || opened.writableLength >= CHANNEL_QUEUE_HIGH) {
            socket.pause();
            resumeUp();
          }
        };
        // Reads into one buffer all forwards share (socket-reads.ts): ssh2 copies what its window
        // lets it send at once into packets; only what would wait in the channel is copied here.
        let upOpen = true;
        const upRead = (bytes: number, buffer: Buffer) => {
          if (!upOpen) return true;
          const view = buffer.subarray(0, bytes);
          up(sentAtOnce(opened, bytes) ? view : Buffer.from(view));
          return true;
        };
        const sharedReads = readIntoSharedBuffer(socket, sharedUpBuffer(), upRead);
        if (!sharedReads) socket.on('data', up);
        socket.once('end', () => opened.end());
        // What the program sent while the channel opened leaves with the next packets, not a loop turn later.
        const readAtOpen = sharedReads ? readWaiting(socket, sharedUpBuffer()) : 0;
        if (readAtOpen > 0) upRead(readAtOpen, sharedUpBuffer());
        resumeUp();
        // Downstream by hand, to send the packets one read of the ssh socket decrypted in one writev.
        // Each chunk is a view of reused memory, released once the socket wrote it; that is also
        // when its bytes go back to the server as window (credit).
        const written = (chunk: Buffer) => {
          inbound.release(chunk);
          credit?.consumed(chunk.length);
        };
        const down = (chunk: Buffer) => {
          corkForThisTick(socket);
          if (!socket.write(chunk, () => written(chunk))) opened.pause();
        };
        opened.on('data', down);
        socket.on('drain', () => opened.resume());
        // The server's EOF ends the program's socket in order; the connection's loss resets it, so
        // that the program never waits for data queued in a socket whose translation is going (issue 14).
        opened.once('end', () => (lostClients.has(client) ? resetSocket(socket) : socket.end()));
        let socketClosed = false;
        let channelClosed = false;
        const finish = () => {
          if (!socketClosed || !channelClosed || done) return;
          done = true;
          // bytesSent: what went to the remote side, i.e. what we read from the local program.
          subscriber.next({ kind: 'closed', bytesSent: socket.bytesRead + readAtOpen, bytesReceived: socket.bytesWritten });
          subscriber.complete();
        };
        socket.once('close', () => {
          socketClosed = true;
          // ssh2 reports a channel's close only after its end: let what is still coming drain away.
          opened.off('data', down);
          opened.on('data', written);
          opened.resume();
          opened.close();
          finish();
        });
        opened.once('close', () => {
          channelClosed = true;
          // Nothing more can go up: drain what the program still sends (closing a socket with
          // unread data would reset it and could cost it the reply) until it closes its side.
          cancelWait();
          upOpen = false;
          socket.off('data', up);
          socket.resume();
          if (lostClients.has(client)) resetSocket(socket);
          else if (!socket.writableEnded) socket.end();
          finish();
        });
      });
    } catch (err) {
      done = true;
      subscriber.next({ kind: 'refused', reason: errorMessage(err) });
      subscriber.complete();
    }
    return () => {
      cancelWait();
      if (done) return;
      done = true;
      // Unsubscribed in the middle (the tunnel ends): a reset, never an orderly end (issue 14).
      resetSocket(socket);
      channel?.close();
    };
  });
}

/** Bytes of one read of a forwarded local socket (Node's own reads are 64 KiB). */
const UP_READ_BYTES = 256 * 1024;
let upBuffer: Buffer | undefined;
/** The read buffer all forwarded sockets share (see readIntoSharedBuffer). */
const sharedUpBuffer = (): Buffer => (upBuffer ??= Buffer.allocUnsafe(UP_READ_BYTES));

/**
 * Whether ssh2 will have copied `bytes` written to `channel` into packets by the time write()
 * returns: nothing queued before them, and window for all of them. Otherwise ssh2 keeps the chunk
 * until the server grants window (ssh2's Channel._write).
 */
function sentAtOnce(channel: ClientChannel, bytes: number): boolean {
  const outgoing = (channel as unknown as { outgoing?: { state?: unknown; window?: unknown } }).outgoing;
  return (
    channel.writableLength === 0 &&
    !channel.writableCorked &&
    outgoing?.state === 'open' &&
    typeof outgoing.window === 'number' &&
    outgoing.window >= bytes
  );
}
