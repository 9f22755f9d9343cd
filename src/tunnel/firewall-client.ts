/**
 * The client side of the firewall helper: an Observable whose subscription is the life of the
 * rules. Subscribing starts the helper and sends the setup; 'ready' means the rules are in
 * place; unsubscribing closes the helper's stdin, which makes it remove them and exit.
 * The helper is never killed: it must be allowed to finish its cleanup.
 */
import { type ChildProcessByStdio, spawn, spawnSync } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';
import createDebug from 'debug';
import { Observable } from 'rxjs';
import { FirewallError } from '../firewall/errors.js';
import { LINE_TOO_LONG, type LineItem, LineSplitter } from '../firewall/lines.js';
import { findPrograms } from '../firewall/programs.js';
import {
  ERROR_PREFIX,
  HELLO_LINE,
  HELPER_NODE_OPTIONS,
  helperScriptPath,
  MAX_LINE_BYTES,
  OK_LINE,
  oneLine,
  QUIT_LINE,
  READY_LINE,
  rulesLine,
  setupLine,
} from '../firewall/protocol.js';
import { RESTRICTED_FLAG } from '../firewall/restricted.js';
import type { FirewallMethod, FirewallSetup, HostsEntry, SubnetRule } from '../firewall/types.js';
import { MAX_RULES, MAX_SUBNETS } from '../firewall/validate.js';

const log = createDebug('rxshuttle:fw');

export interface FirewallClientOptions {
  /** Program and arguments that start the helper, e.g. from `helperCommand()`. */
  helperArgv: readonly string[];
  /**
   * Receives the helper's (and sudo's) stderr line by line. Without it, stderr is inherited: then
   * the helper can still tell the terminal what became of the rules after the client died.
   */
  stderr?: (line: string) => void;
  /** -H: entries for the instance's /etc/hosts block, sent as HOST lines once the rules are ready. */
  hosts$?: Observable<HostsEntry>;
  /**
   * Rules beyond the setup's (host names the remote resolved), as a whole each time: sent as a
   * RULES line after READY and again whenever a new list comes. A list there before READY (give
   * a BehaviorSubject or ReplaySubject) is in place before 'ready' is emitted.
   */
  extraRules$?: Observable<readonly SubnetRule[]>;
}

/** 'ready' once the rules are in place; a warning when the helper refuses a later command (a HOST line). */
export type FirewallEvent = 'ready' | { readonly kind: 'warning'; readonly message: string };

/** Hosts entries waiting for the helper (before READY, or while its stdin is full), at most. */
export const MAX_WAITING_HOSTS = 10_000;

/** Why a setup with `count` rules cannot go to the helper. */
export const tooManyRules = (count: number): string =>
  `too many firewall rules: ${count}, at most ${MAX_RULES} (${MAX_SUBNETS} subnets given, plus the ssh server's addresses and -N's routes)`;

/** How many of the helper's last stderr lines are kept to explain a failure. */
const STDERR_TAIL = 5;

export interface HostsSender {
  /** Queues an entry for the helper; false when it was dropped because `max` entries already wait. */
  add(entry: HostsEntry): boolean;
  /** The helper is ready: write what waits, and from then on as fast as its stdin takes it. */
  start(): void;
  /** Entries not yet handed to the stdin. */
  readonly waiting: number;
}

/**
 * HOST lines to the helper's stdin with backpressure: a line is written only while write() says
 * the stream takes more, the rest waits for 'drain'. What waits is one entry per name (a later
 * address replaces a waiting one: only the last counts in the hosts file), at most `max` names;
 * beyond that a new name is dropped. So a server that floods HOST frames, new names or one name
 * flipping between addresses, holds at most `max` entries and the stream's high-water mark here.
 */
export function hostsSender(stdin: Writable, max = MAX_WAITING_HOSTS, onSent: () => void = () => undefined): HostsSender {
  const waiting = new Map<string, string>();
  let started = false;
  let full = false;
  const onDrain = () => {
    full = false;
    send();
  };
  const send = () => {
    if (!started || full) return;
    for (const [name, address] of waiting) {
      waiting.delete(name);
      if (stdin.destroyed || stdin.writableEnded) return waiting.clear();
      onSent();
      if (!stdin.write(`HOST ${address} ${name}\n`)) {
        full = true;
        stdin.once('drain', onDrain);
        return;
      }
    }
  };
  return {
    add({ address, name }) {
      if (!waiting.has(name) && waiting.size >= max) return false;
      waiting.set(name, address);
      send();
      return true;
    },
    start() {
      started = true;
      send();
    },
    get waiting() {
      return waiting.size;
    },
  };
}

/**
 * The method `--method auto` means here: nat where iptables is installed (the helper's own search:
 * the system's program directories), else nft where that is, else nat (whose error then says to
 * install iptables).
 */
export function chooseMethod(method: FirewallMethod | 'auto', found: (name: string) => boolean = isInstalled): FirewallMethod {
  if (method !== 'auto') return method;
  if (found('iptables-restore')) return 'nat';
  return found('nft') ? 'nft' : 'nat';
}

const isInstalled = (name: string): boolean => findPrograms([name]).has(name);

/** Whether sudo would run `argv` as root without asking for a password (`sudo -n -l argv`). */
export function sudoAllowsWithoutPassword(argv: readonly string[]): boolean {
  const result = spawnSync('sudo', ['-n', '-l', ...argv], { stdio: 'ignore', timeout: 10_000 });
  return result.status === 0;
}

/**
 * argv that starts the firewall helper (dist/firewall-helper.cjs next to `cliPath`) with this
 * node: as is when we are root; otherwise through sudo, choosing what this user may run:
 * - the unrestricted helper when sudo allows it without a password (an administrator with
 *   NOPASSWD, or whose sudo credentials are cached): whole-machine capture;
 * - else the restricted helper when sudo allows that (the rule of `rxshuttle --sudoers`): only
 *   this user's own traffic (restricted.ts);
 * - else the unrestricted helper through a sudo that may ask for a password on the terminal.
 */
export function helperCommand(cliPath: string, sudoAllows: (argv: readonly string[]) => boolean = sudoAllowsWithoutPassword): string[] {
  const argv = [process.execPath, ...HELPER_NODE_OPTIONS, helperScriptPath(cliPath)];
  if (process.getuid?.() === 0) return argv;
  if (sudoAllows(argv)) return ['sudo', '-n', ...argv];
  const restricted = [...argv, RESTRICTED_FLAG];
  if (sudoAllows(restricted)) return ['sudo', '-n', ...restricted];
  return ['sudo', ...argv];
}

/**
 * Emits 'ready' once the rules are installed, then stays open (never completes) while they
 * are in place. Errors with a FirewallError when the helper reports ERROR, cannot be started,
 * speaks an unknown protocol, or exits on its own.
 */
/** Without hosts$ or extraRules$ nothing is sent after the setup, so nothing but 'ready' can come back. */
export function firewall$(setup: FirewallSetup, opts: FirewallClientOptions & { hosts$?: undefined; extraRules$?: undefined }): Observable<'ready'>;
export function firewall$(setup: FirewallSetup, opts: FirewallClientOptions): Observable<FirewallEvent>;
export function firewall$(setup: FirewallSetup, opts: FirewallClientOptions): Observable<FirewallEvent> {
  return new Observable<FirewallEvent>((subscriber) => {
    const [file, ...args] = opts.helperArgv;
    if (file === undefined) {
      subscriber.error(new FirewallError('firewall helper command is empty'));
      return;
    }
    // The helper would refuse it (validate.ts) after sudo and its start: say so at once, in numbers.
    if (setup.rules.length > MAX_RULES) {
      subscriber.error(new FirewallError(tooManyRules(setup.rules.length)));
      return;
    }
    const fail = (message: string) => {
      if (!subscriber.closed) subscriber.error(new FirewallError(message));
    };

    log('starting firewall helper: %o', opts.helperArgv);
    // sudo asks for a password on the terminal (/dev/tty), whatever stderr is.
    const child = spawn(file, args, { stdio: ['pipe', 'pipe', opts.stderr ? 'pipe' : 'inherit'] }) as ChildProcessByStdio<
      Writable,
      Readable,
      Readable | null
    >;
    let state: 'hello' | 'setup' | 'ready' = 'hello';
    const viaSudo = /(^|\/)sudo$/.test(file);
    const tail: string[] = [];
    if (child.stderr) {
      const onStderr = opts.stderr;
      const stderrLines = new LineSplitter(MAX_LINE_BYTES);
      child.stderr.on('error', (e) => log('helper stderr: %s', e.message));
      child.stderr.on('data', (chunk: Buffer) => {
        for (const item of stderrLines.push(chunk)) {
          if (item === LINE_TOO_LONG) continue;
          const line = oneLine(item);
          if (line === '') continue;
          tail.push(line);
          if (tail.length > STDERR_TAIL) tail.shift();
          onStderr?.(line);
        }
      });
    }

    // Permanent handlers: a late EPIPE or read error after unsubscribe must not crash us.
    child.stdin.on('error', (e) => log('helper stdin: %s', e.message));
    child.stdout.on('error', (e) => log('helper stdout: %s', e.message));
    child.on('error', (e) => {
      if (viaSudo && (e as NodeJS.ErrnoException).code === 'ENOENT') {
        return fail('sudo not found: the firewall rules need root; run rxshuttle as root, or install sudo');
      }
      fail(`cannot start the firewall helper (${file}): ${e.message}`);
    });

    /** What each answer still to come (OK or ERROR, in order) answers: a HOST or a RULES line. */
    const answering: Array<'host' | 'rules'> = [];
    let latestRules: readonly SubnetRule[] | undefined;
    let rulesSent: readonly SubnetRule[] | undefined;
    let rulesInFlight = false;
    /** A RULES line sent right after READY: 'ready' waits for its answer. */
    let firstRules = false;
    const sendRules = () => {
      if (rulesInFlight || latestRules === undefined || latestRules === rulesSent || child.stdin.destroyed || child.stdin.writableEnded) return;
      rulesSent = latestRules;
      rulesInFlight = true;
      answering.push('rules');
      log('→ RULES (%d)', latestRules.length);
      child.stdin.write(rulesLine(latestRules));
    };
    const becomeReady = () => {
      state = 'ready';
      subscriber.next('ready');
      hosts.start();
    };

    const onAnswer = (error: string | null) => {
      const what = answering.shift();
      if (what === 'rules') {
        rulesInFlight = false;
        if (firstRules) {
          firstRules = false;
          if (error !== null) return fail(error);
          becomeReady();
        } else if (error !== null) {
          subscriber.next({ kind: 'warning', message: `firewall helper: ${error}` });
        }
        return sendRules();
      }
      // A HOST line: OK once it is in the hosts file; a refusal is a warning, the rules stay.
      if (error !== null) subscriber.next({ kind: 'warning', message: `firewall helper: ${error}` });
    };

    const onLine = (item: LineItem) => {
      if (item === LINE_TOO_LONG) return fail('firewall helper sent an overlong line');
      log('← %s', item);
      if (item.startsWith(ERROR_PREFIX)) {
        // After READY, an ERROR answers one command (a HOST or RULES line): the rules stay.
        if (state === 'ready') return onAnswer(oneLine(item.slice(ERROR_PREFIX.length)));
        return fail(item.slice(ERROR_PREFIX.length));
      }
      if (state === 'hello') {
        if (item !== HELLO_LINE) return fail(`unexpected greeting from the firewall helper: ${oneLine(item, 100)}`);
        state = 'setup';
        child.stdin.write(setupLine(setup));
      } else if (state === 'setup') {
        if (item !== READY_LINE) return fail(`unexpected reply from the firewall helper: ${oneLine(item, 100)}`);
        if (latestRules === undefined) return becomeReady();
        // Answers to come are read as in the ready state; 'ready' goes out with the RULES line's OK.
        state = 'ready';
        firstRules = true;
        sendRules();
      } else if (item === OK_LINE) {
        onAnswer(null);
      } else {
        log('ignoring unexpected line from the firewall helper');
      }
    };
    const hosts = hostsSender(child.stdin, MAX_WAITING_HOSTS, () => answering.push('host'));
    let dropping = false;
    const hostsSubscription = opts.hosts$?.subscribe({
      next: (entry) => {
        if (hosts.add(entry) || dropping || subscriber.closed) return;
        dropping = true;
        subscriber.next({
          kind: 'warning',
          message: `-H: ${MAX_WAITING_HOSTS} hosts entries are waiting for the firewall helper; new names are dropped`,
        });
      },
      error: (e: unknown) => log('hosts entries: %s', e instanceof Error ? e.message : String(e)),
    });
    const rulesSubscription = opts.extraRules$?.subscribe({
      next: (rules) => {
        latestRules = rules;
        if (state === 'ready' && !firstRules) sendRules();
      },
      error: (e: unknown) => log('extra rules: %s', e instanceof Error ? e.message : String(e)),
    });
    const splitter = new LineSplitter(MAX_LINE_BYTES);
    // Keeps reading after unsubscribe too, so the helper never blocks on a full pipe.
    child.stdout.on('data', (chunk: Buffer) => {
      for (const item of splitter.push(chunk)) {
        if (subscriber.closed) return;
        onLine(item);
      }
    });

    // 'close' comes after stdout has ended, so an ERROR line is seen before the exit.
    child.on('close', (code, signal) => {
      log('firewall helper exited: code %s signal %s', code, signal);
      const how = signal ? `was killed by ${signal}` : `exited with code ${code}`;
      if (viaSudo && state === 'hello') {
        // sudo refused (no password on a terminal, not allowed) or could not run the helper.
        const said = tail.filter((l) => !/unable to resolve host/.test(l)).at(-1);
        return fail(
          `sudo did not start the firewall helper (${signal ?? `exit status ${code}`})${said ? `: ${said}` : ''}; ` +
            'the firewall rules need root: run rxshuttle as root, or let this user start the helper without a password: rxshuttle --sudoers',
        );
      }
      fail(
        state === 'ready'
          ? `firewall helper ${how} while the rules were in place`
          : `firewall helper ${how} before the rules were installed`,
      );
    });

    return () => {
      // EOF on its stdin is the helper's signal to remove the rules and exit.
      log('closing firewall helper stdin');
      hostsSubscription?.unsubscribe();
      rulesSubscription?.unsubscribe();
      if (child.stdin.destroyed) return;
      // QUIT tells the helper this is an orderly end; a pipe that just closes means we died.
      if (state !== 'hello') child.stdin.write(`${QUIT_LINE}\n`);
      child.stdin.end();
    };
  });
}
