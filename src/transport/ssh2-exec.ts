import type { Duplex } from 'node:stream';
import createDebug from 'debug';
import { Observable } from 'rxjs';
import type { Client, ClientChannel } from 'ssh2';
import { errorMessage, TransportError } from '../shared/errors.js';
import { printable } from '../shared/printable.js';
import { ExecOutput, type ExecResult } from './exec-output.js';
import type { Ssh2Inbound } from './ssh2-inbound.js';

const debug = createDebug('rxshuttle:ssh2');
const ignore = () => {};

/** A plain command (cat, uname, ip) that has not finished by then will not. */
const EXEC_TIMEOUT_MS = 20_000;

/** Runs a command in an exec channel and collects its stdout (bounded); stderr is ignored. */
export function ssh2Exec(
  client: Client,
  command: string,
  inbound?: Pick<Ssh2Inbound, 'copyChunks'>,
  timeoutMs = EXEC_TIMEOUT_MS,
): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    let channel: ClientChannel | undefined;
    const timer = setTimeout(() => {
      channel?.close();
      reject(new TransportError('RXS_ERR_SSH', `a remote command did not finish within ${timeoutMs / 1000} s`));
    }, timeoutMs);
    client.exec(command, (err, opened) => {
      if (err) {
        clearTimeout(timer);
        reject(new TransportError('RXS_ERR_SSH', `cannot run a command on the remote host: ${printable(err.message)}`));
        return;
      }
      channel = opened;
      inbound?.copyChunks(opened);
      const output = new ExecOutput();
      let code: number | null = null;
      opened.on('data', (chunk: Buffer) => output.add(chunk));
      opened.stderr.on('data', ignore);
      opened.on('error', (e: unknown) => debug('exec channel: %s', errorMessage(e)));
      opened.on('exit', (exitCode: number | null) => {
        code = exitCode;
      });
      opened.on('close', () => {
        clearTimeout(timer);
        resolve(output.result(code));
      });
    });
  });
}

/** What a direct-tcpip open to a port nobody should serve tells about forwarding on the server. */
export type ForwardingCheck = 'allowed' | 'prohibited';

/** SSH_OPEN_ADMINISTRATIVELY_PROHIBITED (RFC 4254 5.1): what sshd answers with AllowTcpForwarding no. */
const OPEN_PROHIBITED = 1;

/**
 * Asks sshd to open a channel to its own loopback's discard port: a refused connect (or a
 * connection) means forwarding works; "administratively prohibited" means it is switched off.
 */
export function checkForwarding(client: Client): Promise<ForwardingCheck> {
  return new Promise((resolve) => {
    try {
      client.forwardOut('127.0.0.1', 0, '127.0.0.1', 9, (err, channel) => {
        if (!err) {
          channel.on('error', ignore);
          channel.close();
          resolve('allowed');
          return;
        }
        const reason = (err as Error & { reason?: number }).reason;
        debug('forwarding check: %s (reason %s)', printable(err.message), reason);
        resolve(reason === OPEN_PROHIBITED ? 'prohibited' : 'allowed');
      });
    } catch (err) {
      debug('forwarding check: %s', errorMessage(err));
      resolve('prohibited');
    }
  });
}

/** A direct-tcpip channel as a byte stream: emitted once sshd has connected; unsubscribing closes it. */
export function ssh2Channel$(
  client: Client,
  destination: { readonly address: string; readonly port: number },
  inbound?: Pick<Ssh2Inbound, 'copyChunks'>,
): Observable<Duplex> {
  return new Observable<Duplex>((subscriber) => {
    let channel: ClientChannel | undefined;
    let closed = false;
    try {
      client.forwardOut('127.0.0.1', 0, destination.address, destination.port, (err, opened) => {
        if (closed) {
          opened?.close();
          return;
        }
        if (err) {
          subscriber.error(new TransportError('RXS_ERR_SSH', `${destination.address}:${destination.port}: ${printable(err.message)}`));
          return;
        }
        channel = opened;
        inbound?.copyChunks(opened);
        opened.on('error', ignore);
        subscriber.next(opened);
      });
    } catch (err) {
      subscriber.error(new TransportError('RXS_ERR_SSH', errorMessage(err)));
    }
    return () => {
      closed = true;
      channel?.close();
    };
  });
}
