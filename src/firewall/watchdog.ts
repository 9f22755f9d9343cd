/**
 * The helper's watchdog: a second root process that outlives the helper and removes the
 * instance's rules when the helper dies without doing so itself (SIGKILL, the OOM killer, an
 * abort, a bug). The helper's own cleanup runs on stdin EOF and on signals, but nothing runs in a
 * process that is killed outright; iptables rules have no owner the kernel could drop with it.
 *
 * How it works: the helper, once its setup is valid and before it takes its port lock or installs anything, starts
 * `node <the helper's script> --watchdog` in a session of its own (no terminal signal and no
 * kill of the helper's process group reaches it) with a pipe as its stdin, and writes it one line
 * of orders (WatchdogOrders: the port and method, whether -H and --dns were on, the kill switch's
 * setup); a later line of orders replaces them (a RULES line changed the subnets the kill switch
 * blocks). When the helper has removed everything, it writes `DONE` and closes the pipe; the
 * watchdog exits 0 and does nothing. When the pipe closes without `DONE` (the kernel closes it
 * whatever killed the helper), the watchdog takes the port lock and removes the chain
 * `rxshuttle-P` (both families), the nft table of that name, or the tproxy method's mangle
 * chains and policy routing (methods.ts), the hosts block and the lock file, as a new helper for
 * that port would. If another helper already holds the lock,
 * that one has cleaned the leftovers on its start and the watchdog leaves its live rules alone.
 *
 * The watchdog keeps one bounded line of orders and otherwise only waits: whatever the helper was
 * fed, the watchdog's memory stays that of an idle node process.
 */
import { type ChildProcessByStdio, spawn } from 'node:child_process';
import type { Writable } from 'node:stream';
import createDebug from 'debug';
import { hostsBlockName, removeBlockWithRetries } from './hosts-file.js';
import type { RunCommand } from './iptables.js';
import { installKillSwitch } from './kill-switch.js';
import { LINE_TOO_LONG, LineSplitter } from './lines.js';
import { removeInstanceRules } from './methods.js';
import { lockPort, PortInUseError } from './port-lock.js';
import { MAX_LINE_BYTES, oneLine } from './protocol.js';
import { flushResolvedCache } from './resolved.js';
import type { FirewallMethod, FirewallSetup } from './types.js';
import { MAX_EXTRA_RULES, MAX_RULES, MAX_RULES_LINE_BYTES, parseSetupLine } from './validate.js';

const log = createDebug('rxshuttle:fw');

/** The argument that makes the helper's program a watchdog. */
export const WATCHDOG_FLAG = '--watchdog';
/** What the helper writes when it has removed everything itself. */
export const DONE_LINE = 'DONE';
/** An orders line: the kill switch's setup is as long as a setup line with a RULES line's rules added. */
const MAX_ORDERS_BYTES = MAX_LINE_BYTES + MAX_RULES_LINE_BYTES + 4096;

/** What the watchdog removes if the helper dies: everything of the instance on `port`. */
export interface WatchdogOrders {
  port: number;
  /** The helper's capture method: its tables must be cleaned (the other method's are tried too). */
  method: FirewallMethod;
  /** -H: the hosts file holding the instance's block; null without -H. */
  hostsPath: string | null;
  /** --dns: flush systemd-resolved's cache after removal. */
  dns: boolean;
  /** Where the port lock lives (default LOCK_DIRS); null: no lock (tests with a fake table). */
  lockDirs: readonly string[] | null;
  /** --kill-switch: the setup whose subnets to block (and the restricted mode's user), or null. */
  killSwitch: { setup: FirewallSetup; ownerUid?: number } | null;
}

/** The helper's side: tell the watchdog that it may go. */
export interface Watchdog {
  /** Everything is removed: the watchdog exits without touching anything. */
  release(): void;
  /** The kill switch's setup changed (a RULES line): orders again, which replace the earlier ones. */
  updateKillSwitch(killSwitch: WatchdogOrders['killSwitch']): void;
}

/** Starts a watchdog with these orders; throws when it cannot be started. */
export type StartWatchdog = (orders: WatchdogOrders) => Promise<Watchdog>;

/**
 * Starts `argv` (this node and the helper's script, plus WATCHDOG_FLAG) as the watchdog, in a
 * session of its own, and hands it the orders. Resolves once it runs.
 */
export function spawnWatchdog(argv: readonly string[]): StartWatchdog {
  return (orders) =>
    new Promise((resolve, reject) => {
      const [file, ...args] = argv as [string, ...string[]];
      // stderr: the helper's (the client's pipe or terminal), to say what it cleaned up.
      const child = spawn(file, [...args, WATCHDOG_FLAG], { detached: true, stdio: ['pipe', 'ignore', 'inherit'], cwd: '/' }) as ChildProcessByStdio<Writable, null, null>;
      child.stdin.on('error', (e) => log('watchdog stdin: %s', e.message));
      child.once('error', (e) => reject(new Error(`cannot start the firewall watchdog: ${e.message}`)));
      child.once('spawn', () => {
        log('watchdog started: pid %d', child.pid);
        child.stdin.write(`${JSON.stringify(orders)}\n`);
        // The helper must be free to exit: the watchdog is not ours to wait for.
        child.unref();
        resolve({
          release() {
            if (!child.stdin.destroyed) child.stdin.end(`${DONE_LINE}\n`);
          },
          updateKillSwitch(killSwitch) {
            if (!child.stdin.destroyed && !child.stdin.writableEnded) child.stdin.write(`${JSON.stringify({ ...orders, killSwitch })}\n`);
          },
        });
      });
    });
}

/** Checks the orders line strictly: they come from our own helper, but a watchdog runs as root. */
export function parseOrders(line: string): WatchdogOrders {
  const o = JSON.parse(line) as Record<string, unknown>;
  const keys = Object.keys(o).sort().join(',');
  if (keys !== 'dns,hostsPath,killSwitch,lockDirs,method,port') throw new Error('malformed watchdog orders');
  const { port, method, hostsPath, dns, lockDirs, killSwitch } = o;
  if (method !== 'nat' && method !== 'nft' && method !== 'tproxy') throw new Error('malformed watchdog orders: method');
  const isPath = (p: unknown) => typeof p === 'string' && p.startsWith('/') && !p.includes('\0') && p.length < 4096;
  if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) throw new Error('malformed watchdog orders: port');
  if (hostsPath !== null && !isPath(hostsPath)) throw new Error('malformed watchdog orders: hostsPath');
  if (typeof dns !== 'boolean') throw new Error('malformed watchdog orders: dns');
  if (lockDirs !== null && !(Array.isArray(lockDirs) && lockDirs.length <= 4 && lockDirs.every(isPath))) {
    throw new Error('malformed watchdog orders: lockDirs');
  }
  return { port, method, hostsPath: hostsPath as string | null, dns, lockDirs: lockDirs as string[] | null, killSwitch: parseKillSwitch(killSwitch, port) };
}

function parseKillSwitch(value: unknown, port: number): WatchdogOrders['killSwitch'] {
  if (value === null) return null;
  const o = value as Record<string, unknown>;
  if (typeof o !== 'object' || Array.isArray(o) || !Object.keys(o).every((k) => k === 'setup' || k === 'ownerUid')) {
    throw new Error('malformed watchdog orders: killSwitch');
  }
  // The same strict check as the helper's own input; after a RULES line the kill switch blocks its rules too.
  const setup = parseSetupLine(JSON.stringify(o.setup), MAX_RULES + MAX_EXTRA_RULES);
  if (setup.port !== port) throw new Error('malformed watchdog orders: killSwitch port');
  const uid = o.ownerUid;
  if (uid !== undefined && !(typeof uid === 'number' && Number.isInteger(uid) && uid > 0 && uid < 2 ** 32 - 1)) {
    throw new Error('malformed watchdog orders: ownerUid');
  }
  return { setup, ...(uid === undefined ? {} : { ownerUid: uid as number }) };
}

export interface WatchdogOptions {
  run: RunCommand;
  /** Where it says what it did (default: stderr). */
  say?: (message: string) => void;
  resolvedRunning?: () => boolean;
}

/**
 * The watchdog's body: reads its orders, waits for the end of its input, and cleans up unless
 * the helper said DONE. Returns the exit status (0: nothing to do or all removed).
 */
export async function runWatchdog(input: NodeJS.ReadableStream, opts: WatchdogOptions): Promise<number> {
  const say = opts.say ?? ((m: string) => process.stderr.write(`rxshuttle --firewall: ${m}\n`));
  const { orders, done } = await readUntilEnd(input);
  if (orders === null) {
    log('watchdog: no orders');
    return 0;
  }
  if (done) {
    log('watchdog: the helper removed everything of port %d', orders.port);
    return 0;
  }
  return cleanUp(orders, opts, say);
}

/** The orders (first line) and whether DONE followed, once the input has ended. */
function readUntilEnd(input: NodeJS.ReadableStream): Promise<{ orders: WatchdogOrders | null; done: boolean }> {
  return new Promise((resolve) => {
    const splitter = new LineSplitter(MAX_ORDERS_BYTES);
    let orders: WatchdogOrders | null = null;
    let done = false;
    const finish = () => {
      input.off('data', onData);
      resolve({ orders, done });
    };
    const onData = (chunk: Buffer | string) => {
      for (const item of splitter.push(typeof chunk === 'string' ? Buffer.from(chunk) : chunk)) {
        if (item === DONE_LINE) {
          done = true;
        } else if (item !== LINE_TOO_LONG) {
          // Later orders replace earlier ones; orders that do not parse leave the earlier in force.
          try {
            const next = parseOrders(item);
            if (orders === null || next.port === orders.port) orders = next;
          } catch (e) {
            log('watchdog: %s', (e as Error).message);
          }
        }
      }
    };
    input.on('data', onData);
    input.once('end', finish);
    input.once('close', finish);
    input.once('error', finish);
  });
}

async function cleanUp(orders: WatchdogOrders, opts: WatchdogOptions, say: (m: string) => void): Promise<number> {
  const { port } = orders;
  let lock: Awaited<ReturnType<typeof lockPort>> = null;
  if (orders.lockDirs !== null) {
    try {
      lock = await lockPort(port, orders.lockDirs);
    } catch (e) {
      if (e instanceof PortInUseError) {
        // A new helper for the port has started: it removed the leftovers before installing its own.
        log('watchdog: port %d is held by a new helper', port);
        return 0;
      }
      say(`the helper of port ${port} died; its watchdog cannot take the port's lock: ${oneLine((e as Error).message)}`);
      // Removing without the lock could take a new helper's live rules: better leave them.
      return 1;
    }
  }
  const problems: string[] = [];
  let removed = false;
  try {
    // Blocked before the redirect goes (kill-switch.ts).
    if (orders.killSwitch) {
      await installKillSwitch(orders.killSwitch.setup, opts.run, orders.killSwitch.ownerUid).catch((e: Error) => problems.push(`kill switch: ${e.message}`));
    }
    removed = await removeInstanceRules(orders.method, opts.run, port).catch((e: Error) => {
      problems.push(e.message);
      return false;
    });
    if (orders.hostsPath !== null) {
      await removeBlockWithRetries(orders.hostsPath, hostsBlockName(port), { lockDirs: orders.lockDirs }).catch((e: Error) => problems.push(e.message));
    }
    if (orders.dns && removed) await flushResolvedCache(opts.run, opts.resolvedRunning);
  } finally {
    lock?.release();
  }
  if (problems.length > 0) {
    say(`the helper of port ${port} ended without removing its rules, and its watchdog could not remove them all: ${oneLine(problems.join('; '))}`);
    return 1;
  }
  // Quiet when there was nothing: a helper that was refused its setup ends this way too.
  if (removed) say(`the helper of port ${port} ended without removing its rules; its watchdog removed them`);
  return 0;
}
