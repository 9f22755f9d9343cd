import { execFile } from 'node:child_process';
import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { homedir, userInfo } from 'node:os';
import { promisify } from 'node:util';
import type { RemoteSpec } from '../options.js';
import { parseSshG, type ResolvedSshConfig } from './ssh-config.js';
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
  /** What `ssh -G` resolved (OpenSSH only): where, as whom, which keys, which known_hosts. */
  readonly config?: ResolvedSshConfig;
}

export async function sshHostInfo(sshCommand: readonly string[], remote: RemoteSpec): Promise<SshHostInfo> {
  const [command, ...args] = sshCommand;
  if (command === undefined) return { addresses: [], openssh: false };
  let hostname = remote.host;
  let config: ResolvedSshConfig | undefined;
  try {
    const { stdout } = await execFileAsync(command, [...args, '-G', ...portArgs(remote), '--', destination(remote)], {
      timeout: 10_000,
    });
    config = parseSshG(stdout, { home: homedir(), localUser: userInfo().username, originalHost: remote.host });
    hostname = config.hostname;
  } catch {
    // Not OpenSSH (an -e command without -G): fall back to the name as given.
  }
  const found = { openssh: config !== undefined, ...(config ? { config } : {}) };
  if (isIP(hostname)) return { addresses: [hostname], ...found };
  try {
    return { addresses: (await lookup(hostname, { all: true })).map((entry) => entry.address), ...found };
  } catch {
    return { addresses: [], ...found };
  }
}
