/**
 * Where the CLI's lines go: stderr (`rxshuttle: <line>`), or, with --syslog and --daemon once the
 * tunnel is up, the system log (tag `rxshuttle`, the process's pid, facility daemon).
 */
import * as fs from 'node:fs';
import { errnoWords } from '../os/errno.js';
import { DEV_LOG, openSyslog, type Severity, type Syslog } from './syslog.js';

export type { Severity };

export interface CliOutput {
  say(line: string, severity?: Severity): void;
  /**
   * Sends every further line to syslog. Returns a warning to show first when no syslog daemon
   * listens at /dev/log (lines are then lost in daemon mode, kept on stderr otherwise).
   */
  toSyslog(): string | null;
  /** Back to stderr (e.g. tests); closes the syslog socket. */
  toStderr(): void;
}

export function cliOutput(stderr: (text: string) => void = (text) => process.stderr.write(text), devLog: string = DEV_LOG): CliOutput {
  let syslog: Syslog | null = null;
  const toStderr = (line: string) => stderr(`rxshuttle: ${line}\n`);
  return {
    say(line, severity = 'info') {
      if (syslog === null || !syslog.log(severity, line)) toStderr(line);
    },
    toSyslog() {
      let warning: string | null = null;
      try {
        if (!fs.statSync(devLog).isSocket()) warning = `${devLog} is not a socket`;
      } catch (err) {
        warning = `no ${devLog} (${errnoWords(err)})`;
      }
      try {
        syslog = openSyslog({ tag: 'rxshuttle', path: devLog });
      } catch (err) {
        return `cannot log to syslog: ${(err as Error).message}`;
      }
      return warning === null ? null : `cannot log to syslog: ${warning}; is a syslog daemon running?`;
    },
    toStderr() {
      syslog?.close();
      syslog = null;
    },
  };
}
