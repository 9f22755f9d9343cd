import { existsSync } from 'node:fs';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import createDebug from 'debug';
import { catchError, concat, finalize, from, ignoreElements, map, merge, NEVER, type Observable, of, switchMap, throwError } from 'rxjs';
import { errorMessage, TransportError, UsageError } from '../shared/errors.js';
import type { TunnelEvent } from '../shared/events.js';
import { KEEPALIVE_MISSES, type TunnelOptions } from '../shared/options.js';
import type { Destination } from '../streams/frame.js';
import { type ControlSocket, controlChannel$, controlKeepalive$, controlSocket } from '../transport/control-master.js';
import type { ExecResult } from '../transport/exec-output.js';
import { type ProbeResult, parseProbe, probeScript, probeThenServerScript, splitProbe } from '../transport/remote-probe.js';
import { type ServerProcess, serverProcess$ } from '../transport/server-process.js';
import { runCollecting, type SshHostInfo, sshMuxArgv, sshServerArgv } from '../transport/ssh.js';
import { ssh2Connection$, ssh2Server$, ssh2Unsuitable } from '../transport/ssh2.js';
import { LATENCY_CONTROL_WINDOW } from '../transport/ssh2-credit.js';
import { Ssh2Unsuitable } from '../transport/ssh2-errors.js';
import { checkForwarding, ssh2Channel$, ssh2Exec } from '../transport/ssh2-exec.js';
import { ssh2Forward$ } from '../transport/ssh2-forward.js';
import { MIN_REMOTE_NODE_MAJOR, remoteCommand, stubSource } from '../transport/stub.js';
import { type Carrier, controlMasterCarrier } from './route-connections.js';

const debug = createDebug('rxshuttle:connect');

/** Stock-sshd mode: nothing runs on the remote host; sshd's own channels and commands do it all. */
export interface StockLink {
  readonly stock: StockRemote;
}

export interface StockRemote {
  /** What the start-up probe found (resolv.conf, routes for -N, OS). */
  readonly probe: ProbeResult;
  /** Carries redirected TCP connections in direct-tcpip channels. */
  readonly carrier: () => Carrier;
  /** Runs a plain command (bounded output). */
  exec(command: string): Promise<ExecResult>;
  /** A byte stream to a remote address (DNS over TCP). */
  channel$(destination: { readonly address: string; readonly port: number }): Observable<Duplex>;
  /** Errors when the connection to the remote ends (never completes). */
  readonly ended$: Observable<never>;
}

/** The server, running, and who else may carry redirected TCP connections. */
export interface ServerLink {
  readonly server: ServerProcess;
  /** Asked once the session is up: ssh's own channels (ssh2, or the ControlMaster), or only the mux (null). */
  readonly carrier: () => (() => Carrier) | null;
}

export const isServerLink = (item: ServerLink | StockLink | TunnelEvent): item is ServerLink => 'server' in item;
export const isStockLink = (item: ServerLink | StockLink | TunnelEvent): item is StockLink => 'stock' in item;

/** How a tunnel whose keepalive went unanswered ends (the same words on every transport). */
export const keepaliveLost = (where: string, seconds: number): string =>
  `connection to ${where} lost: no answer for ${seconds * KEEPALIVE_MISSES} s (--keepalive ${seconds})`;

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
): Observable<ServerLink | StockLink | TunnelEvent> {
  const { remote } = options;
  if (!remote) return binary$([process.execPath, '-e', stubSource()], null, false, bypassGid);
  const { config } = host;
  if (options.transport === 'ssh2' && !config) {
    return throwError(
      () =>
        new UsageError(
          `--transport ssh2 needs OpenSSH's "ssh -G" to read the configuration for ${where}; "${options.sshCommand.join(' ')}" gave none`,
        ),
    );
  }
  const viaBinary$ = (why?: string): Observable<ServerLink | StockLink | TunnelEvent> => {
    const chosen = of<TunnelEvent>({ kind: 'transport', transport: 'ssh', ...(why ? { why } : {}) });
    if (!host.openssh) {
      // Not OpenSSH (an -e command without -G): no ControlMaster, so only the node server can carry.
      if (options.remoteNode === 'none') {
        return throwError(() => new UsageError(`--remote-node none (stock-sshd mode) needs OpenSSH's ssh; "${options.sshCommand.join(' ')}" is not`));
      }
      return concat(chosen, binary$(sshServerArgv(options.sshCommand, remote, options.remoteNode), null, false, undefined));
    }
    // Our session is also a ControlMaster: --ssh-forward hands TCP connections to it, stock-sshd
    // mode carries everything through it.
    const control = controlSocket();
    const script = probeThenServerScript({ remoteNode: options.remoteNode, routes: options.autoNets });
    // ssh gives up two intervals after our own keepalive (controlKeepalive$, or the session's)
    // would: with the same count the two raced on a loaded machine, and when ssh won the user
    // read "ssh exited with status 255" (it says why only at LogLevel INFO) instead of ours.
    const alive = options.keepalive > 0 ? ['-o', `ServerAliveInterval=${options.keepalive}`, '-o', `ServerAliveCountMax=${KEEPALIVE_MISSES + 2}`] : [];
    const argv = sshServerArgv([...options.sshCommand, ...control.sshOptions, ...alive], remote, options.remoteNode, script.command);
    return concat(
      chosen,
      binary$(argv, control, options.sshForward, undefined).pipe(
        switchMap((item): Observable<ServerLink | StockLink | TunnelEvent> => {
          if (!isServerLink(item)) return of(item);
          return splitProbe(item.server.bytes$, script).pipe(
            switchMap(({ sections, mode, rest$ }) => {
              const probe = parseProbe(sections, options.remoteNode);
              debug('probe: the remote chose %s; node %o, os %s', mode, probe.node, probe.os);
              if (mode === 'node') {
                const version = probe.node.usable ? probe.node.version : options.remoteNode;
                return concat(
                  of<TunnelEvent>({ kind: 'mode', mode: 'node', why: `node ${version} on ${where}` }),
                  of<ServerLink>({ server: { ...item.server, bytes$: rest$ }, carrier: item.carrier }),
                );
              }
              const stock: StockRemote = {
                probe,
                carrier: () => controlMasterCarrier(control.path, true),
                exec: (command) => runCollecting(sshMuxArgv(options.sshCommand, remote, control.path, command)),
                channel$: (destination) => controlChannel$(control.path, destination),
                // ssh's end (its session's `cat` ends only with it) is the tunnel's; so is silence.
                ended$: merge(
                  rest$.pipe(ignoreElements()),
                  options.keepalive > 0
                    ? controlKeepalive$(control.path, options.keepalive * 1000, KEEPALIVE_MISSES, keepaliveLost(where, options.keepalive))
                    : NEVER,
                ),
              };
              const why = probe.node.usable ? 'node' : probe.node.why;
              return concat(of<TunnelEvent>({ kind: 'mode', mode: 'stock', why: `${why}; TCP in sshd's own channels` }), of<StockLink>({ stock }));
            }),
          );
        }),
      ),
    );
  };
  if (!config || options.transport === 'ssh' || options.sshForward) return viaBinary$();
  const unsuitable = ssh2Unsuitable(config);
  if (unsuitable && options.transport === 'auto') return viaBinary$(unsuitable);
  const keepalive =
    options.keepalive > 0
      ? { intervalMs: options.keepalive * 1000, misses: KEEPALIVE_MISSES, lost: keepaliveLost(where, options.keepalive) }
      : undefined;
  // The addresses sshHostInfo found are config.hostname's (ssh2 takes no ProxyJump): not looked up again.
  const viaSsh2$ = ssh2Connection$(config, where, keepalive, host.addresses).pipe(
    switchMap((connection) => {
      debug('ssh2: authenticated with %s', connection.authenticatedWith);
      const receiveWindow = options.latencyControl ? LATENCY_CONTROL_WINDOW : null;
      const carrier = () => ({
        carry: (socket: Socket, destination: Destination) => ssh2Forward$(connection, socket, destination, receiveWindow),
        close: () => {},
      });
      const { client, inbound } = connection;
      const script = probeScript({ remoteNode: options.remoteNode, routes: options.autoNets });
      // One exec decides (and the forwarding check rides along in parallel): no extra round trip.
      const probed = Promise.all([
        ssh2Exec(client, script.command, inbound).catch((err: unknown) => {
          debug('probe failed: %s', errorMessage(err));
          return { stdout: '', code: null, cut: false };
        }),
        checkForwarding(client),
      ]);
      // Without ssh2's internals the tunnel works, only slower: said once (-v).
      const publicApi: TunnelEvent[] = connection.publicApi ? [{ kind: 'notice', message: `ssh2 runs on its public API only (${connection.publicApi}): slower` }] : [];
      return concat(
        from<TunnelEvent[]>([{ kind: 'transport', transport: 'ssh2' }, ...publicApi]),
        from(probed).pipe(
          switchMap(([output, forwarding]): Observable<ServerLink | StockLink | TunnelEvent> => {
            const probe = parseProbe(script.parse(output.stdout), options.remoteNode);
            debug('probe: node %o, os %s, forwarding %s', probe.node, probe.os, forwarding);
            if (probe.node.usable) {
              return concat(
                of<TunnelEvent>({ kind: 'mode', mode: 'node', why: `node ${probe.node.version} on ${where}` }),
                ssh2Server$(client, remoteCommand(options.remoteNode), inbound).pipe(map((server): ServerLink => ({ server, carrier: () => carrier }))),
              );
            }
            if (forwarding === 'prohibited') {
              return throwError(
                () =>
                  new TransportError(
                    'RXS_ERR_REMOTE_NO_NODE',
                    `${where} has no usable node (${probe.node.usable ? '' : probe.node.why}) and refuses TCP forwarding: install Node.js ${MIN_REMOTE_NODE_MAJOR}+ there (or pass --remote-node PATH), or set AllowTcpForwarding yes in its sshd_config`,
                  ),
              );
            }
            const stock: StockRemote = {
              probe,
              carrier,
              exec: (command) => ssh2Exec(client, command, inbound),
              channel$: (destination) => ssh2Channel$(client, destination, inbound),
              // The connection's own end errors the tunnel (ssh2Connection$).
              ended$: NEVER,
            };
            return concat(of<TunnelEvent>({ kind: 'mode', mode: 'stock', why: `${probe.node.why}; TCP in sshd's own channels` }), of<StockLink>({ stock }));
          }),
        ),
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

/** The server through a child process (ssh, or the local node); `handOff`: TCP goes to the ControlMaster on `control`. */
function binary$(
  argv: string[],
  control: ControlSocket | null,
  handOff: boolean,
  bypassGid: number | undefined,
): Observable<ServerLink | TunnelEvent> {
  return concat(
    of<TunnelEvent>({ kind: 'starting', command: argv }),
    serverProcess$(argv, bypassGid === undefined ? {} : { gid: bypassGid }).pipe(
      map(
        (server): ServerLink => ({
          server,
          carrier: () => (handOff && control && existsSync(control.path) ? () => controlMasterCarrier(control.path) : null),
        }),
      ),
      finalize(() => control?.remove()),
    ),
  );
}
