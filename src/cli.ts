#!/usr/bin/env node
import { spawnSync } from 'node:child_process';
import { realpathSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Command } from 'commander';
import createDebug from 'debug';
import { config as rxConfig, type Subscription } from 'rxjs';
import { type ExpandedArgs, expandArgs } from './cli/argv.js';
import { completionScript, type Shell } from './cli/completion.js';
import { detachDaemon, runDaemonParent } from './cli/daemon.js';
import { printableDebugStrings } from './cli/debug-lines.js';
import { CLI_SPEC } from './cli/definitions.js';
import { withoutEffect } from './cli/ineffective.js';
import { cliOutput, type Severity } from './cli/output.js';
import { checkPidfile, DEFAULT_PIDFILE, removePidfile, writePidfile } from './cli/pidfile.js';
import { buildProgram } from './cli/program.js';
import { readyLine, render, stopLine } from './cli/render.js';
import { sdNotifier } from './cli/sd-notify.js';
import { packageVersion } from './cli/version.js';
import { connect } from './connect.js';
import { HELPER_NODE_OPTIONS, helperScriptPath } from './firewall/protocol.js';
import { checkSudoersFilename, runSudoersCommand } from './firewall/sudoers.js';
import { withoutErrnoCodes } from './os/errno.js';
import { raiseFileLimit } from './os/rlimit.js';
import { hostwatch$ } from './remote/hostwatch.js';
import { runServer } from './remote/server.js';
import { errorMessage, exitCodeFor, RxshuttleError, UsageError } from './shared/errors.js';
import { type Method, parseSeedHosts, readSubnetFile, resolveOptions, type Transport, type TunnelOptions } from './shared/options.js';
import { printable } from './shared/printable.js';
import { renderStatus, statusJson } from './status/render.js';
import { STOPPING, statusTracker } from './status/snapshot.js';
import { listInstances, statusServer$ } from './status/socket.js';
import { helperCommand } from './tunnel/firewall-client.js';

const cliPath = realpathSync(fileURLToPath(import.meta.url));

/** stderr, or syslog once the tunnel is up with --syslog/--daemon. */
const output = cliOutput();
const say = (line: string, severity: Severity = 'info') => output.say(line, severity);

/** An error's one line: printable, with errno codes in words ("no such file", not ENOENT). */
const sayError = (error: unknown) => say(printable(withoutErrnoCodes(errorMessage(error))), 'err');

function fail(error: unknown): never {
  sayError(error);
  process.exit(exitCodeFor(error));
}

/** Runs a check whose failure is the user's wrong option value: its error becomes a UsageError (exit 2). */
function asUsageError(check: () => void): void {
  try {
    check();
  } catch (error) {
    throw error instanceof RxshuttleError && !(error instanceof UsageError) ? new UsageError(error.message) : error;
  }
}

interface CliFlags {
  killSwitch?: boolean;
  flush?: boolean;
  json?: boolean;
  remote?: string;
  listen?: string;
  exclude: string[];
  excludeFrom: string[];
  subnets: string[];
  sshCmd: string;
  remoteNode: string;
  python?: string;
  verbose: number;
  latencyControl: boolean;
  sshForward?: boolean;
  transport: Transport;
  method: Method;
  user?: string;
  group?: string;
  disableIpv6?: boolean;
  tmark?: string;
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
  /** --json: every event as a JSON line on stdout. */
  readonly json: boolean;
}

function toOptions(subnets: string[], flags: CliFlags): TunnelOptions {
  if (flags.python !== undefined) {
    throw new UsageError('--python does not apply: rxshuttle runs node on the remote host; use --remote-node PATH');
  }
  return resolveOptions(
    {
      subnets: [...subnets, ...flags.subnets.flatMap((file) => readSubnetFile(file, false))],
      exclude: [...flags.exclude, ...flags.excludeFrom.flatMap((file) => readSubnetFile(file, true))],
      ...(flags.remote === undefined ? {} : { remote: flags.remote }),
      ...(flags.listen === undefined ? {} : { listen: flags.listen }),
      sshCommand: flags.sshCmd,
      remoteNode: flags.remoteNode,
      latencyControl: flags.latencyControl,
      sshForward: flags.sshForward === true,
      transport: flags.transport,
      method: flags.method,
      ...(flags.user === undefined ? {} : { user: flags.user }),
      ...(flags.group === undefined ? {} : { group: flags.group }),
      ...(flags.disableIpv6 ? { disableIpv6: true } : {}),
      ...(flags.tmark === undefined ? {} : { tmark: flags.tmark }),
      ...(flags.keepalive === undefined ? {} : { keepalive: flags.keepalive }),
      reconnect: flags.reconnect,
      ...(flags.killSwitch ? { killSwitch: true } : {}),
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
  const where = options.remote ? options.remote.host : 'the local server';
  raiseFileLimit();
  let subscription: Subscription | undefined;
  let stopping = false;
  let up = false;
  // systemd (Type=notify) and `rxshuttle status`: what state the tunnel is in.
  const notify = sdNotifier();
  const status = statusTracker({ remote: where });
  const statusSocket = statusServer$(() => status.current).subscribe({
    error: (e: unknown) => say(`warning: no status socket for rxshuttle status: ${printable(errorMessage(e))}`, 'warning'),
  });
  // process.exit() ends every path out: the socket goes with it (closed and unlinked at once).
  process.on('exit', () => statusSocket.unsubscribe());
  const stop = (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    say(stopLine(signal, verbosity));
    status.record(STOPPING);
    notify('STOPPING=1');
    subscription?.unsubscribe();
    // Children see their stdin close and finish on their own; do not wait on them for long.
    setTimeout(() => process.exit(0), 1000).unref();
  };
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, () => stop(signal));
  subscription = connect(options).subscribe({
    next: (event) => {
      status.record(event);
      if (mode.json) process.stdout.write(`${JSON.stringify(event)}\n`);
      if (event.kind === 'firewall-ready') notify(`READY=1\nSTATUS=${readyLine(event, where, options)}`);
      if (event.kind === 'reconnecting') notify(`STATUS=reconnecting to ${where} (attempt ${event.attempt})`);
      const line = render(event, verbosity);
      // Some events take several lines ("available routes:"): each gets its own prefix.
      if (line !== null) for (const part of line.split('\n')) say(part, event.kind === 'warning' ? 'warning' : 'info');
      // Up (again, after a reconnect): said at every verbosity, before a daemon leaves the terminal.
      if (event.kind === 'firewall-ready') say(readyLine(event, where, options));
      if (event.kind === 'firewall-ready' && !up) {
        up = true;
        try {
          tunnelUp(mode);
        } catch (error) {
          stopping = true;
          sayError(error);
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
        sayError(error);
        process.exitCode = exitCodeFor(error);
        setTimeout(() => process.exit(), 1000).unref();
      }, SIGNAL_GRACE_MS);
    },
    complete: () => process.exit(0),
  });
}

/** What the command line asks for: the tunnel (or --server, --sudoers…), or a command's output. */
type Invocation =
  | { readonly kind: 'main'; readonly subnets: string[] }
  | { readonly kind: 'completion'; readonly shell: Shell }
  | { readonly kind: 'status'; readonly json: boolean; readonly verbose: boolean };

/** Parses the expanded arguments; commander's own errors exit 2 (usage), --help and -V exit 0. */
function parseArgs(expanded: ExpandedArgs): { cli: Command; invocation: Invocation } {
  let invocation: Invocation = { kind: 'main', subnets: [] };
  const cli = buildProgram(CLI_SPEC, packageVersion(), {
    main: (subnets) => {
      invocation = { kind: 'main', subnets };
    },
    command: (name, argument, opts) => {
      invocation =
        name === 'status'
          ? { kind: 'status', json: opts.json === true, verbose: opts.verbose === true }
          : { kind: 'completion', shell: argument as Shell };
    },
  });
  // Usage errors read like every other error: one line, `rxshuttle: …`, naming where words came from.
  const from = expanded.fromEnv ? ` (with ${expanded.fromEnv.name}: ${expanded.fromEnv.words.join(' ')})` : '';
  // commander's suggestion ("(Did you mean --exclude-from?)") comes on a line of its own: join it.
  const outputError = (text: string, write: (s: string) => void) =>
    write(`rxshuttle: ${printable(text.trim().replace(/^error: /, '').replace(/\s*\n\s*/g, ' '))}${from}\n`);
  cli.configureOutput({ outputError });
  for (const command of cli.commands) command.configureOutput({ outputError });
  try {
    cli.parse(expanded.args, { from: 'user' });
  } catch (error) {
    const code = (error as { code?: string }).code;
    if (code === 'commander.helpDisplayed' || code === 'commander.version') process.exit(0);
    // commander has printed its own message already.
    process.exit(2);
  }
  return { cli, invocation };
}

async function main(argv: string[]): Promise<void> {
  rxConfig.onUnhandledError = (error) => say(`internal error: ${printable(errorMessage(error))}`);
  let expanded: ExpandedArgs;
  try {
    expanded = expandArgs(argv.slice(2), process.env);
  } catch (error) {
    fail(error);
  }
  const { cli, invocation } = parseArgs(expanded);
  if (invocation.kind === 'completion') {
    process.stdout.write(completionScript(CLI_SPEC, invocation.shell));
    return;
  }
  if (invocation.kind === 'status') {
    // --json and -v are also the main command's options: commander may give them to either.
    const top = cli.opts<CliFlags>();
    const json = invocation.json || top.json === true;
    const verbose = invocation.verbose || top.verbose > 0;
    const list = await listInstances();
    for (const warning of list.warnings) say(`warning: ${warning}`, 'warning');
    process.stdout.write(`${json ? statusJson(list) : renderStatus(list, { verbose })}\n`);
    return;
  }
  const flags = cli.opts<CliFlags>();
  printableDebugStrings(createDebug);
  if (flags.verbose >= 3) createDebug.enable('rxshuttle:*');
  if (flags.server) {
    runServer();
    return;
  }
  if (flags.flush) {
    process.exitCode = flushKillSwitches();
    return;
  }
  const daemonChild = flags.internalDaemonChild === true;
  // The daemon's parent has said these already.
  if (!daemonChild) for (const warning of withoutEffect(flags)) say(`warning: ${warning}`, 'warning');
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
      // A name the rule file cannot have is a wrong option value: a usage error, as -x's are.
      if (flags.sudoersFilename !== undefined) asUsageError(() => checkSudoersFilename(flags.sudoersFilename as string));
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
  // sshuttle's meaning: the pid file belongs to -D; without it --pidfile is only warned about.
  const pidfile = flags.daemon ? (flags.pidfile ?? DEFAULT_PIDFILE) : undefined;
  try {
    options = toOptions(invocation.subnets, flags);
    // A running instance with this pid file: say so now, not after connecting.
    if (pidfile !== undefined) checkPidfile(pidfile);
  } catch (error) {
    if (error instanceof RxshuttleError) fail(error);
    throw error;
  }
  if (flags.daemon && !daemonChild) {
    // The tunnel runs in a re-spawned child, which reads the same arguments (and the environment
    // and argument files) again; we report how its start went and return.
    process.exit(await runDaemonParent(cliPath, argv.slice(2)));
  }
  runTunnel(options, {
    verbosity: flags.verbose,
    syslog: flags.syslog === true || flags.daemon === true,
    daemonChild,
    ...(pidfile === undefined ? {} : { pidfile: resolve(pidfile) }),
    json: flags.json === true,
  });
}

/**
 * `rxshuttle --flush`: removes every kill switch (--kill-switch) through the firewall helper's
 * --flush: as is when we are root, through sudo otherwise (which may ask for the password: the
 * rule of --sudoers does not allow it). Returns the exit status.
 */
function flushKillSwitches(): number {
  const argv = [process.execPath, ...HELPER_NODE_OPTIONS, helperScriptPath(cliPath), '--flush'];
  const run = spawnSync(process.getuid?.() === 0 ? argv[0] as string : 'sudo', process.getuid?.() === 0 ? argv.slice(1) : argv, { stdio: 'inherit' });
  if (run.error) {
    sayError(new RxshuttleError('RXS_ERR_FW_APPLY', `--flush: cannot run the firewall helper: ${errorMessage(run.error)}`));
    return 1;
  }
  return run.status ?? 1;
}

/** --hostwatch: host discovery on this machine, each find printed on stdout, until a signal. */
function runHostwatch(seeds: string | undefined): void {
  const subscription = hostwatch$({
    seeds: seeds === undefined ? [] : parseSeedHosts(seeds),
    log: (message) => say(message, 'warning'),
  }).subscribe({
    next: (host) => process.stdout.write(`hostwatch: Found: ${host.name}: ${host.address}\n`),
    error: fail,
  });
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
