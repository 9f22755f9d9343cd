import { mkdtempSync, rmSync } from 'node:fs';
import { connect as netConnect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import createDebug from 'debug';
import { Observable } from 'rxjs';
import type { Destination } from '../streams/frame.js';
import { descriptorOf } from '../libc.js';
import { sendFd, tcpByteCounts } from './fd-passing.js';

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

/**
 * Hands a redirected socket to the ControlMaster: hello exchange, MUX_C_NEW_STDIO_FWD to the
 * destination, then the socket's fd twice (its stdin and stdout) by SCM_RIGHTS. The master
 * answers once the remote side has accepted or refused the channel. We keep our copy of the fd,
 * never reading it, to count its bytes and to close it when the master's channel ends (the end
 * of our control connection tells us). Unsubscribing closes the control connection, which makes
 * the master close the channel.
 */
export function handOff$(
  controlPath: string,
  socket: Socket,
  destination: Destination,
  /** A control connection whose hellos are already exchanged (from a ControlPool). */
  prepared?: PreparedControl,
): Observable<HandOff> {
  return new Observable<HandOff>((subscriber) => {
    const socketFd = descriptorOf(socket);
    if (socketFd === undefined) {
      prepared?.control.destroy();
      subscriber.next({ kind: 'refused', reason: 'socket has no descriptor' });
      subscriber.complete();
      return;
    }
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
        if (!sendFd(controlFd, socketFd) || !sendFd(controlFd, socketFd)) refuse('could not pass the socket to ssh');
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
      const counts = tcpByteCounts(socketFd);
      subscriber.next({ kind: 'closed', bytesSent: counts?.received ?? null, bytesReceived: counts?.sent ?? null });
      subscriber.complete();
    });
    return () => control.destroy();
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
