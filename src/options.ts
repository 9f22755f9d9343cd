import { readFileSync } from 'node:fs';
import { isIPv4, isIPv6 } from 'node:net';
import { collapseIPv6Number, IPv4CidrRange, IPv6CidrRange } from 'ip-num';
import { UsageError } from './errors.js';
import type { SubnetRule } from './firewall/types.js';

export interface RemoteSpec {
  readonly user?: string;
  readonly host: string;
  readonly port?: number;
}

export interface ListenSpec {
  readonly host: string;
  /** 0: the first free port from 12300 upwards. */
  readonly port: number;
}

export interface TunnelOptions {
  /** Includes and excludes; longest prefix wins between them. */
  readonly subnets: readonly SubnetRule[];
  /** Absent: the server runs on this machine as a child process. */
  readonly remote?: RemoteSpec;
  readonly listen: ListenSpec;
  /** The ssh command and its own options, e.g. ['ssh', '-F', 'cfg']. */
  readonly sshCommand: readonly string[];
  /** The node binary on the remote host. */
  readonly remoteNode: string;
  readonly latencyControl: boolean;
  /** argv that starts the firewall helper (`rxshuttle --firewall`), sudo already prepended if needed. */
  readonly firewallCommand: readonly string[];
}

export const DEFAULT_LISTEN_PORT = 12300;

/** What `connect()` takes: strings as on the command line, or parsed values; all but subnets optional. */
export interface ConnectOptions {
  readonly subnets: readonly (string | SubnetRule)[];
  readonly exclude?: readonly (string | SubnetRule)[];
  readonly remote?: string | RemoteSpec;
  readonly listen?: string | ListenSpec;
  readonly sshCommand?: string | readonly string[];
  readonly remoteNode?: string;
  readonly latencyControl?: boolean;
  /** How to start the firewall helper; default: this package's CLI with --firewall (through sudo unless root). */
  readonly firewallCommand?: readonly string[];
}

/** Parses and completes ConnectOptions; throws UsageError on anything malformed. */
export function resolveOptions(options: ConnectOptions, defaultFirewallCommand: () => string[]): TunnelOptions {
  // A parsed rule keeps its own exclude flag in `subnets`; everything in `exclude` is an exclude.
  const rule = (value: string | SubnetRule, exclude: boolean): SubnetRule =>
    typeof value === 'string' ? parseSubnet(value, exclude) : exclude ? { ...value, exclude } : value;
  const subnets = [...options.subnets.map((s) => rule(s, false)), ...(options.exclude ?? []).map((s) => rule(s, true))];
  if (!subnets.some((s) => !s.exclude)) throw new UsageError('no subnets given: say which to tunnel, e.g. 10.0.0.0/8 or 0/0');
  const remote = typeof options.remote === 'string' ? parseRemote(options.remote) : options.remote;
  const listen = typeof options.listen === 'string' ? parseListen(options.listen) : options.listen;
  const ssh = options.sshCommand ?? 'ssh';
  return {
    subnets,
    ...(remote ? { remote } : {}),
    listen: listen ?? { host: '127.0.0.1', port: 0 },
    sshCommand: typeof ssh === 'string' ? splitCommand(ssh) : ssh,
    remoteNode: options.remoteNode ?? 'node',
    latencyControl: options.latencyControl ?? true,
    firewallCommand: options.firewallCommand ?? defaultFirewallCommand(),
  };
}

const SUBNET4 = /^(\d+)(?:\.(\d+)\.(\d+)\.(\d+))?(?:\/(\d+))?(?::(\d+)(?:-(\d+))?)?$/;
const SUBNET6_BRACKETS = /^\[([0-9a-fA-F:.]+)\](?:\/(\d+))?(?::(\d+)(?:-(\d+))?)?$/;
const SUBNET6_BARE = /^([0-9a-fA-F:.]*:[0-9a-fA-F:.]*)(?:\/(\d+))?$/;

/**
 * Parses a subnet as sshuttle writes them: `a.b.c.d[/width][:port[-port]]`, `0/0`, `10/8`
 * (one octet stands for a.0.0.0), `[v6addr][/width][:port[-port]]` or a bare `v6addr[/width]`.
 * Host bits are cleared: 10.98.0.7/24 means 10.98.0.0/24.
 */
export function parseSubnet(text: string, exclude = false): SubnetRule {
  const trimmed = text.trim();
  const v4 = SUBNET4.exec(trimmed);
  if (v4) {
    const [, a, b = '0', c = '0', d = '0', width, portLow, portHigh] = v4;
    const address = [a, b, c, d].map(Number);
    if (address.some((octet) => octet > 255)) throw new UsageError(`invalid subnet "${text}": octet out of range`);
    const prefix = width === undefined ? 32 : Number(width);
    if (prefix > 32) throw new UsageError(`invalid subnet "${text}": width must be 0..32`);
    const network = IPv4CidrRange.fromCidr(`${address.join('.')}/${prefix}`).getFirst().toString();
    return { family: 4, address: network, prefix, ...parsePorts(text, portLow, portHigh), exclude };
  }
  const v6 = SUBNET6_BRACKETS.exec(trimmed) ?? SUBNET6_BARE.exec(trimmed);
  if (v6) {
    const [, address = '', width, portLow, portHigh] = v6;
    if (!isIPv6(address)) throw new UsageError(`invalid subnet "${text}": not an IPv6 address`);
    const prefix = width === undefined ? 128 : Number(width);
    if (prefix > 128) throw new UsageError(`invalid subnet "${text}": width must be 0..128`);
    // ip-num does not read a dotted IPv4 tail (::ffff:1.2.3.4): spell it as two hex groups.
    const tail = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(address);
    const hex = tail
      ? `${address.slice(0, tail.index)}${((Number(tail[1]) << 8) | Number(tail[2])).toString(16)}:${((Number(tail[3]) << 8) | Number(tail[4])).toString(16)}`
      : address;
    const first = IPv6CidrRange.fromCidr(`${hex}/${prefix}`).getFirst().toString();
    return { family: 6, address: collapseIPv6Number(first), prefix, ...parsePorts(text, portLow, portHigh), exclude };
  }
  throw new UsageError(`invalid subnet "${text}": expected a.b.c.d[/width][:port[-port]] or [ipv6][/width]`);
}

function parsePorts(text: string, low?: string, high?: string): { portLow: number; portHigh: number } {
  if (low === undefined) return { portLow: 0, portHigh: 0 };
  const portLow = Number(low);
  const portHigh = high === undefined ? portLow : Number(high);
  if (portLow < 1 || portHigh > 65535 || portLow > portHigh) throw new UsageError(`invalid port range in subnet "${text}"`);
  return { portLow, portHigh };
}

/** `--exclude-from FILE`: one subnet per line; blank lines and # comments are skipped. */
export function readSubnetFile(path: string): SubnetRule[] {
  let content: string;
  try {
    content = readFileSync(path, 'utf8');
  } catch (err) {
    throw new UsageError(`cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  return content
    .split('\n')
    .map((line) => line.replace(/#.*/, '').trim())
    .filter((line) => line.length > 0)
    .map((line) => parseSubnet(line, true));
}

/** `[user@]host[:port]`, with `[v6]:port` for IPv6 literals. */
export function parseRemote(text: string): RemoteSpec {
  const at = text.lastIndexOf('@');
  const user = at >= 0 ? text.slice(0, at) : undefined;
  const hostPort = at >= 0 ? text.slice(at + 1) : text;
  let host = hostPort;
  let port: number | undefined;
  const bracketed = /^\[([^\]]+)\](?::(\d+))?$/.exec(hostPort);
  if (bracketed) {
    host = bracketed[1] as string;
    port = bracketed[2] === undefined ? undefined : Number(bracketed[2]);
  } else if (hostPort.split(':').length === 2) {
    const [h = '', p = ''] = hostPort.split(':');
    host = h;
    if (!/^\d+$/.test(p)) throw new UsageError(`invalid remote "${text}": port must be a number`);
    port = Number(p);
  }
  if (user !== undefined && !/^[^\s@:]+$/.test(user)) throw new UsageError(`invalid remote "${text}": bad user name`);
  if (!/^[A-Za-z0-9._-]+$/.test(host) && !isIPv6(host)) throw new UsageError(`invalid remote "${text}": bad host name`);
  if (host.startsWith('-')) throw new UsageError(`invalid remote "${text}": host may not start with "-"`);
  if (port !== undefined && (port < 1 || port > 65535)) throw new UsageError(`invalid remote "${text}": port out of range`);
  return { ...(user === undefined ? {} : { user }), host, ...(port === undefined ? {} : { port }) };
}

/** `[ip:]port`; a bare port listens on 127.0.0.1; port 0 means pick the first free one from 12300. */
export function parseListen(text: string): ListenSpec {
  const bracketed = /^\[([^\]]+)\]:(\d+)$/.exec(text);
  const plain = /^(?:([\d.]+):)?(\d+)$/.exec(text);
  const host = bracketed?.[1] ?? plain?.[1] ?? '127.0.0.1';
  const portText = bracketed?.[2] ?? plain?.[2];
  if (portText === undefined || !(isIPv4(host) || isIPv6(host))) {
    throw new UsageError(`invalid listen address "${text}": expected [ip:]port`);
  }
  const port = Number(portText);
  if (port > 65535) throw new UsageError(`invalid listen address "${text}": port out of range`);
  return { host, port };
}

/** Splits a command line the way a shell would for simple quoting: -e 'ssh -F "my cfg"'. */
export function splitCommand(text: string): string[] {
  const words: string[] = [];
  const pattern = /"((?:\\.|[^"\\])*)"|'([^']*)'|((?:\\.|[^\s"'\\])+)|(\s+)/g;
  let current: string | null = null;
  let consumed = 0;
  for (const match of text.matchAll(pattern)) {
    if (match.index !== consumed) break;
    consumed += match[0].length;
    const [, double, single, bare, space] = match;
    if (space !== undefined) {
      if (current !== null) words.push(current);
      current = null;
      continue;
    }
    const piece = double?.replace(/\\(["\\$`\n])/g, '$1') ?? single ?? bare?.replace(/\\(.)/g, '$1') ?? '';
    current = (current ?? '') + piece;
  }
  if (consumed !== text.length) throw new UsageError(`unbalanced quote or trailing backslash in --ssh-cmd: ${text}`);
  if (current !== null) words.push(current);
  if (words.length === 0) throw new UsageError('empty --ssh-cmd');
  return words;
}
