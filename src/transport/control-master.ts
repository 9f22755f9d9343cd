import { mkdtempSync, rmSync } from 'node:fs';
import { connect as netConnect, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import createDebug from 'debug';
import { catchError, defer, ignoreElements, interval, map, Observable, of, switchMap, take, tap, throwError } from 'rxjs';
import { descriptorOf } from '../os/libc.js';
import { TransportError } from '../shared/errors.js';
import type { Destination } from '../streams/frame.js';
import { sendFd, tcpByteCounts } from './fd-passing.js';
import { socketPair } from './socketpair.js';

const ignore = () => {};

const debug = createDebug('rxshuttle:direct');

/** OpenSSH PROTOCOL.mux message types we use. */
const MUX_MSG_HELLO = 0x00000001;
const MUX_C_NEW_STDIO_FWD = 0x10000008;
const MUX_S_PERMISSION_DENIED = 0x80000002;
const MUX_S_FAILURE = 0x80000003;
const MUX_S_SESSION_OPENED = 0x80000006;
const MUX_VERSION = 4;

/**
 * Our ssh session doubles as an OpenSSH ControlMaster on a private socket, so that redirected TCP
 * connections can be handed to ssh itself: ssh then moves their bytes in a channel of its own
 * (like `ssh -L`), and no Node process touches them. DESIGN.md measured this as the only path
 * that matches `ssh -L`'s throughput.
 */
export interface ControlSocket {
  readonly path: string;
  /** Options that make the ssh session the master on that socket. */
  readonly sshOptions: readonly string[];
  remove(): void;
}

export function controlSocket(): ControlSocket {
  const dir = mkdtempSync(join(tmpdir(), 'rxshuttle-'));
  const path = join(dir, 'ctl');
  return {
    path,
    sshOptions: ['-o', 'ControlMaster=yes', '-o', `ControlPath=${path}`, '-o', 'ControlPersist=no'],
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}

export type HandOff =
  /** ssh has the connection; bytes flow through its own channel. */
  | { readonly kind: 'opened' }
  /** The channel ended; counts are from the socket's TCP_INFO (null when unknown). */
  | { readonly kind: 'closed'; readonly bytesSent: number | null; readonly bytesReceived: number | null }
  /** ssh did not take it (remote connect failed, forwarding forbidden, no master): the socket is untouched. */
  | { readonly kind: 'refused'; readonly reason: string };

const message = (type: number, body: Buffer = Buffer.alloc(0)): Buffer => {
  const head = Buffer.allocUnsafe(8);
  head.writeUInt32BE(4 + body.length, 0);
  head.writeUInt32BE(type, 4);
  return Buffer.concat([head, body]);
};

const sshString = (text: string): Buffer => {
  const bytes = Buffer.from(text, 'utf8');
  const length = Buffer.allocUnsafe(4);
  length.writeUInt32BE(bytes.length, 0);
  return Buffer.concat([length, bytes]);
};

const u32 = (n: number): Buffer => {
  const out = Buffer.allocUnsafe(4);
  out.writeUInt32BE(n >>> 0, 0);
  return out;
};

/** What the master said of one MUX_C_NEW_STDIO_FWD: open (the remote side accepted), refused, or ended. */
type StdioForwardEvent = { readonly kind: 'opened' } | { readonly kind: 'refused'; readonly reason: string } | { readonly kind: 'ended' };

/**
 * Asks the ControlMaster for a channel to `destination` that reads from `stdinFd` and writes to
 * `stdoutFd` (as `ssh -W` does with its stdio): hello exchange, MUX_C_NEW_STDIO_FWD, then both fds
 * by SCM_RIGHTS. The master answers once the remote side has accepted or refused the channel;
 * the end of the control connection says the channel has ended. Unsubscribing closes the control
 * connection, which makes the master close the channel.
 */
function stdioForward$(
  controlPath: string,
  fds: { readonly stdin: number; readonly stdout: number },
  destination: Pick<Destination, 'address' | 'port'>,
  /** A control connection whose hellos are already exchanged (from a ControlPool). */
  prepared?: PreparedControl,
): Observable<StdioForwardEvent> {
  return new Observable<StdioForwardEvent>((subscriber) => {
    let state: 'hello' | 'request' | 'open' = 'hello';
    let buffered: Buffer = prepared?.rest ?? Buffer.alloc(0);
    const control = prepared?.control ?? netConnect({ path: controlPath });
    control.on('error', (err: NodeJS.ErrnoException) => debug('control connection: %s', err.code ?? err.message));

    const refuse = (reason: string) => {
      debug('%s:%d not handed off: %s', destination.address, destination.port, reason);
      subscriber.next({ kind: 'refused', reason });
      subscriber.complete();
    };

    const sendRequest = () => {
      const controlFd = descriptorOf(control);
      if (controlFd === undefined) return refuse('control socket has no descriptor');
      const body = Buffer.concat([u32(1), sshString(''), sshString(destination.address), u32(destination.port)]);
      control.write(message(MUX_C_NEW_STDIO_FWD, body));
      // The fds must follow the request on the wire: only pass them once Node has written it.
      const passFds = () => {
        if (!sendFd(controlFd, fds.stdin) || !sendFd(controlFd, fds.stdout)) refuse('could not pass the socket to ssh');
        else state = 'request';
      };
      if (control.writableLength === 0) passFds();
      else control.once('drain', passFds);
    };

    // As ssh's own mux client does: hello both ways first, then the request and its fds.
    // (Sending it all at once measured no faster.)
    const onMessage = (type: number, body: Buffer) => {
      if (state === 'hello') {
        if (type !== MUX_MSG_HELLO) return refuse(`unexpected mux message 0x${type.toString(16)}`);
        control.write(message(MUX_MSG_HELLO, u32(MUX_VERSION)));
        return sendRequest();
      }
      if (state === 'request') {
        if (type === MUX_S_SESSION_OPENED) {
          state = 'open';
          return subscriber.next({ kind: 'opened' });
        }
        if (type === MUX_S_FAILURE || type === MUX_S_PERMISSION_DENIED) {
          const length = body.length >= 8 ? body.readUInt32BE(4) : 0;
          return refuse(body.subarray(8, 8 + length).toString('utf8') || 'refused');
        }
      }
      debug('ignoring mux message 0x%s', type.toString(16));
    };

    control.on('data', (chunk: Buffer) => {
      buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
      while (buffered.length >= 8 && !subscriber.closed) {
        const length = buffered.readUInt32BE(0);
        if (buffered.length < 4 + length) return;
        const type = buffered.readUInt32BE(4);
        const body = buffered.subarray(8, 4 + length);
        buffered = buffered.subarray(4 + length);
        onMessage(type, body);
      }
    });
    if (prepared) {
      if (control.destroyed) refuse('ssh closed the control connection');
      else sendRequest();
    }
    control.on('close', () => {
      if (subscriber.closed) return;
      if (state !== 'open') return refuse('ssh closed the control connection');
      subscriber.next({ kind: 'ended' });
      subscriber.complete();
    });
    return () => control.destroy();
  });
}

/**
 * Hands a redirected socket to the ControlMaster, its fd as both the channel's input and output:
 * ssh moves every byte itself. We keep our copy of the fd, never reading it, to count its bytes
 * and to close it when the channel ends. The price: ssh holds the socket as two descriptors, so a
 * remote EOF does not reach the local program until it closes its side (see halfCloseHandOff$).
 */
export function handOff$(
  controlPath: string,
  socket: Socket,
  destination: Destination,
  prepared?: PreparedControl,
): Observable<HandOff> {
  return defer(() => {
    const socketFd = descriptorOf(socket);
    if (socketFd === undefined) {
      prepared?.control.destroy();
      return of<HandOff>({ kind: 'refused', reason: 'socket has no descriptor' });
    }
    return stdioForward$(controlPath, { stdin: socketFd, stdout: socketFd }, destination, prepared).pipe(
      map((event): HandOff => (event.kind === 'ended' ? closedCounts(socketFd) : event)),
    );
  });
}

const closedCounts = (socketFd: number): HandOff => {
  const counts = tcpByteCounts(socketFd);
  return { kind: 'closed', bytesSent: counts?.received ?? null, bytesReceived: counts?.sent ?? null };
};

/**
 * Like handOff$, with half-close kept in both directions: ssh reads the socket itself, but writes
 * what comes from the remote side into a socket pair that we copy to the socket, so that the
 * remote's EOF (ssh closing its end of the pair) becomes a FIN to the local program while it may
 * still be sending. The download path costs a copy through this process.
 */
export function halfCloseHandOff$(
  controlPath: string,
  socket: Socket,
  destination: Destination,
  prepared?: PreparedControl,
): Observable<HandOff> {
  return new Observable<HandOff>((subscriber) => {
    const socketFd = descriptorOf(socket);
    const pair = socketFd === undefined ? null : socketPair(null);
    if (socketFd === undefined || pair === null) {
      prepared?.control.destroy();
      subscriber.next({ kind: 'refused', reason: socketFd === undefined ? 'socket has no descriptor' : 'no socket pair' });
      subscriber.complete();
      return;
    }
    let down: Socket | undefined;
    // The local socket is ours to write and close once everything from the remote side is in it.
    let relayed: Promise<void> = Promise.resolve();
    const startRelay = () => {
      const from = new Socket({ fd: pair.ours, readable: true, writable: false, allowHalfOpen: true });
      down = from;
      from.on('error', ignore);
      socket.on('error', ignore);
      from.on('data', (chunk: Buffer) => {
        if (!socket.write(chunk)) from.pause();
      });
      socket.on('drain', () => from.resume());
      relayed = new Promise<void>((resolve) => {
        from.once('end', () => {
          if (socket.destroyed) return resolve();
          socket.once('finish', () => resolve());
          socket.once('close', () => resolve());
          socket.end();
        });
        from.once('close', () => {
          if (!from.readableEnded) resolve();
        });
      });
    };
    const forward = stdioForward$(controlPath, { stdin: socketFd, stdout: pair.theirs }, destination, prepared).subscribe({
      next: (event) => {
        if (event.kind === 'opened') {
          // Only ssh may hold the write end now, or its close would never reach the reader.
          pair.closeTheirs();
          startRelay();
          subscriber.next(event);
        } else if (event.kind === 'refused') {
          pair.closeBoth();
          subscriber.next(event);
          subscriber.complete();
        } else {
          void relayed.then(() => {
            subscriber.next(closedCounts(socketFd));
            subscriber.complete();
          });
        }
      },
      error: (err: unknown) => subscriber.error(err),
    });
    return () => {
      forward.unsubscribe();
      if (down) down.destroy();
      else if (!subscriber.closed) pair.closeBoth();
    };
  });
}

/**
 * A byte stream to `destination` through the ControlMaster (DNS over TCP in stock-sshd mode): one
 * end of a socket pair is the channel's input and output, the other is the Duplex emitted once
 * the remote side has accepted. Errors when ssh refuses; unsubscribing closes it.
 */
export function controlChannel$(controlPath: string, destination: Pick<Destination, 'address' | 'port'>): Observable<Duplex> {
  return new Observable<Duplex>((subscriber) => {
    const pair = socketPair(null);
    if (pair === null) {
      subscriber.error(new TransportError('RXS_ERR_SSH', 'no socket pair for a channel to ssh'));
      return;
    }
    let stream: Socket | undefined;
    const forward = stdioForward$(controlPath, { stdin: pair.theirs, stdout: pair.theirs }, destination).subscribe({
      next: (event) => {
        if (event.kind === 'opened') {
          pair.closeTheirs();
          stream = new Socket({ fd: pair.ours, readable: true, writable: true, allowHalfOpen: true });
          stream.on('error', ignore);
          subscriber.next(stream);
        } else if (event.kind === 'refused') {
          pair.closeBoth();
          subscriber.error(new TransportError('RXS_ERR_SSH', `${destination.address}:${destination.port}: ${event.reason}`));
        }
        // 'ended': the stream sees EOF by itself.
      },
      error: (err: unknown) => subscriber.error(err),
    });
    return () => {
      forward.unsubscribe();
      if (stream) stream.destroy();
      else pair.closeBoth();
    };
  });
}

/** A control connection with both hellos exchanged, ready for a request. */
export interface PreparedControl {
  readonly control: Socket;
  /** Bytes the master sent after its hello (normally none). */
  readonly rest: Buffer;
}

/**
 * Control connections opened ahead of time, hellos exchanged, so that handing a new TCP
 * connection to ssh costs one request and two sendmsg instead of a connect and a round trip
 * more. Refilled as they are taken; a master that has gone away is not retried in a loop (only
 * on the next take).
 */
export class ControlPool {
  private readonly ready: PreparedControl[] = [];
  private preparing = 0;
  private closed = false;

  constructor(
    private readonly path: string,
    private readonly size = 8,
  ) {
    this.fill();
  }

  take(): PreparedControl | undefined {
    let prepared = this.ready.shift();
    while (prepared?.control.destroyed) prepared = this.ready.shift();
    this.fill();
    return prepared;
  }

  close(): void {
    this.closed = true;
    for (const prepared of this.ready.splice(0)) prepared.control.destroy();
  }

  private fill(): void {
    while (!this.closed && this.ready.length + this.preparing < this.size) this.prepare();
  }

  private prepare(): void {
    this.preparing++;
    const control = netConnect({ path: this.path });
    let buffered: Buffer = Buffer.alloc(0);
    const settle = () => {
      this.preparing--;
      control.off('data', onData);
      control.off('close', onClose);
    };
    const onClose = () => settle();
    const onData = (chunk: Buffer) => {
      buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
      if (buffered.length < 8) return;
      const length = buffered.readUInt32BE(0);
      if (buffered.length < 4 + length) return;
      settle();
      if (buffered.readUInt32BE(4) !== MUX_MSG_HELLO || this.closed) {
        control.destroy();
        return;
      }
      control.write(message(MUX_MSG_HELLO, u32(MUX_VERSION)));
      const prepared = { control, rest: buffered.subarray(4 + length) };
      this.ready.push(prepared);
      control.once('close', () => {
        const at = this.ready.indexOf(prepared);
        if (at >= 0) this.ready.splice(at, 1);
      });
    };
    control.on('error', (err: NodeJS.ErrnoException) => debug('pooled control connection: %s', err.code ?? err.message));
    control.on('data', onData);
    control.once('close', onClose);
  }
}

/**
 * A keepalive through the ControlMaster for a session that carries no stream of ours (stock-sshd
 * mode with the ssh binary): every `intervalMs` a channel open to the remote's own discard port
 * goes out; any answer, accepted or refused, is a sign of life. With none for `misses` intervals
 * it errors with `lost`. (ssh's own ServerAlive says why only at LogLevel INFO.)
 */
export function controlKeepalive$(controlPath: string, intervalMs: number, misses: number, lost: string): Observable<never> {
  return defer(() => {
    let heard = Date.now();
    return interval(intervalMs).pipe(
      switchMap(() => {
        if (Date.now() - heard >= intervalMs * misses) return throwError(() => new TransportError('RXS_ERR_TRANSPORT_CLOSED', lost));
        return controlChannel$(controlPath, { address: '127.0.0.1', port: 9 }).pipe(
          take(1),
          catchError((err: unknown) => (err instanceof TransportError ? of(null) : throwError(() => err))),
          tap(() => {
            heard = Date.now();
          }),
        );
      }),
      ignoreElements(),
    );
  });
}
