import { execFile, spawn } from 'node:child_process';
import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { homedir, userInfo } from 'node:os';
import { promisify } from 'node:util';
import { errorMessage, TransportError } from '../shared/errors.js';
import { parseRemote, type RemoteSpec } from '../shared/options.js';
import { printable } from '../shared/printable.js';
import { ExecOutput, type ExecResult } from './exec-output.js';
import { parseSshG, type ResolvedSshConfig } from './ssh-config.js';
import { remoteCommand } from './stub.js';

const execFileAsync = promisify(execFile);

const destination = (remote: RemoteSpec): string => (remote.user ? `${remote.user}@${remote.host}` : remote.host);
const portArgs = (remote: RemoteSpec): string[] => (remote.port === undefined ? [] : ['-p', String(remote.port)]);

/** argv of the ssh session that runs the server: the user's ssh (and its config) does the rest. */
export function sshServerArgv(sshCommand: readonly string[], remote: RemoteSpec, remoteNode: string, command = remoteCommand(remoteNode)): string[] {
  return [...sshCommand, ...portArgs(remote), '--', destination(remote), command];
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

/** How sshHostInfo finds things out (tests inject their own), and for which transport. */
export interface HostInfoOptions {
  /** `ssh -G` for a destination; undefined when the command is not OpenSSH. */
  readonly sshG?: (sshCommand: readonly string[], remote: RemoteSpec) => Promise<ResolvedSshConfig | undefined>;
  /** Every address of a host name (dns.lookup, as ssh's getaddrinfo); rejects when there is none. */
  readonly lookup?: (hostname: string) => Promise<string[]>;
  /** Only ssh2 will connect (--transport ssh2): it takes no ProxyJump, and its error says so better than a jump host's lookup. */
  readonly ssh2Only?: boolean;
}

const lookupAll = async (hostname: string): Promise<string[]> => (await lookup(hostname, { all: true })).map((entry) => entry.address);

/**
 * Throws a TransportError when the host ssh connects to first has no address: ssh would look the
 * name up again and fail the same way, after as long again (issue 16, finding 5: an unknown host
 * took twice as long to fail as with ssh alone). Only where ssh itself looks the name up from
 * here: OpenSSH (`ssh -G` answered), no ProxyCommand (the proxy reaches the host), no
 * CanonicalizeHostname (ssh may find the name under another). Otherwise the addresses are only
 * for the rules, and none found means no exclude.
 */
export async function sshHostInfo(
  sshCommand: readonly string[],
  remote: RemoteSpec,
  options: HostInfoOptions = {},
): Promise<SshHostInfo> {
  const sshG = options.sshG ?? resolveConfig;
  const config = await sshG(sshCommand, remote);
  const found = { openssh: config !== undefined, ...(config ? { config } : {}) };
  if (options.ssh2Only && config?.proxyJump) return { addresses: [], ...found };
  // With ProxyJump, ssh connects from here only to the first jump host; the rest is reached
  // through it. That address must escape the rules (and the target's need not).
  const jump = config?.proxyJump ? firstJumpHop(config.proxyJump) : undefined;
  const jumpConfig = jump ? await sshG(jumpCommand(sshCommand), jump) : undefined;
  const direct = jump ? (jumpConfig?.hostname ?? jump.host) : (config?.hostname ?? remote.host);
  // What ssh connects to first, as ssh sees it: the jump host's configuration, or the target's.
  const first = jump ? jumpConfig : config;
  if (isIP(direct)) return { addresses: [direct], ...found };
  try {
    return { addresses: await (options.lookup ?? lookupAll)(direct), ...found };
  } catch (err) {
    if (first !== undefined && first.proxyCommand === undefined && !first.canonicalizeHostname) {
      throw new TransportError('RXS_ERR_SSH', `ssh to ${remote.host} failed: ${unresolved(direct, err)}`);
    }
    return { addresses: [], ...found };
  }
}

/** glibc's gai_strerror text for Node's lookup codes: what ssh prints when getaddrinfo fails. */
const GAI_WORDS: Readonly<Record<string, string>> = {
  ENOTFOUND: 'Name or service not known',
  EAI_AGAIN: 'Temporary failure in name resolution',
  EAI_FAIL: 'Non-recoverable failure in name resolution',
  ENODATA: 'No address associated with hostname',
};

/** What ssh says when getaddrinfo fails, in its words. */
function unresolved(hostname: string, err: unknown): string {
  const code = (err as NodeJS.ErrnoException).code;
  const why = (code !== undefined ? GAI_WORDS[code] : undefined) ?? printable(errorMessage(err));
  return `Could not resolve hostname ${hostname}: ${why}`;
}

/** ssh reaches a jump host with its config file (-F) but without the command line's other options. */
function jumpCommand(sshCommand: readonly string[]): string[] {
  const [command = 'ssh', ...args] = sshCommand;
  const kept: string[] = [];
  args.forEach((arg, i) => {
    if (arg === '-F' && args[i + 1] !== undefined) kept.push(arg, args[i + 1] as string);
    else if (arg.startsWith('-F') && arg.length > 2) kept.push(arg);
  });
  return [command, ...kept];
}

/** `ssh -G` for a destination; undefined when the command is not OpenSSH (an -e command without -G). */
async function resolveConfig(sshCommand: readonly string[], remote: RemoteSpec): Promise<ResolvedSshConfig | undefined> {
  const [command, ...args] = sshCommand;
  if (command === undefined) return undefined;
  try {
    const { stdout } = await execFileAsync(command, [...args, '-G', ...portArgs(remote), '--', destination(remote)], {
      timeout: 10_000,
    });
    return parseSshG(stdout, { home: homedir(), localUser: userInfo().username, originalHost: remote.host });
  } catch {
    return undefined;
  }
}

/** The first hop of a ProxyJump value (`[user@]host[:port]` or `ssh://…`, comma-separated hops). */
export function firstJumpHop(proxyJump: string): RemoteSpec | undefined {
  const first = proxyJump.split(',')[0]?.trim().replace(/^ssh:\/\//, '');
  if (!first) return undefined;
  try {
    return parseRemote(first);
  } catch {
    return undefined;
  }
}

/** argv of a command run through our ControlMaster: no second login, the master's connection. */
export function sshMuxArgv(sshCommand: readonly string[], remote: RemoteSpec, controlPath: string, command: string): string[] {
  return [...sshCommand, '-S', controlPath, '-o', 'ControlMaster=no', ...portArgs(remote), '--', destination(remote), command];
}

/** Runs a command and collects its stdout (bounded: ExecOutput) within a time limit. */
export function runCollecting(argv: readonly string[], timeoutMs = 20_000): Promise<ExecResult> {
  return new Promise((resolve) => {
    const [command, ...args] = argv;
    if (command === undefined) throw new TypeError('empty command');
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'ignore'] });
    const output = new ExecOutput();
    const timer = setTimeout(() => child.kill('SIGTERM'), timeoutMs);
    child.stdout.on('data', (chunk: Buffer) => output.add(chunk));
    child.once('error', () => {
      clearTimeout(timer);
      resolve({ stdout: '', code: null, cut: false });
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve(output.result(code));
    });
  });
}
