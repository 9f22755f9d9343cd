import createDebug from 'debug';
import { catchError, concat, defer, EMPTY, Observable } from 'rxjs';
import ssh2, { type Client, type ClientChannel, type ConnectConfig } from 'ssh2';
import { errorMessage, TransportError } from '../shared/errors.js';
import { printable } from '../shared/printable.js';
import { frameWriter } from '../streams/frame-writer.js';
import { fromReadable } from '../streams/from-readable.js';
import { serverUpload } from './bundle.js';
import { ServerExit, type ServerProcess, stderrLines } from './server-process.js';
import type { ResolvedSshConfig } from './ssh-config.js';
import { ssh2Auth } from './ssh2-auth.js';
import { Ssh2Unsuitable, ssh2ConnectionError } from './ssh2-errors.js';
import { hostKeyCheck } from './ssh2-host-keys.js';
import type { Ssh2Inbound } from './ssh2-inbound.js';
import { type Ssh2Hooks, ssh2Hooks } from './ssh2-internals.js';
import { type SendQueue, ssh2Socket } from './ssh2-socket.js';

const debug = createDebug('rxshuttle:ssh2');
const ignore = () => {};

/** Like ssh's default: give up on a server that does not finish the handshake. */
const DEFAULT_READY_TIMEOUT_MS = 20_000;

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
  /** Whether too much waits to go out on the ssh connection: senders pause on it (ssh2-socket.ts). */
  readonly sendQueue: SendQueue;
  /** Keeps a channel's incoming chunks intact until released (they are views of reused memory). */
  readonly inbound: Pick<Ssh2Inbound, 'keepChunks' | 'copyChunks' | 'release'>;
  /** ssh2's internals for the fast path (ssh2-internals.ts); undefined: its public API only. */
  readonly hooks: Ssh2Hooks | undefined;
  /** Why the connection runs on ssh2's public API alone (slower), if it does. */
  readonly publicApi: string | undefined;
  /**
   * Whether the connection is closing or closed: its channels end because of it, not by the
   * server's EOF.
   */
  lost(): boolean;
}

/** What in the user's configuration ssh2 cannot do at all; null when it can try. */
export function ssh2Unsuitable(config: ResolvedSshConfig): string | null {
  if (config.proxyJump) return `ssh2 cannot use ProxyJump (${config.proxyJump})`;
  if (config.proxyCommand) return 'ssh2 cannot use ProxyCommand';
  return null;
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
export function ssh2Connection$(
  config: ResolvedSshConfig,
  where: string,
  keepalive?: Ssh2Keepalive,
  /** Where config.hostname is, as sshHostInfo found it (not looked up again); empty: net.connect looks it up. */
  addresses: readonly string[] = [],
): Observable<Ssh2Connection> {
  return new Observable<Ssh2Connection>((subscriber) => {
    const unsuitable = ssh2Unsuitable(config);
    if (unsuitable) {
      subscriber.error(new Ssh2Unsuitable(where, `${unsuitable}: use --transport ssh`));
      return;
    }
    const hostKeys = hostKeyCheck(config, where);
    const auth = ssh2Auth(config);
    const link = ssh2Socket(config.hostname, config.port, addresses);
    const client = new ssh2.Client();
    let ready = false;
    let lost = false;
    let hooks: Ssh2Hooks | undefined;
    let publicApi: string | undefined;
    client.on('error', (err: Error & { level?: string }) => {
      debug('ssh2 error (%s): %s', err.level, printable(err.message));
      const error = ssh2ConnectionError(err, {
        where,
        ready,
        keepaliveLost: keepalive?.lost,
        hostKeyRefusal: hostKeys.refusal(),
        attempts: auth.attempts,
        tried: auth.tried,
        identityFiles: config.identityFiles,
      });
      if (error) subscriber.error(error);
    });
    client.on('close', () => {
      // Before ssh2 ends every channel (it does so right after this event): ssh2Forward$ must not
      // take that for the server's EOF.
      lost = true;
      // As ssh words it when sshd ends the session.
      if (ready) subscriber.error(new TransportError('RXS_ERR_TRANSPORT_CLOSED', `connection to ${where} lost: connection closed by remote host`));
      // Closed before ready without an error (ssh2 then reports none, and stops its timer).
      else if (!subscriber.closed) subscriber.error(new Ssh2Unsuitable(where, 'the server closed the connection during the ssh handshake'));
    });
    client.on('handshake', (negotiated) => {
      const cipher = link.keyExchangeDone();
      debug('ciphers: %s up, %s down (%s)', negotiated.cs.cipher, negotiated.sc.cipher, cipher ?? 'class not checked');
    });
    client.on('ready', () => {
      ready = true;
      const authenticatedWith = auth.lastTried();
      debug('connected to %s:%d as %s with %s', config.hostname, config.port, config.user, authenticatedWith);
      subscriber.next({ client, authenticatedWith, sendQueue: link.sendQueue, inbound: link.inbound, hooks, publicApi, lost: () => lost });
    });
    const teardown = () => {
      for (const [name, { stats }] of [['read', link.inbound], ['packet', link.outbound]] as const) {
        debug('%s slabs: %d allocated, %d reused, %d tainted', name, stats.allocated, stats.reused, stats.tainted);
      }
      ready = false;
      lost = true;
      client.end();
      link.socket.destroy();
    };
    const known = hostKeys.knownAlgorithms;
    try {
      client.connect({
        sock: link.socket,
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
        hostVerifier: hostKeys.verify,
        authHandler: auth.handler,
      } as ConnectConfig);
      const checked = ssh2Hooks(client, link.socket);
      if ('hooks' in checked) hooks = checked.hooks;
      else publicApi = checked.publicApi;
      link.useHooks(hooks);
    } catch (err) {
      // e.g. a known_hosts key type ssh2 does not know ("Unsupported algorithm").
      teardown();
      subscriber.error(new Ssh2Unsuitable(where, errorMessage(err)));
    }
    return teardown;
  });
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

