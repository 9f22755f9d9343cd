import { isIPv4 } from 'node:net';
import createDebug from 'debug';
import { catchError, concat, EMPTY, from, map, merge, mergeMap, Observable, of, switchMap, throwError } from 'rxjs';
import { RxshuttleError, TransportError } from './errors.js';
import type { TunnelEvent } from './events.js';
import { firewall$ } from './firewall/client.js';
import { originalDestination } from './firewall/original-dst.js';
import type { FirewallSetup, SubnetRule } from './firewall/types.js';
import { accepted$, type Listener, listener$ } from './listener.js';
import { fileURLToPath } from 'node:url';
import { helperCommand } from './firewall/client.js';
import { type ConnectOptions, resolveOptions, type TunnelOptions } from './options.js';
import { DEFAULT_WINDOW, FLAG_NO_LATENCY_CONTROL } from './streams/defaults.js';
import { session } from './streams/session.js';
import { ServerExit, serverProcess$ } from './transport/server-process.js';
import { sshServerAddresses, sshServerArgv } from './transport/ssh.js';
import { MIN_REMOTE_NODE_MAJOR, NODE_TOO_OLD_EXIT, stubSource } from './transport/stub.js';

const debug = createDebug('rxshuttle:connect');

/** Local mode: the server child runs with this group (plus the port), and the firewall lets its sockets pass. */
const BYPASS_GID_BASE = 1_000_000_000;
/** Login banners and .bashrc chatter tolerated before the server's hello. */
const MAX_NOISE = 64 * 1024;

const hostRule = (address: string): SubnetRule => ({
  family: isIPv4(address) ? 4 : 6,
  address,
  prefix: isIPv4(address) ? 32 : 128,
  portLow: 0,
  portHigh: 0,
  exclude: true,
});

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
  const ipv6 = options.subnets.some((rule) => rule.family === 6 && !rule.exclude);
  return listener$(options.listen, ipv6).pipe(
    switchMap((listener) =>
      concat(of<TunnelEvent>({ kind: 'listening', host: listener.host, port: listener.port }), tunnel(options, listener)),
    ),
  );
}

function tunnel(options: TunnelOptions, listener: Listener): Observable<TunnelEvent> {
  const { remote } = options;
  const where = remote ? remote.host : 'the local server';
  const local = remote === undefined;
  const bypassGid = local && process.getuid?.() === 0 ? BYPASS_GID_BASE + listener.port : undefined;
  const argv = remote
    ? sshServerArgv(options.sshCommand, remote, options.remoteNode)
    : [process.execPath, '-e', stubSource()];
  const sshExcludes$ = remote ? from(sshServerAddresses(options.sshCommand, remote)) : of([] as string[]);

  return sshExcludes$.pipe(
    switchMap((sshAddresses) => {
      const setup: FirewallSetup = {
        version: 1,
        method: 'nat',
        port: listener.port,
        routerMode: !isLoopback(listener.host),
        rules: [...sshAddresses.map(hostRule), ...options.subnets],
        ...(bypassGid === undefined ? {} : { bypassGid }),
      };
      debug('firewall setup %o', setup);
      let greeted = false;
      const starting: TunnelEvent = { kind: 'starting', command: argv };
      const running$ = serverProcess$(argv, bypassGid === undefined ? {} : { gid: bypassGid }).pipe(
        switchMap((server) => {
          const remoteOutput$ = server.stderr$.pipe(map((line): TunnelEvent => ({ kind: 'remote-output', line })));
          const session$ = session({
            role: 'client',
            recvWindow: DEFAULT_WINDOW,
            bytes$: server.bytes$,
            sendRaw: server.sendRaw,
            writer: server.writer,
            accepted$: (readersBlocked$) => accepted$(listener, originalDestination, readersBlocked$),
            maxNoise: MAX_NOISE,
            flags: options.latencyControl ? 0 : FLAG_NO_LATENCY_CONTROL,
          }).pipe(
            mergeMap((event): Observable<TunnelEvent> => {
              switch (event.kind) {
                case 'noise':
                  return of({ kind: 'remote-output', line: event.text.trimEnd() });
                case 'hello':
                  greeted = true;
                  return concat(
                    of<TunnelEvent>({ kind: 'connected', remote: where, window: event.hello.window }),
                    firewall$(setup, { helperArgv: [...options.firewallCommand] }).pipe(
                      map((): TunnelEvent => ({ kind: 'firewall-ready', port: listener.port, rules: setup.rules })),
                    ),
                  );
                case 'open':
                  return of({ kind: 'accept', id: event.id, source: event.source ?? '?', destination: event.destination });
                case 'close':
                  return of({ ...event, kind: 'close' });
                case 'exit':
                  return concat(
                    of<TunnelEvent>({ kind: 'remote-exit', reason: event.reason }),
                    throwError(() => new TransportError('RXS_ERR_REMOTE_EXIT', `server on ${where} stopped: ${event.reason}`)),
                  );
                case 'pong':
                  return EMPTY;
              }
            }),
          );
          return merge(remoteOutput$, session$);
        }),
        catchError((err: unknown) => throwError(() => explainFailure(err, greeted, where, options.remoteNode))),
      );
      return concat(of(starting), running$);
    }),
  );
}

const isLoopback = (host: string) => host.startsWith('127.') || host === '::1' || host === 'localhost';

/** Turns how the server process ended into a message that says what to do. */
function explainFailure(err: unknown, greeted: boolean, where: string, remoteNode: string): unknown {
  if (!(err instanceof ServerExit)) return err;
  const telling = [...err.stderrTail].reverse().find((line) => /error|denied|not found|refused|timed out|resolve|no route|too old/i.test(line));
  const last = telling ?? err.stderrTail.at(-1) ?? '';
  const said = last ? `: ${last}` : '';
  if (greeted) return new TransportError('RXS_ERR_TRANSPORT_CLOSED', `connection to ${where} lost${said}`);
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

export { RxshuttleError };
