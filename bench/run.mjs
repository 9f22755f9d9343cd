#!/usr/bin/env node
// rxshuttle benchmark (not a test). See bench/README.md.
//
//   npm run bench                       build, then the full run
//   node bench/run.mjs [--quick] [--only direct,ssh-L,ssh-L-gcm,sshuttle,sshuttle-tproxy,rxshuttle,rxshuttle-tproxy,…] [--rows IDS]
//
// Builds its own lab with the e2e harness (test/e2e/lab.ts, transpiled on the
// fly with esbuild, like scripts/lab.sh), measures every selected path from the
// cli namespace to the target 10.98.0.3, prints one table (ratios to the better
// of the two `ssh -L` paths in each row, default cipher and ssh2's; the DNS and
// UDP rows' to `direct`) and writes it as JSON to bench/results/<timestamp>.json.
// The lab is always torn down: on success, on failure, on Ctrl-C/SIGTERM/SIGHUP.
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const BENCH = path.join(ROOT, 'bench');
const RESULTS = path.join(BENCH, 'results');
const NODE = process.execPath;
const TARGET = '10.98.0.3';
const SUBNET = '10.98.0.0/24';
const ECHO_PORT = 7007;
const IPERF_PORT = 5201;
const LOCAL_FWD = { [ECHO_PORT]: 17007, [IPERF_PORT]: 15201 };
/** The UDP echo server in tgt (bench/udp-echo-server.mjs): the same port number as the TCP one. */
const UDP_ECHO_PORT = 7007;

const ALL_PATHS = ['direct', 'ssh-L', 'ssh-L-gcm', 'sshuttle', 'sshuttle-tproxy', 'rxshuttle', 'rxshuttle-tproxy', 'rxshuttle-nolc',
  'rxshuttle-ssh', 'rxshuttle-ssh-nolc', 'rxshuttle-sshfwd', 'rxshuttle-stock', 'rxshuttle-stock-ssh'];
const PATH_LABEL = {
  direct: 'direct',
  'ssh-L': 'ssh -L',
  'ssh-L-gcm': 'ssh -L (same cipher)',
  sshuttle: 'sshuttle',
  'sshuttle-tproxy': 'sshuttle tproxy',
  rxshuttle: 'rxshuttle',
  'rxshuttle-tproxy': 'rxs --method tproxy',
  'rxshuttle-ssh': 'rxs --transport ssh',
  'rxshuttle-nolc': 'rxs --no-lat-ctl',
  'rxshuttle-ssh-nolc': 'rxs ssh --no-lat-ctl',
  'rxshuttle-sshfwd': 'rxs --ssh-forward',
  'rxshuttle-stock': 'rxs stock sshd',
  'rxshuttle-stock-ssh': 'rxs stock, ssh binary',
};
/** Ratios are to the better of these two paths in each row (ssh -L with OpenSSH's default cipher, and
 *  with the cipher ssh2 negotiates: issue 16), except in rows that name a baseline of their own (the
 *  DNS and UDP rows: direct). */
const BASELINE = ['ssh-L', 'ssh-L-gcm'];

// ---------------------------------------------------------------------------
// Options.

function usage(code) {
  const text = [
    'usage: node bench/run.mjs [--quick] [--only PATHS] [--rows IDS]',
    '  --quick        short run: 1 s iperf3, fewer connections, no 10 000-connection hold',
    `  --only PATHS   comma-separated subset of: ${ALL_PATHS.join(', ')}`,
    '  --rows IDS     only the steps that fill these rows (ids as in the JSON: up1, cps50, rtt_load_p99, …)',
    'Needs root (network namespaces). `npm run bench` builds first, then runs this.',
  ].join('\n');
  (code === 0 ? process.stdout : process.stderr).write(`${text}\n`);
  process.exit(code);
}

function parseArgs(argv) {
  const opts = { quick: false, only: [...ALL_PATHS], rows: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--quick') opts.quick = true;
    else if (a === '--only' || a.startsWith('--only=')) {
      const v = a === '--only' ? argv[++i] : a.slice('--only='.length);
      if (!v) usage(2);
      const want = v.split(',').map((s) => s.trim()).filter(Boolean);
      const bad = want.filter((p) => !ALL_PATHS.includes(p));
      if (bad.length > 0) {
        process.stderr.write(`bench: unknown path(s): ${bad.join(', ')}\n`);
        usage(2);
      }
      opts.only = ALL_PATHS.filter((p) => want.includes(p));
    } else if (a === '--rows' || a.startsWith('--rows=')) {
      const v = a === '--rows' ? argv[++i] : a.slice('--rows='.length);
      if (!v) usage(2);
      opts.rows = v.split(',').map((s) => s.trim()).filter(Boolean);
    } else if (a === '-h' || a === '--help') usage(0);
    else {
      process.stderr.write(`bench: unknown argument ${a}\n`);
      usage(2);
    }
  }
  return opts;
}

const opts = parseArgs(process.argv.slice(2));
const CFG = opts.quick
  ? { iperfSeconds: 1, iperfOmit: 0, rateN: 300, rateSeconds: 3, rttN: 300, rttSeconds: 2, holds: [2000], holdSeconds: 1, openSeconds: 40, repeats: 1,
    dnsN: 2000, dnsSeconds: 5, udpRttN: 2000, udpRttSeconds: 3, udpWindowSeconds: 3 }
  : { iperfSeconds: 5, iperfOmit: 1, rateN: 2000, rateSeconds: 10, rttN: 2000, rttSeconds: 5, holds: [2000, 10000], holdSeconds: 3, openSeconds: 90, repeats: 3,
    dnsN: 10000, dnsSeconds: 10, udpRttN: 5000, udpRttSeconds: 5, udpWindowSeconds: 5 };
/** DNS rows: queries in flight, and each one's timeout (the lab's resolv.conf says timeout:2 attempts:1). */
const DNS = { conc: 20, timeoutMs: 2000, port: 53 };
/** UDP rows: one datagram of rttBytes at a time, and window datagrams of bytes in flight; each
 *  datagram is given waitMs to come back (else it is lost, and the next goes: a lossy path still gets
 *  measured), at most maxN in all. */
const UDP = { rttBytes: 64, bytes: 1000, window: 32, waitMs: 250, maxN: 2_000_000 };

// ---------------------------------------------------------------------------
// Small helpers.

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (line) => process.stderr.write(`bench: ${line}\n`);
const errText = (e) => (e instanceof Error ? e.message : String(e)).trim().split('\n').slice(0, 6).join(' | ');

function sh(cmd) {
  const r = spawnSync('/bin/sh', ['-c', cmd], { encoding: 'utf8' });
  return { code: r.status, out: `${r.stdout ?? ''}${r.stderr ?? ''}`.trim() };
}

function firstLine(cmd) {
  const r = sh(cmd);
  return r.code === 0 ? r.out.split('\n')[0] : undefined;
}

/** Installs a Debian package when its command is missing; returns an error text or undefined. */
function ensureCommand(cmd, pkg) {
  if (sh(`command -v ${cmd}`).code === 0) return undefined;
  log(`${cmd} missing: apt-get install -y ${pkg}`);
  let r = sh(`DEBIAN_FRONTEND=noninteractive apt-get install -y ${pkg}`);
  if (r.code !== 0) {
    sh('apt-get update');
    r = sh(`DEBIAN_FRONTEND=noninteractive apt-get install -y ${pkg}`);
  }
  if (sh(`command -v ${cmd}`).code === 0) return undefined;
  return `${cmd} not installed (apt-get install -y ${pkg} failed: ${r.out.split('\n').slice(-2).join(' ')})`;
}

function nofileLimit() {
  try {
    const line = fs.readFileSync('/proc/self/limits', 'utf8').split('\n').find((l) => l.startsWith('Max open files'));
    const [soft, hard] = line.replace('Max open files', '').trim().split(/\s+/);
    return { soft: Number(soft), hard: Number(hard) };
  } catch {
    return undefined;
  }
}

/** Raises our own open-file limit (inherited by the lab: sshd, echo server,
 *  probes, tunnels). Needs CAP_SYS_RESOURCE to go past the hard limit. */
function raiseNofile(want) {
  try {
    execFileSync('prlimit', ['--pid', String(process.pid), `--nofile=${want}:${want}`], { stdio: 'ignore' });
  } catch {
    const l = nofileLimit();
    if (l && l.soft < l.hard) {
      try {
        execFileSync('prlimit', ['--pid', String(process.pid), `--nofile=${l.hard}:${l.hard}`], { stdio: 'ignore' });
      } catch {
        // keep what we have
      }
    }
  }
  return nofileLimit();
}

function machineInfo() {
  const cpu = os.cpus()[0]?.model ?? 'unknown';
  return {
    nproc: os.availableParallelism?.() ?? os.cpus().length,
    cpu,
    kernel: `${os.type()} ${os.release()}`,
    node: process.version,
    memory_gib: Number((os.totalmem() / 2 ** 30).toFixed(1)),
    loadavg: os.loadavg().map((x) => Number(x.toFixed(2))),
    ssh: firstLine('ssh -V 2>&1'),
    sshuttle: firstLine('sshuttle --version 2>&1'),
    iperf3: firstLine('iperf3 --version 2>&1'),
    rxshuttle_git: firstLine(`git -C ${ROOT} describe --always --dirty 2>/dev/null`),
    // Whether npm ci built ssh2's cipher binding (it needs g++, make, python3): it changes rxshuttle's figures.
    ssh2_binding: fs.existsSync(path.join(ROOT, 'node_modules', 'ssh2', 'lib', 'protocol', 'crypto', 'build', 'Release', 'sshcrypto.node')),
    hostname: os.hostname(),
  };
}

// ---------------------------------------------------------------------------
// Processes inside a namespace (for peak RSS) — read straight from /proc.

function netnsInode(name) {
  try {
    return fs.statSync(`/run/netns/${name}`).ino;
  } catch {
    return undefined;
  }
}

function procsInNetns(name) {
  const ino = netnsInode(name);
  if (ino === undefined) return [];
  const out = [];
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const m = /\[(\d+)\]/.exec(fs.readlinkSync(`/proc/${d}/ns/net`));
      if (!m || Number(m[1]) !== ino) continue;
      const cmd = fs.readFileSync(`/proc/${d}/cmdline`, 'utf8').split('\0').filter(Boolean).join(' ');
      const comm = fs.readFileSync(`/proc/${d}/comm`, 'utf8').trim();
      out.push({ pid: Number(d), comm, cmd });
    } catch {
      // gone
    }
  }
  return out;
}

function memKiB(pid) {
  try {
    const s = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const get = (k) => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(s)?.[1] ?? 0);
    return { hwm: get('VmHWM'), rss: get('VmRSS') };
  } catch {
    return undefined;
  }
}

const isSshdListener = (p) => p.cmd.includes('[listener]') || /^\S*sshd\s+-f\s/.test(p.cmd);
const isSshdSession = (p) => p.comm.startsWith('sshd') && !isSshdListener(p);

/** Samples VmHWM of the processes a path classifies, every 250 ms, keeping
 *  each process's maximum (so a process that dies mid-test still counts). */
class RssSampler {
  constructor(lab, classify, exclude) {
    this.lab = lab;
    this.classify = classify;
    this.exclude = exclude;
    this.seen = new Map();
    this.timer = undefined;
  }

  tick() {
    for (const role of ['cli', 'srv']) {
      for (const p of procsInNetns(this.lab.ns[role])) {
        if (this.exclude.has(p.pid)) continue;
        const kind = this.classify(p, role);
        if (!kind) continue;
        const m = memKiB(p.pid);
        if (!m) continue;
        const rec = this.seen.get(p.pid) ?? { pid: p.pid, ns: role, kind, comm: p.comm, cmd: p.cmd.slice(0, 120), hwm_kib: 0 };
        rec.hwm_kib = Math.max(rec.hwm_kib, m.hwm);
        this.seen.set(p.pid, rec);
      }
    }
  }

  start() {
    this.tick();
    this.timer = setInterval(() => this.tick(), 250);
  }

  stop() {
    clearInterval(this.timer);
    this.tick();
    const by = {};
    for (const rec of this.seen.values()) (by[rec.kind] ??= []).push(rec);
    return by;
  }
}

// ---------------------------------------------------------------------------
// The lab.

let lab; // TestLab
let labModule;
let buildDir;
let teardownPromise;

async function loadLabModule() {
  const esbuild = path.join(ROOT, 'node_modules', '.bin', 'esbuild');
  if (!fs.existsSync(esbuild)) throw new Error(`${esbuild} missing — run npm ci`);
  buildDir = fs.mkdtempSync(path.join(os.tmpdir(), 'rxshuttle-bench-'));
  const out = path.join(buildDir, 'lab.mjs');
  // Bundled (its own imports, e.g. test/support/wait-until.ts, inlined), packages left external: as scripts/lab.sh.
  execFileSync(esbuild, [path.join(ROOT, 'test', 'e2e', 'lab.ts'), '--bundle', '--packages=external', '--format=esm', '--platform=node', '--target=node20',
    '--log-level=warning', `--outfile=${out}`], { stdio: ['ignore', 'inherit', 'inherit'] });
  return import(pathToFileURL(out).href);
}

function teardown() {
  teardownPromise ??= (async () => {
    if (lab) {
      log(`tearing down lab ${lab.prefix}`);
      await lab.down().catch((e) => log(`lab down: ${errText(e)}`));
    }
    if (buildDir) fs.rmSync(buildDir, { recursive: true, force: true });
  })();
  return teardownPromise;
}

let interrupted = false;
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => {
    if (interrupted) {
      log(`${sig} again: exiting now (the lab's exit hook removes what is left)`);
      process.exit(130);
    }
    interrupted = true;
    log(`${sig}: stopping`);
    teardown().finally(() => process.exit(130));
  });
}

const exec = (role, argv, o = {}) => lab.exec(role, argv, o);

async function sysctl(role, ...kv) {
  const r = await exec(role, ['sysctl', '-qw', ...kv]);
  if (r.code !== 0) throw new Error(`sysctl ${kv.join(' ')} in ${role}: ${r.stderr.trim()}`);
}

/** Collects the last few KB a child printed (and keeps its pipes drained). */
function tailOf(child) {
  let buf = '';
  const on = (d) => {
    buf = (buf + d.toString()).slice(-4000);
  };
  child.stdout?.on('data', on);
  child.stderr?.on('data', on);
  return () => buf.trim();
}

let iperfServer;
async function startIperfServer() {
  if (iperfServer) await labModule.stopProcess(iperfServer, 'SIGTERM', 2000).catch(() => {});
  iperfServer = lab.spawn('tgt', ['iperf3', '-s', '-B', TARGET, '-p', String(IPERF_PORT)]);
  const out = tailOf(iperfServer);
  await labModule.waitUntil(
    async () => {
      if (iperfServer.exitCode !== null) throw new Error(`iperf3 -s exited: ${out()}`);
      const r = await exec('tgt', ['ss', '-Hltn', `sport = :${IPERF_PORT}`]);
      return r.stdout.includes(`:${IPERF_PORT}`);
    },
    { timeoutMs: 10_000, intervalMs: 100, what: 'iperf3 server' },
  );
}

/** Whether the lab runs dnsmasq (10.98.0.3:53; cli's and srv's resolv.conf name it): needs the
 *  dnsmasq program. Without it the DNS rows fail and the rxshuttle paths run without --dns. */
let labDns = false;

async function startLab(dnsMissing) {
  labModule = await loadLabModule();
  const prefix = `rxb${Math.floor(Math.random() * 0x10000).toString(16).padStart(4, '0')}`;
  labDns = !dnsMissing;
  // The node-less sshd (port 2222, host alias lab-nonode) only for the stock-sshd path.
  lab = new labModule.TestLab({ prefix, noNodeSshd: opts.only.some((p) => p.startsWith('rxshuttle-stock')), targetServices: false, dns: labDns });
  log(`starting lab ${prefix}`);
  await lab.up();
  // Room for 10 000 connections and fast reuse of ports, same for every path.
  for (const role of ['cli', 'srv', 'tgt']) {
    await sysctl(role, 'net.ipv4.ip_local_port_range=10000 65000', 'net.ipv4.tcp_tw_reuse=1', 'net.core.somaxconn=8192',
      'net.ipv4.tcp_max_syn_backlog=8192');
  }
  const echo = lab.spawn('tgt', [NODE, path.join(BENCH, 'echo-server.mjs'), TARGET, String(ECHO_PORT)]);
  await labModule.waitForOutput(echo, /^ready$/m, 15_000);
  tailOf(echo);
  const udpEcho = lab.spawn('tgt', [NODE, path.join(BENCH, 'udp-echo-server.mjs'), TARGET, String(UDP_ECHO_PORT)]);
  await labModule.waitForOutput(udpEcho, /^ready$/m, 15_000);
  tailOf(udpEcho);
  await startIperfServer();
}

// ---------------------------------------------------------------------------
// Ciphers (issue 16): what OpenSSH and ssh2 negotiate with the lab's sshd.

/** Negotiated ciphers, found once per run: `openssh` (ssh's default), `ssh2` (what ssh2's own
 *  defaults get, as rxshuttle's transport uses them), `openssh_same` (ssh -c <ssh2's>). In the JSON. */
const ciphers = {};

/** The cipher ssh -v reports for client→server and server→client with these extra arguments. */
async function opensshCipher(extra) {
  const r = await exec('cli', ['ssh', '-v', '-F', lab.sshConfigPath, ...extra, lab.sshHost, 'true'], { timeoutMs: 20_000 });
  const get = (dir) => new RegExp(`kex: ${dir} cipher: (\\S+)`).exec(r.stderr)?.[1];
  const cs = get('client->server');
  const sc = get('server->client');
  if (r.code !== 0 || !cs) throw new Error(`ssh -v ${extra.join(' ')} true: exit ${r.code}: ${r.stderr.trim().split('\n').slice(-2).join(' | ')}`);
  return cs === sc ? cs : `${cs} up, ${sc} down`;
}

/** The cipher ssh2 negotiates (bench/ssh2-cipher.mjs: one handshake with ssh2's defaults). */
async function ssh2Cipher() {
  if (ciphers.ssh2) return ciphers.ssh2;
  const r = await exec('cli', [NODE, path.join(BENCH, 'ssh2-cipher.mjs'), labModule.LAB.srv, String(labModule.LAB.sshPort), 'root',
    lab.identityPath], { timeoutMs: 20_000 });
  let j;
  try {
    j = JSON.parse(r.stdout.trim().split('\n').pop());
  } catch {
    throw new Error(`ssh2-cipher.mjs: exit ${r.code}: ${r.stderr.trim() || r.stdout.trim()}`);
  }
  if (j.error || !j.cs?.cipher) throw new Error(`ssh2-cipher.mjs: ${j.error ?? 'no cipher'}`);
  if (j.cs.cipher !== j.sc.cipher) throw new Error(`ssh2 negotiated ${j.cs.cipher} up and ${j.sc.cipher} down: no single cipher for ssh -c`);
  ciphers.ssh2 = j.cs.cipher;
  ciphers.ssh2_negotiated = j;
  return ciphers.ssh2;
}

// ---------------------------------------------------------------------------
// Probes (the load generator runs in cli).

const PROBE = path.join(BENCH, 'probe.mjs');
const DNS_PROBE = path.join(BENCH, 'dns-probe.mjs');
const probePids = new Set();

async function probe(args, timeoutMs, script = PROBE) {
  const child = lab.spawn('cli', [NODE, script, ...args.map(String)]);
  if (child.pid) probePids.add(child.pid);
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr = (stderr + d).slice(-2000)));
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const [code, signal] = await new Promise((r) => child.once('exit', (c, s) => r([c, s])));
  await new Promise((r) => (child.stdout.readableEnded ? r() : child.stdout.once('end', r)));
  clearTimeout(timer);
  probePids.delete(child.pid);
  const line = stdout.trim().split('\n').pop();
  let json;
  try {
    json = JSON.parse(line);
  } catch {
    throw new Error(`probe ${args[0]} ${signal === 'SIGKILL' ? 'timed out' : `exited ${code ?? signal}`}: ${stderr.trim() || stdout.trim() || 'no output'}`);
  }
  if (json.error) throw new Error(`probe ${args[0]}: ${json.error}`);
  return json;
}

/** TcpExt ListenOverflows of the cli namespace (a full accept queue drops the handshake's last ACK). */
async function listenOverflows() {
  const r = await exec('cli', ['cat', '/proc/net/netstat']);
  const lines = r.stdout.split('\n').filter((l) => l.startsWith('TcpExt:'));
  if (lines.length < 2) return undefined;
  const keys = lines[0].split(/\s+/);
  const vals = lines[1].split(/\s+/);
  const i = keys.indexOf('ListenOverflows');
  return i < 0 ? undefined : Number(vals[i]);
}

async function echoWorks(ep) {
  try {
    const r = await probe(['rtt', ep.host, ep.port, 2, 3], 15_000);
    return r.n >= 1;
  } catch {
    return false;
  }
}

function iperfArgs(ep, { reverse, streams, seconds, omit, bidir }) {
  return ['iperf3', '-c', ep.host, '-p', String(ep.port), '-t', String(seconds), '-P', String(streams), '-J',
    '--connect-timeout', '5000', ...(omit ? ['-O', String(omit)] : []), ...(reverse ? ['-R'] : []), ...(bidir ? ['--bidir'] : [])];
}

async function iperf(ep, o) {
  const timeoutMs = (o.seconds + (o.omit ?? 0) + 25) * 1000;
  let lastErr;
  for (let attempt = 0; attempt < 3; attempt++) {
    const r = await exec('cli', iperfArgs(ep, o), { timeoutMs });
    let json;
    try {
      json = JSON.parse(r.stdout);
    } catch {
      json = undefined;
    }
    if (json && !json.error && json.end?.sum_received) {
      return {
        // --bidir: both directions together.
        gbps: (json.end.sum_received.bits_per_second + (json.end.sum_received_bidir_reverse?.bits_per_second ?? 0)) / 1e9,
        retransmits: json.end.sum_sent?.retransmits,
        cpu: json.end.cpu_utilization_percent,
      };
    }
    lastErr = json?.error ?? (r.timedOut ? 'iperf3 timed out' : `iperf3 exited ${r.code}: ${r.stderr.trim() || r.stdout.slice(0, 300)}`);
    if (r.timedOut || !/busy/i.test(lastErr)) await startIperfServer().catch(() => {});
    await sleep(1500);
  }
  throw new Error(lastErr);
}

// ---------------------------------------------------------------------------
// Paths: how to bring each up, where its endpoints are, which processes are its.

async function waitForRules(child, out, pattern, what, table = 'nat') {
  await labModule.waitUntil(
    async () => {
      if (child.exitCode !== null || child.signalCode !== null) {
        throw new Error(`${what} exited (${child.exitCode ?? child.signalCode}): ${out() || 'no output'}`);
      }
      const r = await exec('cli', ['iptables-save', '-t', table]);
      return pattern.test(r.stdout);
    },
    { timeoutMs: 30_000, intervalMs: 200, what: `${what} firewall rules` },
  );
}

async function waitForEcho(ep, child, out, what) {
  await labModule.waitUntil(
    async () => {
      if (child && (child.exitCode !== null || child.signalCode !== null)) {
        throw new Error(`${what} exited (${child.exitCode ?? child.signalCode}): ${out() || 'no output'}`);
      }
      return echoWorks(ep);
    },
    { timeoutMs: 30_000, intervalMs: 300, what: `an echo through ${what}` },
  );
}

/** The cli namespace's policy routing rules beyond the three every namespace starts with
 *  (priority 0 local, 32766 main, 32767 default), per family. */
async function extraIpRules() {
  const out = [];
  for (const fam of ['-4', '-6']) {
    const r = await exec('cli', ['ip', '-j', fam, 'rule', 'show']);
    let list = [];
    try {
      list = JSON.parse(r.stdout || '[]');
    } catch {
      continue;
    }
    for (const rule of list) {
      if ([0, 32766, 32767].includes(rule.priority) && ['local', 'main', 'default'].includes(rule.table) && !rule.fwmark) continue;
      out.push({ fam, ...rule });
    }
  }
  return out;
}

/** After a path stops: nothing of it may stay (processes, nat and mangle rules, ip rules). */
async function settle(notes, name) {
  const leftovers = () => [
    ...procsInNetns(lab.ns.cli).filter((p) => !probePids.has(p.pid)),
    ...procsInNetns(lab.ns.srv).filter((p) => !isSshdListener(p)),
  ];
  const gone = await labModule.waitUntil(() => leftovers().length === 0, { timeoutMs: 6_000, intervalMs: 100 }).catch(() => false);
  if (!gone) {
    const left = leftovers();
    notes.push(`${name}: killed leftover processes after stop: ${left.map((p) => `${p.pid} ${p.cmd.slice(0, 60)}`).join('; ')}`);
    for (const p of left) {
      try {
        process.kill(p.pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
    await sleep(300);
  }
  for (const [save, prog] of [['iptables-save', 'iptables'], ['ip6tables-save', 'ip6tables']]) {
    for (const table of ['nat', 'mangle']) {
      const text = (await exec('cli', [save, '-t', table])).stdout;
      if (/sshuttle|rxshuttle/.test(text)) {
        notes.push(`${name}: ${prog} ${table} rules left behind after stop; flushed the bench lab's cli ${table} table`);
        await exec('cli', [prog, '-t', table, '-F']);
        await exec('cli', [prog, '-t', table, '-X']);
      }
    }
  }
  const rules = await extraIpRules();
  if (rules.length > 0) {
    notes.push(`${name}: ip rules left behind after stop, removed with their tables' routes: ` +
      rules.map((r) => `${r.fam} ${r.priority}: ${r.fwmark ? `fwmark ${r.fwmark} ` : ''}lookup ${r.table}`).join('; '));
    for (const r of rules) {
      await exec('cli', ['ip', r.fam, 'rule', 'del', 'priority', String(r.priority), 'table', String(r.table)]);
      await exec('cli', ['ip', r.fam, 'route', 'flush', 'table', String(r.table)]);
    }
  }
}

/** Endpoints of the transparent paths: the target itself. */
const transparent = () => (port) => ({ host: TARGET, port });

/** How a path's process ended, or undefined while it runs. */
function deathOf(child, out) {
  return () => {
    if (child.exitCode === null && child.signalCode === null) return undefined;
    const tail = out().split('\n').slice(-3).join(' | ');
    return `exited (${child.exitCode ?? child.signalCode})${tail ? `: ${tail}` : ''}`;
  };
}

// `dns`: the path carries the DNS rows' queries (UDP to 10.98.0.3:53); `udp`: the UDP rows' datagrams
// (to 10.98.0.3:7007), else `noUdp` says why not. The others get n/a there.
const PATHS = {
  direct: {
    dns: true, // srv forwards: the queries go straight to dnsmasq
    udp: true, // and the datagrams straight to the UDP echo server
    async start() {
      await sysctl('srv', 'net.ipv4.ip_forward=1');
      const h = {
        endpoint: transparent(),
        classify: () => undefined,
        async stop() {
          await sysctl('srv', 'net.ipv4.ip_forward=0');
        },
      };
      try {
        await waitForEcho(h.endpoint(ECHO_PORT), undefined, () => '', 'the direct route');
      } catch (e) {
        await h.stop().catch(() => {});
        throw e;
      }
      return h;
    },
  },
  'ssh-L': { noUdp: 'ssh -L carries no UDP', start: () => startSshL([]) },
  // Issue 16: OpenSSH with the cipher ssh2 negotiates (rxshuttle's default transport), so that a ratio
  // to ssh -L measures the tunnel, not the cipher. ssh2's choice is asked of ssh2 itself in the lab.
  'ssh-L-gcm': {
    noUdp: 'ssh -L carries no UDP',
    start: async () => {
      const cipher = await ssh2Cipher();
      ciphers.openssh_same ??= await opensshCipher(['-c', cipher]);
      return startSshL(['-c', cipher], cipher);
    },
  },
  sshuttle: { noUdp: 'no UDP with --method nat', start: () => startSshuttle([]) },
  // sshuttle's tproxy (TCP and UDP): it leaves the policy routing to the user, as its manual says,
  // so the bench adds it in cli around the path (fwmark 1 → table 100, a local default route there)
  // and removes it when the path stops, whatever happened.
  'sshuttle-tproxy': { udp: true, start: () => startSshuttle(['--method', 'tproxy'], { tproxy: true }) },
  // The rxshuttle paths run with --dns for every row: it adds only the DNS capture (two REDIRECT
  // rules for 10.98.0.3 port 53 at the head of its chain, a `-p udp --dport 53` OUTPUT jump, and
  // idle UDP/TCP sockets on the client); TCP to ports 7007/5201 is handled as without it.
  rxshuttle: { dns: true, noUdp: 'no UDP with --method nat', start: () => startRxshuttle([]) },
  // TCP and UDP through iptables mangle TPROXY, the policy routing its own (--dns as with nat).
  'rxshuttle-tproxy': { dns: true, udp: true, start: () => startRxshuttle(['--method', 'tproxy'], { rules: 'mangle' }) },
  'rxshuttle-ssh': { dns: true, noUdp: 'no UDP with --method nat', start: () => startRxshuttle(['--transport', 'ssh']) },
  'rxshuttle-nolc': { dns: true, noUdp: 'no UDP with --method nat', start: () => startRxshuttle(['--no-latency-control']) },
  'rxshuttle-ssh-nolc': { dns: true, noUdp: 'no UDP with --method nat', start: () => startRxshuttle(['--transport', 'ssh', '--no-latency-control']) },
  'rxshuttle-sshfwd': { dns: true, noUdp: 'no UDP with --method nat', start: () => startRxshuttle(['--ssh-forward']) },
  // Stock-sshd mode: the host alias whose sshd hides node; rxshuttle finds no node there and runs
  // nothing on the remote (TCP in direct-tcpip channels, --dns as DNS over TCP through them).
  'rxshuttle-stock': { dns: true, noUdp: 'no UDP with --method nat', start: () => startRxshuttle([], { host: lab.sshHostNoNode, stock: true }) },
  'rxshuttle-stock-ssh': { dns: true, noUdp: 'no UDP with --method nat', start: () => startRxshuttle(['--transport', 'ssh'], { host: lab.sshHostNoNode, stock: true }) },
};

/** `ssh -N -L` for the iperf3 and echo ports, with extra arguments (`-c CIPHER`). */
async function startSshL(extra, cipher) {
  const child = lab.spawn('cli', ['ssh', '-F', lab.sshConfigPath, '-N', '-o', 'ExitOnForwardFailure=yes', ...extra,
    '-L', `127.0.0.1:${LOCAL_FWD[IPERF_PORT]}:${TARGET}:${IPERF_PORT}`,
    '-L', `127.0.0.1:${LOCAL_FWD[ECHO_PORT]}:${TARGET}:${ECHO_PORT}`, lab.sshHost]);
  const out = tailOf(child);
  const h = {
    endpoint: (port) => ({ host: '127.0.0.1', port: LOCAL_FWD[port] }),
    classify: (p, ns) => (ns === 'cli' && p.pid === child.pid ? 'client' : ns === 'srv' && isSshdSession(p) ? 'server' : undefined),
    stop: () => labModule.stopProcess(child, 'SIGTERM', 5000),
    death: deathOf(child, out),
    output: out,
  };
  try {
    // The cipher this ssh negotiates (a separate `ssh -v … true` with the same arguments; not knowing
    // it does not stop the path).
    h.cipher = cipher ?? (ciphers.openssh ??= await opensshCipher(extra).catch((e) => void log(`ssh -L cipher: ${errText(e)}`)));
    await waitForEcho(h.endpoint(ECHO_PORT), child, out, 'ssh -L');
  } catch (e) {
    await h.stop().catch(() => {});
    throw e;
  }
  return h;
}

/** sshuttle (Debian's) with extra arguments; `tproxy`: with the policy routing it needs, added in
 *  cli before it starts and removed after it stops (also when it does not come up). */
async function startSshuttle(extra, { tproxy = false } = {}) {
  const missing = ensureCommand('sshuttle', 'sshuttle');
  if (missing) throw new Error(missing);
  const undo = [];
  const unroute = async () => {
    while (undo.length > 0) {
      const argv = undo.pop();
      const r = await exec('cli', argv);
      if (r.code !== 0) log(`sshuttle-tproxy cleanup: ${argv.join(' ')}: ${r.stderr.trim()}`);
    }
  };
  if (tproxy) {
    // As sshuttle's manual gives it (fwmark 1 = sshuttle's default --tmark, table 100).
    for (const [add, del] of [
      [['ip', 'rule', 'add', 'fwmark', '1', 'lookup', '100'], ['ip', 'rule', 'del', 'fwmark', '1', 'lookup', '100']],
      [['ip', 'route', 'add', 'local', 'default', 'dev', 'lo', 'table', '100'], ['ip', 'route', 'flush', 'table', '100']],
    ]) {
      const r = await exec('cli', add);
      if (r.code !== 0) {
        await unroute();
        throw new Error(`${add.join(' ')}: ${r.stderr.trim()}`);
      }
      undo.push(del);
    }
  }
  const child = lab.spawn('cli', ['sshuttle', ...extra, '-r', lab.sshHost, '-e', lab.sshCommand, SUBNET]);
  const out = tailOf(child);
  const h = {
    endpoint: transparent(),
    classify: (p, ns) => {
      if (ns === 'cli') {
        if (p.comm === 'ssh') return 'transport';
        if (p.cmd.includes('sshuttle') && !p.cmd.includes('--firewall')) return 'client';
        return undefined;
      }
      if (/python/.test(p.comm) || /python/.test(p.cmd.split(' ')[0] ?? '')) return 'server';
      return isSshdSession(p) ? 'transport' : undefined;
    },
    stop: async () => {
      try {
        await labModule.stopProcess(child, 'SIGTERM', 8000);
      } finally {
        // After sshuttle's own cleanup (its firewall process removes its mangle rules on exit).
        await unroute();
      }
    },
    death: deathOf(child, out),
    output: out,
  };
  try {
    await waitForRules(child, out, /sshuttle/, 'sshuttle', tproxy ? 'mangle' : 'nat');
    await waitForEcho(h.endpoint(ECHO_PORT), child, out, 'sshuttle');
  } catch (e) {
    await h.stop().catch(() => {});
    throw e;
  }
  return h;
}

async function startRxshuttle(extra, { host = lab.sshHost, stock = false, rules = 'nat' } = {}) {
  const cli = path.join(ROOT, 'dist', 'cli.js');
  if (!fs.existsSync(cli)) throw new Error('dist/cli.js missing: run npm run build (npm run bench does)');
  // BENCH_NODE_FLAGS='--cpu-prof --cpu-prof-dir=/tmp/prof' profiles the client (NODE_OPTIONS may not).
  const nodeFlags = (process.env.BENCH_NODE_FLAGS ?? '').split(' ').filter(Boolean);
  const dns = labDns ? ['--dns'] : [];
  // DEBUG=rxshuttle:ssh2: the line with the cipher ssh2 negotiated (and the slab counts at exit;
  // nothing per connection).
  const child = lab.spawn('cli', [NODE, ...nodeFlags, cli, '-r', host, '-e', lab.sshCommand, ...dns, ...extra, SUBNET],
    { env: { ...process.env, DEBUG: [process.env.DEBUG, 'rxshuttle:ssh2'].filter(Boolean).join(',') } });
  const out = tailOf(child);
  // BENCH_CLIENT_LOG=FILE keeps the client's whole output (e.g. with BENCH_NODE_FLAGS=--trace-gc).
  if (process.env.BENCH_CLIENT_LOG) {
    const log = fs.createWriteStream(process.env.BENCH_CLIENT_LOG, { flags: 'a' });
    child.stdout?.pipe(log);
    child.stderr?.pipe(log);
  }
  const h = {
    endpoint: transparent(),
    classify: (p, ns) => {
      if (ns === 'cli') {
        if (p.pid === child.pid) return 'client';
        return p.comm === 'ssh' ? 'transport' : undefined;
      }
      if (p.comm === 'node' || p.comm.startsWith('node')) return 'server';
      return isSshdSession(p) ? 'transport' : undefined;
    },
    stop: () => labModule.stopProcess(child, 'SIGTERM', 5000),
    death: deathOf(child, out),
    output: out,
  };
  try {
    await waitForRules(child, out, rules === 'mangle' ? /rxshuttle-tproxy-\d+/ : /rxshuttle-\d+/, 'rxshuttle', rules);
    await waitForEcho(h.endpoint(ECHO_PORT), child, out, 'rxshuttle');
    // ssh2's cipher, from its debug line; none when the ssh binary carries the session (its default).
    const m = /ciphers: (\S+) up, (\S+) down/.exec(out());
    h.cipher = m ? (m[1] === m[2] ? m[1] : `${m[1]} up, ${m[2]} down`) : undefined;
    if (stock) {
      // The echo went through: if a node server runs in srv, this is not stock-sshd mode.
      const server = procsInNetns(lab.ns.srv).find((p) => h.classify(p, 'srv') === 'server');
      if (server) throw new Error(`a node process runs on the remote (${server.cmd.slice(0, 80)}): not stock-sshd mode`);
    }
  } catch (e) {
    await h.stop().catch(() => {});
    throw e;
  }
  return h;
}

// ---------------------------------------------------------------------------
// Rows and the steps that fill them.

const ROWS = [];
/** `baseline`: the paths a row's ratios may be to (the better of them in that row); `ratio: false`
 *  for a row without ratios (the UDP loss, where the baseline is usually 0). */
function row(id, label, unit, better, baseline = BASELINE, { ratio = true } = {}) {
  ROWS.push({ id, label, unit, better, baseline: [baseline].flat(), ...(ratio ? {} : { ratio: false }) });
}
row('up1', 'upload, 1 stream', 'Gbit/s', 'higher');
row('up4', 'upload, 4 streams', 'Gbit/s', 'higher');
row('down1', 'download, 1 stream', 'Gbit/s', 'higher');
row('down4', 'download, 4 streams', 'Gbit/s', 'higher');
row('cps1', 'new conns/s, serial', 'conn/s', 'higher');
row('cps50', 'new conns/s, 50 concurrent', 'conn/s', 'higher');
row('rtt_idle_p50', 'rtt p50, idle', 'ms', 'lower');
row('rtt_idle_p99', 'rtt p99, idle', 'ms', 'lower');
row('rtt_load_p50', 'rtt p50, under bulk download', 'ms', 'lower');
row('rtt_load_p99', 'rtt p99, under bulk download', 'ms', 'lower');
row('rtt_load_bulk', 'bulk download during rtt', 'Gbit/s', 'higher');
// Only direct (the baseline here: ssh -L cannot carry UDP) and the paths with DNS capture.
row('dns_qps', `DNS queries/s, ${DNS.conc} in flight`, 'q/s', 'higher', 'direct');
row('dns_p50', 'DNS round trip p50', 'ms', 'lower', 'direct');
// Only direct (the baseline: ssh -L cannot carry UDP) and the tproxy paths.
row('udp_rtt_p50', `UDP rtt p50, ${UDP.rttBytes} B one at a time`, 'ms', 'lower', 'direct');
row('udp_rtt_p99', `UDP rtt p99, ${UDP.rttBytes} B one at a time`, 'ms', 'lower', 'direct');
row('udp_rtt_lost', 'UDP lost, one at a time', '%', 'lower', 'direct', { ratio: false });
row('udp_dps', `UDP datagrams/s, ${UDP.bytes} B, ${UDP.window} in flight`, 'dgram/s', 'higher', 'direct');
row('udp_dps_lost', `UDP lost, ${UDP.window} in flight`, '%', 'lower', 'direct', { ratio: false });
row('bulk20_gbps', '20 bulk (10 up + 10 down): total', 'Gbit/s', 'higher');
row('bulk20_client', '20 bulk: client RSS', 'MiB', 'lower');
row('bulk20_server', '20 bulk: server RSS', 'MiB', 'lower');
row('bulk20_transport', '20 bulk: +ssh/sshd RSS', 'MiB', 'lower');
for (const n of CFG.holds) {
  row(`hold${n}_ok`, `${n} held: alive`, 'conns', 'higher');
  row(`hold${n}_client`, `${n} held: client RSS`, 'MiB', 'lower');
  row(`hold${n}_server`, `${n} held: server RSS`, 'MiB', 'lower');
  row(`hold${n}_transport`, `${n} held: +ssh/sshd RSS`, 'MiB', 'lower');
}

const ok = (value, extra) => ({ ok: true, value, ...(extra ? { extra } : {}) });
const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
};
const na = (reason) => ({ ok: true, value: null, na: reason });

const UDP_PROBE = path.join(BENCH, 'udp-probe.mjs');
const UDP_COUNTERS = ['InDatagrams', 'NoPorts', 'InErrors', 'OutDatagrams', 'RcvbufErrors', 'SndbufErrors'];

/** The Udp line of /proc/net/snmp in each namespace of the lab. */
async function udpCounters() {
  const out = {};
  for (const role of ['cli', 'srv', 'tgt']) {
    const lines = (await exec(role, ['cat', '/proc/net/snmp'])).stdout.split('\n').filter((l) => l.startsWith('Udp:'));
    const keys = lines[0]?.split(/\s+/) ?? [];
    const vals = lines[1]?.split(/\s+/) ?? [];
    out[role] = Object.fromEntries(UDP_COUNTERS.map((k) => [k, Number(vals[keys.indexOf(k)] ?? NaN)]));
  }
  return out;
}

/** One udp-probe.mjs run, with the lab's UDP counters before and after (`udp_counters`: the
 *  difference, per namespace: RcvbufErrors there are datagrams a full socket buffer dropped). */
async function udpProbe(args) {
  const before = await udpCounters();
  const seconds = Number(args[args[0] === 'window' ? 6 : 5]);
  const r = await probe(args, (seconds + 30) * 1000, UDP_PROBE);
  const after = await udpCounters();
  r.udp_counters = Object.fromEntries(Object.keys(after).map((role) =>
    [role, Object.fromEntries(UDP_COUNTERS.map((k) => [k, after[role][k] - before[role][k]]))]));
  return r;
}

function udpLossText(r) {
  const drops = Object.entries(r.udp_counters ?? {}).filter(([, c]) => c.RcvbufErrors || c.InErrors || c.SndbufErrors || c.NoPorts)
    .map(([role, c]) => `${role}: ${['RcvbufErrors', 'InErrors', 'SndbufErrors', 'NoPorts'].filter((k) => c[k]).map((k) => `${k} ${c[k]}`).join(' ')}`);
  return `${r.sent} sent, ${r.echoed} echoed, ${r.lost} lost (${r.late} of them late), ${r.wrong} wrong, ${r.from_elsewhere} from elsewhere` +
    `${Object.keys(r.errors ?? {}).length ? ` ${JSON.stringify(r.errors)}` : ''}${drops.length ? `; kernel counters: ${drops.join('; ')}` : ''}`;
}

/** The loss cell (% of datagrams sent, over all runs) and a note for every run that lost any. */
function udpLoss(notes, what, runs) {
  for (const r of runs) if (r.lost > 0 || r.wrong > 0 || r.from_elsewhere > 0) notes.push(`${what}: ${udpLossText(r)}`);
  const sent = runs.reduce((n, r) => n + r.sent, 0);
  const lost = runs.reduce((n, r) => n + r.lost, 0);
  if (runs.every((r) => r.echoed === 0)) throw new Error(`no datagram came back (${runs.map(udpLossText).join('; ')})`);
  return ok(sent ? (100 * lost) / sent : null, { sent, lost, late: runs.reduce((n, r) => n + r.late, 0) });
}

/** A cell with the summed peak RSS (MiB) of one role's processes, as RssSampler saw them. */
function peakRssCell(name, procs, kind) {
  if (name === 'direct') return na('no relay');
  if (kind === 'transport' && name.startsWith('ssh-L')) return na('ssh/sshd are the relay');
  if (kind === 'server' && name.startsWith('rxshuttle-stock')) return na('nothing runs on the remote');
  const list = procs[kind];
  if (!list || list.length === 0) return { ok: false, reason: `no ${kind} process found` };
  return ok(list.reduce((sum, p) => sum + p.hwm_kib, 0) / 1024, list);
}

/** Steps: each fills some rows. `needsRestart`: run on a freshly started path. */
function steps() {
  const list = [];
  for (const [id, reverse, streams] of [['up1', false, 1], ['up4', false, 4], ['down1', true, 1], ['down4', true, 4]]) {
    list.push({
      rows: [id],
      what: ROWS.find((r) => r.id === id).label,
      run: async (h) => {
        const r = await iperf(h.endpoint(IPERF_PORT), { reverse, streams, seconds: CFG.iperfSeconds, omit: CFG.iperfOmit });
        return { [id]: ok(r.gbps, r) };
      },
    });
  }
  for (const [id, conc] of [['cps1', 1], ['cps50', 50]]) {
    list.push({
      rows: [id],
      what: ROWS.find((r) => r.id === id).label,
      run: async (h, notes, name) => {
        const ep = h.endpoint(ECHO_PORT);
        // The median of CFG.repeats runs: one short run moves by ±10 % on a shared VM.
        const runs = [];
        for (let i = 0; i < CFG.repeats; i++) {
          const lo0 = await listenOverflows();
          const r = await probe(['rate', ep.host, ep.port, CFG.rateN, conc, CFG.rateSeconds], (CFG.rateSeconds + 40) * 1000);
          r.listen_overflows_cli = (await listenOverflows()) - lo0;
          if (r.ok === 0) throw new Error(`no connection succeeded (${JSON.stringify(r.errors)})`);
          if (r.fail > 0) notes.push(`${name} / ${id}: ${r.fail} of ${r.ok + r.fail} connections failed ${JSON.stringify(r.errors)}`);
          runs.push(r);
        }
        return { [id]: ok(median(runs.map((r) => r.conn_per_s)), { runs }) };
      },
    });
  }
  list.push({
    rows: ['rtt_idle_p50', 'rtt_idle_p99'],
    what: 'rtt idle',
    run: async (h) => {
      const ep = h.endpoint(ECHO_PORT);
      // The median of CFG.repeats runs, as for conns/s.
      const runs = [];
      for (let i = 0; i < CFG.repeats; i++) {
        const r = await probe(['rtt', ep.host, ep.port, CFG.rttN, CFG.rttSeconds], (CFG.rttSeconds + 30) * 1000);
        if (!r.n) throw new Error('no round trip completed');
        runs.push(r);
      }
      return {
        rtt_idle_p50: ok(median(runs.map((r) => r.p50_ms)), { runs }),
        rtt_idle_p99: ok(median(runs.map((r) => r.p99_ms)), { runs }),
      };
    },
  });
  list.push({
    rows: ['rtt_load_p50', 'rtt_load_p99', 'rtt_load_bulk'],
    what: 'rtt under bulk download',
    run: async (h, notes, name) => {
      const ep = h.endpoint(ECHO_PORT);
      const seconds = CFG.rttSeconds + 3;
      const bulk = exec('cli', iperfArgs(h.endpoint(IPERF_PORT), { reverse: true, streams: 1, seconds }), { timeoutMs: (seconds + 25) * 1000 });
      await sleep(1500);
      const [rtt, b] = await Promise.allSettled([
        probe(['rtt', ep.host, ep.port, CFG.rttN * 10, CFG.rttSeconds], (CFG.rttSeconds + 30) * 1000),
        bulk,
      ]).then((rs) => rs.map((x) => (x.status === 'fulfilled' ? x.value : { error: x.reason })));
      if (rtt.error) throw rtt.error;
      const r = rtt;
      let bulkCell;
      try {
        const j = JSON.parse(b.stdout);
        if (j.error) throw new Error(j.error);
        bulkCell = ok(j.end.sum_received.bits_per_second / 1e9);
      } catch (e) {
        bulkCell = { ok: false, reason: `iperf3 -R in parallel: ${b.timedOut ? 'timed out' : errText(e)}` };
        notes.push(`${name}: the bulk download beside the rtt probe failed, the rtt is not under load: ${bulkCell.reason}`);
        await startIperfServer().catch(() => {});
      }
      if (!r.n) throw new Error('no round trip completed');
      return { rtt_load_p50: ok(r.p50_ms, r), rtt_load_p99: ok(r.p99_ms, r), rtt_load_bulk: bulkCell };
    },
  });
  list.push({
    rows: ['dns_qps', 'dns_p50'],
    what: 'DNS over UDP',
    naFor: (name) => (PATHS[name].dns ? undefined : 'no DNS capture'),
    run: async (h, notes, name) => {
      if (!labDns) throw new Error('dnsmasq not installed: the lab runs no nameserver');
      const names = Object.entries(labModule.DNS_NAMES).map(([n, a]) => `${n}=${a}`).join(',');
      const dnsProbe = (n, conc, seconds) =>
        probe([TARGET, DNS.port, n, conc, seconds, DNS.timeoutMs, names, 'fresh'], (seconds + DNS.timeoutMs / 1000 + 30) * 1000, DNS_PROBE);
      // Not in the rows: proves the queries get answered (through the capture: srv does not forward
      // for the tunnels), opens what the first query opens (stock-sshd mode's TCP channel), and
      // gives the round trip of one query at a time (`idle` in the JSON).
      const idle = await dnsProbe(50, 1, 10);
      if (idle.ok === 0) throw new Error(`no DNS query answered (${JSON.stringify(idle.errors)})`);
      const runs = [];
      for (let i = 0; i < CFG.repeats; i++) {
        const r = await dnsProbe(CFG.dnsN, DNS.conc, CFG.dnsSeconds);
        if (r.ok === 0) throw new Error(`no DNS query answered (${JSON.stringify(r.errors)})`);
        if (r.failed > 0) notes.push(`${name} / DNS: ${r.failed} of ${r.ok + r.failed} queries failed ${JSON.stringify(r.errors)}`);
        runs.push(r);
      }
      return {
        dns_qps: ok(median(runs.map((r) => r.qps)), { runs, idle }),
        dns_p50: ok(median(runs.map((r) => r.p50_ms)), { runs, idle }),
      };
    },
  });
  list.push({
    rows: ['udp_rtt_p50', 'udp_rtt_p99', 'udp_rtt_lost'],
    what: 'UDP one datagram at a time',
    naFor: (name) => (PATHS[name].udp ? undefined : PATHS[name].noUdp ?? 'no UDP'),
    run: async (h, notes, name) => {
      // Not in the rows: proves datagrams come back, and opens what the first one opens (a flow).
      const warmup = await udpProbe(['rtt', TARGET, UDP_ECHO_PORT, UDP.rttBytes, 20, 10, UDP.waitMs]);
      if (warmup.echoed === 0) throw new Error(`no datagram came back (${udpLossText(warmup)})`);
      const runs = [];
      for (let i = 0; i < CFG.repeats; i++) {
        runs.push(await udpProbe(['rtt', TARGET, UDP_ECHO_PORT, UDP.rttBytes, CFG.udpRttN, CFG.udpRttSeconds, UDP.waitMs]));
      }
      const lost = udpLoss(notes, `${name} / UDP one at a time`, runs);
      return {
        udp_rtt_p50: ok(median(runs.map((r) => r.p50_ms)), { runs, warmup }),
        udp_rtt_p99: ok(median(runs.map((r) => r.p99_ms)), { runs, warmup }),
        udp_rtt_lost: lost,
      };
    },
  });
  list.push({
    rows: ['udp_dps', 'udp_dps_lost'],
    what: `UDP ${UDP.window} datagrams in flight`,
    naFor: (name) => (PATHS[name].udp ? undefined : PATHS[name].noUdp ?? 'no UDP'),
    run: async (h, notes, name) => {
      const runs = [];
      for (let i = 0; i < CFG.repeats; i++) {
        runs.push(await udpProbe(['window', TARGET, UDP_ECHO_PORT, UDP.bytes, UDP.window, UDP.maxN, CFG.udpWindowSeconds, UDP.waitMs]));
      }
      const lost = udpLoss(notes, `${name} / UDP ${UDP.window} in flight`, runs);
      return { udp_dps: ok(median(runs.map((r) => r.dgram_per_s)), { runs }), udp_dps_lost: lost };
    },
  });
  // Memory under many bulk transfers at once, on a fresh process so its peak is this step's.
  list.push({
    rows: ['bulk20_gbps', 'bulk20_client', 'bulk20_server', 'bulk20_transport'],
    what: '20 parallel bulk transfers',
    needsRestart: true,
    run: async (h, notes, name) => {
      const sampler = new RssSampler(lab, h.classify, probePids);
      sampler.start();
      let r;
      let procs;
      try {
        r = await iperf(h.endpoint(IPERF_PORT), { streams: 10, bidir: true, seconds: CFG.iperfSeconds, omit: CFG.iperfOmit });
      } finally {
        procs = sampler.stop();
      }
      return {
        bulk20_gbps: ok(r.gbps, r),
        bulk20_client: peakRssCell(name, procs, 'client'),
        bulk20_server: peakRssCell(name, procs, 'server'),
        bulk20_transport: peakRssCell(name, procs, 'transport'),
      };
    },
  });
  for (const n of CFG.holds) {
    list.push({
      rows: [`hold${n}_ok`, `hold${n}_client`, `hold${n}_server`, `hold${n}_transport`],
      what: `${n} concurrent connections`,
      needsRestart: true,
      run: async (h, notes, name) => {
        const ep = h.endpoint(ECHO_PORT);
        const lo0 = await listenOverflows();
        const sampler = new RssSampler(lab, h.classify, probePids);
        sampler.start();
        let r;
        let procs;
        try {
          r = await probe(['hold', ep.host, ep.port, n, CFG.holdSeconds, CFG.openSeconds], (CFG.openSeconds + CFG.holdSeconds + 60) * 1000);
        } finally {
          procs = sampler.stop();
        }
        r.listen_overflows_cli = (await listenOverflows()) - lo0;
        const memCell = (kind) => peakRssCell(name, procs, kind);
        if (r.alive < n) {
          const why = { ...r.errors, ...Object.fromEntries(Object.entries(r.late_errors).map(([k, v]) => [`late ${k}`, v])) };
          notes.push(`${name} / ${n} held: ${r.alive} of ${n} alive (opened ${r.opened} of ${r.attempted} attempted in ${r.open_s.toFixed(1)} s, ` +
            `stopped by: ${r.stopped_by}) ${JSON.stringify(why)}` +
            (r.listen_overflows_cli > 0 ? `; ${r.listen_overflows_cli} accept-queue overflows in cli` : '') +
            (h.output?.() ? `; its last output: ${h.output().split('\n').slice(-3).join(' | ').slice(0, 400)}` : ''));
        }
        return {
          [`hold${n}_ok`]: ok(r.alive, r),
          [`hold${n}_client`]: memCell('client'),
          [`hold${n}_server`]: memCell('server'),
          [`hold${n}_transport`]: memCell('transport'),
        };
      },
    });
  }
  return list;
}

async function runPath(name, cells, notes) {
  const def = PATHS[name];
  const fill = (rowIds, reason) => {
    for (const id of rowIds) cells[id][name] ??= { ok: false, reason };
  };
  let h;
  const start = async () => {
    const t = Date.now();
    h = await def.start();
    if (h.cipher) (ciphers.paths ??= {})[name] = h.cipher;
    log(`[${name}] up in ${((Date.now() - t) / 1000).toFixed(1)} s${h.cipher ? ` (cipher ${h.cipher})` : ''}`);
  };
  const stop = async () => {
    if (!h) return;
    const hh = h;
    h = undefined;
    await hh.stop().catch((e) => notes.push(`${name}: stop: ${errText(e)}`));
    await settle(notes, name);
  };
  try {
    for (const step of steps().filter((st) => !opts.rows || st.rows.some((r) => opts.rows.includes(r)))) {
      if (interrupted) return;
      const naReason = step.naFor?.(name);
      if (naReason) {
        for (const id of step.rows) cells[id][name] = na(naReason);
        continue;
      }
      if (step.needsRestart && name !== 'direct') await stop();
      if (!h) {
        try {
          await start();
        } catch (e) {
          const reason = `path did not come up: ${errText(e)}`;
          log(`[${name}] ${reason}`);
          fill(step.rows, reason);
          await settle(notes, name).catch(() => {});
          continue;
        }
      }
      const t = Date.now();
      try {
        const res = await step.run(h, notes, name);
        for (const [id, cell] of Object.entries(res)) cells[id][name] = cell;
        const shown = step.rows.map((id) => `${ROWS.find((r) => r.id === id).label}: ${fmtCell(cells[id][name], ROWS.find((r) => r.id === id))}`);
        log(`[${name}] ${shown.join(', ')} (${((Date.now() - t) / 1000).toFixed(1)} s)`);
      } catch (e) {
        if (interrupted) return;
        const reason = errText(e);
        log(`[${name}] ${step.what}: fail: ${reason}`);
        fill(step.rows, reason);
      }
      const died = h?.death?.();
      if (died) {
        notes.push(`${name}: its process ${died} — during "${step.what}"; restarted for the next measurement`);
        log(`[${name}] ${died}`);
        await stop();
      }
    }
  } finally {
    if (!interrupted) await stop();
  }
}

// ---------------------------------------------------------------------------
// Output.

function fmtNum(v, unit) {
  if (v === null || v === undefined || Number.isNaN(v)) return '—';
  switch (unit) {
    case 'Gbit/s':
      return v.toFixed(2);
    case 'conn/s':
    case 'conns':
    case 'q/s':
    case 'dgram/s':
      return String(Math.round(v));
    case '%':
      return v.toFixed(2);
    case 'MiB':
      return v.toFixed(1);
    case 'ms':
      return v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(3);
    default:
      return String(v);
  }
}

function fmtCell(cell, r) {
  if (!cell) return '—';
  if (!cell.ok) return 'fail';
  if (cell.na) return '—';
  return fmtNum(cell.value, r.unit);
}

/** Each row's baseline: the better of the row's baseline paths that have a number (ties: the first
 *  listed), marked `baseline: true`; every other number gets `ratio` and `ratio_to`. */
function addRatios(cells) {
  const usable = (c) => c?.ok && !c.na && typeof c.value === 'number' && c.value > 0;
  for (const r of ROWS) {
    if (r.ratio === false) continue;
    let baseName;
    for (const name of r.baseline) {
      const c = cells[r.id][name];
      if (!usable(c)) continue;
      const b = cells[r.id][baseName];
      if (!b || (r.better === 'higher' ? c.value > b.value : c.value < b.value)) baseName = name;
    }
    if (!baseName) continue;
    const base = cells[r.id][baseName];
    base.baseline = true;
    for (const [name, cell] of Object.entries(cells[r.id])) {
      if (!cell.ok || cell.na || cell.value === null || name === baseName) continue;
      cell.ratio = cell.value / base.value;
      cell.ratio_to = baseName;
    }
  }
}

function renderTable(paths, cells, failRefs) {
  const header = ['', ...paths.map((p) => PATH_LABEL[p])];
  const lines = [header];
  for (const r of ROWS) {
    if (paths.every((p) => !cells[r.id][p])) continue; // not measured in this run (--rows)
    const line = [`${r.label} (${r.unit})`];
    for (const p of paths) {
      const c = cells[r.id][p];
      if (!c) line.push('—');
      else if (!c.ok) {
        let i = failRefs.indexOf(`${p} / ${r.label}: ${c.reason}`);
        if (i < 0) i = failRefs.push(`${p} / ${r.label}: ${c.reason}`) - 1;
        line.push(`fail[${i + 1}]`);
      } else {
        let s = fmtCell(c, r);
        if (c.baseline) s += '*';
        else if (c.ratio !== undefined) s += ` (${c.ratio.toFixed(2)}×)`;
        line.push(s);
      }
    }
    lines.push(line);
  }
  const widths = header.map((_, i) => Math.max(...lines.map((l) => l[i].length)));
  const fmt = (l) => l.map((s, i) => (i === 0 ? s.padEnd(widths[i]) : s.padStart(widths[i]))).join('  ');
  const out = [fmt(lines[0]), widths.map((w) => '-'.repeat(w)).join('  '), ...lines.slice(1).map(fmt)];
  return out.join('\n');
}

// ---------------------------------------------------------------------------

async function main() {
  if (process.getuid?.() !== 0) {
    process.stderr.write('bench: must run as root (network namespaces, iptables)\n');
    process.exit(1);
  }
  const started = new Date();
  const nofile = raiseNofile(1 << 20);
  const machine = { ...machineInfo(), nofile };
  const paths = opts.only;
  const head = [
    `rxshuttle bench ${opts.quick ? '(--quick) ' : ''}${started.toISOString()}`,
    `machine: nproc=${machine.nproc} (${machine.cpu}), ${machine.memory_gib} GiB, kernel ${machine.kernel}, node ${machine.node}, load ${machine.loadavg.join(' ')}`,
    `tools: ${machine.ssh}; sshuttle ${machine.sshuttle ?? 'not installed'}; ${machine.iperf3 ?? 'iperf3 not installed'}; rxshuttle ${machine.rxshuttle_git ?? '?'} (ssh2 binding ${machine.ssh2_binding ? 'built' : 'not built'}); open files ${nofile?.soft}/${nofile?.hard}`,
    `paths: ${paths.join(', ')}; ratios are to the better of ssh -L and ssh -L (same cipher) in each row (same sshd; marked *), ` +
      `the DNS and UDP rows' to direct; ` +
      `iperf3 -t ${CFG.iperfSeconds}${CFG.iperfOmit ? ` -O ${CFG.iperfOmit}` : ''}; conns/s: ${CFG.rateN} or ${CFG.rateSeconds} s; rtt: ${CFG.rttN} or ${CFG.rttSeconds} s; ` +
      `DNS: ${CFG.dnsN} queries or ${CFG.dnsSeconds} s, ${DNS.conc} in flight, ${DNS.timeoutMs} ms timeout; ` +
      `UDP: ${UDP.rttBytes} B one at a time, ${CFG.udpRttN} or ${CFG.udpRttSeconds} s; ${UDP.bytes} B, ${UDP.window} in flight, ` +
      `${CFG.udpWindowSeconds} s; ${UDP.waitMs} ms before a datagram counts as lost; conns/s, idle rtt, DNS and UDP: median of ${CFG.repeats}; held ${CFG.holdSeconds} s`,
  ];
  process.stdout.write(`${head.join('\n')}\n\n`);
  const missing = ensureCommand('iperf3', 'iperf3');
  const dnsMissing = ensureCommand('dnsmasq', 'dnsmasq');
  const cells = Object.fromEntries(ROWS.map((r) => [r.id, {}]));
  const notes = [];
  if (missing) notes.push(missing);
  if (dnsMissing) notes.push(`${dnsMissing}: no DNS rows, and the rxshuttle paths run without --dns`);
  if (nofile && nofile.hard < 10_100 && CFG.holds.includes(10_000)) {
    notes.push(`open-file hard limit is ${nofile.hard}: 10 000 held connections may fail for lack of descriptors`);
  }
  let labError;
  try {
    await startLab(dnsMissing);
    for (const name of paths) {
      if (interrupted) break;
      log(`[${name}] ---`);
      await runPath(name, cells, notes);
    }
  } catch (e) {
    labError = errText(e);
    log(`lab: ${labError}`);
    notes.push(`lab: ${labError}`);
    for (const r of ROWS) for (const p of paths) cells[r.id][p] ??= { ok: false, reason: `lab: ${labError}` };
  } finally {
    await teardown();
  }
  if (interrupted) return;
  // ssh -L (same cipher) took ssh2's cipher from one handshake: say so if a tunnel got another.
  for (const [p, c] of Object.entries(ciphers.paths ?? {})) {
    if (p.startsWith('rxshuttle') && ciphers.openssh_same && c !== ciphers.ssh2) {
      notes.push(`${p}: ssh2 negotiated ${c}, where ssh -L (same cipher) used ${ciphers.ssh2}`);
    }
  }

  addRatios(cells);
  const failRefs = [];
  const table = renderTable(paths, cells, failRefs);
  const finished = new Date();
  process.stdout.write(`${table}\n`);
  const cipherText = [
    ciphers.openssh && `ssh -L: ${ciphers.openssh} (OpenSSH's default)`,
    ciphers.ssh2 && `ssh2 (rxshuttle's default transport): ${ciphers.ssh2}`,
    ciphers.openssh_same && `ssh -L (same cipher): -c ${ciphers.ssh2} → ${ciphers.openssh_same}`,
  ].filter(Boolean);
  process.stdout.write('\nratio = path ÷ the row\'s baseline (*) in the same run (throughput, conns/s, datagrams/s, alive: higher is better; ' +
    'rtt, RSS: lower is better);\nthe baseline is the better of ssh -L and ssh -L (same cipher) in that row (the one that ran, if one did),\n' +
    'except in the DNS and UDP rows: direct (ssh -L carries no UDP; DNS cells only for direct and the rxshuttle paths, started with --dns;\n' +
    'UDP cells only for direct and the tproxy paths). UDP lost: % of the datagrams sent that did not come back intact in time (no ratio).\n');
  if (cipherText.length > 0) process.stdout.write(`ciphers: ${cipherText.join('; ')}.\n`);
  process.stdout.write('RSS = peak VmHWM (MiB, summed over the processes of a role): client = rxshuttle node / sshuttle python / ssh -L client;\n' +
    'server = remote rxshuttle node / remote sshuttle python / sshd session; +ssh/sshd = the ssh transport under rxshuttle/sshuttle.\n');
  if (failRefs.length > 0) {
    process.stdout.write('\nfailures:\n');
    failRefs.forEach((f, i) => process.stdout.write(`  [${i + 1}] ${f}\n`));
  }
  if (notes.length > 0) {
    process.stdout.write('\nnotes:\n');
    for (const n of notes) process.stdout.write(`  - ${n}\n`);
  }
  fs.mkdirSync(RESULTS, { recursive: true });
  const file = path.join(RESULTS, `${started.toISOString().replace(/[:.]/g, '-')}${opts.quick ? '-quick' : ''}.json`);
  const json = {
    started: started.toISOString(),
    finished: finished.toISOString(),
    quick: opts.quick,
    machine,
    config: CFG,
    paths,
    baseline: BASELINE,
    ciphers,
    rows: ROWS.map((r) => ({ ...r, cells: cells[r.id] })),
    failures: failRefs,
    notes,
    table,
  };
  fs.writeFileSync(file, `${JSON.stringify(json, null, 2)}\n`);
  process.stdout.write(`\nwritten: ${path.relative(ROOT, file)} (${((finished - started) / 1000).toFixed(0)} s)\n`);
}

main().then(
  () => process.exit(interrupted ? 130 : 0),
  async (e) => {
    log(`fatal: ${e?.stack ?? e}`);
    await teardown();
    process.exit(1);
  },
);
