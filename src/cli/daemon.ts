/**
 * `-D/--daemon`: detach once the tunnel is up. Node cannot fork(), so the CLI starts itself again
 * as a child with the same arguments plus DAEMON_CHILD_FLAG, and waits:
 *
 *   parent (what the user started)              child (the daemon)
 *   relays the child's stderr to its own  ◄──── prints as usual while it starts: ssh and sudo
 *                                               can still ask for passwords on the terminal
 *                                               tunnel up: writes the pid file, setsid(),
 *   "UP <pid>" on fd 3 → waits for stderr  ◄──── writes "UP <pid>" on fd 3, points fds 0-2 at
 *   to close, exits 0                           /dev/null, logs to syslog from now on
 *   the child exits before "UP": prints          …or fails: one line on stderr, exit status ≠ 0
 *   what it said, exits with its status
 *
 * So a failure to connect is reported on the terminal with a non-zero exit, and once the command
 * has returned, the tunnel works. The child leaves the terminal's session only when it is up
 * (a new session has no controlling terminal, and sudo and ssh prompt on it).
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import type { Readable } from 'node:stream';
import { libcFunction } from '../os/libc.js';

/** Internal: marks the re-spawned child. Hidden from --help. */
export const DAEMON_CHILD_FLAG = '--internal-daemon-child';
/** The child's end of the status pipe. */
const STATUS_FD = 3;
const UP_LINE = /^UP (\d+)\n/;
/** How long the parent waits for the child's last words once it is up (or has exited). */
const STDERR_GRACE_MS = 3000;

/**
 * The parent's side: starts the daemon and resolves with the exit status the command should end
 * with (0 once the daemon is up, the child's status when it fails before that).
 */
export function runDaemonParent(cliPath: string, args: readonly string[]): Promise<number> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [...process.execArgv, cliPath, ...args, DAEMON_CHILD_FLAG], {
      stdio: ['ignore', 'ignore', 'pipe', 'pipe'],
    });
    const stderr = child.stderr as Readable;
    const status = child.stdio[STATUS_FD] as Readable;
    stderr.on('error', () => {});
    status.on('error', () => {});
    // Never copy a partial line late: relay whole chunks as they come (the child writes lines).
    stderr.on('data', (chunk: Buffer) => process.stderr.write(chunk));
    const stderrEnded = new Promise<void>((done) => {
      stderr.once('end', done);
      stderr.once('close', done);
    });

    let finished = false;
    const finish = (code: number) => {
      if (finished) return;
      finished = true;
      for (const signal of SIGNALS) process.off(signal, forward);
      const timer = setTimeout(() => done(), STDERR_GRACE_MS);
      const done = () => {
        clearTimeout(timer);
        stderr.destroy();
        status.destroy();
        child.unref();
        resolve(code);
      };
      void stderrEnded.then(done);
    };

    // Ctrl-C reaches the child as well (same process group); a signal sent to our pid alone is
    // passed on, so stopping the command while it starts stops the daemon too.
    const forward = (signal: NodeJS.Signals) => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    };
    for (const signal of SIGNALS) process.on(signal, forward);

    let said = '';
    status.setEncoding('utf8');
    status.on('data', (text: string) => {
      said += text;
      if (UP_LINE.test(said)) finish(0);
    });
    child.once('error', (err) => {
      process.stderr.write(`rxshuttle: cannot start the daemon: ${err.message}\n`);
      finish(1);
    });
    child.once('exit', (code, signal) => {
      if (finished) return;
      if (signal) process.stderr.write(`rxshuttle: the daemon was killed by ${signal} before the tunnel was up\n`);
      finish(code ?? 1);
    });
  });
}

const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

interface Libc {
  setsid(): number;
  dup2(oldfd: number, newfd: number): number;
}
let libc: Libc | undefined;
function load(): Libc {
  if (!libc) {
    libc = {
      setsid: libcFunction<Libc['setsid']>('int setsid(void)'),
      dup2: libcFunction<Libc['dup2']>('int dup2(int oldfd, int newfd)'),
    };
  }
  return libc;
}

/**
 * The child's side, once the tunnel is up: leaves the terminal's session, tells the parent, and
 * lets go of the terminal (or the pipes it was started with). From here on nothing may be
 * written to stderr: log to syslog. Best effort: a parent that is already gone is no reason to
 * take the tunnel down.
 */
export function detachDaemon(): void {
  const c = load();
  // Not a process group leader (the parent is), so setsid() succeeds: no controlling terminal,
  // no SIGHUP when it closes, no Ctrl-C.
  c.setsid();
  try {
    fs.writeSync(STATUS_FD, `UP ${process.pid}\n`);
  } catch {
    // the parent is gone
  }
  try {
    fs.closeSync(STATUS_FD);
  } catch {
    // already closed
  }
  const devNull = fs.openSync('/dev/null', 'r+');
  for (const fd of [0, 1, 2]) c.dup2(devNull, fd);
  fs.closeSync(devNull);
  // Do not keep the directory we were started in busy (the pid file path is absolute by now).
  process.chdir('/');
}
