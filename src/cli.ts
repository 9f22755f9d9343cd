#!/usr/bin/env node
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Command, Option } from 'commander';
import createDebug from 'debug';
import { config as rxConfig, type Subscription } from 'rxjs';
import { connect } from './connect.js';
import { errorMessage, exitCodeFor, RxshuttleError, UsageError } from './errors.js';
import { helperCommand } from './firewall/client.js';
import { runFirewallHelper } from './firewall/helper.js';
import { readSubnetFile, resolveOptions, type TunnelOptions } from './options.js';
import { runServer } from './remote/server.js';
import { render } from './render.js';
import { raiseFileLimit } from './rlimit.js';

const VERSION = '0.1.0';
const cliPath = realpathSync(fileURLToPath(import.meta.url));

const say = (line: string) => process.stderr.write(`rxshuttle: ${line}\n`);

function fail(error: unknown): never {
  say(errorMessage(error));
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
  server?: boolean;
  firewall?: boolean;
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
    .option('--remote-node <path>', 'node binary on the remote host', 'node')
    .addOption(new Option('--python <path>', 'sshuttle compatibility: see --remote-node').hideHelp())
    .option('-v, --verbose', 'print more (repeat for more: -vvv traces everything)', (_: string, n: number) => n + 1, 0)
    .option('--no-latency-control', 'favour bulk throughput over interactive latency')
    .addOption(new Option('--server', 'internal: run the server on stdin/stdout').hideHelp())
    .addOption(new Option('--firewall', 'internal: run the firewall helper (root)').hideHelp())
    .showHelpAfterError(false)
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
    },
    () => helperCommand(cliPath),
  );
}

function runTunnel(options: TunnelOptions, verbosity: number): void {
  raiseFileLimit();
  let subscription: Subscription | undefined;
  let stopping = false;
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
      if (line !== null) say(line);
    },
    error: (error: unknown) => {
      stopping = true;
      say(errorMessage(error));
      process.exitCode = exitCodeFor(error);
      setTimeout(() => process.exit(), 1000).unref();
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
  if (flags.firewall) {
    process.exitCode = await runFirewallHelper(process.stdin, process.stdout);
    return;
  }
  if (flags.server) {
    runServer();
    return;
  }
  let options: TunnelOptions;
  try {
    options = toOptions(cli.args, flags);
  } catch (error) {
    if (error instanceof RxshuttleError) fail(error);
    throw error;
  }
  runTunnel(options, flags.verbose);
}

main(process.argv).catch(fail);
