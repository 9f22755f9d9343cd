import { type ChildProcess, spawn } from 'node:child_process';
import createDebug from 'debug';
import { catchError, concat, EMPTY, from, map, mergeMap, Observable, race, Subject, throwError, timer } from 'rxjs';
import { TransportError } from '../shared/errors.js';
import { printable } from '../shared/printable.js';
import { fdSocket } from '../streams/fd-socket.js';
import { type FrameWriter, frameWriter } from '../streams/frame-writer.js';
import { fromReadable } from '../streams/from-readable.js';
import { serverUpload } from './bundle.js';
import { socketPair } from './socketpair.js';

const debug = createDebug('rxshuttle:transport');
const ignore = () => {};

/** The server process ended; carries what is needed to explain why. */
export class ServerExit extends TransportError {
  constructor(
    readonly exitCode: number | null,
    readonly signal: NodeJS.Signals | null,
    readonly stderrTail: readonly string[],
    /** Whose exit this is: a local process (ssh, the local server), or the remote server in ssh2's exec channel. */
    readonly remote = false,
  ) {
    super('RXS_ERR_TRANSPORT_CLOSED', `server process ended (${signal ? `signal ${signal}` : `exit code ${exitCode}`})`);
  }
}

export interface ServerProcess {
  /** Bytes the server wrote; errors with ServerExit once the process has ended. */
  readonly bytes$: Observable<Buffer>;
  readonly sendRaw: (bytes: Buffer) => void;
  readonly writer: FrameWriter;
  /** The server's (or ssh's) stderr, line by line. */
  readonly stderr$: Observable<string>;
  readonly pid: number | undefined;
}

export interface SpawnOptions {
  /** Run the child with this group id (local mode: its sockets bypass the firewall rule). */
  readonly gid?: number;
}

const STDERR_TAIL_LINES = 20;
/**
 * The longest stderr line kept whole (UTF-16 units): a longer one, or text that never ends its
 * line, goes out in pieces of this size as it arrives.
 */
const MAX_STDERR_LINE = 8 * 1024;

/**
 * A stderr stream as non-empty lines, keeping the last few to explain an exit with. `finish()`
 * adds an unterminated last line and returns that tail. The stream is the remote's (or ssh's, which
 * passes on banners and the remote's messages): every line comes out printable, its terminal
 * escapes and other control characters written out (printable.ts).
 */
export function stderrLines(stream: NodeJS.ReadableStream & { setEncoding(encoding: BufferEncoding): unknown }): {
  readonly lines$: Observable<string>;
  finish(): string[];
} {
  const tail: string[] = [];
  const lines = new Subject<string>();
  let partial = '';
  const add = (text: string) => {
    const line = printable(text);
    tail.push(line);
    if (tail.length > STDERR_TAIL_LINES) tail.shift();
    lines.next(line);
  };
  /**
   * `partial + text` is a line (`ended`) or the start of one: sends it in pieces of at most
   * MAX_STDERR_LINE and keeps less than that as `partial`, so the unfinished line stays bounded.
   */
  const take = (text: string, ended: boolean) => {
    const line = partial + text;
    partial = '';
    const limit = ended ? MAX_STDERR_LINE + 1 : MAX_STDERR_LINE;
    let at = 0;
    while (line.length - at >= limit) {
      let end = at + MAX_STDERR_LINE;
      const last = line.charCodeAt(end - 1);
      if (last >= 0xd800 && last <= 0xdbff) end--; // not between the halves of a surrogate pair
      add(line.slice(at, end));
      at = end;
    }
    const rest = at === 0 ? line : line.slice(at);
    if (!ended) partial = rest;
    else {
      const clean = rest.replace(/\r$/, '');
      if (clean !== '') add(clean);
    }
  };
  stream.setEncoding('utf8');
  // Only the new text is searched for newlines: a line that never ends costs no more than one that does.
  stream.on('data', (text: string) => {
    let start = 0;
    for (let nl = text.indexOf('\n'); nl >= 0; nl = text.indexOf('\n', start)) {
      take(text.slice(start, nl), true);
      start = nl + 1;
    }
    take(start === 0 ? text : text.slice(start), false);
  });
  return {
    lines$: lines.asObservable(),
    finish() {
      if (partial) add(partial.replace(/\r$/, ''));
      partial = '';
      return tail;
    },
  };
}
/** How long after the server's output ends its process may take to exit before we stop waiting. */
const OUTPUT_END_GRACE_MS = 1000;

/**
 * Starts the server command (ssh … node -e STUB, or a local node), uploads the bundle on its stdin
 * and hands out its stdio as streams. Unsubscribing closes its stdin, which ends the server (and
 * ssh) by itself; a child still alive after a grace period is killed.
 */
export function serverProcess$(argv: readonly string[], options: SpawnOptions = {}): Observable<ServerProcess> {
  return new Observable<ServerProcess>((subscriber) => {
    const [command, ...args] = argv;
    if (command === undefined) throw new TypeError('empty server command');
    debug('spawning %o', argv);
    // The child's stdin and its stdout are each one end of a socket pair with big buffers when we
    // can make them, plain pipes otherwise. Two pairs, not one: ssh closes its stdout when the
    // session ends even while, as a ControlMaster, it lives on for connections handed to it, and
    // with one pair its stdin would keep the socket open and hide that end from us.
    const inPair = socketPair();
    const outPair = inPair ? socketPair() : null;
    const pairs = inPair && outPair ? { stdin: inPair, stdout: outPair } : null;
    if (inPair && !outPair) inPair.closeBoth();
    let child: ChildProcess;
    try {
      child = spawn(command, args, {
        stdio: pairs ? [pairs.stdin.theirs, pairs.stdout.theirs, 'pipe'] : ['pipe', 'pipe', 'pipe'],
        ...(options.gid === undefined ? {} : { gid: options.gid }),
      });
    } catch (err) {
      subscriber.error(new TransportError('RXS_ERR_SSH', `cannot start ${command}: ${(err as Error).message}`));
      return;
    } finally {
      // Only the child may hold its end, or we would never see EOF when it dies.
      pairs?.stdin.closeTheirs();
      pairs?.stdout.closeTheirs();
    }
    const stderr = child.stderr as NonNullable<ChildProcess['stderr']>;
    stderr.on('error', ignore);
    let input: Parameters<typeof frameWriter>[0];
    let output$: Observable<Buffer>;
    if (pairs) {
      input = fdSocket(pairs.stdin.ours, { readable: false, writable: true }).socket;
      output$ = fdSocket(pairs.stdout.ours, { readable: true, writable: false }).bytes$;
    } else {
      const stdin = child.stdin as NonNullable<ChildProcess['stdin']>;
      stdin.on('error', ignore);
      input = stdin;
      output$ = fromReadable(child.stdout as NonNullable<ChildProcess['stdout']>);
    }

    const errors = stderrLines(stderr);

    let exited = false;
    let spawnError: Error | null = null;
    child.once('error', (err) => {
      spawnError = err;
    });
    const closed = new Promise<ServerExit | TransportError>((resolve) => {
      child.once('close', (code, signal) => {
        exited = true;
        debug('server process %d ended: code %s signal %s', child.pid, code, signal);
        resolve(
          spawnError
            ? new TransportError('RXS_ERR_SSH', `cannot start ${command}: ${spawnError.message}`)
            : new ServerExit(code, signal, errors.finish()),
        );
      });
    });

    // Whatever the server wrote, then why it ended: the session always learns the exit. A read
    // error on its stdio (ECONNRESET when ssh died without reading the upload) says less than
    // the exit status and stderr do, so it only ends the output.
    // As a ControlMaster, ssh outlives its session while connections handed to it (or idle
    // control connections) remain: once the output has ended, wait only briefly for the exit.
    const exitOrSilence = race(
      from(closed),
      timer(OUTPUT_END_GRACE_MS).pipe(map(() => new ServerExit(null, null, errors.finish()))),
    );
    const bytes$ = concat(
      output$.pipe(catchError((err: unknown) => (debug('server output: %s', (err as Error).message), EMPTY))),
      exitOrSilence.pipe(mergeMap((exit) => throwError(() => exit))),
    );

    input.write(serverUpload());
    subscriber.next({
      bytes$,
      sendRaw: (bytes) => input.write(bytes),
      writer: frameWriter(input),
      stderr$: errors.lines$,
      pid: child.pid,
    });

    return () => {
      input.end();
      if (exited) return;
      const killTimer = setTimeout(() => {
        if (!exited) child.kill('SIGTERM');
      }, 3000);
      killTimer.unref();
      // Should we exit before it has (the CLI does after a second), it must not outlive us: an ssh
      // whose network is gone would wait for TCP to give up, minutes later.
      const killOnExit = () => {
        if (!exited) child.kill('SIGTERM');
      };
      process.once('exit', killOnExit);
      child.once('close', () => {
        clearTimeout(killTimer);
        process.off('exit', killOnExit);
      });
    };
  });
}
