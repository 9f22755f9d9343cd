/**
 * The firewall helper: the body of `rxshuttle --firewall`, the only part that runs as root.
 *
 * Protocol (version 1; lines end with '\n'; docs/firewall-helper.md has the full text):
 *
 *   helper → client  HELLO rxshuttle-fw 1
 *   client → helper  one line of JSON: a FirewallSetup (at most 2 MiB)
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
import type { RunCommand } from './iptables.js';
import { LINE_TOO_LONG, type LineItem, LineSplitter } from './lines.js';
import { type InstalledNat, installNat } from './nat.js';
import { LOCK_DIRS, type PortLock, lockPort } from './port-lock.js';
import { HELPER_PROGRAMS, findPrograms, programRunner } from './programs.js';
import { ERROR_PREFIX, HELLO_LINE, MAX_LINE_BYTES, OK_LINE, QUIT_LINE, READY_LINE, oneLine } from './protocol.js';
import { TunneledSubnets } from './host-address.js';
import { HostsBlock, MAX_BLOCK_BYTES, MAX_HOSTS } from './hosts-file.js';
import { flushResolvedCache } from './resolved.js';
import type { FirewallSetup } from './types.js';
import { parseHostLine, parseSetupLine } from './validate.js';

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
}

const STOP = Symbol('stop');
/** The answer to a HOST line beyond the instance's share of the hosts file (the same words every time: the client says it once). */
const HOSTS_CAP = `too many hosts entries (at most ${MAX_HOSTS} names and ${MAX_BLOCK_BYTES / (1024 * 1024)} MiB per instance)`;
const STOP_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
/** Lines read ahead before the input is paused, so a flooding client cannot grow our memory. */
const MAX_QUEUED_LINES = 64;

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
  const stop = stopTrigger(opts);
  const lockDirs = opts.lockDir !== undefined ? [opts.lockDir] : opts.run === undefined ? LOCK_DIRS : null;
  let portLock: PortLock | null = null;
  try {
    send(HELLO_LINE);
    const first = await Promise.race([lines.next(), stop.promise]);
    if (first === STOP) return 0;
    if (first === null) {
      log('input ended before a setup arrived');
      return 1;
    }
    if (first === LINE_TOO_LONG) {
      send(`${ERROR_PREFIX}setup line longer than ${MAX_LINE_BYTES} bytes`);
      return 1;
    }
    let installed: InstalledNat;
    let port = 0;
    let hosts: HostsBlock | null = null;
    // -H: the subnets of this setup, the only addresses a HOST line may give a name (host-address.ts).
    let tunneled = new TunneledSubnets([]);
    let dns = false;
    try {
      const setup: FirewallSetup = parseSetupLine(first);
      port = setup.port;
      log('setup: port %d, %d rules, router mode %s', setup.port, setup.rules.length, setup.routerMode);
      // Before any cleanup of "leftovers": they may be the live rules of another helper.
      if (lockDirs) portLock = await lockPort(setup.port, lockDirs);
      installed = await installNat(setup, run);
      dns = setup.dnsPort !== undefined;
      if (setup.hosts) {
        tunneled = new TunneledSubnets(setup.rules);
        hosts = await HostsBlock.open(setup.port, opts.hostsPath, { lockDirs }).catch(async (e: unknown) => {
          await installed.remove().catch((u: Error) => log('undo failed: %s', u.message));
          throw new Error(`cannot edit the hosts file: ${(e as Error).message}`);
        });
      }
    } catch (e) {
      send(ERROR_PREFIX + oneLine((e as Error).message));
      return 1;
    }
    if (dns) await flushResolvedCache(run, opts.resolvedRunning);
    send(READY_LINE);

    let gone = false;
    for (;;) {
      const item = await Promise.race([lines.next(), stop.promise]);
      if (item === null || item === STOP) {
        // The pipe closed without QUIT: the client died (crash, kill -9). Say what became of its rules.
        if (item === null) gone = true;
        break;
      }
      if (item === QUIT_LINE) break;
      if (hosts && typeof item === 'string' && item.startsWith('HOST ')) {
        await hostLine(hosts, tunneled, item, lines.queued > 0, send);
        continue;
      }
      send(`${ERROR_PREFIX}${item === LINE_TOO_LONG ? 'line too long' : 'unknown command'} (rules stay in place)`);
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
      return hostsLeft ? 1 : 0;
    } catch (e) {
      warn(`failed to remove firewall rules: ${oneLine((e as Error).message)}`);
      return 1;
    }
  } finally {
    // After the rules are gone: a new helper for this port may clean up from here on.
    portLock?.release();
    stop.dispose();
    lines.close();
  }
}

/**
 * -H: one `HOST <address> <name>` line. Refused lines (validate.ts: among them every address the
 * setup's subnets do not tunnel, host-address.ts) are answered with ERROR at once; accepted
 * ones when the file is written, which happens once no further line is waiting, so a burst of
 * names costs one rewrite.
 */
async function hostLine(
  hosts: HostsBlock,
  tunneled: TunneledSubnets,
  line: string,
  moreWaiting: boolean,
  send: (line: string) => void,
): Promise<void> {
  try {
    if (!hosts.add(parseHostLine(line, tunneled))) send(`${ERROR_PREFIX}${HOSTS_CAP}`);
  } catch (e) {
    send(ERROR_PREFIX + oneLine((e as Error).message));
  }
  if (moreWaiting || hosts.waiting === 0) return;
  const count = hosts.waiting;
  let reply = OK_LINE;
  await hosts.write().catch((e: Error) => {
    reply = `${ERROR_PREFIX}cannot write the hosts file: ${oneLine(e.message)}`;
  });
  for (let i = 0; i < count; i++) send(reply);
}

/** A promise that settles with STOP on a signal or `opts.stop`; `dispose` removes the handlers. */
function stopTrigger(opts: FirewallHelperOptions): { promise: Promise<typeof STOP>; dispose(): void } {
  let fire!: () => void;
  const promise = new Promise<typeof STOP>((resolve) => {
    fire = () => resolve(STOP);
  });
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
    promise,
    dispose() {
      for (const s of STOP_SIGNALS) process.off(s, onSignal);
      opts.stop?.removeEventListener('abort', onAbort);
    },
  };
}

/** The input as a pull-style queue of lines; `next()` gives null once the input has ended. */
class LineQueue {
  readonly #input: NodeJS.ReadableStream;
  readonly #splitter = new LineSplitter(MAX_LINE_BYTES);
  readonly #items: LineItem[] = [];
  #ended = false;
  #wake: (() => void) | null = null;

  readonly #onData = (chunk: Buffer | string) => {
    for (const item of this.#splitter.push(typeof chunk === 'string' ? Buffer.from(chunk) : chunk)) {
      this.#items.push(item);
    }
    if (this.#items.length >= MAX_QUEUED_LINES) this.#input.pause();
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

  async next(): Promise<LineItem | null> {
    for (;;) {
      const item = this.#items.shift();
      if (item !== undefined) {
        if (this.#items.length < MAX_QUEUED_LINES && !this.#ended) this.#input.resume();
        return item;
      }
      if (this.#ended) return null;
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
      });
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

  #notify(): void {
    const wake = this.#wake;
    this.#wake = null;
    wake?.();
  }
}
