// Stock-sshd mode in the e2e lab: the remote (lab-nonode, sshd on 10.99.0.2:2222) has a shell
// and the usual tools but no node on any PATH, so nothing of rxshuttle's runs there. TCP goes in
// sshd's own direct-tcpip channels, --dns as DNS over TCP through them, -N and -H from plain
// commands, the keepalive at the ssh level. cli reaches 10.98.0.0/24 (and dnsmasq on 10.98.0.3)
// only through the tunnel, so whatever works here went through it.
import * as fs from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { LAB, type Lab, labBytesSha256, PAGE_MARKER } from './lab.js';
import {
  curl,
  echoOnce,
  expectNothingLeft,
  oneErrorLine,
  Rxshuttle,
  remoteNodePids,
  runRxshuttle,
  rxshuttleProcessesIn,
  rxshuttleRules,
  useLab,
  waitFast,
} from './tunnel-helpers.js';

const MB20 = 20_000_000;
/** stock.lab TXT: twenty strings of 200 bytes, an answer of about 4 KB (TC over UDP, whole over TCP). */
const TXT_STRINGS = Array.from({ length: 20 }, (_, i) => String.fromCharCode(97 + i).repeat(200));
const SRV_HOSTS = '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n10.98.0.4\techo4-srv\n10.98.0.5\tbox5.corp.lab box5\n';

let lab: Lab;
let hostsPath: string;
let originalHosts: Buffer;

afterEach(() => {
  if (hostsPath && !fs.readFileSync(hostsPath).equals(originalHosts)) fs.writeFileSync(hostsPath, originalHosts);
});

useLab(
  {
    dns: true,
    srvHosts: SRV_HOSTS,
    // Names under lab. that dnsmasq does not know are NXDOMAIN (not REFUSED: it has no upstream).
    dnsmasqArgs: ['--local=/lab/', `--txt-record=stock.lab,${TXT_STRINGS.map((s) => `"${s}"`).join(',')}`],
  },
  (up) => {
    lab = up;
    hostsPath = `/etc/netns/${lab.ns.cli}/hosts`;
    originalHosts = fs.readFileSync(hostsPath);
  },
);

/** The transport of the describe block being run. */
let transport: readonly string[] = [];

/** rxshuttle -v to lab-nonode on the current transport, ready once the rules are in. */
async function stockTunnel(args: readonly string[], host = lab.sshHostNoNode): Promise<Rxshuttle> {
  const rx = new Rxshuttle(lab, 'cli', ['-v', ...transport, '-r', host, '-e', lab.sshCommand, ...args]);
  await rx.ready();
  return rx;
}

const dig = (args: readonly string[], timeS = 3) =>
  lab.exec('cli', ['dig', `+time=${timeS}`, '+tries=1', ...args], { timeoutMs: (timeS + 10) * 1000 });
const status = (digOutput: string) => /status: ([A-Z]+)/.exec(digOutput)?.[1];

// In-process (ssh2, the default) and through the ssh binary (its ControlMaster carries TCP with
// half-close kept, DNS channels and the commands; ProxyJump and passwords take this path).
describe.each([
  { name: 'ssh2 (the default)', extra: [] as string[] },
  { name: 'the ssh binary', extra: ['--transport', 'ssh'] },
])('stock-sshd mode (a remote without node), $name', ({ extra }) => {
  beforeAll(() => {
    transport = extra;
  });

  it('is chosen by itself and says why with -v; nothing of ours runs on the remote; TCP and a 20 MB download intact', async () => {
    const before = await remoteNodePids(lab);
    const rx = await stockTunnel([LAB.targetSubnet]);
    expect(rx.output).toMatch(/Remote: stock sshd, nothing run there \(no "node" there; TCP in sshd's own channels\)\./);
    expect(await remoteNodePids(lab)).toEqual(before);

    const page = await curl(lab, 'cli', `http://${LAB.target}/`);
    expect(page.code, page.stderr).toBe(0);
    expect(page.stdout).toContain(PAGE_MARKER);
    await rx.waitFor(/closed ssh#\d+ 10\.98\.0\.3:80: done/);

    const r = await lab.exec(
      'cli',
      ['bash', '-c', `set -o pipefail; curl -sS --fail --max-time 60 http://${LAB.target}/bytes/${MB20} | sha256sum`],
      { timeoutMs: 80_000 },
    );
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout.split(' ')[0]).toBe(labBytesSha256(MB20));
  });

  it('--remote-node none on a host that has node: stock mode all the same', async () => {
    const rx = await stockTunnel(['--remote-node', 'none', LAB.targetSubnet], lab.sshHost);
    expect(rx.output).toMatch(/Remote: stock sshd, nothing run there \(--remote-node none; TCP in sshd's own channels\)\./);
    const page = await curl(lab, 'cli', `http://${LAB.target}/`);
    expect(page.stdout).toContain(PAGE_MARKER);
  });

  it('half-close both ways: the server closes first and the program sees EOF with its side open; the program half-closes and still gets the answer', async () => {
    await stockTunnel([LAB.targetSubnet]);
    lab.spawn('tgt', ['socat', `TCP-LISTEN:9009,bind=${LAB.target},fork,reuseaddr`, 'SYSTEM:echo bye']);
    await waitFast(async () => (await lab.exec('tgt', ['ss', '-ltnH', 'sport = :9009'])).stdout.trim() !== '', 5_000, 'socat listening');
    // fd 3 stays open for writing the whole time: only the server's FIN can end `cat`.
    const first = await lab.exec('cli', ['timeout', '10', 'bash', '-c', `exec 3<>/dev/tcp/${LAB.target}/9009; cat <&3`], { timeoutMs: 15_000 });
    expect(first.code, first.stderr).toBe(0);
    expect(first.stdout).toBe('bye\n');

    // whois-style: the question, then EOF, then the answer (the echo server answers after our EOF is seen too).
    const asked = await lab.exec('cli', ['timeout', '10', 'bash', '-c', `printf 'question\\n' | socat -t 5 - TCP:${LAB.target}:${LAB.echoPort}`], {
      timeoutMs: 15_000,
    });
    expect(asked.code, asked.stderr).toBe(0);
    expect(asked.stdout).toBe('question\n');
  });

  it('a refused port resets the local connection at once', async () => {
    const rx = await stockTunnel([LAB.targetSubnet]);
    const e = await echoOnce(lab, 'cli', LAB.target, LAB.closedPort, 10_000);
    expect(e.ok).toBe(0);
    expect(e.timedOut).toBe(false);
    expect(e.elapsedMs).toBeLessThan(5_000);
    expect(e.firstFailures[0]?.reason).toMatch(/^error ECONNRESET/);
    await rx.waitFor(/closed ssh#\d+ 10\.98\.0\.3:81: refused/);
    // the tunnel goes on
    expect((await curl(lab, 'cli', `http://${LAB.target}/`)).stdout).toContain(PAGE_MARKER);
  });

  it('--dns: DNS over TCP to the remote nameserver: a name only it knows, NXDOMAIN, a 4 KB TXT answer through TC and TCP', async () => {
    const rx = await stockTunnel(['--dns', LAB.targetSubnet]);
    const d = await dig(['target.lab']);
    expect(status(d.stdout), d.stdout).toBe('NOERROR');
    expect(d.stdout).toMatch(/^target\.lab\.\s+\d+\s+IN\s+A\s+10\.98\.0\.3$/m);
    expect(d.stdout).toContain('SERVER: 10.98.0.3#53(10.98.0.3) (UDP)');
    await rx.waitFor(/DNS: 10\.99\.0\.1:\d+ asked target\.lab A \(udp\): answered, NOERROR/);

    const missing = await dig(['nosuch.lab']);
    expect(status(missing.stdout), missing.stdout).toBe('NXDOMAIN');

    const txt = (out: string) => TXT_STRINGS.every((s) => out.includes(s));
    const classic = await dig(['+noedns', 'stock.lab', 'TXT']);
    expect(classic.stdout).toContain('Truncated, retrying in TCP mode');
    expect(status(classic.stdout), classic.stdout).toBe('NOERROR');
    expect(txt(classic.stdout)).toBe(true);
    const reverse = await dig(['+short', '-x', LAB.target]);
    expect(reverse.stdout.trim()).toBe('target.lab.');
  });

  it('--dns: 50 queries at once all answered, over a few TCP connections to the nameserver', async () => {
    await stockTunnel(['--dns', LAB.targetSubnet]);
    const names = ['target.lab', 'echo4.lab', 'echo5.lab'];
    const results = await Promise.all(Array.from({ length: 50 }, (_, i) => dig(['+short', names[i % 3] as string], 5)));
    expect(results.map((r) => r.stdout.trim())).toEqual(Array.from({ length: 50 }, (_, i) => ['10.98.0.3', '10.98.0.4', '10.98.0.5'][i % 3]));
  });

  it('--dns with the remote nameserver down (--to-ns to a dead address): SERVFAIL within the timeout, and the tunnel goes on', async () => {
    const rx = await stockTunnel(['--dns', '--to-ns', '10.98.0.9', LAB.targetSubnet]);
    const t0 = Date.now();
    const d = await dig(['target.lab'], 15);
    expect(status(d.stdout), d.stdout).toBe('SERVFAIL');
    expect(Date.now() - t0).toBeLessThan(14_000);
    expect((await curl(lab, 'cli', `http://${LAB.target}/`)).stdout).toContain(PAGE_MARKER);
    expect(rx.running).toBe(true);
  });

  it('-N: the remote routing table (read with cat /proc/net/route) finds the target network', async () => {
    const rx = await stockTunnel(['-N']);
    expect(rx.output).toMatch(/rxshuttle: {3}10\.98\.0\.0\/24\n/);
    const nat = await lab.iptablesSave('cli', { table: 'nat' });
    expect(nat).toMatch(/-A rxshuttle-\d+ -d 10\.98\.0\.0\/24 -p tcp -j REDIRECT/);
    expect(nat).not.toMatch(/-d 0\.0\.0\.0\/0/);
    const page = await curl(lab, 'cli', `http://${LAB.target}/`);
    expect(page.stdout).toContain(PAGE_MARKER);
  });

  it("-H: the remote's /etc/hosts, seeds and reverse names go into /etc/hosts and out again; after SIGKILL nothing is left", async () => {
    const rx = await stockTunnel(['-H', '--seed-hosts', 'target.lab', LAB.targetSubnet]);
    // The block is named after the port and cli's network namespace (the inode ip netns pins).
    const name = `rxshuttle-${rx.port}-net${fs.statSync(`/run/netns/${lab.ns.cli}`).ino}`;
    const block = () => {
      const lines = fs.readFileSync(hostsPath, 'utf8').split('\n');
      const start = lines.findIndex((l) => l.startsWith(`# BEGIN ${name} `));
      const end = lines.indexOf(`# END ${name}`);
      return start < 0 || end < start ? [] : lines.slice(start + 1, end);
    };
    const wanted = ['10.98.0.4\techo4-srv', '10.98.0.5\tbox5.corp.lab', '10.98.0.5\tbox5', '10.98.0.3\ttarget.lab', '10.98.0.3\ttarget'];
    await waitFast(() => wanted.every((e) => block().includes(e)), 20_000, `${wanted.join(', ')} in:\n${fs.readFileSync(hostsPath, 'utf8')}`);
    expect(block().some((l) => /localhost/.test(l))).toBe(false);
    const found = await lab.exec('cli', ['getent', 'hosts', 'box5']);
    expect(found.stdout.trim()).toMatch(/^10\.98\.0\.5\s+box5$/);

    rx.child.kill('SIGKILL');
    await waitFast(() => fs.readFileSync(hostsPath).equals(originalHosts), 3_000, 'the hosts file as before');
    await waitFast(async () => (await rxshuttleRules(lab)).length === 0, 3_000, 'no rule after SIGKILL');
    await waitFast(async () => (await rxshuttleProcessesIn(lab, 'cli')).length === 0, 5_000, 'no rxshuttle process in cli');
  });

  it('the keepalive (at the ssh level) ends a tunnel whose network went silent: one line, exit 1, rules removed', async () => {
    const rx = await stockTunnel(['--keepalive', '1', '--no-reconnect', LAB.targetSubnet]);
    const drop = [
      ['-I', 'INPUT', '-s', LAB.cli, '-j', 'DROP'],
      ['-I', 'OUTPUT', '-d', LAB.cli, '-j', 'DROP'],
    ];
    for (const rule of drop) await lab.execOk('srv', ['iptables', '-w', ...rule]);
    try {
      const exit = await Promise.race([rx.exited, sleep(12_000).then(() => 'hang' as const)]);
      expect(exit, rx.output).not.toBe('hang');
      expect(exit).toMatchObject({ code: 1, signal: null });
      const last = rx.output.trim().split('\n').at(-1);
      expect(last).toBe('rxshuttle: connection to lab-nonode lost: no answer for 4 s (--keepalive 1)');
      await waitFast(async () => (await rxshuttleRules(lab)).length === 0, 2_000, 'no rxshuttle rule');
    } finally {
      for (const rule of drop) await lab.exec('srv', ['iptables', '-w', '-D', ...rule.slice(1)]);
    }
  });

});

describe('stock-sshd mode, ssh2 only', () => {
  beforeAll(() => {
    transport = [];
  });

  // ssh2 asks sshd at start (a direct-tcpip open answered "administratively prohibited"); the ssh
  // binary's mux says only "stdio forwarding failed", so through it each connection is reset instead.
  it('a remote with neither node nor TCP forwarding: one line naming both ways out, exit 1, nothing left', async () => {
    const r = await runRxshuttle(lab, 'cli', ['-r', lab.sshHostNoNodeNoForwarding, '-e', lab.sshCommand, LAB.targetSubnet], 60_000);
    expect(r.timedOut).toBe(false);
    expect(r.code).toBe(1);
    const msg = oneErrorLine(r.stderr);
    expect(msg).toMatch(/lab-nonode-nofwd has no usable node .* and refuses TCP forwarding: install Node\.js .*AllowTcpForwarding yes/);
    await expectNothingLeft(lab);
  });

  it("a remote resolv.conf naming 127.0.0.53 (systemd-resolved's stub): its queries go to the remote's own loopback", async () => {
    const file = `/etc/netns/${lab.ns.srv}/resolv.conf`;
    const original = fs.readFileSync(file, 'utf8');
    // A stub resolver on srv's loopback, forwarding to the lab's nameserver (as resolved would).
    const pidFile = `${lab.stateDir}/stub-dnsmasq.pid`;
    await lab.execOk('srv', ['ip', 'link', 'set', 'lo', 'up']);
    await lab.execOk('srv', ['dnsmasq', '--conf-file=/dev/null', '--no-resolv', '--no-hosts', '--bind-interfaces', '--listen-address=127.0.0.53',
      `--server=${LAB.target}`, '--user=root', '--group=root', `--pid-file=${pidFile}`]);
    try {
      fs.writeFileSync(file, 'nameserver 127.0.0.53\noptions timeout:2 attempts:1\n');
      const rx = await stockTunnel(['--dns', LAB.targetSubnet]);
      const d = await dig(['echo5.lab']);
      expect(status(d.stdout), d.stdout).toBe('NOERROR');
      expect(d.stdout).toMatch(/IN\s+A\s+10\.98\.0\.5/);
      await rx.waitFor(/DNS: .* asked echo5\.lab A \(udp\): answered, NOERROR/);
    } finally {
      fs.writeFileSync(file, original);
      const pid = Number(fs.readFileSync(pidFile, 'utf8'));
      if (pid > 0) process.kill(pid, 'SIGTERM');
    }
  });
});
