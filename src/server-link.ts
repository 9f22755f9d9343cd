import { existsSync } from 'node:fs';
import type { Socket } from 'node:net';
import createDebug from 'debug';
import { catchError, concat, finalize, map, type Observable, of, switchMap, throwError } from 'rxjs';
import { type Carrier, controlMasterCarrier } from './direct.js';
import { UsageError } from './errors.js';
import type { TunnelEvent } from './events.js';
import type { TunnelOptions } from './options.js';
import type { Destination } from './streams/frame.js';
import { controlSocket } from './transport/control-master.js';
import { type ServerProcess, serverProcess$ } from './transport/server-process.js';
import { type SshHostInfo, sshServerArgv } from './transport/ssh.js';
import { LATENCY_CONTROL_WINDOW } from './transport/ssh2-credit.js';
import { Ssh2Unsuitable, ssh2Connection$, ssh2Forward$, ssh2Server$, ssh2Unsuitable } from './transport/ssh2.js';
import { remoteCommand, stubSource } from './transport/stub.js';

const debug = createDebug('rxshuttle:connect');

/** The server, running, and who else may carry redirected TCP connections. */
export interface ServerLink {
  readonly server: ServerProcess;
  /** Asked once the session is up: ssh's own channels (ssh2, or the ControlMaster), or only the mux (null). */
  readonly carrier: () => (() => Carrier) | null;
}

export const isServerLink = (item: ServerLink | TunnelEvent): item is ServerLink => 'server' in item;

/**
 * Starts the server the way options.transport says: `ssh2` in-process, `ssh` through the ssh
 * binary, `auto` (the default) in-process when ssh2 can do what the user's ssh configuration asks
 * (no ProxyJump/ProxyCommand, a key it can use, a host key it can check), otherwise through the
 * binary, which can also ask for passwords and confirm host keys. Emits the events that say which,
 * then the link. Local mode (no remote) runs the server as a child.
 */
export function serverLink$(
  options: TunnelOptions,
  host: SshHostInfo,
  where: string,
  bypassGid: number | undefined,
): Observable<ServerLink | TunnelEvent> {
  const { remote } = options;
  if (!remote) return binary$([process.execPath, '-e', stubSource()], null, bypassGid);
  const { config } = host;
  if (options.transport === 'ssh2' && !config) {
    return throwError(
      () =>
        new UsageError(
          `--transport ssh2 needs OpenSSH's "ssh -G" to read the configuration for ${where}; "${options.sshCommand.join(' ')}" gave none`,
        ),
    );
  }
  const viaBinary$ = (why?: string) => {
    // With OpenSSH and --ssh-forward, our session is also a ControlMaster that TCP connections are handed to.
    const control = host.openssh && options.sshForward ? controlSocket() : null;
    const argv = sshServerArgv([...options.sshCommand, ...(control?.sshOptions ?? [])], remote, options.remoteNode);
    return concat(
      of<TunnelEvent>({ kind: 'transport', transport: 'ssh', ...(why ? { why } : {}) }),
      binary$(argv, control, undefined),
    );
  };
  if (!config || options.transport === 'ssh' || options.sshForward) return viaBinary$();
  const unsuitable = ssh2Unsuitable(config);
  if (unsuitable && options.transport === 'auto') return viaBinary$(unsuitable);
  const viaSsh2$ = ssh2Connection$(config, where).pipe(
    switchMap((connection) => {
      debug('ssh2: authenticated with %s', connection.authenticatedWith);
      const receiveWindow = options.latencyControl ? LATENCY_CONTROL_WINDOW : null;
      const carrier = () => ({
        carry: (socket: Socket, destination: Destination) => ssh2Forward$(connection, socket, destination, receiveWindow),
        close: () => {},
      });
      return concat(
        of<TunnelEvent>({ kind: 'transport', transport: 'ssh2' }),
        ssh2Server$(connection.client, remoteCommand(options.remoteNode), connection.inbound).pipe(map((server): ServerLink => ({ server, carrier: () => carrier }))),
      );
    }),
  );
  if (options.transport === 'ssh2') return viaSsh2$;
  // Only what ssh2 cannot do falls back (before it is connected); a host that does not answer
  // would not answer ssh either.
  return viaSsh2$.pipe(
    catchError((err: unknown) => {
      if (!(err instanceof Ssh2Unsuitable)) return throwError(() => err);
      debug('ssh2 cannot: %s; using the ssh binary', err.reason);
      return viaBinary$(err.reason);
    }),
  );
}

function binary$(
  argv: string[],
  control: ReturnType<typeof controlSocket> | null,
  bypassGid: number | undefined,
): Observable<ServerLink | TunnelEvent> {
  return concat(
    of<TunnelEvent>({ kind: 'starting', command: argv }),
    serverProcess$(argv, bypassGid === undefined ? {} : { gid: bypassGid }).pipe(
      map(
        (server): ServerLink => ({
          server,
          carrier: () => (control && existsSync(control.path) ? () => controlMasterCarrier(control.path) : null),
        }),
      ),
      finalize(() => control?.remove()),
    ),
  );
}
