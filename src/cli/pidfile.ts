/**
 * The daemon's pid file (`--pidfile`, default `rxshuttle.pid` in the current directory, as
 * sshuttle's manual says). It is written once the tunnel is up and removed when the process
 * exits. A file left by a process that no longer runs (a crash, kill -9) is replaced; a file
 * whose process still runs means another instance: that is an error, and the file is left alone.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { processExists } from '../os/process-exists.js';
import { RxshuttleError } from '../shared/errors.js';

export const DEFAULT_PIDFILE = 'rxshuttle.pid';

export class PidfileError extends RxshuttleError {
  constructor(message: string) {
    super('RXS_ERR_PIDFILE', message);
  }
}

/** The pid a pid file holds; undefined when it is missing, empty or not a pid. */
export function readPidfile(file: string): number | undefined {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
  const trimmed = text.trim();
  if (!/^\d{1,10}$/.test(trimmed)) return undefined;
  const pid = Number(trimmed);
  return pid > 0 && pid <= 0x3fffffff ? pid : undefined;
}

/** Throws when the pid file names another process that is still running. */
export function checkPidfile(file: string, self: number = process.pid): void {
  const pid = readPidfile(file);
  if (pid !== undefined && pid !== self && processExists(pid)) {
    throw new PidfileError(
      `pid file ${file} belongs to process ${pid}, which is still running (another rxshuttle?): stop it, or choose another --pidfile`,
    );
  }
}

/**
 * Writes `pid` to `file` atomically (a complete file appears under its name, or none): the text
 * goes to a temporary file that is then hard-linked into place, which fails if the name exists.
 * A stale file (its process is gone, or it holds no pid) is removed first. Returns the absolute path.
 */
export function writePidfile(file: string, pid: number = process.pid): string {
  const target = path.resolve(file);
  const temp = `${target}.${pid}.${process.hrtime.bigint()}.tmp`;
  try {
    fs.writeFileSync(temp, `${pid}\n`, { mode: 0o644, flag: 'wx' });
  } catch (err) {
    throw new PidfileError(`cannot write pid file ${target}: ${describe(err)}`);
  }
  try {
    for (let attempt = 0; ; attempt++) {
      try {
        fs.linkSync(temp, target);
        return target;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || attempt >= 3) {
          throw new PidfileError(`cannot write pid file ${target}: ${describe(err)}`);
        }
      }
      checkPidfile(target, pid);
      // Stale: its process is gone (or it is our own). Remove it and try again.
      fs.rmSync(target, { force: true });
    }
  } finally {
    fs.rmSync(temp, { force: true });
  }
}

/** Removes the pid file if it still holds `pid` (never someone else's). Never throws. */
export function removePidfile(file: string, pid: number = process.pid): boolean {
  try {
    if (readPidfile(file) !== pid) return false;
    fs.unlinkSync(file);
    return true;
  } catch {
    return false;
  }
}

const describe = (err: unknown): string => (err as NodeJS.ErrnoException).code ?? (err as Error).message ?? String(err);
