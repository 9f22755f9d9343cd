// Host names as subnets (issue 15) in the e2e lab. wiki.corp is known only to dnsmasq on
// 10.98.0.3 (in tgt), which cli cannot reach: the name resolves only through the remote's
// resolver (srv's resolv.conf names that dnsmasq), so a tunnel to it proves the lookup went
// through the tunnel. dnsmasq answers with a TTL of 1 s (rxshuttle asks again after its minimum
// of 10 s) from a hosts file the test rewrites, so a moved name can be watched.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { MIN_REFRESH_S } from '../../src/tunnel/name-rules.js';
import { LAB, type Lab, PAGE_MARKER } from './lab.js';
import { curl, echoOnce, expectNothingLeft, oneErrorLine, Rxshuttle, runRxshuttle, rxshuttleRules, useLab, waitFast } from './tunnel-helpers.js';

const hostsFile = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'rxs-names-')), 'corp.hosts');
const corp = (v4: string) => `${v4} wiki.corp\n${LAB.target6} wiki.corp\n`;
fs.writeFileSync(hostsFile, corp(LAB.target));
afterAll(() => fs.rmSync(path.dirname(hostsFile), { recursive: true, force: true }));

let lab: Lab;
useLab({ dns: true, ipv6: true, dnsmasqArgs: [`--addn-hosts=${hostsFile}`, '--local-ttl=1', '--local=/corp/'] }, (up) => {
  lab = up;
});

/** Makes dnsmasq read its hosts file again (SIGHUP). */
function reloadDnsmasq(): void {
  const pid = Number(fs.readFileSync(path.join(lab.stateDir, 'dnsmasq.pid'), 'utf8').trim());
  process.kill(pid, 'SIGHUP');
}

const natRedirects = async () => (await rxshuttleRules(lab)).filter((l) => l.includes('REDIRECT'));

describe('host names as subnets', () => {
  it('cli cannot resolve wiki.corp itself: only the remote can', async () => {
    const r = await lab.exec('cli', ['getent', 'hosts', 'wiki.corp'], { timeoutMs: 20_000 });
    expect(r.code).not.toBe(0);
  });

  it('wiki.corp:80 is resolved by the remote (A and AAAA), -v says to what, and only its port 80 is tunneled', async () => {
    const rx = await Rxshuttle.remote(lab, ['wiki.corp:80']);
    // Said once the rules are in place (just after the firewall's line).
    await rx.waitFor(`wiki.corp resolved to ${LAB.target}, ${LAB.target6} (asked again in ${MIN_REFRESH_S} s).`, 5_000);
    expect((await natRedirects()).join('\n')).toMatch(new RegExp(`-d ${LAB.target}/32 -p tcp -m tcp --dport 80 -j REDIRECT`));
    const page = await curl(lab, 'cli', `http://${LAB.target}/`);
    expect(page.stdout).toContain(PAGE_MARKER);
    const page6 = await curl(lab, 'cli', `http://[${LAB.target6}]/`);
    expect(page6.stdout).toContain(PAGE_MARKER);
    // Another port of the same host is not the name's: not tunneled, and cli has no other way there.
    const echo = await echoOnce(lab, 'cli', LAB.target, LAB.echoPort, 2_000);
    expect(echo.ok).toBe(0);
    await rx.stop();
    await expectNothingLeft(lab);
  });

  it('a moved name: asked again when its TTL ran out, the rules follow in place (the jumps stay)', async () => {
    const rx = await Rxshuttle.remote(lab, ['wiki.corp']);
    expect((await natRedirects()).join('\n')).toContain(`-d ${LAB.target}/32`);
    const jumps = (await rxshuttleRules(lab)).filter((l) => /^-A (OUTPUT|PREROUTING)/.test(l));
    try {
      fs.writeFileSync(hostsFile, corp(LAB.target4));
      reloadDnsmasq();
      await rx.waitFor(`wiki.corp resolved to ${LAB.target4}, ${LAB.target6}`, (MIN_REFRESH_S + 10) * 1000);
      await waitFast(async () => (await natRedirects()).join('\n').includes(`-d ${LAB.target4}/32`), 5_000, 'the rule of the new address');
      expect((await natRedirects()).join('\n')).not.toContain(`-d ${LAB.target}/32`);
      expect((await rxshuttleRules(lab)).filter((l) => /^-A (OUTPUT|PREROUTING)/.test(l))).toEqual(jumps);
      expect((await echoOnce(lab, 'cli', LAB.target4)).ok).toBe(1);
    } finally {
      fs.writeFileSync(hostsFile, corp(LAB.target));
      reloadDnsmasq();
    }
    await rx.stop();
    await expectNothingLeft(lab);
  });

  it('a name that does not resolve: one line naming it, exit 2, nothing left', async () => {
    const r = await runRxshuttle(lab, 'cli', ['-r', lab.sshHost, '-e', lab.sshCommand, 'nope.corp:443', LAB.targetSubnet]);
    expect(r.code).toBe(2);
    expect(oneErrorLine(r.stderr)).toBe('host name "nope.corp" does not resolve through the tunnel: NXDOMAIN');
    await expectNothingLeft(lab);
  });

  it('in stock-sshd mode too (DNS over TCP to the remote nameserver), from a -s file', async () => {
    const file = path.join(path.dirname(hostsFile), 'subnets');
    fs.writeFileSync(file, '# the wiki only\nwiki.corp:80\n');
    const rx = new Rxshuttle(lab, 'cli', ['-v', '-r', lab.sshHostNoNode, '-e', lab.sshCommand, '-s', file]);
    await rx.ready();
    expect(rx.output).toMatch(/Remote: stock sshd/);
    await rx.waitFor(`wiki.corp resolved to ${LAB.target}`, 5_000);
    const page = await curl(lab, 'cli', `http://${LAB.target}/`);
    expect(page.stdout).toContain(PAGE_MARKER);
    await rx.stop();
    await expectNothingLeft(lab);
  });
});
