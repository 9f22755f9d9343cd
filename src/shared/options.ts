import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { isIPv4, isIPv6 } from 'node:net';
import type { SubnetRule } from '../firewall/types.js';
import { MAX_SUBNETS } from '../firewall/validate.js';
import { errnoWords } from '../os/errno.js';
import { isValidHostName } from '../streams/discovery.js';
import type { Destination } from '../streams/frame.js';
import { UsageError } from './errors.js';
import { formatIp, networkOf, parseIp } from './ip.js';

export interface RemoteSpec {
  readonly user?: string;
  readonly host: string;
  readonly port?: number;
}

export interface ListenSpec {
  readonly host: string;
  /** 0: the first free port from 12300 upwards. */
  readonly port: number;
  /** More addresses to listen on, on the same port (`-l 127.0.0.1:0,[::1]:0`): the rules redirect to one port. */
  readonly more?: readonly string[];
}

/**
 * A host name given where a subnet goes (`example.com`, `example.com:443`, `-x name`): resolved by
 * the remote's resolver once connected, and again when its answer's TTL runs out (name-rules.ts).
 */
export interface NamedSubnet {
  readonly name: string;
  /** Inclusive TCP port range; 0..0 means every port. */
  readonly portLow: number;
  readonly portHigh: number;
  readonly exclude: boolean;
}

/** Host names as subnets, at most (each resolves to at most MAX_ADDRESSES_PER_NAME rules). */
export const MAX_NAMED_SUBNETS = 128;

export interface TunnelOptions {
  /** Includes and excludes; longest prefix wins between them. */
  readonly subnets: readonly SubnetRule[];
  /** Host names among the includes and excludes: their rules come once the remote has resolved them. */
  readonly names: readonly NamedSubnet[];
  /** Absent: the server runs on this machine as a child process. */
  readonly remote?: RemoteSpec;
  readonly listen: ListenSpec;
  /** The ssh command and its own options, e.g. ['ssh', '-F', 'cfg']. */
  readonly sshCommand: readonly string[];
  /** The node binary on the remote host. */
  readonly remoteNode: string;
  readonly latencyControl: boolean;
  /**
   * With OpenSSH, hand each TCP connection to ssh (our session is its ControlMaster), which
   * carries it in a channel of its own; otherwise every connection goes through our mux.
   */
  readonly sshForward: boolean;
  /**
   * `ssh`: the ssh binary carries the session (all of ssh_config applies). `ssh2`: an in-process
   * ssh connection (host, user, keys and known_hosts from `ssh -G`) whose direct-tcpip channels
   * carry TCP, as `ssh -L` does; no process hop, so faster. `auto`: ssh2 when it can do what the
   * configuration asks, else the binary.
   */
  readonly transport: Transport;
  /** argv that starts the firewall helper (dist/firewall-helper.cjs), sudo already prepended if needed. */
  readonly firewallCommand: readonly string[];
  /** --dns, --ns-hosts, --to-ns: capture DNS queries and answer them through the tunnel. */
  readonly dns?: DnsOptions;
  /** -N: also tunnel the networks the server's routing table names. */
  readonly autoNets: boolean;
  /** --auto-nets-wide: with -N, also routes wider than /8 (IPv4) or /16 (IPv6); without it they are ignored (and named in a warning). */
  readonly autoNetsWide: boolean;
  /** -H: put the host names the server finds into /etc/hosts while the tunnel runs. */
  readonly autoHosts?: { readonly seeds: readonly string[] };
  /** Seconds between keepalive pings; the session is declared dead after KEEPALIVE_MISSES silent ones. 0: off. */
  readonly keepalive: number;
  /** Receives the firewall helper's stderr (and sudo's) line by line; absent: the helper inherits our stderr. */
  readonly firewallStderr?: (line: string) => void;
  /** Once up, a lost session is started again (the rules stay meanwhile); false: a loss ends the tunnel (--no-reconnect). */
  readonly reconnect: boolean;
  /** --kill-switch: dying without a clean stop leaves the subnets blocked, not direct (firewall/kill-switch.ts). */
  readonly killSwitch: boolean;
  /** --method: nat (iptables), nft (a table of its own), or auto (nat where iptables is installed, else nft). */
  readonly method: Method;
  /** --user: only this uid's connections on this machine are captured. */
  readonly user?: number;
  /** --group: only connections of processes with this primary gid are captured. */
  readonly group?: number;
  /** --disable-ipv6: no IPv6 rules, listener, AAAA lookups or IPv6 nameservers. */
  readonly disableIpv6: boolean;
  /** --tmark: with --method tproxy (only then set), the fwmark of captured packets (1..0xffffffff). */
  readonly tmark?: number;
}

/** Default --keepalive: a ping every 15 s, so a vanished server is noticed within a minute. */
export const DEFAULT_KEEPALIVE = 15;
export const KEEPALIVE_MISSES = 4;

export const DEFAULT_LISTEN_PORT = 12300;

export const TRANSPORTS = ['auto', 'ssh', 'ssh2'] as const;
/** --method: how the firewall captures (firewall/methods.ts); auto picks one where the tunnel starts. */
export const METHODS = ['auto', 'nat', 'nft', 'tproxy'] as const;
/** --tmark: sshuttle's default fwmark for tproxy. */
export const DEFAULT_TMARK = 0x01;
export type Method = (typeof METHODS)[number];
export type Transport = (typeof TRANSPORTS)[number];

export interface DnsOptions {
  /** The nameservers whose queries are captured (--ns-hosts); absent: those of /etc/resolv.conf. */
  readonly nameservers?: readonly string[];
  /** --to-ns: the remote nameserver that answers; absent: the server's own resolv.conf. */
  readonly toNs?: Destination;
}

/** What `connect()` takes: strings as on the command line, or parsed values; all but subnets optional. */
export interface ConnectOptions {
  /** `10.0.0.0/8`, `[fd00::]/64:443`, a host name (`example.com:443`), or parsed values. */
  readonly subnets: readonly (string | SubnetRule | NamedSubnet)[];
  readonly exclude?: readonly (string | SubnetRule | NamedSubnet)[];
  readonly remote?: string | RemoteSpec;
  readonly listen?: string | ListenSpec;
  readonly sshCommand?: string | readonly string[];
  readonly remoteNode?: string;
  readonly latencyControl?: boolean;
  /** Hand TCP connections to the ssh ControlMaster (OpenSSH only); default false (see README). */
  readonly sshForward?: boolean;
  /** `auto` (default), `ssh` (the ssh binary) or `ssh2` (in-process, TCP in direct-tcpip channels; see README). */
  readonly transport?: Transport;
  /** How to start the firewall helper; default: this package's dist/firewall-helper.cjs (through sudo unless root: client.ts helperCommand). */
  readonly firewallCommand?: readonly string[];
  /** Capture DNS queries to the nameservers of /etc/resolv.conf and answer them remotely (--dns). */
  readonly dns?: boolean | DnsOptions;
  /** Capture DNS queries to these nameservers instead (implies dns): `ip,ip` or a list (--ns-hosts). */
  readonly nsHosts?: string | readonly string[];
  /** The remote nameserver that answers, `ip[:port]` (--to-ns); default: the remote's resolv.conf. */
  readonly toNs?: string | Destination;
  /** Also tunnel the server's routes (-N). */
  readonly autoNets?: boolean;
  /** With autoNets: also the server's routes wider than /8 (IPv4) or /16 (IPv6) (--auto-nets-wide); default false. */
  readonly autoNetsWide?: boolean;
  /** Host names into /etc/hosts (-H). */
  readonly autoHosts?: boolean | { readonly seeds: readonly string[] };
  /** Names to start -H with: `a,b,c` or a list (--seed-hosts). */
  readonly seedHosts?: string | readonly string[];
  /** Seconds between keepalive pings (default 15, 0: off); silent for 4 of them, the tunnel ends. */
  readonly keepalive?: number | string;
  readonly firewallStderr?: (line: string) => void;
  /** Start a lost session again once it has been up (default true; --no-reconnect: false). */
  readonly reconnect?: boolean;
  /** Block the subnets (REJECT) if the tunnel dies without a clean stop (--kill-switch); default false. */
  readonly killSwitch?: boolean;
  /** How the firewall captures: `auto` (default), `nat` or `nft` (--method). */
  readonly method?: Method;
  /** Capture only this user's connections: a name or uid (--user). */
  readonly user?: string | number;
  /** Capture only connections of processes with this primary group: a name or gid (--group). */
  readonly group?: string | number;
  /** No IPv6 at all (--disable-ipv6); an IPv6 subnet to tunnel is then a usage error. */
  readonly disableIpv6?: boolean;
  /** With method tproxy: the fwmark, a number or `0x…` (--tmark); default 0x01. */
  readonly tmark?: number | string;
}

/** Parses and completes ConnectOptions; throws UsageError on anything malformed. */
export function resolveOptions(options: ConnectOptions, defaultFirewallCommand: () => string[]): TunnelOptions {
  // A parsed rule keeps its own exclude flag in `subnets`; everything in `exclude` is an exclude.
  const rule = (value: string | SubnetRule | NamedSubnet, exclude: boolean): SubnetRule | NamedSubnet =>
    typeof value === 'string'
      ? parseSubnetOrName(value, exclude, exclude ? '-x/--exclude' : undefined)
      : exclude
        ? { ...value, exclude }
        : value;
  // Options resolved once already (connect() takes those too) carry their names apart.
  const resolvedNames = (options as Partial<Pick<TunnelOptions, 'names'>>).names ?? [];
  const given = [
    ...options.subnets.map((s) => rule(s, false)),
    ...(options.exclude ?? []).map((s) => rule(s, true)),
    ...resolvedNames,
  ];
  const disableIpv6 = options.disableIpv6 ?? false;
  const v6Include = given.find((s) => !isNamedSubnet(s) && s.family === 6 && !s.exclude) as SubnetRule | undefined;
  if (disableIpv6 && v6Include) {
    throw new UsageError(`--disable-ipv6: an IPv6 subnet to tunnel was given (${v6Include.address}/${v6Include.prefix})`);
  }
  // IPv6 excludes exclude nothing without IPv6 rules: left out.
  const subnets = given.filter((s): s is SubnetRule => !isNamedSubnet(s) && !(disableIpv6 && s.family === 6));
  const names = given.filter(isNamedSubnet);
  if (subnets.length > MAX_SUBNETS) {
    throw new UsageError(`too many subnets: ${subnets.length} given (the command line, -s, -x and -X together), at most ${MAX_SUBNETS}`);
  }
  if (names.length > MAX_NAMED_SUBNETS) throw new UsageError(`at most ${MAX_NAMED_SUBNETS} host names as subnets (${names.length} given)`);
  const dns = resolveDns(options);
  const autoNets = options.autoNets ?? false;
  const autoNetsWide = options.autoNetsWide ?? false;
  if (autoNetsWide && !autoNets) throw new UsageError('--auto-nets-wide needs -N/--auto-nets');
  if (!given.some((s) => !s.exclude) && !autoNets && !dns) {
    throw new UsageError('no subnets given: say which to tunnel, e.g. 10.0.0.0/8 or 0/0 (or -s FILE, -N, or --dns)');
  }
  const seedsGiven = typeof options.autoHosts === 'object' ? options.autoHosts.seeds : [];
  const seeds = [...seedsGiven, ...(options.seedHosts === undefined ? [] : parseSeedHosts(options.seedHosts))];
  if (seeds.length > 0 && !options.autoHosts) throw new UsageError('--seed-hosts needs -H/--auto-hosts');
  const remote = typeof options.remote === 'string' ? parseRemote(options.remote) : options.remote;
  const listen = typeof options.listen === 'string' ? parseListen(options.listen) : options.listen;
  const ssh = options.sshCommand ?? 'ssh';
  const transport = options.transport ?? 'auto';
  if (!TRANSPORTS.includes(transport)) throw new UsageError(`unknown --transport "${transport}": use auto, ssh or ssh2`);
  const method = options.method ?? 'auto';
  if (!METHODS.includes(method)) throw new UsageError(`unknown --method "${method}": use auto, nat, nft or tproxy`);
  if (options.tmark !== undefined && method !== 'tproxy') throw new UsageError('--tmark needs --method tproxy');

  if (transport === 'ssh2' && !remote) throw new UsageError('--transport ssh2 needs -r HOST (local mode has no ssh)');
  if (transport === 'ssh2' && options.sshForward) {
    throw new UsageError('--ssh-forward needs the ssh binary (--transport ssh or auto); with ssh2, TCP always goes in ssh channels');
  }
  return {
    subnets,
    names,
    ...(remote ? { remote } : {}),
    listen: listen ?? { host: '127.0.0.1', port: 0 },
    sshCommand: typeof ssh === 'string' ? splitCommand(ssh) : ssh,
    remoteNode: options.remoteNode ?? 'node',
    latencyControl: options.latencyControl ?? true,
    sshForward: options.sshForward ?? false,
    transport,
    firewallCommand: options.firewallCommand ?? defaultFirewallCommand(),
    ...(dns ? { dns } : {}),
    autoNets,
    autoNetsWide,
    ...(options.autoHosts ? { autoHosts: { seeds } } : {}),
    keepalive: parseKeepalive(options.keepalive ?? DEFAULT_KEEPALIVE),
    ...(options.firewallStderr ? { firewallStderr: options.firewallStderr } : {}),
    reconnect: options.reconnect ?? true,
    killSwitch: options.killSwitch ?? false,
    method,
    ...(options.user === undefined ? {} : { user: lookupId('passwd', options.user, '--user') }),
    ...(options.group === undefined ? {} : { group: lookupId('group', options.group, '--group') }),
    disableIpv6,
    ...(method === 'tproxy' ? { tmark: parseTmark(options.tmark ?? DEFAULT_TMARK) } : {}),
  };
}

const SUBNET4 = /^(\d+)(?:\.(\d+)\.(\d+)\.(\d+))?(?:\/(\d+))?(?::(\d+)(?:-(\d+))?)?$/;
const SUBNET6_BRACKETS = /^\[([0-9a-fA-F:.]+)\](?:\/(\d+))?(?::(\d+)(?:-(\d+))?)?$/;
const SUBNET6_BARE = /^([0-9a-fA-F:.]*:[0-9a-fA-F:.]*)(?:\/(\d+))?$/;

/**
 * Parses a subnet as sshuttle writes them: `a.b.c.d[/width][:port[-port]]`, `0/0`, `10/8`
 * (one octet stands for a.0.0.0), `[v6addr][/width][:port[-port]]` or a bare `v6addr[/width]`.
 * Host bits are cleared: 10.98.0.7/24 means 10.98.0.0/24. `context` starts the error line in
 * place of "invalid subnet": the option it came with (`-x/--exclude`), or a file and line.
 */
export function parseSubnet(text: string, exclude = false, context?: string): SubnetRule {
  const bad = (why: string) => new UsageError(`${context ?? 'invalid subnet'} "${text}": ${why}`);
  const trimmed = text.trim();
  const v4 = SUBNET4.exec(trimmed);
  if (v4) {
    const [, a, b = '0', c = '0', d = '0', width, portLow, portHigh] = v4;
    const address = [a, b, c, d].map(Number);
    if (address.some((octet) => octet > 255)) throw bad('octet out of range');
    const prefix = width === undefined ? 32 : Number(width);
    if (prefix > 32) throw bad('width must be 0..32');
    const network = formatIp(networkOf(Uint8Array.from(address), prefix));
    return { family: 4, address: network, prefix, ...parsePorts(bad, portLow, portHigh), exclude };
  }
  const v6 = SUBNET6_BRACKETS.exec(trimmed) ?? SUBNET6_BARE.exec(trimmed);
  if (v6) {
    const [, address = '', width, portLow, portHigh] = v6;
    const ip = isIPv6(address) ? parseIp(address) : null;
    if (ip?.family !== 6) throw bad('not an IPv6 address');
    const prefix = width === undefined ? 128 : Number(width);
    if (prefix > 128) throw bad('width must be 0..128');
    return { family: 6, address: formatIp(networkOf(ip.bytes, prefix)), prefix, ...parsePorts(bad, portLow, portHigh), exclude };
  }
  throw bad('expected a.b.c.d[/width][:port[-port]] or [ipv6][/width]');
}

export const isNamedSubnet = (value: SubnetRule | NamedSubnet): value is NamedSubnet => 'name' in value;

const NAMED = /^([^:/\[\]]+?)(?::(\d+)(?:-(\d+))?)?$/;

/**
 * A subnet as parseSubnet reads it, or a host name with an optional port or range
 * (`example.com`, `example.com:443`, `db.lan:5432-5433`), which the remote resolves later.
 * Text that looks like an address (digits and dots, colons) is always read as one, so a typo
 * in an address is an error here and never a name.
 */
export function parseSubnetOrName(text: string, exclude = false, context?: string): SubnetRule | NamedSubnet {
  const trimmed = text.trim();
  const bareV6 = SUBNET6_BARE.exec(trimmed);
  const looksLikeName = /[a-zA-Z_]/.test(trimmed.replace(/\[.*\]/, '')) && !(bareV6 && isIPv6(bareV6[1] ?? ''));
  const named = looksLikeName ? NAMED.exec(trimmed) : null;
  if (!named) return parseSubnet(text, exclude, context);
  const [, name = '', portLow, portHigh] = named;
  const bad = (why: string) => new UsageError(`${context ?? 'invalid subnet'} "${text}": ${why}`);
  if (!isValidHostName(name)) throw bad('not a subnet, nor a valid host name');
  return { name: name.toLowerCase(), ...parsePorts(bad, portLow, portHigh), exclude };
}

function parsePorts(bad: (why: string) => UsageError, low?: string, high?: string): { portLow: number; portHigh: number } {
  if (low === undefined) return { portLow: 0, portHigh: 0 };
  const portLow = Number(low);
  const portHigh = high === undefined ? portLow : Number(high);
  if (portLow < 1 || portHigh > 65535 || portLow > portHigh) throw bad('invalid port range');
  return { portLow, portHigh };
}

/**
 * A user's uid or a group's gid: a number as is, a name through the system's databases (`getent`,
 * so LDAP and the like answer too). A UsageError naming the option when there is no such one.
 */
export function lookupId(database: 'passwd' | 'group', value: string | number, option: string, getent: (db: string, key: string) => string | null = runGetent): number {
  const text = String(value).trim();
  if (/^\d{1,10}$/.test(text) && Number(text) <= 2 ** 32 - 2) return Number(text);
  if (!/^[A-Za-z0-9._][A-Za-z0-9._-]{0,63}\$?$/.test(text)) throw new UsageError(`${option} "${text}": not a ${database === 'passwd' ? 'user' : 'group'} name or number`);
  const entry = getent(database, text);
  const id = entry?.split(':')[2];
  if (id === undefined || !/^\d+$/.test(id)) throw new UsageError(`${option} "${text}": no such ${database === 'passwd' ? 'user' : 'group'}`);
  return Number(id);
}

function runGetent(database: string, key: string): string | null {
  const result = spawnSync('getent', [database, key], { encoding: 'utf8', timeout: 10_000 });
  return result.status === 0 ? result.stdout.split('\n')[0] ?? null : null;
}

/** `--tmark MARK`: a firewall mark, decimal or 0x-hex, 1..0xffffffff. */
export function parseTmark(value: number | string): number {
  const text = String(value).trim();
  const mark = /^0x[0-9a-f]{1,8}$/i.test(text) ? Number.parseInt(text, 16) : /^\d{1,10}$/.test(text) ? Number(text) : Number.NaN;
  if (!Number.isInteger(mark) || mark < 1 || mark > 0xffff_ffff) throw new UsageError(`--tmark "${text}": expected a mark 1..0xffffffff, e.g. 0x01`);
  return mark;
}

/** `--keepalive SECONDS`: a whole number of seconds, 0 (off) to a day. */
export function parseKeepalive(value: number | string): number {
  const seconds = typeof value === 'number' ? value : /^\d+$/.test(value.trim()) ? Number(value) : Number.NaN;
  if (!Number.isInteger(seconds) || seconds < 0 || seconds > 86_400) {
    throw new UsageError(`--keepalive "${value}": expected whole seconds, 0 (off) to 86400`);
  }
  return seconds;
}

function resolveDns(options: ConnectOptions): DnsOptions | undefined {
  const nameservers = options.nsHosts === undefined ? undefined : parseNameservers(options.nsHosts);
  const toNs = typeof options.toNs === 'string' ? parseToNs(options.toNs) : options.toNs;
  if (!options.dns && nameservers === undefined) {
    if (toNs !== undefined) throw new UsageError('--to-ns needs --dns or --ns-hosts');
    return undefined;
  }
  const base: DnsOptions = typeof options.dns === 'object' ? options.dns : {};
  const servers = nameservers ?? base.nameservers;
  const target = toNs ?? base.toNs;
  return { ...(servers ? { nameservers: servers } : {}), ...(target ? { toNs: target } : {}) };
}

const list = (value: string | readonly string[]): string[] =>
  (typeof value === 'string' ? value.split(',') : [...value]).map((item) => item.trim()).filter((item) => item.length > 0);

/** `--ns-hosts ip,ip…`: addresses (IPv4 or IPv6, no prefix), in canonical form, without duplicates. */
export function parseNameservers(value: string | readonly string[]): string[] {
  const out: string[] = [];
  for (const item of list(value)) {
    const bare = item.replace(/^\[(.*)\]$/, '$1');
    if (!isIPv4(bare) && !isIPv6(bare)) throw new UsageError(`invalid --ns-hosts "${item}": expected IP addresses, comma-separated`);
    const address = parseSubnet(bare).address;
    if (!out.includes(address)) out.push(address);
  }
  if (out.length === 0) throw new UsageError('--ns-hosts: no address given');
  return out;
}

/** `--to-ns ip[:port]` (IPv6: `[ip]:port` or a bare address); port 53 by default. */
export function parseToNs(text: string): Destination {
  const bracketed = /^\[([^\]]+)\](?::(\d+))?$/.exec(text);
  const v4 = /^([\d.]+)(?::(\d+))?$/.exec(text);
  const [, host = text, portText] = bracketed ?? v4 ?? [];
  const port = portText === undefined ? 53 : Number(portText);
  if (!(isIPv4(host) || isIPv6(host)) || !Number.isInteger(port) || port < 1 || port > 65535) {
    throw new UsageError(`invalid --to-ns "${text}": expected ip[:port], e.g. 10.0.0.53 or [fd00::53]:5353`);
  }
  const family = isIPv4(host) ? 4 : 6;
  return { family, address: parseSubnet(host).address, port };
}

/** `--seed-hosts a,b,c`: host names or addresses. */
export function parseSeedHosts(value: string | readonly string[]): string[] {
  const seeds = list(value);
  for (const seed of seeds) {
    if (!isValidHostName(seed) && !isIPv4(seed) && !isIPv6(seed)) throw new UsageError(`invalid --seed-hosts entry "${seed}"`);
  }
  if (seeds.length > 100) throw new UsageError('--seed-hosts: at most 100 names');
  return seeds;
}

/**
 * `-X/--exclude-from FILE` (excludes) and `-s/--subnets FILE` (subnets): one subnet per line;
 * blank lines and # comments are skipped. Errors name the option, the file and the line.
 */
export function readSubnetFile(
  path: string,
  exclude = true,
  option = exclude ? '-X/--exclude-from' : '-s/--subnets',
): (SubnetRule | NamedSubnet)[] {
  let content: string;
  try {
    content = readFileSync(path, 'utf8');
  } catch (err) {
    throw new UsageError(`${option} ${path}: cannot read it: ${errnoWords(err)}`);
  }
  const rules: (SubnetRule | NamedSubnet)[] = [];
  for (const [index, raw] of content.split('\n').entries()) {
    const line = raw.replace(/#.*/, '').trim();
    if (line.length > 0) rules.push(parseSubnetOrName(line, exclude, `${option} ${path}, line ${index + 1}: invalid subnet`));
  }
  return rules;
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
    if (!/^\d+$/.test(p)) throw new UsageError(`-r/--remote "${text}": port must be a number`);
    port = Number(p);
  }
  if (user !== undefined && !/^[^\s@:]+$/.test(user)) throw new UsageError(`-r/--remote "${text}": bad user name`);
  if (!/^[A-Za-z0-9._-]+$/.test(host) && !isIPv6(host)) throw new UsageError(`-r/--remote "${text}": bad host name`);
  if (host.startsWith('-')) throw new UsageError(`-r/--remote "${text}": host may not start with "-"`);
  if (port !== undefined && (port < 1 || port > 65535)) throw new UsageError(`-r/--remote "${text}": port out of range`);
  return { ...(user === undefined ? {} : { user }), host, ...(port === undefined ? {} : { port }) };
}

/**
 * `-l/--listen [ip:]port[,[ip:]port...]`. A bare port listens on 127.0.0.1; a bare address (or
 * `localhost`, which is 127.0.0.1) on port 0, the first port from 12300 that is free on every
 * address. IPv6 goes in brackets: `[::1]:0`. Several addresses (IPv4 and IPv6 listeners at once,
 * as sshuttle takes them) share one port, since the rules redirect to one: two different ports
 * are an error, and a port given for one address holds for all.
 */
export function parseListen(text: string): ListenSpec {
  const bad = (why: string) => new UsageError(`-l/--listen "${text}": ${why}`);
  const hosts: string[] = [];
  const ports = new Set<number>();
  for (const item of text.split(',')) {
    const { host, port } = parseListenAddress(item.trim(), bad);
    if (!hosts.includes(host)) hosts.push(host);
    if (port !== 0) ports.add(port);
  }
  if (ports.size > 1) throw bad(`one port for all addresses, as the firewall redirects to one (got ${[...ports].join(' and ')})`);
  const [host = '127.0.0.1', ...more] = hosts;
  return { host, port: [...ports][0] ?? 0, ...(more.length > 0 ? { more } : {}) };
}

function parseListenAddress(item: string, bad: (why: string) => UsageError): { host: string; port: number } {
  const portOnly = /^(\d+)$/.exec(item);
  const bracketed = /^\[([^\]]*)\](?::(\d+))?$/.exec(item);
  const named = /^([^:[\]]+)(?::(\d+))?$/.exec(item);
  const [, given, portText] = portOnly ? [item, '127.0.0.1', portOnly[1]] : (bracketed ?? named ?? []);
  const host = given === 'localhost' ? '127.0.0.1' : given;
  const valid = host !== undefined && (bracketed ? isIPv6(host) : isIPv4(host));
  if (!valid) throw bad('expected [ip:]port, comma-separated (ip: an IPv4 address, localhost, or an IPv6 one in brackets)');
  const port = portText === undefined ? 0 : Number(portText);
  if (port > 65535) throw bad('port out of range');
  return { host, port };
}

/**
 * Splits text into words the way a shell would for simple quoting (no expansion of any kind):
 * `ssh -F "my cfg"`. Returns null for an unbalanced quote or a trailing backslash.
 */
export function splitShellWords(text: string): string[] | null {
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
  if (consumed !== text.length) return null;
  if (current !== null) words.push(current);
  return words;
}

/** `-e/--ssh-cmd`: the ssh command and its options, split as a shell would: -e 'ssh -F "my cfg"'. */
export function splitCommand(text: string): string[] {
  const words = splitShellWords(text);
  if (words === null) throw new UsageError(`-e/--ssh-cmd "${text}": unbalanced quote or trailing backslash`);
  if (words.length === 0) throw new UsageError('-e/--ssh-cmd: empty command');
  return words;
}
