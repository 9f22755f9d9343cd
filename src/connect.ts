import { fileURLToPath } from 'node:url';
import { concat, defer, EMPTY, from, type Observable, of, switchMap, tap, throwError } from 'rxjs';
import { originalDestination } from './firewall/original-dst.js';
import { UsageError } from './shared/errors.js';
import type { TunnelEvent } from './shared/events.js';
import { type ConnectOptions, resolveOptions, type TunnelOptions } from './shared/options.js';
import { type SshHostInfo, sshHostInfo } from './transport/ssh.js';
import { descriptorBudget, guardDescriptors, openFileLimit } from './tunnel/descriptor-guard.js';
import { listensOnIpv6 } from './tunnel/discovery-client.js';
import { chooseMethod, firewall$, helperCommand } from './tunnel/firewall-client.js';
import { type Listener, listener$, redirected$ } from './tunnel/listener.js';
import { wakeOrRouteChange$ } from './tunnel/nudges.js';
import { serverLink$ } from './tunnel/server-link.js';
import { type TunnelParts, tunnel } from './tunnel/tunnel.js';
import { capturedDatagrams$, localDestination, makeListenersTransparent, ReplySockets } from './udp/tproxy-client.js';

/**
 * Starts a tunnel: listener, server (over ssh or local), session, firewall rules. The Observable
 * reports what happens; unsubscribing takes it all down again (rules removed, children ended).
 * It errors with an RxshuttleError when the tunnel cannot start or breaks.
 */
export function connect(input: ConnectOptions | TunnelOptions): Observable<TunnelEvent> {
  let options: TunnelOptions;
  try {
    options = resolveOptions(input, () => helperCommand(fileURLToPath(new URL('./cli.js', import.meta.url))));
  } catch (err) {
    return throwError(() => err);
  }
  if (options.method === 'tproxy' && process.getuid?.() !== 0) {
    // sshuttle's tproxy asks the same: a socket TPROXY may hand packets to must be transparent.
    return throwError(() => new UsageError('--method tproxy needs root: its transparent sockets (IP_TRANSPARENT) need CAP_NET_ADMIN'));
  }
  if (options.remote === undefined && process.getuid?.() !== 0) {
    // The local server's own connections escape the rules only by its group id, which only root
    // can give it; as anyone else they would be caught again and loop.
    return throwError(() => new UsageError('local mode (no -r) needs root: run it as root, or tunnel through -r HOST'));
  }
  const ipv6 = options.disableIpv6
    ? false
    : options.subnets.some((rule) => rule.family === 6 && !rule.exclude) || (options.names.some((n) => !n.exclude) ? 'if-available' : false);
  const fileLimit = openFileLimit();
  const budget = fileLimit === undefined ? undefined : descriptorBudget(fileLimit, options.remote !== undefined && options.sshForward);
  // Only the ControlMaster spends descriptors of its own on a connection; ssh2 channels do not.
  const maxHandOffs = options.sshForward ? (budget?.handOffs ?? Number.POSITIVE_INFINITY) : Number.POSITIVE_INFINITY;
  return listener$(options.listen, ipv6).pipe(
    // TPROXY hands connections only to transparent listeners.
    tap((listener) => {
      if (options.method === 'tproxy') makeListenersTransparent(listener.servers);
    }),
    switchMap((listener) =>
      concat(
        of<TunnelEvent>({ kind: 'listening', host: listener.host, port: listener.port }),
        defer(() => {
          const method = chooseMethod(options.method);
          return tunnel(options, listener, method, maxHandOffs, realParts(options, listener, method === 'tproxy'));
        }).pipe(guardDescriptors(listener.servers, { fileLimit, connections: budget?.connections })),
      ),
    ),
  );
}

/** The tunnel's parts made of ssh, the firewall helper and the listener's sockets. */
function realParts(options: TunnelOptions, listener: Listener, tproxy: boolean): TunnelParts {
  const { remote } = options;
  const where = remote ? remote.host : 'the local server';
  return {
    host$: remote ? from(sshHostInfo(options.sshCommand, remote, { ssh2Only: options.transport === 'ssh2' })) : of<SshHostInfo>({ addresses: [], openssh: false }),
    link$: (host, bypassGid) => serverLink$(options, host, where, bypassGid),
    startFirewall: (setup, hosts$, extraRules$) =>
      firewall$(setup, {
        helperArgv: [...options.firewallCommand],
        ...(options.firewallStderr ? { stderr: options.firewallStderr } : {}),
        ...(hosts$ ? { hosts$ } : {}),
        ...(extraRules$ ? { extraRules$ } : {}),
      }),
    redirected$: redirected$(listener, tproxy ? localDestination : originalDestination),
    datagrams$: tproxy ? capturedDatagrams$(listener.port, listensOnIpv6(listener)) : EMPTY,
    nudge$: defer(() => wakeOrRouteChange$()),
    replies: () => new ReplySockets(),
  };
}
