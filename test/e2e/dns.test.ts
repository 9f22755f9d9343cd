// --dns in the e2e lab. cli's resolv.conf names dnsmasq on 10.98.0.3 (in tgt), which cli cannot
// reach: only srv can. So a name of the lab resolves on cli only when its query is captured,
// carried through the tunnel and answered by srv's resolver (the same dnsmasq, via srv's own
// /etc/netns resolv.conf). The tunnel here carries TCP to 10.98.0.0/24 only: DNS works only
// through the capture, never as ordinary tunneled traffic.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { DNS_NAMES, LAB, type Lab, PAGE_MARKER } from './lab.js';
import { curl, Rxshuttle, rxshuttleRules, useLab } from './tunnel-helpers.js';

const DNS_LOAD = fileURLToPath(new URL('./dns-load.mjs', import.meta.url));
/** big.lab TXT: six strings of 200 bytes, an answer of about 1 250 bytes. */
const BIG_STRINGS = Array.from({ length: 6 }, (_, i) => String.fromCharCode(97 + i).repeat(200));

let lab: Lab;

useLab(
  { dns: true, ipv6: true, noNodeSshd: false, dnsmasqArgs: [`--txt-record=big.lab,${BIG_STRINGS.map((s) => `"${s}"`).join(',')}`] },
  (up) => {
    lab = up;
  },
);

/** dig in cli (its resolv.conf: nameserver 10.98.0.3), one try. */
const dig = (args: readonly string[], timeS = 3) =>
  lab.exec('cli', ['dig', `+time=${timeS}`, '+tries=1', ...args], { timeoutMs: (timeS + 10) * 1000 });
const getent = (...args: string[]) => lab.exec('cli', ['getent', ...args], { timeoutMs: 20_000 });
const status = (digOutput: string) => /status: ([A-Z]+)/.exec(digOutput)?.[1];
const dnsmasqLog = () => fs.readFileSync(path.join(lab.stateDir, 'dnsmasq.log'), 'utf8');

describe('--dns', () => {
  it('without --dns, the lab names do not resolve on cli: its nameserver is out of reach', async () => {
    const rx = await Rxshuttle.remote(lab, [LAB.targetSubnet]);
    const [d, g] = await Promise.all([dig(['target.lab'], 2), getent('hosts', 'target.lab')]);
    expect(d.stdout).not.toMatch(/status: NOERROR/);
    expect(d.stdout).toMatch(/timed out|no servers could be reached/);
    expect(g.code).not.toBe(0);
    expect(g.stdout).toBe('');
    await rx.stop();
  });

  it('with --dns, dig and getent resolve them, answered by the remote resolver as if by the nameserver asked', async () => {
    const rx = await Rxshuttle.remote(lab, ['--dns', LAB.targetSubnet]);
    expect(rx.output).toMatch(/Firewall ready: .*DNS to 10\.98\.0\.3 captured \(port \d+\)/);
    const nat = await lab.iptablesSave('cli', { table: 'nat' });
    expect(nat).toMatch(/-A rxshuttle-\d+ -d 10\.98\.0\.3\/32 -p udp -m udp --dport 53 -j REDIRECT --to-ports \d+/);

    const d = await dig(['target.lab']);
    expect(status(d.stdout), d.stdout).toBe('NOERROR');
    expect(d.stdout).toMatch(/^target\.lab\.\s+\d+\s+IN\s+A\s+10\.98\.0\.3$/m);
    // dig checks that the answer comes from the address it asked: conntrack undid the REDIRECT.
    expect(d.stdout).toContain('SERVER: 10.98.0.3#53(10.98.0.3) (UDP)');

    const hosts = await getent('hosts', 'echo4.lab');
    expect(hosts.code, hosts.stderr).toBe(0);
    expect(hosts.stdout.trim()).toMatch(/^10\.98\.0\.4\s+echo4\.lab$/);
    const v4 = await getent('ahostsv4', 'target.lab');
    expect(v4.code).toBe(0);
    expect(v4.stdout).toContain(DNS_NAMES['target.lab']);
    const reverse = await dig(['+short', '-x', LAB.target]);
    expect(reverse.stdout.trim()).toBe('target.lab.');

    await rx.waitFor(/DNS: 10\.99\.0\.1:\d+ asked target\.lab A \(udp\): answered, NOERROR/);
    // The nameserver saw the query come from srv: it was resolved on the remote side.
    expect(dnsmasqLog()).toMatch(/query\[A\] target\.lab from 10\.98\.0\.2/);
    expect(dnsmasqLog()).not.toMatch(/from 10\.99\.0\.1/);

    await rx.stop();
    expect(await rxshuttleRules(lab)).toEqual([]);
    expect((await dig(['target.lab'], 2)).stdout).not.toMatch(/status: NOERROR/);
  });

  it('an IPv6 nameserver (--ns-hosts) is captured through ip6tables and answers as itself', async () => {
    const rx = await Rxshuttle.remote(lab, ['--ns-hosts', LAB.target6, LAB.targetSubnet]);
    expect(await lab.iptablesSave('cli', { table: 'nat', ipv6: true })).toMatch(
      /-A rxshuttle-\d+ -d fd00:98::3\/128 -p udp -m udp --dport 53 -j REDIRECT --to-ports \d+/,
    );
    const d = await dig([`@${LAB.target6}`, 'target.lab', 'AAAA']);
    expect(status(d.stdout), d.stdout).toBe('NOERROR');
    expect(d.stdout).toMatch(/IN\s+AAAA\s+fd00:98::3/);
    expect(d.stdout).toContain(`SERVER: ${LAB.target6}#53(${LAB.target6}) (UDP)`);
    await rx.waitFor(/DNS: \[fd00:99::1\]:\d+ asked target\.lab AAAA \(udp\): answered/);
    // 10.98.0.3 was not named: its queries are not captured
    expect((await dig(['@10.98.0.3', 'target.lab'], 2)).stdout).not.toMatch(/status: NOERROR/);
  });

  it('local mode (no -r) in srv: the local server asks the nameserver itself, without looping back into the capture', async () => {
    const rx = await Rxshuttle.local(lab, 'srv', ['--dns', LAB.targetSubnet]);
    const d = await lab.exec('srv', ['dig', '+time=3', '+tries=1', 'echo5.lab'], { timeoutMs: 15_000 });
    expect(status(d.stdout), d.stdout).toBe('NOERROR');
    expect(d.stdout).toMatch(/IN\s+A\s+10\.98\.0\.5/);
    await rx.waitFor(/DNS: .* asked echo5\.lab A \(udp\): answered/);
    await new Promise((r) => setTimeout(r, 300));
    expect(rx.output.match(/asked echo5\.lab A/g)).toHaveLength(1);
  });

  it('200 queries at once are all answered', async () => {
    const rx = await Rxshuttle.remote(lab, ['--dns', LAB.targetSubnet]);
    const r = await lab.exec('cli', [lab.nodePath, DNS_LOAD, JSON.stringify({ server: LAB.target, expect: DNS_NAMES, count: 200, timeoutMs: 15_000 })], {
      timeoutMs: 30_000,
    });
    const summary = JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as { ok: number; failed: number; elapsedMs: number };
    expect(summary, `${r.stdout}\n${r.stderr}`).toMatchObject({ ok: 200, failed: 0 });
    console.log(`200 concurrent DNS queries through the tunnel: ${summary.elapsedMs} ms`);
    expect(rx.running).toBe(true);
  });

  it('answers beyond 512 bytes survive: whole over UDP with EDNS, over TCP after TC without it', async () => {
    await Rxshuttle.remote(lab, ['--dns', LAB.targetSubnet]);
    const txt = (out: string) => BIG_STRINGS.every((s) => out.includes(s));

    const edns = await dig(['+bufsize=4096', 'big.lab', 'TXT']);
    expect(status(edns.stdout), edns.stdout).toBe('NOERROR');
    expect(edns.stdout).toContain('(UDP)');
    expect(edns.stdout).not.toContain('Truncated');
    expect(Number(/MSG SIZE\s+rcvd: (\d+)/.exec(edns.stdout)?.[1])).toBeGreaterThan(1200);
    expect(txt(edns.stdout)).toBe(true);

    const classic = await dig(['+noedns', 'big.lab', 'TXT']);
    expect(classic.stdout).toContain('Truncated, retrying in TCP mode');
    expect(status(classic.stdout), classic.stdout).toBe('NOERROR');
    expect(classic.stdout).toContain('SERVER: 10.98.0.3#53(10.98.0.3) (TCP)');
    expect(txt(classic.stdout)).toBe(true);

    const tcp = await dig(['+tcp', 'big.lab', 'TXT']);
    expect(status(tcp.stdout)).toBe('NOERROR');
    expect(txt(tcp.stdout)).toBe(true);
  });

  it("a dead first nameserver in the remote's resolv.conf: the query is retried on the next", async () => {
    const file = `/etc/netns/${lab.ns.srv}/resolv.conf`;
    const original = fs.readFileSync(file, 'utf8');
    try {
      // In place: srv's sshd (and so the server) sees this file through a bind mount.
      fs.writeFileSync(file, `nameserver 10.98.0.9\nnameserver ${LAB.target}\noptions timeout:2 attempts:1\n`);
      await Rxshuttle.remote(lab, ['--dns', LAB.targetSubnet]);
      const t0 = Date.now();
      const d = await dig(['target.lab'], 10);
      const elapsed = Date.now() - t0;
      expect(status(d.stdout), d.stdout).toBe('NOERROR');
      expect(d.stdout).toMatch(/IN\s+A\s+10\.98\.0\.3/);
      expect(elapsed).toBeGreaterThanOrEqual(1_800); // 10.98.0.9 was asked first, and timed out
      expect(elapsed).toBeLessThan(6_000);
    } finally {
      fs.writeFileSync(file, original);
    }
  });

  it('a query to a dead remote nameserver (--to-ns) fails within its timeout, and the tunnel keeps working', async () => {
    const rx = await Rxshuttle.remote(lab, ['--dns', '--to-ns', '10.98.0.9', LAB.targetSubnet]);
    for (let i = 0; i < 2; i++) {
      const t0 = Date.now();
      const d = await dig(['target.lab'], 10);
      const elapsed = Date.now() - t0;
      // srv's resolv.conf says timeout:2: the server gives up then, and the asker gets SERVFAIL.
      expect(status(d.stdout), d.stdout).toBe('SERVFAIL');
      expect(elapsed).toBeLessThan(5_000);
      const page = await curl(lab, 'cli', `http://${LAB.target}/`);
      expect(page.code, page.stderr).toBe(0);
      expect(page.stdout).toContain(PAGE_MARKER);
    }
    await rx.waitFor(/DNS: .* asked target\.lab A \(udp\): failed, ETIMEDOUT from 10\.98\.0\.9:53/);
    expect(rx.running).toBe(true);
  });
});
