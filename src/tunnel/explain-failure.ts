import { TransportError } from '../shared/errors.js';
import type { TunnelOptions } from '../shared/options.js';
import { printable } from '../shared/printable.js';
import { ServerExit } from '../transport/server-process.js';
import { MIN_REMOTE_NODE_MAJOR, NODE_TOO_OLD_EXIT } from '../transport/stub.js';
import { keepaliveLost } from './server-link.js';

/**
 * Turns how the server process ended into a message that says what to do. The stderr lines it
 * quotes are the remote's: printable already (stderrLines), and made so again for any other maker
 * of a ServerExit.
 */
export function explainFailure(err: unknown, greeted: boolean, where: string, options: TunnelOptions, local = false): unknown {
  if (!(err instanceof ServerExit)) return err;
  const { remoteNode } = options;
  // ssh's ServerAlive gave up ("Timeout, server … not responding."): the same words as everywhere.
  if (greeted && options.keepalive > 0 && err.stderrTail.some((line) => /not responding/.test(line))) {
    return new TransportError('RXS_ERR_TRANSPORT_CLOSED', keepaliveLost(where, options.keepalive));
  }
  const telling = [...err.stderrTail].reverse().find((line) => /error|denied|not found|refused|timed out|resolve|no route|too old/i.test(line));
  const last = printable(telling ?? err.stderrTail.at(-1) ?? '');
  const said = last ? `: ${last}` : '';
  if (greeted) {
    // Nothing said why (kill -9 of ssh or of the remote server): say how the process ended.
    // Under ssh2 no ssh process runs: the exit is the remote server's, as sshd reported it.
    const program = local ? 'the local server' : err.remote ? 'the remote server' : 'ssh';
    const how = err.signal
      ? `${program} was killed by ${err.signal}`
      : err.exitCode === null
        ? 'the remote server ended its session'
        : `${program} exited with status ${err.exitCode}`;
    const server = !local && !err.remote && !err.signal && err.exitCode === 255 ? '; the remote server or the connection died' : '';
    return new TransportError('RXS_ERR_TRANSPORT_CLOSED', `connection to ${where} lost${said || `: ${how}${server}`}`);
  }
  if (err.exitCode === NODE_TOO_OLD_EXIT) {
    return new TransportError(
      'RXS_ERR_REMOTE_NODE_TOO_OLD',
      `node on ${where} is too old (need ${MIN_REMOTE_NODE_MAJOR} or newer): install a newer nodejs there or pass --remote-node PATH`,
    );
  }
  const noNode = err.exitCode === 127 || /not found|No such file/i.test(err.stderrTail.join('\n'));
  if (noNode && err.exitCode !== 255) {
    return new TransportError(
      'RXS_ERR_REMOTE_NO_NODE',
      `no "${remoteNode}" on ${where}${said}: install Node.js ${MIN_REMOTE_NODE_MAJOR}+ there (Debian: apt install nodejs) or pass --remote-node PATH`,
    );
  }
  if (err.exitCode === 255) return new TransportError('RXS_ERR_SSH', `ssh to ${where} failed${said}`);
  return new TransportError('RXS_ERR_REMOTE_EXIT', `server on ${where} exited before it started (${err.message})${said}`);
}
