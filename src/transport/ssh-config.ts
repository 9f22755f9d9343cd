import { TransportError } from '../shared/errors.js';

export type StrictHostKeyChecking = 'yes' | 'no' | 'ask' | 'accept-new';

/** What `ssh -G` resolved for one destination: the part of it the ssh2 transport obeys. */
export interface ResolvedSshConfig {
  readonly hostname: string;
  readonly port: number;
  readonly user: string;
  /** Absolute paths, `~` and %-tokens expanded, in ssh's order. */
  readonly identityFiles: readonly string[];
  readonly identitiesOnly: boolean;
  /** A socket path; undefined: $SSH_AUTH_SOCK; null: `IdentityAgent none`, no agent at all. */
  readonly identityAgent: string | null | undefined;
  readonly userKnownHostsFiles: readonly string[];
  readonly globalKnownHostsFiles: readonly string[];
  readonly strictHostKeyChecking: StrictHostKeyChecking;
  readonly hashKnownHosts: boolean;
  readonly hostKeyAlias: string | undefined;
  readonly proxyJump: string | undefined;
  readonly proxyCommand: string | undefined;
  readonly connectTimeoutMs: number | undefined;
  readonly batchMode: boolean;
  /** CanonicalizeHostname yes or always: ssh may find the host under a name of its own making. */
  readonly canonicalizeHostname?: boolean;
}

export interface SshGEnvironment {
  readonly home: string;
  readonly localUser: string;
  /** The destination as given to ssh, before HostName applied: the %n token. */
  readonly originalHost: string;
}

/** OpenSSH 9 prints yes/no as true/false; `off` is the config file's synonym for no. */
const STRICT = new Map<string, StrictHostKeyChecking>([
  ['yes', 'yes'],
  ['true', 'yes'],
  ['no', 'no'],
  ['false', 'no'],
  ['off', 'no'],
  ['ask', 'ask'],
  ['accept-new', 'accept-new'],
]);

/**
 * Reads `ssh -G` output (one lowercase `keyword value` per line). ssh prints IdentityFile as
 * written in the config file, so `~` and the tokens are expanded here, as ssh does when it
 * loads the keys; the known_hosts files get the same treatment for OpenSSH versions that print
 * them unexpanded.
 */
export function parseSshG(stdout: string, env: SshGEnvironment): ResolvedSshConfig {
  const values = new Map<string, string>();
  const identityFiles: string[] = [];
  for (const line of stdout.split(/\r?\n/)) {
    const match = /^(\S+)\s+(.*\S)/.exec(line);
    if (!match?.[1] || !match[2]) continue;
    const keyword = match[1].toLowerCase();
    if (keyword === 'identityfile') identityFiles.push(match[2]);
    else if (!values.has(keyword)) values.set(keyword, match[2]);
  }
  const required = (keyword: string): string => {
    const value = values.get(keyword);
    if (value === undefined) {
      throw new TransportError('RXS_ERR_SSH', `ssh -G ${env.originalHost} printed no ${keyword}: cannot resolve the ssh configuration`);
    }
    return value;
  };
  const hostname = required('hostname');
  const user = required('user');
  const port = Number(required('port'));
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new TransportError('RXS_ERR_SSH', `ssh -G ${env.originalHost} printed an invalid port: ${values.get('port')}`);
  }
  const tokens = new Map([
    ['d', env.home],
    ['u', env.localUser],
    ['h', hostname],
    ['r', user],
    ['p', String(port)],
    ['n', env.originalHost],
    ['%', '%'],
  ]);
  const expand = (path: string): string =>
    path.replace(/^~(?=\/|$)/, env.home).replace(/%(.)/g, (token, letter: string) => tokens.get(letter) ?? token);
  const unlessNone = (keyword: string): string | undefined => {
    const value = values.get(keyword);
    return value === 'none' ? undefined : value;
  };
  const paths = (keyword: string): string[] => unlessNone(keyword)?.split(/\s+/).map(expand) ?? [];
  const flag = (keyword: string): boolean => ['yes', 'true'].includes(values.get(keyword) ?? '');
  const agent = values.get('identityagent');
  const timeout = unlessNone('connecttimeout');
  return {
    hostname,
    port,
    user,
    identityFiles: identityFiles.map(expand),
    identitiesOnly: flag('identitiesonly'),
    identityAgent: agent === 'none' ? null : agent === undefined || agent === 'SSH_AUTH_SOCK' ? undefined : expand(agent),
    userKnownHostsFiles: paths('userknownhostsfile'),
    globalKnownHostsFiles: paths('globalknownhostsfile'),
    // ask is OpenSSH's default; for us it refuses unknown hosts just like yes.
    strictHostKeyChecking: STRICT.get(values.get('stricthostkeychecking') ?? '') ?? 'ask',
    hashKnownHosts: flag('hashknownhosts'),
    hostKeyAlias: values.get('hostkeyalias'),
    proxyJump: unlessNone('proxyjump'),
    proxyCommand: unlessNone('proxycommand'),
    connectTimeoutMs: timeout === undefined ? undefined : Number(timeout) * 1000,
    batchMode: flag('batchmode'),
    canonicalizeHostname: ['yes', 'true', 'always'].includes(values.get('canonicalizehostname') ?? ''),
  };
}
