/**
 * The client side of the firewall helper: an Observable whose subscription is the life of the
 * rules. Subscribing starts the helper and sends the setup; 'ready' means the rules are in
 * place; unsubscribing closes the helper's stdin, which makes it remove them and exit.
 * The helper is never killed: it must be allowed to finish its cleanup.
 */
import { spawn } from 'node:child_process';
import createDebug from 'debug';
import { Observable } from 'rxjs';
import { FirewallError } from './errors.js';
import { LINE_TOO_LONG, type LineItem, LineSplitter } from './lines.js';
import { ERROR_PREFIX, HELLO_LINE, MAX_LINE_BYTES, READY_LINE, oneLine } from './protocol.js';
import type { FirewallSetup } from './types.js';

const log = createDebug('rxshuttle:fw');

export interface FirewallClientOptions {
  /** Program and arguments that start the helper, e.g. from `helperCommand()`. */
  helperArgv: readonly string[];
}

/**
 * argv that starts `rxshuttle --firewall` with this Node and CLI script: as is when we are
 * root, through `sudo` otherwise (which may ask for a password on the terminal).
 */
export function helperCommand(cliPath: string): string[] {
  const argv = [process.execPath, cliPath, '--firewall'];
  return process.getuid?.() === 0 ? argv : ['sudo', ...argv];
}

/**
 * Emits 'ready' once the rules are installed, then stays open (never completes) while they
 * are in place. Errors with a FirewallError when the helper reports ERROR, cannot be started,
 * speaks an unknown protocol, or exits on its own.
 */
export function firewall$(setup: FirewallSetup, opts: FirewallClientOptions): Observable<'ready'> {
  return new Observable<'ready'>((subscriber) => {
    const [file, ...args] = opts.helperArgv;
    if (file === undefined) {
      subscriber.error(new FirewallError('firewall helper command is empty'));
      return;
    }
    const fail = (message: string) => {
      if (!subscriber.closed) subscriber.error(new FirewallError(message));
    };

    log('starting firewall helper: %o', opts.helperArgv);
    // stderr is inherited: sudo's password prompt and the helper's warnings reach the user.
    const child = spawn(file, args, { stdio: ['pipe', 'pipe', 'inherit'] });
    let state: 'hello' | 'setup' | 'ready' = 'hello';

    // Permanent handlers: a late EPIPE or read error after unsubscribe must not crash us.
    child.stdin.on('error', (e) => log('helper stdin: %s', e.message));
    child.stdout.on('error', (e) => log('helper stdout: %s', e.message));
    child.on('error', (e) => fail(`cannot start the firewall helper (${file}): ${e.message}`));

    const onLine = (item: LineItem) => {
      if (item === LINE_TOO_LONG) return fail('firewall helper sent an overlong line');
      log('← %s', item);
      if (item.startsWith(ERROR_PREFIX)) return fail(item.slice(ERROR_PREFIX.length));
      if (state === 'hello') {
        if (item !== HELLO_LINE) return fail(`unexpected greeting from the firewall helper: ${oneLine(item, 100)}`);
        state = 'setup';
        child.stdin.write(`${JSON.stringify(setup)}\n`);
      } else if (state === 'setup') {
        if (item !== READY_LINE) return fail(`unexpected reply from the firewall helper: ${oneLine(item, 100)}`);
        state = 'ready';
        subscriber.next('ready');
      } else {
        log('ignoring unexpected line from the firewall helper');
      }
    };
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
      fail(
        state === 'ready'
          ? `firewall helper ${how} while the rules were in place`
          : `firewall helper ${how} before the rules were installed`,
      );
    });

    return () => {
      // EOF on its stdin is the helper's signal to remove the rules and exit.
      log('closing firewall helper stdin');
      if (!child.stdin.destroyed) child.stdin.end();
    };
  });
}
