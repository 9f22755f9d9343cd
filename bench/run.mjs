#!/usr/bin/env node
// rxshuttle benchmark (not a test). See bench/README.md.
//
//   npm run bench                       build, then the full run
//   node bench/run.mjs [--quick] [--only direct,ssh-L,sshuttle,rxshuttle,rxshuttle-nolc,rxshuttle-ssh,rxshuttle-ssh-nolc,rxshuttle-sshfwd,rxshuttle-stock,rxshuttle-stock-ssh] [--rows IDS]
//
// Builds its own lab with the e2e harness (test/e2e/lab.ts, transpiled on the
// fly with esbuild, like scripts/lab.sh), measures every selected path from the
// cli namespace to the target 10.98.0.3, prints one table (ratios to `ssh -L`;
// the DNS rows' to `direct`)
// and writes it as JSON to bench/results/<timestamp>.json. The lab is always
// torn down: on success, on failure, on Ctrl-C/SIGTERM/SIGHUP.
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

const ALL_PATHS = ['direct', 'ssh-L', 'sshuttle', 'rxshuttle', 'rxshuttle-nolc', 'rxshuttle-ssh', 'rxshuttle-ssh-nolc', 'rxshuttle-sshfwd',
  'rxshuttle-stock', 'rxshuttle-stock-ssh'];
const PATH_LABEL = {
  direct: 'direct',
  'ssh-L': 'ssh -L',
  sshuttle: 'sshuttle',
  rxshuttle: 'rxshuttle',
  'rxshuttle-ssh': 'rxs --transport ssh',
  'rxshuttle-nolc': 'rxs --no-lat-ctl',
  'rxshuttle-ssh-nolc': 'rxs ssh --no-lat-ctl',
  'rxshuttle-sshfwd': 'rxs --ssh-forward',
  'rxshuttle-stock': 'rxs stock sshd',
  'rxshuttle-stock-ssh': 'rxs stock, ssh binary',
};
/** Ratios are to this path, except in rows that name a baseline of their own (the DNS rows: direct). */
const BASELINE = 'ssh-L';

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
    dnsN: 2000, dnsSeconds: 5 }
  : { iperfSeconds: 5, iperfOmit: 1, rateN: 2000, rateSeconds: 10, rttN: 2000, rttSeconds: 5, holds: [2000, 10000], holdSeconds: 3, openSeconds: 90, repeats: 3,
    dnsN: 10000, dnsSeconds: 10 };
/** DNS rows: queries in flight, and each one's timeout (the lab's resolv.conf says timeout:2 attempts:1). */
const DNS = { conc: 20, timeoutMs: 2000, port: 53 };

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
  execFileSync(esbuild, [path.join(ROOT, 'test', 'e2e', 'lab.ts'), '--format=esm', '--platform=node', '--target=node20',
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
  await startIperfServer();
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

async function waitForRules(child, out, pattern, what) {
  await labModule.waitUntil(
    async () => {
      if (child.exitCode !== null || child.signalCode !== null) {
        throw new Error(`${what} exited (${child.exitCode ?? child.signalCode}): ${out() || 'no output'}`);
      }
      const r = await exec('cli', ['iptables-save', '-t', 'nat']);
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

/** After a path stops: nothing of it may stay (processes, nat rules). */
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
  const nat = (await exec('cli', ['iptables-save', '-t', 'nat'])).stdout;
  if (/sshuttle|rxshuttle/.test(nat)) {
    notes.push(`${name}: nat rules left behind after stop; flushed the bench lab's cli nat table`);
    await exec('cli', ['iptables', '-t', 'nat', '-F']);
    await exec('cli', ['iptables', '-t', 'nat', '-X']);
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

const PATHS = {
  direct: {
    dns: true, // srv forwards: the queries go straight to dnsmasq
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
  'ssh-L': {
    async start() {
      const child = lab.spawn('cli', ['ssh', '-F', lab.sshConfigPath, '-N', '-o', 'ExitOnForwardFailure=yes',
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
        await waitForEcho(h.endpoint(ECHO_PORT), child, out, 'ssh -L');
      } catch (e) {
        await h.stop().catch(() => {});
        throw e;
      }
      return h;
    },
  },
  sshuttle: {
    async start() {
      const missing = ensureCommand('sshuttle', 'sshuttle');
      if (missing) throw new Error(missing);
      const child = lab.spawn('cli', ['sshuttle', '-r', lab.sshHost, '-e', lab.sshCommand, SUBNET]);
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
        stop: () => labModule.stopProcess(child, 'SIGTERM', 8000),
        death: deathOf(child, out),
        output: out,
      };
      try {
        await waitForRules(child, out, /sshuttle/, 'sshuttle');
        await waitForEcho(h.endpoint(ECHO_PORT), child, out, 'sshuttle');
      } catch (e) {
        await h.stop().catch(() => {});
        throw e;
      }
      return h;
    },
  },
  // `dns`: the path carries the DNS rows' queries (UDP to 10.98.0.3:53); the others get n/a there.
  // The rxshuttle paths run with --dns for every row: it adds only the DNS capture (two REDIRECT
  // rules for 10.98.0.3 port 53 at the head of its chain, a `-p udp --dport 53` OUTPUT jump, and
  // idle UDP/TCP sockets on the client); TCP to ports 7007/5201 is handled as without it.
  rxshuttle: { dns: true, start: () => startRxshuttle([]) },
  'rxshuttle-ssh': { dns: true, start: () => startRxshuttle(['--transport', 'ssh']) },
  'rxshuttle-nolc': { dns: true, start: () => startRxshuttle(['--no-latency-control']) },
  'rxshuttle-ssh-nolc': { dns: true, start: () => startRxshuttle(['--transport', 'ssh', '--no-latency-control']) },
  'rxshuttle-sshfwd': { dns: true, start: () => startRxshuttle(['--ssh-forward']) },
  // Stock-sshd mode: the host alias whose sshd hides node; rxshuttle finds no node there and runs
  // nothing on the remote (TCP in direct-tcpip channels, --dns as DNS over TCP through them).
  'rxshuttle-stock': { dns: true, start: () => startRxshuttle([], { host: lab.sshHostNoNode, stock: true }) },
  'rxshuttle-stock-ssh': { dns: true, start: () => startRxshuttle(['--transport', 'ssh'], { host: lab.sshHostNoNode, stock: true }) },
};

async function startRxshuttle(extra, { host = lab.sshHost, stock = false } = {}) {
  const cli = path.join(ROOT, 'dist', 'cli.js');
  if (!fs.existsSync(cli)) throw new Error('dist/cli.js missing: run npm run build (npm run bench does)');
  // BENCH_NODE_FLAGS='--cpu-prof --cpu-prof-dir=/tmp/prof' profiles the client (NODE_OPTIONS may not).
  const nodeFlags = (process.env.BENCH_NODE_FLAGS ?? '').split(' ').filter(Boolean);
  const dns = labDns ? ['--dns'] : [];
  const child = lab.spawn('cli', [NODE, ...nodeFlags, cli, '-r', host, '-e', lab.sshCommand, ...dns, ...extra, SUBNET]);
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
    await waitForRules(child, out, /rxshuttle-\d+/, 'rxshuttle');
    await waitForEcho(h.endpoint(ECHO_PORT), child, out, 'rxshuttle');
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
function row(id, label, unit, better, baseline = BASELINE) {
  ROWS.push({ id, label, unit, better, baseline });
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

/** A cell with the summed peak RSS (MiB) of one role's processes, as RssSampler saw them. */
function peakRssCell(name, procs, kind) {
  if (name === 'direct') return na('no relay');
  if (kind === 'transport' && name === 'ssh-L') return na('ssh/sshd are the relay');
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
    log(`[${name}] up in ${((Date.now() - t) / 1000).toFixed(1)} s`);
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
      return String(Math.round(v));
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

function addRatios(cells) {
  for (const r of ROWS) {
    const base = cells[r.id][r.baseline];
    for (const [name, cell] of Object.entries(cells[r.id])) {
      if (!cell.ok || cell.na || cell.value === null || name === r.baseline) continue;
      if (base?.ok && !base.na && typeof base.value === 'number' && base.value > 0) cell.ratio = cell.value / base.value;
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
        if (c.ratio !== undefined) s += ` (${c.ratio.toFixed(2)}×)`;
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
    `paths: ${paths.join(', ')}; ratios are to ssh -L (same sshd), the DNS rows' to direct; ` +
      `iperf3 -t ${CFG.iperfSeconds}${CFG.iperfOmit ? ` -O ${CFG.iperfOmit}` : ''}; conns/s: ${CFG.rateN} or ${CFG.rateSeconds} s; rtt: ${CFG.rttN} or ${CFG.rttSeconds} s; ` +
      `DNS: ${CFG.dnsN} queries or ${CFG.dnsSeconds} s, ${DNS.conc} in flight, ${DNS.timeoutMs} ms timeout; conns/s, idle rtt and DNS: median of ${CFG.repeats}; held ${CFG.holdSeconds} s`,
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

  addRatios(cells);
  const failRefs = [];
  const table = renderTable(paths, cells, failRefs);
  const finished = new Date();
  process.stdout.write(`${table}\n`);
  process.stdout.write('\nratio = path ÷ ssh -L in the same run (throughput, conns/s, alive: higher is better; rtt, RSS: lower is better);\n' +
    'DNS rows: path ÷ direct (ssh -L carries no UDP; only direct and the rxshuttle paths, started with --dns, have DNS cells).\n');
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
