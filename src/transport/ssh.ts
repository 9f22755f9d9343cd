import { execFile } from 'node:child_process';
import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { promisify } from 'node:util';
import type { RemoteSpec } from '../options.js';
import { remoteCommand } from './stub.js';

const execFileAsync = promisify(execFile);

const destination = (remote: RemoteSpec): string => (remote.user ? `${remote.user}@${remote.host}` : remote.host);
const portArgs = (remote: RemoteSpec): string[] => (remote.port === undefined ? [] : ['-p', String(remote.port)]);

/** argv of the ssh session that runs the server: the user's ssh (and its config) does the rest. */
export function sshServerArgv(sshCommand: readonly string[], remote: RemoteSpec, remoteNode: string): string[] {
  return [...sshCommand, ...portArgs(remote), '--', destination(remote), remoteCommand(remoteNode)];
}

export interface SshHostInfo {
  /**
   * The addresses ssh will really connect to (`ssh -G` applies ~/.ssh/config's HostName), so a
   * tunnel of 0/0 can leave its own ssh connection alone. Empty when it cannot be told.
   */
  readonly addresses: string[];
  /** The command understood `-G`: it is OpenSSH, so it can be a ControlMaster. */
  readonly openssh: boolean;
}

export async function sshHostInfo(sshCommand: readonly string[], remote: RemoteSpec): Promise<SshHostInfo> {
  const [command, ...args] = sshCommand;
  if (command === undefined) return { addresses: [], openssh: false };
  let hostname = remote.host;
  let openssh = false;
  try {
    const { stdout } = await execFileAsync(command, [...args, '-G', ...portArgs(remote), '--', destination(remote)], {
      timeout: 10_000,
    });
    const line = stdout.split('\n').find((l) => l.startsWith('hostname '));
    if (line) hostname = line.slice('hostname '.length).trim();
    openssh = line !== undefined;
  } catch {
    // Not OpenSSH (an -e command without -G): fall back to the name as given.
  }
  if (isIP(hostname)) return { addresses: [hostname], openssh };
  try {
    return { addresses: (await lookup(hostname, { all: true })).map((entry) => entry.address), openssh };
  } catch {
    return { addresses: [], openssh };
  }
}
