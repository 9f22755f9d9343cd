#!/usr/bin/env node
import { realpathSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, Option } from 'commander';
import createDebug from 'debug';
import { config as rxConfig, type Subscription } from 'rxjs';
import { connect } from './connect.js';
import { errorMessage, exitCodeFor, RxshuttleError, UsageError } from './errors.js';
import { printable } from './printable.js';
import { helperCommand } from './firewall/client.js';
import { parseSeedHosts, readSubnetFile, resolveOptions, type Transport, TRANSPORTS, type TunnelOptions } from './options.js';
import { hostwatch$ } from './remote/hostwatch.js';
import { runServer } from './remote/server.js';
import { render } from './render.js';
import { raiseFileLimit } from './rlimit.js';
import { cliOutput, type Severity } from './cli-output.js';
import { DAEMON_CHILD_FLAG, detachDaemon, runDaemonParent } from './daemon.js';
import { runSudoersCommand } from './firewall/sudoers.js';
import { checkPidfile, DEFAULT_PIDFILE, removePidfile, writePidfile } from './pidfile.js';

const VERSION = '0.1.0';
const cliPath = realpathSync(fileURLToPath(import.meta.url));

/** stderr, or syslog once the tunnel is up with --syslog/--daemon. */
const output = cliOutput();
const say = (line: string, severity: Severity = 'info') => output.say(line, severity);

function fail(error: unknown): never {
  say(printable(errorMessage(error)), 'err');
  process.exit(exitCodeFor(error));
}

interface CliFlags {
  remote?: string;
  listen?: string;
  exclude: string[];
  excludeFrom?: string;
  sshCmd: string;
  remoteNode: string;
  python?: string;
  verbose: number;
  latencyControl: boolean;
  sshForward: boolean;
  transport: Transport;
  server?: boolean;
  daemon?: boolean;
  syslog?: boolean;
  pidfile?: string;
  keepalive?: string;
  reconnect: boolean;
  sudoers?: boolean;
  sudoersNoModify?: boolean;
  sudoersUser?: string;
  sudoersFilename?: string;
  internalDaemonChild?: boolean;
  dns?: boolean;
  nsHosts?: string;
  toNs?: string;
  autoNets?: boolean;
  autoNetsWide?: boolean;
  autoHosts?: boolean;
  seedHosts?: string;
  hostwatch?: boolean;
}

/** How long a tunnel error waits for a signal that may have caused it (see runTunnel). */
const SIGNAL_GRACE_MS = 150;

/** How the CLI runs the tunnel besides the options: --daemon, --syslog, --pidfile. */
interface RunMode {
  readonly verbosity: number;
  readonly syslog: boolean;
  /** This process is the re-spawned daemon: detach once up. */
  readonly daemonChild: boolean;
  readonly pidfile?: string;
}

function program(): Command {
  return new Command('rxshuttle')
    .usage('[options] [-r [user@]host[:port]] <subnets...>')
    .description('Transparent proxy VPN over ssh: tunnels TCP to <subnets> through one ssh session.')
    .version(VERSION, '-V, --version')
    .argument('[subnets...]', 'subnets to tunnel: a.b.c.d[/width][:port[-port]], 0/0, [ipv6][/width]')
    .option('-r, --remote <[user@]host[:port]>', 'ssh server to tunnel through (default: run the server locally)')
    .option('-l, --listen <[ip:]port>', 'transparent proxy address (default 127.0.0.1, first free port from 12300)')
    .option('-x, --exclude <subnet>', 'never tunnel this subnet (repeatable)', (v: string, all: string[]) => [...all, v], [])
    .option('--exclude-from <file>', 'exclude the subnets listed in a file, one per line')
    .option('-e, --ssh-cmd <command>', 'the ssh command to use, with its options', 'ssh')
    .option('--remote-node <path>', 'node binary on the remote host ("none": run nothing there, stock-sshd mode; chosen by itself where node is missing)', 'node')
    .addOption(new Option('--python <path>', 'sshuttle compatibility: see --remote-node').hideHelp())
    .option('-v, --verbose', 'print more (repeat for more: -vvv traces everything)', (_: string, n: number) => n + 1, 0)
    .option('--no-latency-control', 'favour bulk throughput over interactive latency')
    .option(
      '--ssh-forward',
      'hand each TCP connection to ssh (OpenSSH ControlMaster): ssh -L speed, but a remote half-close is not passed on',
      false,
    )
    .addOption(
      new Option(
        '--transport <auto|ssh|ssh2>',
        'ssh2: in-process ssh, TCP in ssh channels (faster; keys and agent only); ssh: the ssh binary; auto: ssh2 when it can',
      )
        .choices(TRANSPORTS)
        .default('auto'),
    )
    .option('--dns', 'capture local DNS queries (to the nameservers in /etc/resolv.conf) and answer them remotely')
    .option('--ns-hosts <ip,...>', 'capture DNS queries to these nameservers instead (implies --dns)')
    .option('--to-ns <ip[:port]>', 'the remote nameserver that answers them (default: the remote /etc/resolv.conf)')
    .option('-N, --auto-nets', "also tunnel the networks in the server's routing table")
    .option('--auto-nets-wide', 'with -N: also tunnel routes wider than /8 (IPv4) or /16 (IPv6) that the server names')
    .option('-H, --auto-hosts', "add the names of the server's hosts to /etc/hosts while the tunnel runs")
    .option('--seed-hosts <name,...>', 'with -H: host names to start discovery from')
    .option('--hostwatch', 'internal, for debugging -H: discover host names here and print them')
    .option('--keepalive <seconds>', 'ping the server this often; give up after 4 silent intervals (0: never)', '15')
    .option('--no-reconnect', 'end the tunnel when its session is lost (by default a session that was up is started again, the rules staying)')
    .option('-D, --daemon', 'run in the background once the tunnel is up (implies --syslog)')
    .option('--syslog', 'once the tunnel is up, log to syslog instead of stderr')
    .option('--pidfile <file>', `with --daemon: write the daemon's pid there (default ./${DEFAULT_PIDFILE})`)
    .option('--sudoers', 'install a sudoers rule that lets this user start the firewall helper without a password')
    .option('--sudoers-no-modify', 'print that sudoers rule instead of installing it')
    .option('--sudoers-user <user>', 'with --sudoers: the user (or %group) the rule is for (default: you)')
    .option('--sudoers-filename <name>', 'with --sudoers: the file in /etc/sudoers.d (default rxshuttle_auto)')
    .addOption(new Option(DAEMON_CHILD_FLAG, 'internal: the re-spawned daemon').hideHelp())
    .addOption(new Option('--server', 'internal: run the server on stdin/stdout').hideHelp())
    .showHelpAfterError(false)
    // Usage errors read like every other error: one line, `rxshuttle: …`.
    .configureOutput({ outputError: (text, write) => write(`rxshuttle: ${text.replace(/^error: /, '')}`) })
    .exitOverride();
}

function toOptions(subnets: string[], flags: CliFlags): TunnelOptions {
  if (flags.python !== undefined) {
    throw new UsageError('--python does not apply: rxshuttle runs node on the remote host; use --remote-node PATH');
  }
  return resolveOptions(
    {
      subnets,
      exclude: [...flags.exclude, ...(flags.excludeFrom ? readSubnetFile(flags.excludeFrom) : [])],
      ...(flags.remote === undefined ? {} : { remote: flags.remote }),
      ...(flags.listen === undefined ? {} : { listen: flags.listen }),
      sshCommand: flags.sshCmd,
      remoteNode: flags.remoteNode,
      latencyControl: flags.latencyControl,
      sshForward: flags.sshForward,
      transport: flags.transport,
      ...(flags.keepalive === undefined ? {} : { keepalive: flags.keepalive }),
      reconnect: flags.reconnect,
      ...(flags.dns ? { dns: true } : {}),
      ...(flags.nsHosts === undefined ? {} : { nsHosts: flags.nsHosts }),
      ...(flags.toNs === undefined ? {} : { toNs: flags.toNs }),
      ...(flags.autoNets ? { autoNets: true } : {}),
      ...(flags.autoNetsWide ? { autoNetsWide: true } : {}),
      ...(flags.autoHosts ? { autoHosts: true } : {}),
      ...(flags.seedHosts === undefined ? {} : { seedHosts: flags.seedHosts }),
      // With syslog the helper's stderr must come through us: the terminal is gone (daemon), or
      // its lines belong in the log.
      ...(flags.syslog || flags.daemon ? { firewallStderr: (line: string) => say(`firewall: ${line}`, 'warning') } : {}),
    },
    () => helperCommand(cliPath),
  );
}

function runTunnel(options: TunnelOptions, mode: RunMode): void {
  const { verbosity } = mode;
  raiseFileLimit();
  let subscription: Subscription | undefined;
  let stopping = false;
  let up = false;
  const stop = (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    if (verbosity > 0) say(`${signal}: shutting down.`);
    subscription?.unsubscribe();
    // Children see their stdin close and finish on their own; do not wait on them for long.
    setTimeout(() => process.exit(0), 1000).unref();
  };
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, () => stop(signal));
  subscription = connect(options).subscribe({
    next: (event) => {
      const line = render(event, verbosity);
      // Some events take several lines ("available routes:"): each gets its own prefix.
      if (line !== null) for (const part of line.split('\n')) say(part, event.kind === 'warning' ? 'warning' : 'info');
      if (event.kind === 'firewall-ready' && !up) {
        up = true;
        try {
          tunnelUp(mode);
        } catch (error) {
          stopping = true;
          say(printable(errorMessage(error)), 'err');
          process.exitCode = exitCodeFor(error);
          subscription?.unsubscribe();
          setTimeout(() => process.exit(), 1000).unref();
        }
      }
    },
    error: (error: unknown) => {
      // Ctrl-C signals ssh as well, which may die (and end the tunnel with an error) before our own
      // handler has run: give the signal a moment, so a Ctrl-C stays a clean stop, not a failure.
      setTimeout(() => {
        if (stopping) return;
        stopping = true;
        say(printable(errorMessage(error)), 'err');
        process.exitCode = exitCodeFor(error);
        setTimeout(() => process.exit(), 1000).unref();
      }, SIGNAL_GRACE_MS);
    },
    complete: () => process.exit(0),
  });
}

async function main(argv: string[]): Promise<void> {
  rxConfig.onUnhandledError = (error) => say(`internal error: ${errorMessage(error)}`);
  const cli = program();
  try {
    cli.parse(argv);
  } catch (error) {
    const code = (error as { code?: string }).code;
    if (code === 'commander.helpDisplayed' || code === 'commander.version') process.exit(0);
    // commander has printed its own message already.
    process.exit(2);
  }
  const flags = cli.opts<CliFlags>();
  if (flags.verbose >= 3) createDebug.enable('rxshuttle:*');
  if (flags.server) {
    runServer();
    return;
  }
  if (flags.hostwatch) {
    try {
      runHostwatch(flags.seedHosts);
    } catch (error) {
      if (error instanceof RxshuttleError) fail(error);
      throw error;
    }
    return;
  }
  if (flags.sudoers || flags.sudoersNoModify) {
    try {
      process.exitCode = runSudoersCommand({
        install: flags.sudoers === true && flags.sudoersNoModify !== true,
        ...(flags.sudoersUser === undefined ? {} : { user: flags.sudoersUser }),
        ...(flags.sudoersFilename === undefined ? {} : { filename: flags.sudoersFilename }),
        nodePath: process.execPath,
        cliPath,
      });
    } catch (error) {
      if (error instanceof RxshuttleError) fail(error);
      throw error;
    }
    return;
  }
  let options: TunnelOptions;
  const daemonChild = flags.internalDaemonChild === true;
  const pidfile = flags.pidfile ?? (flags.daemon ? DEFAULT_PIDFILE : undefined);
  try {
    options = toOptions(cli.args, flags);
    // A running instance with this pid file: say so now, not after connecting.
    if (pidfile !== undefined) checkPidfile(pidfile);
  } catch (error) {
    if (error instanceof RxshuttleError) fail(error);
    throw error;
  }
  if (flags.daemon && !daemonChild) {
    // The tunnel runs in a re-spawned child; we report how its start went and return.
    process.exit(await runDaemonParent(cliPath, argv.slice(2)));
  }
  runTunnel(options, {
    verbosity: flags.verbose,
    syslog: flags.syslog === true || flags.daemon === true,
    daemonChild,
    ...(pidfile === undefined ? {} : { pidfile: resolve(pidfile) }),
  });
}

/** --hostwatch: host discovery on this machine, each find printed on stdout, until a signal. */
function runHostwatch(seeds: string | undefined): void {
  const subscription = hostwatch$({
    seeds: seeds === undefined ? [] : parseSeedHosts(seeds),
    log: (message) => say(message, 'warning'),
  }).subscribe((host) => process.stdout.write(`hostwatch: Found: ${host.name}: ${host.address}\n`));
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(signal, () => {
      subscription.unsubscribe();
      process.exit(0);
    });
  }
}

/**
 * The tunnel is up (rules in place): write the pid file, move the log to syslog, and detach when
 * this is the daemon. Throws (PidfileError) when the pid file belongs to a running process.
 */
function tunnelUp(mode: RunMode): void {
  if (mode.pidfile !== undefined) {
    const file = writePidfile(mode.pidfile);
    process.on('exit', () => removePidfile(file));
  }
  if (mode.syslog) {
    const warning = output.toSyslog();
    if (warning !== null) say(`warning: ${warning}`, 'warning');
    // A crash still ends the process, but its reason reaches the log (stderr may be /dev/null).
    process.on('uncaughtExceptionMonitor', (error) => say(`internal error: ${error.stack ?? errorMessage(error)}`, 'err'));
  }
  if (mode.daemonChild) detachDaemon();
}

main(process.argv).catch(fail);
