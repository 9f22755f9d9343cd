/**
 * The firewall helper: the body of `rxshuttle --firewall`, the only part that runs as root.
 *
 * Protocol (version 1; lines end with '\n'; docs/firewall-helper.md has the full text):
 *
 *   helper → client  HELLO rxshuttle-fw 1
 *   client → helper  one line of JSON: a FirewallSetup (at most 3 MiB, 20 000 rules)
 *   helper → client  READY                    rules are installed
 *                or  ERROR <one-line reason>  nothing is installed; the helper exits non-zero
 *   client → helper  HOST <address> <name> (setup with hosts: -H) → OK once in /etc/hosts, or
 *                    ERROR <reason>; any other line → ERROR <reason>; the rules stay
 *                    (the instance's hosts block goes when the rules go)
 *   client → helper  QUIT, then it closes its end of the pipe (or the pipe just closes: the
 *                    client died, which the helper reports on stderr once the rules are gone),
 *                    or the helper gets SIGINT/SIGTERM/SIGHUP:
 *                    the helper removes every rule of the instance and exits 0
 *                    (non-zero, with a message on stderr, if removal failed)
 *
 * Why stdin EOF ends it: the client can die in any way, even by SIGKILL, and the kernel still
 * closes the pipe; so the machine never stays with traffic redirected to a dead port. Before
 * installing, leftovers of an earlier instance with the same port are removed, so a crashed
 * instance cannot block a new one either. A live one is not mistaken for leftovers: each helper
 * holds a lock of its port while it lives (port-lock.ts), and a second helper for that port is
 * refused before it touches anything.
 */
import createDebug from 'debug';
import { TunneledSubnets } from './host-address.js';
import { HOSTS_PATH, HostsBlock, MAX_BLOCK_BYTES, MAX_HOSTS } from './hosts-file.js';
import type { RunCommand } from './iptables.js';
import { installKillSwitch, removeKillSwitches } from './kill-switch.js';
import { LINE_TOO_LONG, type LineItem, LineSplitter } from './lines.js';
import { type InstalledRules, installRules } from './methods.js';
import { LOCK_DIRS, lockPort, type PortLock } from './port-lock.js';
import { findPrograms, HELPER_PROGRAMS, programRunner } from './programs.js';
import { ERROR_PREFIX, HELLO_LINE, MAX_LINE_BYTES, OK_LINE, oneLine, QUIT_LINE, READY_LINE, RULES_PREFIX } from './protocol.js';
import { endRedirected } from './redirected.js';
import { flushResolvedCache } from './resolved.js';
import { boundBy, checkRestrictedSetup } from './restricted.js';
import type { FirewallSetup } from './types.js';
import { MAX_RULES_LINE_BYTES, parseHostLine, parseRulesLine, parseSetupLine } from './validate.js';
import { type StartWatchdog, spawnWatchdog, type Watchdog } from './watchdog.js';

const log = createDebug('rxshuttle:fw');

export interface FirewallHelperOptions {
  /**
   * Runs iptables programs (default: the real ones, found at start in the system directories only
   * and run by absolute path with a fixed environment: programs.ts). Tests inject a fake.
   */
  run?: RunCommand;
  /** End on SIGINT/SIGTERM/SIGHUP (default true). In-process tests turn this off. */
  handleSignals?: boolean;
  /** Another way to end the helper, as if its input had closed. */
  stop?: AbortSignal;
  /** Where a failed cleanup is reported (default: stderr, which the client passes through). */
  warn?: (message: string) => void;
  /** Where the helper says it cleaned up after a client that died (default: stderr). */
  notice?: (message: string) => void;
  /** The hosts file that -H edits (default /etc/hosts). Tests use a file of their own. */
  hostsPath?: string;
  /** Whether systemd-resolved runs (its cache is flushed for --dns). Default: its /run directory exists. */
  resolvedRunning?: () => boolean;
  /**
   * Directory of the per-port lock file and of the hosts file's lock (default: /run/rxshuttle, or
   * /tmp/rxshuttle when /run is not writable). With an injected `run` and no `lockDir` there is no
   * lock: the tables are the caller's fake then.
   */
  lockDir?: string;
  /**
   * The restricted mode (restricted.ts): capture only this user's traffic, no router mode, only
   * to ports this user listens on. Default: unrestricted.
   */
  ownerUid?: number;
  /** Whether a port is bound by a user (restricted mode; default: /proc/net). Tests inject one. */
  boundBy?: typeof boundBy;
  /**
   * Starts the watchdog that removes the rules if the helper dies without doing so (watchdog.ts).
   * Default: `node <this script> --watchdog` when the real programs are run (no `run` injected);
   * none with an injected `run`, unless given.
   */
  startWatchdog?: StartWatchdog | null;
  /** The conntrack table read when the client died (default /proc/net/nf_conntrack: redirected.ts). */
  conntrackPath?: string;
}

const STOP = Symbol('stop');
/** The answer to a HOST line beyond the instance's share of the hosts file (the same words every time: the client says it once). */
const HOSTS_CAP = `too many hosts entries (at most ${MAX_HOSTS} names and ${MAX_BLOCK_BYTES / (1024 * 1024)} MiB per instance)`;
const STOP_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
/** Lines, and bytes of them, read ahead before the input is paused, so a flooding client cannot grow our memory. */
const MAX_QUEUED_LINES = 64;
const MAX_QUEUED_BYTES = 256 * 1024;
/** Longest line after the setup: a RULES line (a HOST line is under 300 bytes). */
const MAX_COMMAND_BYTES = MAX_RULES_LINE_BYTES;

export async function runFirewallHelper(
  input: NodeJS.ReadableStream,
  output: NodeJS.WritableStream,
  opts: FirewallHelperOptions = {},
): Promise<number> {
  // Found now, never in the caller's PATH: the helper runs as root with the caller's environment.
  const run = opts.run ?? programRunner(findPrograms(HELPER_PROGRAMS));
  const warn = opts.warn ?? ((m: string) => process.stderr.write(`rxshuttle --firewall: ${m}\n`));
  const notice = opts.notice ?? ((m: string) => process.stderr.write(`rxshuttle --firewall: ${m}\n`));
  // Permanent: the client may be gone when we write (EPIPE must not crash the cleanup).
  output.on('error', (e: Error) => log('output: %s', e.message));
  const send = (line: string) => {
    log('→ %s', line);
    output.write(`${line}\n`);
  };
  const lines = new LineQueue(input);
  const stop = stopTrigger(opts, () => lines.stop());
  const lockDirs = opts.lockDir !== undefined ? [opts.lockDir] : opts.run === undefined ? LOCK_DIRS : null;
  const startWatchdog = opts.startWatchdog !== undefined ? opts.startWatchdog : opts.run === undefined ? spawnWatchdog(ownArgv()) : null;
  let portLock: PortLock | null = null;
  let watchdog: Watchdog | null = null;
  try {
    send(HELLO_LINE);
    const first = await lines.next();
    if (first === STOP) return 0;
    if (first === null) {
      log('input ended before a setup arrived');
      return 1;
    }
    if (first === LINE_TOO_LONG) {
      send(`${ERROR_PREFIX}setup line longer than ${MAX_LINE_BYTES} bytes`);
      return 1;
    }
    // From here on only short commands come: longer lines are refused without being kept.
    lines.limit(MAX_COMMAND_BYTES);
    let installed: InstalledRules;
    let setup: FirewallSetup;
    let port = 0;
    let hosts: HostsBlock | null = null;
    // -H: the subnets of this setup, the only addresses a HOST line may give a name (host-address.ts).
    let tunneled = new TunneledSubnets([]);
    let dns = false;
    /** --kill-switch: what to block if the client dies without QUIT. */
    let killSwitch: FirewallSetup | null = null;
    try {
      setup = parseSetupLine(first);
      port = setup.port;
      log('setup: port %d, %d rules, router mode %s', setup.port, setup.rules.length, setup.routerMode);
      if (opts.ownerUid !== undefined) checkRestrictedSetup(setup, opts.ownerUid, opts.boundBy);
      // Before the lock file is made and anything is installed: from here on, even a SIGKILL
      // leaves nothing behind (the watchdog takes the lock for its cleanup).
      const hostsPath = opts.hostsPath ?? HOSTS_PATH;
      if (startWatchdog) {
        watchdog = await startWatchdog({
          port: setup.port,
          method: setup.method,
          hostsPath: setup.hosts ? hostsPath : null,
          dns: setup.dnsPort !== undefined,
          lockDirs,
          killSwitch: killSwitchOrders(setup, opts.ownerUid),
        });
      }
      // Before any cleanup of "leftovers": they may be the live rules of another helper.
      if (lockDirs) portLock = await lockPort(setup.port, lockDirs);
      installed = await installRules(setup, run, opts.ownerUid);
      // A kill switch left by an earlier instance on this port: this one carries the traffic now.
      await removeKillSwitches(run, setup.port);
      if (setup.killSwitch) killSwitch = setup;
      dns = setup.dnsPort !== undefined;
      if (setup.hosts) {
        tunneled = new TunneledSubnets(setup.rules);
        hosts = await HostsBlock.open(setup.port, hostsPath, { lockDirs }).catch(async (e: unknown) => {
          await installed.remove().catch((u: Error) => log('undo failed: %s', u.message));
          throw new Error(`cannot edit the hosts file: ${(e as Error).message}`);
        });
      }
    } catch (e) {
      send(ERROR_PREFIX + oneLine((e as Error).message));
      // Nothing is installed: installNat and the hosts step undo what they did (and the next helper for
      // the port clears whatever an undo could not). The watchdog may go.
      watchdog?.release();
      return 1;
    }
    if (dns) await flushResolvedCache(run, opts.resolvedRunning);
    send(READY_LINE);

    let gone = false;
    for (;;) {
      // HOST lines taken are written once no further line waits: a burst costs one rewrite.
      if (hosts && lines.queued === 0) await writeHosts(hosts, send);
      // A client that does not read its answers gets no more of them: its lines wait in the pipe.
      await lines.whileFull(output);
      const item = await lines.next();
      if (item === null || item === STOP) {
        // The pipe closed without QUIT: the client died (crash, kill -9). Say what became of its rules.
        if (item === null) gone = true;
        break;
      }
      if (hosts && typeof item === 'string' && item.startsWith('HOST ')) {
        takeHostLine(hosts, tunneled, item, send);
        continue;
      }
      // Any other line: what was taken is written and answered first, so no HOST line stays unanswered.
      if (hosts) await writeHosts(hosts, send);
      if (item === QUIT_LINE) break;
      if (typeof item === 'string' && item.startsWith(RULES_PREFIX)) {
        const now = await takeRulesLine(item, setup, installed, send);
        if (now === null) continue;
        if (hosts) tunneled = new TunneledSubnets(now.rules);
        if (killSwitch) {
          killSwitch = now;
          watchdog?.updateKillSwitch(killSwitchOrders(now, opts.ownerUid));
        }
        continue;
      }
      send(`${ERROR_PREFIX}${item === LINE_TOO_LONG ? 'line too long' : 'unknown command'} (rules stay in place)`);
    }

    // A dead client's sockets may still send queued data after the chain is gone, untranslated: the
    // programs would wait forever. End their side while the translation still stands.
    if (gone) await endRedirected(run, port, opts.conntrackPath);
    // Blocked before the redirect goes, so that nothing slips out on the direct path in between.
    if (gone && killSwitch) {
      await installKillSwitch(killSwitch, run, opts.ownerUid).then(
        () => notice(`--kill-switch: the tunneled subnets of port ${port} stay blocked; rxshuttle --flush (or the next start) lifts it`),
        (e: Error) => warn(`--kill-switch: cannot block the tunneled subnets: ${oneLine(e.message)}`),
      );
    }
    let hostsLeft = false;
    if (hosts) {
      await hosts.remove().catch((e: Error) => {
        hostsLeft = true;
        warn(`failed to remove the hosts entries of port ${port}: ${oneLine(e.message)}`);
      });
    }
    log('removing rules');
    try {
      await installed.remove();
      log('rules removed');
      if (dns) await flushResolvedCache(run, opts.resolvedRunning);
      if (gone) notice(`the client went away; firewall rules of port ${port} removed`);
      if (!hostsLeft) watchdog?.release();
      return hostsLeft ? 1 : 0;
    } catch (e) {
      warn(`failed to remove firewall rules: ${oneLine((e as Error).message)}`);
      return 1;
    }
  } finally {
    // After the rules are gone: a new helper for this port may clean up from here on. A watchdog
    // not released (a removal failed) tries once more when we have exited.
    portLock?.release();
    stop.dispose();
    lines.close();
  }
}

/** What the watchdog needs to block the subnets if the helper dies (--kill-switch), or null. */
function killSwitchOrders(setup: FirewallSetup, ownerUid: number | undefined): { setup: FirewallSetup; ownerUid?: number } | null {
  if (!setup.killSwitch) return null;
  return { setup, ...(ownerUid === undefined ? {} : { ownerUid }) };
}

/**
 * `RULES <json>`: the rules beyond the setup's own are now these (host names the remote resolved).
 * Answers OK and returns the setup as it now stands, or answers ERROR (what was there stays) and
 * returns null.
 */
async function takeRulesLine(line: string, setup: FirewallSetup, installed: InstalledRules, send: (line: string) => void): Promise<FirewallSetup | null> {
  try {
    const extra = parseRulesLine(line);
    await installed.update(extra);
    log('rules updated: %d beyond the setup', extra.length);
    send(OK_LINE);
    return { ...setup, rules: [...setup.rules, ...extra] };
  } catch (e) {
    send(`${ERROR_PREFIX}${oneLine((e as Error).message)} (the earlier rules stay)`);
    return null;
  }
}

/** This program as it was started (node and its script), for the watchdog. */
function ownArgv(): string[] {
  const script = process.argv[1];
  if (script === undefined) throw new Error('cannot tell the helper\'s own script for its watchdog');
  return [process.execPath, script];
}

/**
 * -H: one `HOST <address> <name>` line. Refused lines (validate.ts: among them every address the
 * setup's subnets do not tunnel, host-address.ts) are answered with ERROR at once; accepted ones
 * are taken for the next writeHosts.
 */
function takeHostLine(hosts: HostsBlock, tunneled: TunneledSubnets, line: string, send: (line: string) => void): void {
  try {
    if (!hosts.add(parseHostLine(line, tunneled))) send(`${ERROR_PREFIX}${HOSTS_CAP}`);
  } catch (e) {
    send(ERROR_PREFIX + oneLine((e as Error).message));
  }
}

/** Writes the entries taken since the last write, and answers each of their lines: OK, or why not. */
async function writeHosts(hosts: HostsBlock, send: (line: string) => void): Promise<void> {
  const count = hosts.waiting;
  if (count === 0) return;
  let reply = OK_LINE;
  await hosts.write().catch((e: Error) => {
    reply = `${ERROR_PREFIX}cannot write the hosts file: ${oneLine(e.message)}`;
  });
  for (let i = 0; i < count; i++) send(reply);
}

/** Calls `fire` on a signal or `opts.stop`; `dispose` removes the handlers. */
function stopTrigger(opts: FirewallHelperOptions, fire: () => void): { dispose(): void } {
  const onSignal = (signal: NodeJS.Signals) => {
    log('got %s', signal);
    fire();
  };
  // While our handlers are installed, these signals no longer kill the process: we clean first.
  if (opts.handleSignals !== false) for (const s of STOP_SIGNALS) process.on(s, onSignal);
  const onAbort = () => fire();
  opts.stop?.addEventListener('abort', onAbort);
  if (opts.stop?.aborted) fire();
  return {
    dispose() {
      for (const s of STOP_SIGNALS) process.off(s, onSignal);
      opts.stop?.removeEventListener('abort', onAbort);
    },
  };
}

/**
 * The input as a pull-style queue of lines; `next()` gives null once the input has ended, STOP
 * once `stop()` was called. What is read ahead is bounded (MAX_QUEUED_LINES, MAX_QUEUED_BYTES):
 * beyond that the input is paused and the rest waits in the pipe. No promise outlives one wait:
 * a long-lived one raced against every line kept a reaction per line (issue 17, finding 1).
 */
class LineQueue {
  readonly #input: NodeJS.ReadableStream;
  readonly #splitter = new LineSplitter(MAX_LINE_BYTES);
  readonly #items: LineItem[] = [];
  #bytes = 0;
  #ended = false;
  #stopped = false;
  #wake: (() => void) | null = null;

  readonly #onData = (chunk: Buffer | string) => {
    for (const item of this.#splitter.push(typeof chunk === 'string' ? Buffer.from(chunk) : chunk)) {
      this.#items.push(item);
      if (typeof item === 'string') this.#bytes += item.length;
    }
    if (this.#full()) this.#input.pause();
    this.#notify();
  };
  readonly #onEnd = () => {
    this.#ended = true;
    this.#notify();
  };
  readonly #onError = (e: Error) => {
    log('input: %s', e.message);
    this.#onEnd();
  };

  constructor(input: NodeJS.ReadableStream) {
    this.#input = input;
    input.on('data', this.#onData);
    input.on('end', this.#onEnd);
    input.on('close', this.#onEnd);
    input.on('error', this.#onError);
  }

  /** Lines read and waiting. */
  get queued(): number {
    return this.#items.length;
  }

  /** Lines longer than this from now on are LINE_TOO_LONG (and are not kept). */
  limit(maxBytes: number): void {
    this.#splitter.maxBytes = maxBytes;
  }

  stop(): void {
    this.#stopped = true;
    this.#notify();
  }

  async next(): Promise<LineItem | null | typeof STOP> {
    for (;;) {
      if (this.#stopped) return STOP;
      const item = this.#items.shift();
      if (item !== undefined) {
        if (typeof item === 'string') this.#bytes -= item.length;
        if (!this.#full() && !this.#ended) this.#input.resume();
        return item;
      }
      if (this.#ended) return null;
      await this.#sleep();
    }
  }

  /**
   * Waits while `output` has more buffered than its high-water mark (the client does not read
   * our answers), unless the input ends or a stop comes meanwhile.
   */
  async whileFull(output: NodeJS.WritableStream): Promise<void> {
    const writable = output as NodeJS.WritableStream & { writableNeedDrain?: boolean; destroyed?: boolean };
    while (writable.writableNeedDrain === true && writable.destroyed !== true && !this.#stopped && !this.#ended) {
      const wake = () => this.#notify();
      output.once('drain', wake);
      output.once('close', wake);
      try {
        await this.#sleep();
      } finally {
        output.off('drain', wake);
        output.off('close', wake);
      }
    }
  }

  close(): void {
    this.#input.off('data', this.#onData);
    this.#input.off('end', this.#onEnd);
    this.#input.off('close', this.#onEnd);
    // The error listener stays: a late error on a stream nobody listens to would crash us.
    this.#input.pause();
    this.#notify();
  }

  #full(): boolean {
    return this.#items.length >= MAX_QUEUED_LINES || this.#bytes >= MAX_QUEUED_BYTES;
  }

  #sleep(): Promise<void> {
    return new Promise<void>((resolve) => {
      this.#wake = resolve;
    });
  }

  #notify(): void {
    const wake = this.#wake;
    this.#wake = null;
    wake?.();
  }
}
