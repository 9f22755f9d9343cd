// The e2e test lab: three network namespaces joined by veth pairs, a real
// sshd, real target services. See DESIGN.md, "Test lab".
//
//   <prefix>-cli  10.99.0.1/24 (fd00:99::1/64)          default route via srv
//        │ veth <prefix>-c0 ── <prefix>-s0
//   <prefix>-srv  10.99.0.2/24 + 10.98.0.2/24 (fd00:99::2, fd00:98::2)
//                 sshd on 10.99.0.2:22 (key auth, node on PATH)
//                 sshd on 10.99.0.2:2222 (same key, node hidden; :2223 the
//                 same without TCP forwarding)
//                 ip_forward=0: cli reaches tgt only through a tunnel
//        │ veth <prefix>-s1 ── <prefix>-t0
//   <prefix>-tgt  10.98.0.3/24 + 10.98.0.4 + 10.98.0.5 (fd00:98::3/64)
//                 default route via srv; HTTP :80, TCP+UDP echo :7 on
//                 .3/.4/.5, nothing on :81; dnsmasq :53 on .3 when `dns`
//
// Several labs run side by side (one per test file): every name carries a
// random prefix (`rxs` + 4 hex), every file lives in its own state dir.
// Needs root. A missing program is an Error naming its Debian package.
//
// It must run outside vitest too: scripts/lab.sh bundles it with esbuild and
// runs it with plain Node. So Node built-ins only, and test/support/wait-until.ts
// (plain Node as well); nothing from vitest or npm packages.
import { type ChildProcess, spawn as cpSpawn, execFileSync, type SpawnOptions } from 'node:child_process';
import { createCipheriv, createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { waitUntil } from '../support/wait-until.js';

// bench/run.mjs polls with the lab's own helper.
export { waitUntil };

/** Addresses and ports of the topology (the same in every lab instance). */
export const LAB = {
  cli: '10.99.0.1',
  srv: '10.99.0.2',
  srvTargetSide: '10.98.0.2',
  target: '10.98.0.3',
  target4: '10.98.0.4',
  target5: '10.98.0.5',
  clientSubnet: '10.99.0.0/24',
  targetSubnet: '10.98.0.0/24',
  cli6: 'fd00:99::1',
  srv6: 'fd00:99::2',
  srvTargetSide6: 'fd00:98::2',
  target6: 'fd00:98::3',
  targetSubnet6: 'fd00:98::/64',
  sshPort: 22,
  sshPortNoNode: 2222,
  /** The no-node sshd's second port, where TCP forwarding is off (Match LocalPort). */
  sshPortNoNodeNoForwarding: 2223,
  httpPort: 80,
  echoPort: 7,
  closedPort: 81,
  dnsPort: 53,
} as const;

/** Host aliases in `lab.sshConfigPath`. */
export const SSH_HOST = 'lab';
export const SSH_HOST_NO_NODE = 'lab-nonode';
export const SSH_HOST_NO_NODE_NO_FORWARDING = 'lab-nonode-nofwd';
export const SSH_HOST6 = 'lab6';

/** The page served at http://10.98.0.3/ contains this string. */
export const PAGE_MARKER = 'rxshuttle-lab-target-ok';

/** Names dnsmasq answers (with `dns: true`), all under the `lab.` domain. */
export const DNS_NAMES: Readonly<Record<string, string>> = {
  'target.lab': LAB.target,
  'echo4.lab': LAB.target4,
  'echo5.lab': LAB.target5,
};

export type Role = 'cli' | 'srv' | 'tgt';
const ROLES: readonly Role[] = ['cli', 'srv', 'tgt'];

export interface LabOptions {
  /** Name prefix; default `rxs` + 4 random hex digits. At most 10 chars. */
  prefix?: string;
  /** Start dnsmasq in tgt on 10.98.0.3:53 and point cli's and srv's
   *  resolv.conf (via /etc/netns/<ns>/) at it. Default false. */
  dns?: boolean;
  /** More dnsmasq arguments with `dns` (extra records, e.g. `--txt-record=…`). */
  dnsmasqArgs?: readonly string[];
  /** srv's /etc/hosts (written to /etc/netns/<srv>/hosts before sshd starts);
   *  default: srv sees the machine's own. */
  srvHosts?: string;
  /** Add the IPv6 addresses and routes (fd00:99::/64, fd00:98::/64); the
   *  target services and sshd listen on them too. Default false. */
  ipv6?: boolean;
  /** Start the node-less sshd on port 2222. Default true. */
  noNodeSshd?: boolean;
  /** How to hide node from port 2222: default 'overlay', falling back to
   *  'bind' when overlayfs cannot be mounted; 'bind' forces the fallback. */
  hideNodeWith?: 'overlay' | 'bind';
  /** Start the HTTP/echo services in tgt. Default true. */
  targetServices?: boolean;
  /** Path of target-server.mjs; default: next to this file. */
  targetServerScript?: string;
  /** The node binary for the target server and the sshd PATH; default process.execPath. */
  nodePath?: string;
  /** Keep the state dir after down() (for debugging). Default false. */
  keepStateDir?: boolean;
}

export interface ExecOptions {
  /** Kill (SIGKILL) after this many ms; default 30 000. */
  timeoutMs?: number;
  /** Written to stdin, then stdin is closed (stdin is closed at once without it). */
  input?: string | Buffer;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

export interface ExecResult {
  /** Exit code; null when killed by a signal (e.g. on timeout). */
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  stdoutBuffer: Buffer;
  timedOut: boolean;
}

export interface SpawnLabOptions {
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  stdio?: SpawnOptions['stdio'];
}

/** Debian package of each program the lab may need. */
export const PACKAGES: Readonly<Record<string, string>> = {
  ip: 'iproute2',
  ss: 'iproute2',
  sshd: 'openssh-server',
  ssh: 'openssh-client',
  'ssh-keygen': 'openssh-client',
  iptables: 'iptables',
  'iptables-save': 'iptables',
  ip6tables: 'iptables',
  'ip6tables-save': 'iptables',
  nft: 'nftables',
  curl: 'curl',
  socat: 'socat',
  iperf3: 'iperf3',
  dnsmasq: 'dnsmasq',
  dig: 'dnsutils',
  unshare: 'util-linux',
  mount: 'mount',
  pgrep: 'procps',
  sysctl: 'procps',
};

const EXTRA_DIRS = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];
/** The PATH sshd gives root sessions on Debian (SUPERUSER_PATH). */
const ROOT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** Absolute path of a program or undefined (searches PATH and the sbin dirs). */
export function findProgram(name: string): string | undefined {
  const dirs = [...(process.env['PATH'] ?? '').split(':').filter(Boolean), ...EXTRA_DIRS];
  for (const d of dirs) {
    const p = path.join(d, name);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      if (fs.statSync(p).isFile()) return p;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** Absolute path of a program; throws naming the Debian package when missing. */
export function requireProgram(name: string, pkg: string | undefined = PACKAGES[name]): string {
  const p = findProgram(name);
  if (p) return p;
  throw new Error(
    `e2e lab: required program '${name}' not found` +
      (pkg ? ` — install it with: apt-get install -y ${pkg}` : '') +
      ' (.ci/run installs every lab prerequisite)',
  );
}

/** Throws unless root and every program the lab needs is present. */
export function checkPrerequisites(opts: Pick<LabOptions, 'dns'> = {}): void {
  if (process.platform !== 'linux') throw new Error('e2e lab: needs Linux (network namespaces)');
  if (process.getuid?.() !== 0) {
    throw new Error('e2e lab: must run as root (ip netns, iptables, sshd); run the tests with sudo or as root');
  }
  const progs = ['ip', 'sysctl', 'sshd', 'ssh', 'ssh-keygen', 'iptables', 'iptables-save', 'curl', 'socat', 'unshare', 'mount'];
  if (opts.dns) progs.push('dnsmasq');
  const missing = progs.filter((p) => !findProgram(p));
  if (missing.length > 0) {
    const pkgs = [...new Set(missing.map((p) => PACKAGES[p] ?? p))];
    throw new Error(
      `e2e lab: required program(s) not found: ${missing.join(', ')} — install with: ` +
        `apt-get install -y ${pkgs.join(' ')} (.ci/run installs every lab prerequisite)`,
    );
  }
}

// ---------------------------------------------------------------------------
// Deterministic bytes: the same generator as /bytes/<n> of target-server.mjs.

function bytesCipher(seed: string) {
  const key = createHash('sha256').update(`rxshuttle-lab-bytes:${seed}`).digest().subarray(0, 16);
  return createCipheriv('aes-128-ctr', key, Buffer.alloc(16));
}

/** The n bytes that GET /bytes/<n>?seed=<seed> serves. */
export function labBytes(n: number, seed = '0'): Buffer {
  return bytesCipher(seed).update(Buffer.alloc(n));
}

/** Hex sha256 of labBytes(n, seed), computed without holding n bytes. */
export function labBytesSha256(n: number, seed = '0'): string {
  const c = bytesCipher(seed);
  const h = createHash('sha256');
  const zeros = Buffer.alloc(1 << 20);
  for (let left = n; left > 0; ) {
    const len = Math.min(zeros.length, left);
    h.update(c.update(len === zeros.length ? zeros : zeros.subarray(0, len)));
    left -= len;
  }
  return h.digest('hex');
}

// ---------------------------------------------------------------------------
// Small process helpers.

function run(argv: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
  const [cmd, ...args] = argv;
  if (cmd === undefined) return Promise.reject(new Error('run: empty argv'));
  return new Promise((resolve) => {
    const child = cpSpawn(cmd, args, {
      stdio: ['pipe', 'pipe', 'pipe'],
      ...(opts.env ? { env: opts.env } : {}),
      ...(opts.cwd ? { cwd: opts.cwd } : {}),
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timedOut = false;
    let spawnError: Error | undefined;
    child.stdout?.on('data', (d: Buffer) => out.push(d));
    child.stderr?.on('data', (d: Buffer) => err.push(d));
    child.stdin?.on('error', () => {});
    child.on('error', (e) => {
      spawnError = e;
    });
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, opts.timeoutMs ?? 30_000);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const stdoutBuffer = Buffer.concat(out);
      let stderr = Buffer.concat(err).toString();
      if (spawnError) stderr += `${stderr ? '\n' : ''}spawn ${cmd}: ${spawnError.message}`;
      resolve({
        code: spawnError && code === null && signal === null ? 127 : code,
        signal,
        stdout: stdoutBuffer.toString(),
        stderr,
        stdoutBuffer,
        timedOut,
      });
    });
    if (opts.input !== undefined) child.stdin?.end(opts.input);
    else child.stdin?.end();
  });
}

function describe(argv: readonly string[], r: ExecResult): string {
  const how = r.timedOut ? 'timed out' : r.code !== null ? `exited ${r.code}` : `killed by ${r.signal}`;
  return `\`${argv.join(' ')}\` ${how}${r.stderr.trim() ? `: ${r.stderr.trim()}` : ''}`;
}

async function runOk(argv: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
  const r = await run(argv, opts);
  if (r.code !== 0) throw new Error(describe(argv, r));
  return r;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function procStartTime(pid: number): string | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // fields after the ")" of comm; starttime is field 22 overall → index 19 here
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

function netnsInode(name: string): number | undefined {
  try {
    return fs.statSync(`/run/netns/${name}`).ino;
  } catch {
    return undefined;
  }
}

function pidNetnsInode(pid: number): number | undefined {
  try {
    const m = /\[(\d+)\]/.exec(fs.readlinkSync(`/proc/${pid}/ns/net`));
    return m?.[1] !== undefined ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

function readPid(file: string): number | undefined {
  try {
    const n = Number(fs.readFileSync(file, 'utf8').trim());
    return Number.isInteger(n) && n > 1 ? n : undefined;
  } catch {
    return undefined;
  }
}

function tryKill(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // gone already
  }
}

/** Resolves with everything the child printed (stdout+stderr) once `pattern`
 *  matches it; rejects on exit or timeout, quoting the output so far. */
export function waitForOutput(child: ChildProcess, pattern: RegExp | string, timeoutMs = 20_000): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    const test = () => (typeof pattern === 'string' ? text.includes(pattern) : pattern.test(text));
    const cleanup = () => {
      clearTimeout(timer);
      child.stdout?.off('data', onData);
      child.stderr?.off('data', onData);
      child.off('exit', onExit);
    };
    const onData = (d: Buffer) => {
      text += d.toString();
      if (test()) {
        cleanup();
        resolve(text);
      }
    };
    const onExit = (code: number | null, sig: NodeJS.Signals | null) => {
      cleanup();
      reject(new Error(`process exited (${code ?? sig}) before printing ${String(pattern)}; output:\n${text}`));
    };
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`timeout (${timeoutMs} ms) waiting for ${String(pattern)}; output so far:\n${text}`));
    }, timeoutMs);
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    if (child.exitCode !== null || child.signalCode !== null) onExit(child.exitCode, child.signalCode);
    else child.on('exit', onExit);
  });
}

/** Sends `signal`, waits up to timeoutMs for the exit, then SIGKILLs.
 *  Resolves with how the process ended. */
export async function stopProcess(
  child: ChildProcess,
  signal: NodeJS.Signals = 'SIGTERM',
  timeoutMs = 5_000,
): Promise<{ code: number | null; signal: NodeJS.Signals | null; killed: boolean }> {
  if (child.exitCode !== null || child.signalCode !== null) {
    return { code: child.exitCode, signal: child.signalCode, killed: false };
  }
  const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
  child.kill(signal);
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<'timeout'>((r) => {
    timer = setTimeout(() => r('timeout'), timeoutMs);
  });
  const first = await Promise.race([exited, timeout]);
  clearTimeout(timer);
  if (first !== 'timeout') return { code: first[0], signal: first[1], killed: false };
  child.kill('SIGKILL');
  const [code, sig] = await exited;
  return { code, signal: sig, killed: true };
}

// ---------------------------------------------------------------------------
// Ownership records (so a crashed run's namespaces are swept by the next one)
// and the last-resort cleanup on exit/signals.

const OWNER_DIR = '/run/rxshuttle-lab';
const NS_RE = /^(rxs[0-9a-f]{4})-(cli|srv|tgt)$/;

function ownerFile(prefix: string): string {
  return path.join(OWNER_DIR, `${prefix}.owner`);
}

function listNetns(): string[] {
  try {
    return fs.readdirSync('/run/netns');
  } catch {
    return [];
  }
}

/** Removes labs whose owning process is gone (crashed or SIGKILLed runs).
 *  Labs of live processes (other test files, other people) are left alone. */
export function sweepStaleLabs(): string[] {
  const swept: string[] = [];
  const prefixes = new Set<string>();
  for (const n of listNetns()) {
    const m = NS_RE.exec(n);
    if (m?.[1]) prefixes.add(m[1]);
  }
  try {
    for (const f of fs.readdirSync(OWNER_DIR)) if (f.endsWith('.owner')) prefixes.add(f.slice(0, -6));
  } catch {
    // no owner dir yet
  }
  for (const prefix of prefixes) {
    let owner: { pid: number; start: string | undefined; stateDir: string } | undefined;
    try {
      owner = JSON.parse(fs.readFileSync(ownerFile(prefix), 'utf8')) as typeof owner;
    } catch {
      continue; // unknown owner: not ours to judge
    }
    if (!owner) continue;
    if (alive(owner.pid) && procStartTime(owner.pid) === owner.start) continue;
    cleanupSync(prefix, owner.stateDir, []);
    swept.push(prefix);
  }
  return swept;
}

const liveLabs = new Set<TestLab>();
let handlersInstalled = false;

function installExitHandlers(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  process.on('exit', () => {
    for (const lab of liveLabs) lab.downSync();
  });
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const handler = () => {
      // Someone else handles this signal (vitest, scripts/lab.sh): let them
      // call down(); the 'exit' hook above still runs if they just exit.
      if (process.listenerCount(sig) > 1) return;
      // Otherwise clean up now and die of the signal, as the default would.
      for (const lab of liveLabs) lab.downSync();
      process.removeListener(sig, handler);
      process.kill(process.pid, sig);
    };
    process.on(sig, handler);
  }
}

/** Synchronous, best-effort: kill everything in the namespaces, delete them,
 *  remove /etc/netns entries, the owner record and the state dir. */
function cleanupSync(prefix: string, stateDir: string | undefined, extraPids: number[]): void {
  for (const pid of extraPids) tryKill(pid, 'SIGKILL');
  for (const role of ROLES) {
    const ns = `${prefix}-${role}`;
    const ino = netnsInode(ns);
    if (ino === undefined) continue;
    for (const pid of pidsInNetnsSync(ino)) tryKill(pid, 'SIGKILL');
    try {
      execFileSync(findProgram('ip') ?? 'ip', ['netns', 'del', ns], { stdio: 'ignore' });
    } catch {
      // already gone
    }
  }
  for (const role of ROLES) fs.rmSync(`/etc/netns/${prefix}-${role}`, { recursive: true, force: true });
  if (stateDir) fs.rmSync(stateDir, { recursive: true, force: true });
  fs.rmSync(ownerFile(prefix), { force: true });
}

/** Pids whose network namespace is the one with this inode (like `ip netns pids`). */
function pidsInNetnsSync(ino: number): number[] {
  const pids: number[] = [];
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    const pid = Number(d);
    if (pid === process.pid) continue;
    if (pidNetnsInode(pid) === ino) pids.push(pid);
  }
  return pids;
}

// ---------------------------------------------------------------------------

export class TestLab {
  readonly prefix: string;
  /** Full namespace names by role. */
  readonly ns: Readonly<Record<Role, string>>;
  /** veth names: cli side, srv side towards cli, srv side towards tgt, tgt side. */
  readonly veth: { readonly cli: string; readonly srvCli: string; readonly srvTgt: string; readonly tgt: string };
  readonly stateDir: string;
  /** ssh_config with Host `lab` (port 22), `lab-nonode` (port 2222), `lab6` (IPv6). */
  readonly sshConfigPath: string;
  /** The client's private key. */
  readonly identityPath: string;
  /** For rxshuttle's `-e`: `ssh -F <sshConfigPath>`. */
  readonly sshCommand: string;
  readonly sshHost = SSH_HOST;
  readonly sshHostNoNode = SSH_HOST_NO_NODE;
  readonly sshHostNoNodeNoForwarding = SSH_HOST_NO_NODE_NO_FORWARDING;
  readonly sshHost6 = SSH_HOST6;
  /** The node binary used in the lab (target server, PATH of port-22 sessions). */
  readonly nodePath: string;
  readonly options: Readonly<LabOptions>;
  /** How node was hidden from port-2222 sessions: an overlay whiteout (node is
   *  really absent: exit 127) or a /dev/null bind mount (exit 126). */
  noNodeMethod: 'overlay' | 'bind' | undefined;

  private readonly children = new Set<ChildProcess>();
  private readonly pidFiles: string[];
  private state: 'new' | 'starting' | 'up' | 'down' = 'new';
  private downPromise: Promise<void> | undefined;
  private ipPath = 'ip';

  constructor(opts: LabOptions = {}) {
    this.options = { ...opts };
    const prefix = opts.prefix ?? `rxs${randomBytes(2).toString('hex')}`;
    if (!/^[a-z][a-z0-9]{0,9}$/.test(prefix)) throw new Error(`e2e lab: bad prefix '${prefix}' (lowercase alnum, ≤10 chars)`);
    this.prefix = prefix;
    this.ns = { cli: `${prefix}-cli`, srv: `${prefix}-srv`, tgt: `${prefix}-tgt` };
    this.veth = { cli: `${prefix}-c0`, srvCli: `${prefix}-s0`, srvTgt: `${prefix}-s1`, tgt: `${prefix}-t0` };
    this.stateDir = path.join(os.tmpdir(), `rxshuttle-lab-${prefix}`);
    this.sshConfigPath = path.join(this.stateDir, 'ssh_config');
    this.identityPath = path.join(this.stateDir, 'id_ed25519');
    this.sshCommand = `ssh -F ${this.sshConfigPath}`;
    this.nodePath = opts.nodePath ?? process.execPath;
    this.pidFiles = ['sshd.pid', 'sshd-nonode.pid', 'dnsmasq.pid'].map((f) => path.join(this.stateDir, f));
  }

  /** `ssh -F <cfg> <host>` as argv, to append a remote command to. */
  sshArgv(host: string = SSH_HOST): string[] {
    return ['ssh', '-F', this.sshConfigPath, host];
  }

  /** Builds the lab. On any failure it tears down what it built and throws. */
  async up(): Promise<this> {
    if (this.state !== 'new') throw new Error(`e2e lab ${this.prefix}: up() called twice`);
    this.state = 'starting';
    checkPrerequisites(this.options);
    this.ipPath = requireProgram('ip');
    sweepStaleLabs();
    const taken = new Set(listNetns());
    if (ROLES.some((r) => taken.has(this.ns[r])) || fs.existsSync(this.stateDir)) {
      this.state = 'down';
      throw new Error(`e2e lab: prefix ${this.prefix} is in use (namespace or ${this.stateDir} exists)`);
    }
    fs.mkdirSync(this.stateDir, { mode: 0o700 });
    fs.mkdirSync(OWNER_DIR, { recursive: true });
    fs.writeFileSync(
      ownerFile(this.prefix),
      JSON.stringify({ pid: process.pid, start: procStartTime(process.pid), stateDir: this.stateDir }),
    );
    liveLabs.add(this);
    installExitHandlers();
    try {
      await this.buildNetwork();
      await this.writeEtcNetns();
      await this.startSshd();
      if (this.options.targetServices !== false) await this.startTargetServices();
      if (this.options.dns) await this.startDnsmasq();
    } catch (e) {
      await this.down().catch(() => {});
      throw e;
    }
    this.state = 'up';
    return this;
  }

  private async ip(...args: string[]): Promise<void> {
    await runOk([this.ipPath, ...args], { timeoutMs: 10_000 });
  }

  private async buildNetwork(): Promise<void> {
    const { cli, srv, tgt } = this.ns;
    const v = this.veth;
    const v6 = this.options.ipv6 === true;
    for (const n of [cli, srv, tgt]) {
      await this.ip('netns', 'add', n);
      await this.ip('-n', n, 'link', 'set', 'lo', 'up');
    }
    // Created directly inside the namespaces: the names never touch the root one.
    await this.ip('link', 'add', v.cli, 'netns', cli, 'type', 'veth', 'peer', 'name', v.srvCli, 'netns', srv);
    await this.ip('link', 'add', v.srvTgt, 'netns', srv, 'type', 'veth', 'peer', 'name', v.tgt, 'netns', tgt);
    const sysctl = async (n: string, kv: string) => {
      await runOk([this.ipPath, 'netns', 'exec', n, requireProgram('sysctl'), '-qw', kv]);
    };
    if (v6) {
      // Before the links come up, so no router solicitation / autoconf noise.
      for (const n of [cli, srv, tgt]) await sysctl(n, 'net.ipv6.conf.all.disable_ipv6=0');
    }
    await this.ip('-n', cli, 'addr', 'add', `${LAB.cli}/24`, 'dev', v.cli);
    await this.ip('-n', srv, 'addr', 'add', `${LAB.srv}/24`, 'dev', v.srvCli);
    await this.ip('-n', srv, 'addr', 'add', `${LAB.srvTargetSide}/24`, 'dev', v.srvTgt);
    await this.ip('-n', tgt, 'addr', 'add', `${LAB.target}/24`, 'dev', v.tgt);
    await this.ip('-n', tgt, 'addr', 'add', `${LAB.target4}/24`, 'dev', v.tgt);
    await this.ip('-n', tgt, 'addr', 'add', `${LAB.target5}/24`, 'dev', v.tgt);
    if (v6) {
      await this.ip('-n', cli, '-6', 'addr', 'add', `${LAB.cli6}/64`, 'dev', v.cli, 'nodad');
      await this.ip('-n', srv, '-6', 'addr', 'add', `${LAB.srv6}/64`, 'dev', v.srvCli, 'nodad');
      await this.ip('-n', srv, '-6', 'addr', 'add', `${LAB.srvTargetSide6}/64`, 'dev', v.srvTgt, 'nodad');
      await this.ip('-n', tgt, '-6', 'addr', 'add', `${LAB.target6}/64`, 'dev', v.tgt, 'nodad');
    }
    await this.ip('-n', cli, 'link', 'set', v.cli, 'up');
    await this.ip('-n', srv, 'link', 'set', v.srvCli, 'up');
    await this.ip('-n', srv, 'link', 'set', v.srvTgt, 'up');
    await this.ip('-n', tgt, 'link', 'set', v.tgt, 'up');
    await this.ip('-n', cli, 'route', 'add', 'default', 'via', LAB.srv);
    await this.ip('-n', tgt, 'route', 'add', 'default', 'via', LAB.srvTargetSide);
    if (v6) {
      await this.ip('-n', cli, '-6', 'route', 'add', 'default', 'via', LAB.srv6);
      await this.ip('-n', tgt, '-6', 'route', 'add', 'default', 'via', LAB.srvTargetSide6);
    }
    // The point of the lab: srv does not route between cli and tgt.
    await sysctl(srv, 'net.ipv4.ip_forward=0');
    if (v6) await sysctl(srv, 'net.ipv6.conf.all.forwarding=0');
  }

  /** Files `ip netns exec` bind-mounts over /etc: cli gets a private
   *  /etc/hosts (so --auto-hosts never edits the machine's), and with `dns`
   *  cli and srv resolve through dnsmasq on 10.98.0.3. */
  private async writeEtcNetns(): Promise<void> {
    const dir = (role: Role) => `/etc/netns/${this.ns[role]}`;
    fs.mkdirSync(dir('cli'), { recursive: true });
    fs.writeFileSync(
      path.join(dir('cli'), 'hosts'),
      `127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n${LAB.cli}\t${this.ns.cli}\n`,
    );
    if (this.options.srvHosts !== undefined) {
      fs.mkdirSync(dir('srv'), { recursive: true });
      fs.writeFileSync(path.join(dir('srv'), 'hosts'), this.options.srvHosts);
    }
    if (this.options.dns) {
      const resolv = `# rxshuttle e2e lab ${this.prefix}\nnameserver ${LAB.target}\noptions timeout:2 attempts:1\n`;
      fs.writeFileSync(path.join(dir('cli'), 'resolv.conf'), resolv);
      fs.mkdirSync(dir('srv'), { recursive: true });
      fs.writeFileSync(path.join(dir('srv'), 'resolv.conf'), resolv);
    }
  }

  private sshdConfig(port: number, pathEnv: string, pidFile: string, noForwardingPort?: number): string {
    const listen = [`ListenAddress ${LAB.srv}:${port}`];
    if (this.options.ipv6) listen.push(`ListenAddress [${LAB.srv6}]:${port}`);
    if (noForwardingPort !== undefined) listen.push(`ListenAddress ${LAB.srv}:${noForwardingPort}`);
    return [
      ...listen,
      `HostKey ${path.join(this.stateDir, 'ssh_host_ed25519_key')}`,
      'PermitRootLogin yes',
      `AuthorizedKeysFile ${path.join(this.stateDir, 'authorized_keys')}`,
      'StrictModes no',
      'PubkeyAuthentication yes',
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
      'UsePAM no',
      'AllowTcpForwarding yes',
      'AllowStreamLocalForwarding yes',
      'MaxStartups 200',
      'MaxSessions 200',
      'UseDNS no',
      'PrintMotd no',
      `PidFile ${pidFile}`,
      // Overrides sshd's built-in PATH for the session (applied after it).
      `SetEnv PATH=${pathEnv}`,
      'Subsystem sftp internal-sftp',
      ...(noForwardingPort === undefined ? [] : [`Match LocalPort ${noForwardingPort}`, '  AllowTcpForwarding no']),
      '',
    ].join('\n');
  }

  private async startSshd(): Promise<void> {
    const sshd = requireProgram('sshd');
    const keygen = requireProgram('ssh-keygen');
    const sd = this.stateDir;
    const hostKey = path.join(sd, 'ssh_host_ed25519_key');
    await runOk([keygen, '-q', '-t', 'ed25519', '-N', '', '-C', `${this.prefix}-host`, '-f', hostKey]);
    await runOk([keygen, '-q', '-t', 'ed25519', '-N', '', '-C', `${this.prefix}-client`, '-f', this.identityPath]);
    fs.copyFileSync(`${this.identityPath}.pub`, path.join(sd, 'authorized_keys'));
    fs.mkdirSync('/run/sshd', { recursive: true, mode: 0o755 }); // privilege separation dir

    const nodeDir = path.dirname(fs.realpathSync(this.nodePath));
    const pathWithNode = [nodeDir, ...ROOT_PATH.split(':')].filter((d, i, a) => a.indexOf(d) === i).join(':');
    const cfg22 = path.join(sd, 'sshd_config');
    fs.writeFileSync(cfg22, this.sshdConfig(LAB.sshPort, pathWithNode, this.pidFiles[0]!));
    await runOk([this.ipPath, 'netns', 'exec', this.ns.srv, sshd, '-f', cfg22, '-E', path.join(sd, 'sshd.log')], {
      timeoutMs: 15_000,
    });

    // sshd writes its pid file after binding and daemonizing.
    await waitUntil(() => readPid(this.pidFiles[0]!), { timeoutMs: 10_000, intervalMs: 50, what: 'sshd pid file' });
    this.writeSshConfig();
    // Proves key auth works, and tells the PATH a session really gets (root's
    // ~/.bashrc may extend it, e.g. nvm): node is hidden in all of it below.
    const probe = await this.execOk('cli', [...this.sshArgv(), 'echo "$PATH"'], { timeoutMs: 20_000 }).catch((e: unknown) => {
      throw new Error(`e2e lab: ssh to the lab's sshd failed: ${(e as Error).message}\n${this.readLog('sshd.log')}`);
    });
    const sessionPath = probe.stdout.trim();

    if (this.options.noNodeSshd !== false) {
      const cfg2222 = path.join(sd, 'sshd_config_nonode');
      fs.writeFileSync(cfg2222, this.sshdConfig(LAB.sshPortNoNode, ROOT_PATH, this.pidFiles[1]!, LAB.sshPortNoNodeNoForwarding));
      // Hide node from this sshd only: a private mount namespace in which
      // every directory holding node (on either PATH) gets an overlay whose
      // upper layer deletes node/nodejs (a whiteout: the file does not exist).
      // If overlayfs is unavailable, /dev/null is bind-mounted over them.
      const dirs = new Set<string>();
      for (const d of [...pathWithNode.split(':'), ...sessionPath.split(':')]) {
        if (!path.isAbsolute(d)) continue;
        for (const name of ['node', 'nodejs']) {
          try {
            fs.lstatSync(path.join(d, name));
            dirs.add(fs.realpathSync(d));
          } catch {
            // absent
          }
        }
      }
      const hide = path.join(sd, 'hide');
      fs.mkdirSync(hide);
      const script = [
        'set -e',
        `mount -t tmpfs -o size=4m,mode=0700 rxshuttle-lab-hide "$HIDE"`,
        'method=overlay; i=0',
        'for d in "$@"; do',
        '  i=$((i+1)); mkdir -p "$HIDE/u$i" "$HIDE/w$i"',
        '  if [ "$FORCE_BIND" != 1 ] && mount -t overlay overlay -o "lowerdir=$d,upperdir=$HIDE/u$i,workdir=$HIDE/w$i" "$d" 2>/dev/null; then',
        '    rm -f "$d/node" "$d/nodejs"',
        '  else',
        '    method=bind',
        '    for f in node nodejs; do if [ -e "$d/$f" ]; then mount --bind /dev/null "$d/$f"; fi; done',
        '  fi',
        'done',
        'echo "$method" > "$METHOD_FILE"',
        'exec "$SSHD" -f "$CFG" -E "$LOG"',
      ].join('\n');
      const methodFile = path.join(sd, 'nonode-method');
      await runOk(
        [this.ipPath, 'netns', 'exec', this.ns.srv, requireProgram('unshare'), '-m', '--propagation', 'private',
          '/bin/sh', '-c', script, 'hide-node', ...dirs],
        {
          timeoutMs: 15_000,
          env: { ...process.env, FORCE_BIND: this.options.hideNodeWith === 'bind' ? '1' : '0', HIDE: hide, METHOD_FILE: methodFile, SSHD: sshd, CFG: cfg2222, LOG: path.join(sd, 'sshd-nonode.log') },
        },
      );
      const m = fs.readFileSync(methodFile, 'utf8').trim();
      this.noNodeMethod = m === 'overlay' || m === 'bind' ? m : undefined;
      // sshd writes its pid file after binding and daemonizing.
      await waitUntil(() => readPid(this.pidFiles[1]!), { timeoutMs: 10_000, intervalMs: 50, what: 'sshd pid file' });
    }
  }

  private readLog(name: string): string {
    try {
      return fs.readFileSync(path.join(this.stateDir, name), 'utf8');
    } catch {
      return '';
    }
  }

  private writeSshConfig(): void {
    const host = (alias: string, hostName: string, port: number) =>
      [
        `Host ${alias}`,
        `  HostName ${hostName}`,
        `  Port ${port}`,
        '  User root',
        `  IdentityFile ${this.identityPath}`,
        '  IdentitiesOnly yes',
        '  StrictHostKeyChecking no',
        '  UserKnownHostsFile /dev/null',
        '  LogLevel ERROR',
        '  BatchMode yes',
        '  ConnectTimeout 10',
        '',
      ].join('\n');
    let cfg = `# rxshuttle e2e lab ${this.prefix}\n` + host(SSH_HOST, LAB.srv, LAB.sshPort);
    cfg += host(SSH_HOST_NO_NODE, LAB.srv, LAB.sshPortNoNode);
    cfg += host(SSH_HOST_NO_NODE_NO_FORWARDING, LAB.srv, LAB.sshPortNoNodeNoForwarding);
    if (this.options.ipv6) cfg += host(SSH_HOST6, LAB.srv6, LAB.sshPort);
    fs.writeFileSync(this.sshConfigPath, cfg);
  }

  private async startTargetServices(): Promise<void> {
    const script =
      this.options.targetServerScript ?? fileURLToPath(new URL('./target-server.mjs', import.meta.url));
    if (!fs.existsSync(script)) throw new Error(`e2e lab: target server script not found: ${script}`);
    const v4 = [LAB.target, LAB.target4, LAB.target5];
    const cfg = {
      http: [`${LAB.target}:${LAB.httpPort}`, ...(this.options.ipv6 ? [`[${LAB.target6}]:${LAB.httpPort}`] : [])],
      echo: [...v4.map((a) => `${a}:${LAB.echoPort}`), ...(this.options.ipv6 ? [`[${LAB.target6}]:${LAB.echoPort}`] : [])],
      udpEcho: [...v4.map((a) => `${a}:${LAB.echoPort}`), ...(this.options.ipv6 ? [`[${LAB.target6}]:${LAB.echoPort}`] : [])],
    };
    const child = this.spawn('tgt', [this.nodePath, script, JSON.stringify(cfg)]);
    await waitForOutput(child, /^ready$/m, 15_000).catch((e: unknown) => {
      throw new Error(`e2e lab: target server did not start: ${(e as Error).message}`);
    });
  }

  private async startDnsmasq(): Promise<void> {
    const dnsmasq = requireProgram('dnsmasq');
    const args = [
      '--conf-file=/dev/null',
      '--no-resolv',
      '--no-hosts',
      '--no-poll',
      '--bind-interfaces',
      `--listen-address=${LAB.target}`,
      ...(this.options.ipv6 ? [`--listen-address=${LAB.target6}`] : []),
      '--user=root',
      '--group=root',
      `--pid-file=${this.pidFiles[2]}`,
      `--log-facility=${path.join(this.stateDir, 'dnsmasq.log')}`,
      '--log-queries',
      ...Object.entries(DNS_NAMES).map(([n, a]) =>
        n === 'target.lab' && this.options.ipv6 ? `--host-record=${n},${a},${LAB.target6}` : `--host-record=${n},${a}`,
      ),
      ...(this.options.dnsmasqArgs ?? []),
    ];
    // Without -k it daemonizes; the parent exits only after the bind succeeded.
    await runOk([this.ipPath, 'netns', 'exec', this.ns.tgt, dnsmasq, ...args], { timeoutMs: 15_000 });
    await waitUntil(() => readPid(this.pidFiles[2]!), { timeoutMs: 5_000, intervalMs: 50, what: 'dnsmasq pid file' });
  }

  // -------------------------------------------------------------------------

  private assertUsable(): void {
    if (this.state === 'down' || this.state === 'new') throw new Error(`e2e lab ${this.prefix} is not up`);
  }

  /** Runs argv inside a namespace; never throws for a non-zero exit. */
  exec(ns: Role, argv: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
    this.assertUsable();
    return run([this.ipPath, 'netns', 'exec', this.ns[ns], ...argv], opts);
  }

  /** Like exec() but throws (with stderr) unless the exit code is 0. */
  async execOk(ns: Role, argv: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
    const r = await this.exec(ns, argv, opts);
    if (r.code !== 0) throw new Error(`[${ns}] ${describe(argv, r)}`);
    return r;
  }

  /** Starts argv inside a namespace; the child is killed by down(). stdio is
   *  piped by default; an 'error' listener is attached so it never crashes. */
  spawn(ns: Role, argv: readonly string[], opts: SpawnLabOptions = {}): ChildProcess {
    this.assertUsable();
    const child = cpSpawn(this.ipPath, ['netns', 'exec', this.ns[ns], ...argv], {
      stdio: opts.stdio ?? ['pipe', 'pipe', 'pipe'],
      ...(opts.env ? { env: opts.env } : {}),
      ...(opts.cwd ? { cwd: opts.cwd } : {}),
    });
    child.on('error', () => {});
    child.stdin?.on('error', () => {});
    this.children.add(child);
    child.once('exit', () => this.children.delete(child));
    return child;
  }

  /** `iptables-save` (or ip6tables-save) text of a namespace, default cli. */
  async iptablesSave(ns: Role = 'cli', opts: { table?: string; ipv6?: boolean } = {}): Promise<string> {
    const prog = requireProgram(opts.ipv6 ? 'ip6tables-save' : 'iptables-save');
    const r = await this.execOk(ns, [prog, ...(opts.table ? ['-t', opts.table] : [])]);
    return r.stdout;
  }

  /** `nft list ruleset` of a namespace, default cli. */
  async nftRuleset(ns: Role = 'cli'): Promise<string> {
    return (await this.execOk(ns, [requireProgram('nft'), 'list', 'ruleset'])).stdout;
  }

  /** `nft list tables` of a namespace, default cli. */
  async nftTables(ns: Role = 'cli'): Promise<string> {
    return (await this.execOk(ns, [requireProgram('nft'), 'list', 'tables'])).stdout;
  }

  /** Pids currently inside a namespace (`ip netns pids`). */
  async pids(ns: Role): Promise<number[]> {
    const r = await run([this.ipPath, 'netns', 'pids', this.ns[ns]]);
    if (r.code !== 0) return [];
    return r.stdout.split(/\s+/).filter(Boolean).map(Number);
  }

  /** Tears everything down; idempotent, safe after a failed up(). */
  down(): Promise<void> {
    if (this.state === 'new') {
      this.state = 'down';
      return Promise.resolve();
    }
    this.downPromise ??= this.doDown();
    return this.downPromise;
  }

  private async doDown(): Promise<void> {
    this.state = 'down';
    // 1. What we spawned ourselves.
    await Promise.all([...this.children].map((c) => stopProcess(c, 'SIGTERM', 3_000).catch(() => undefined)));
    // 2. Daemons we started, by pid file, if the pid is still in our namespace.
    const srvIno = netnsInode(this.ns.srv);
    const tgtIno = netnsInode(this.ns.tgt);
    for (const f of this.pidFiles) {
      const pid = readPid(f);
      if (pid === undefined) continue;
      const ino = pidNetnsInode(pid);
      if (ino !== undefined && (ino === srvIno || ino === tgtIno)) tryKill(pid, 'SIGTERM');
    }
    // 3. Anything else still inside (ssh sessions, rxshuttle servers, …).
    for (let round = 0; round < 3; round++) {
      const left: number[] = [];
      for (const role of ROLES) {
        const ino = netnsInode(this.ns[role]);
        if (ino !== undefined) left.push(...pidsInNetnsSync(ino));
      }
      if (left.length === 0) break;
      for (const pid of left) tryKill(pid, round === 0 ? 'SIGTERM' : 'SIGKILL');
      await waitUntil(() => left.every((p) => !alive(p)), { timeoutMs: round === 0 ? 2_000 : 1_000, intervalMs: 50 }).catch(
        () => undefined,
      );
    }
    // 4. The namespaces (veths go with them), /etc/netns, state, owner record.
    for (const role of ROLES) {
      if (netnsInode(this.ns[role]) === undefined) continue;
      await run([this.ipPath, 'netns', 'del', this.ns[role]]);
    }
    for (const role of ROLES) fs.rmSync(`/etc/netns/${this.ns[role]}`, { recursive: true, force: true });
    if (!this.options.keepStateDir) fs.rmSync(this.stateDir, { recursive: true, force: true });
    fs.rmSync(ownerFile(this.prefix), { force: true });
    liveLabs.delete(this);
  }

  /** Synchronous last-resort teardown (process exit / signal). */
  downSync(): void {
    if (!liveLabs.has(this)) return;
    liveLabs.delete(this);
    this.state = 'down';
    const pids: number[] = [];
    for (const c of this.children) if (c.pid !== undefined) pids.push(c.pid);
    cleanupSync(this.prefix, this.options.keepStateDir ? undefined : this.stateDir, pids);
  }
}

/** new TestLab(opts).up() */
export function startLab(opts: LabOptions = {}): Promise<TestLab> {
  return new TestLab(opts).up();
}

/** The running lab, as returned by up(). */
export type Lab = TestLab;
