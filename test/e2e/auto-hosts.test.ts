// -H in the e2e lab. srv has hosts of its own (its /etc/hosts, via /etc/netns, and dnsmasq as
// resolver for seeds and reverse lookups); cli's /etc/hosts is /etc/netns/<cli>/hosts,
// bind-mounted by `ip netns exec` — so the firewall helper must edit it in place (rename fails
// on a bind mount), and these tests never touch the machine's own /etc/hosts.
import * as fs from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { LAB, type Lab } from './lab.js';
import { CLI_JS, Rxshuttle, useLab, waitFast } from './tunnel-helpers.js';

const SRV_HOSTS = '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n10.98.0.4\techo4-srv\n10.98.0.5\tbox5.corp.lab box5\n';

let lab: Lab;
let hostsPath: string;
let original: Buffer;

// Registered before useLab: after-hooks run last-registered first, so this one follows the stop.
afterEach(() => {
  // Whatever happened in the test, the next one starts from the lab's own file.
  if (!fs.readFileSync(hostsPath).equals(original)) fs.writeFileSync(hostsPath, original);
});

useLab({ dns: true, noNodeSshd: false, srvHosts: SRV_HOSTS }, (up) => {
  lab = up;
  hostsPath = `/etc/netns/${lab.ns.cli}/hosts`;
  original = fs.readFileSync(hostsPath);
});

const hostsText = () => fs.readFileSync(hostsPath, 'utf8');
/** The name of instance `port`'s block: the port and cli's network namespace (the inode ip netns pins). */
const blockName = (port: number) => `rxshuttle-${port}-net${fs.statSync(`/run/netns/${lab.ns.cli}`).ino}`;
/** The lines of instance `port`'s block, without its markers. */
function block(port: number): string[] {
  const lines = hostsText().split('\n');
  const start = lines.findIndex((l) => l.startsWith(`# BEGIN ${blockName(port)} `));
  const end = lines.indexOf(`# END ${blockName(port)}`);
  return start < 0 || end < start ? [] : lines.slice(start + 1, end);
}
const waitForEntries = (port: number, entries: string[]) =>
  waitFast(() => entries.every((e) => block(port).includes(e)), 15_000, () => `${entries.join(', ')} in the block of ${port}:\n${hostsText()}`);
const backToOriginal = (what: string, withinMs = 3_000) =>
  waitFast(() => fs.readFileSync(hostsPath).equals(original), withinMs, `${hostsPath} as before ${what}`);

describe('-H / --auto-hosts', () => {
  it("puts srv's hosts and the seed hosts into cli's /etc/hosts while it runs; SIGTERM leaves the file byte-identical", async () => {
    const inode = fs.statSync(hostsPath).ino;
    const rx = await Rxshuttle.remote(lab, ['-H', '--seed-hosts', 'target.lab', LAB.targetSubnet]);
    await waitForEntries(rx.port, [
      '10.98.0.4\techo4-srv',
      '10.98.0.5\tbox5.corp.lab',
      '10.98.0.5\tbox5',
      '10.98.0.3\ttarget.lab',
      '10.98.0.3\ttarget',
    ]);
    expect(block(rx.port).some((l) => /localhost/.test(l))).toBe(false);
    expect(fs.statSync(hostsPath).ino).toBe(inode); // edited in place
    await rx.waitFor('hostwatch: Found: box5: 10.98.0.5');

    const found = await lab.exec('cli', ['getent', 'hosts', 'box5']);
    expect(found.stdout.trim()).toMatch(/^10\.98\.0\.5\s+box5$/);
    const srvName = await lab.exec('cli', ['getent', 'hosts', 'echo4-srv']);
    expect(srvName.stdout.trim()).toMatch(/^10\.98\.0\.4\s+echo4-srv$/);

    expect((await rx.stop('SIGTERM')).killed).toBe(false);
    await backToOriginal('after SIGTERM');
    expect(fs.statSync(hostsPath).ino).toBe(inode);
    expect((await lab.exec('cli', ['getent', 'hosts', 'box5'])).code).not.toBe(0);
  });

  it('after SIGKILL of the client too, the file is byte-identical within 2 s', async () => {
    const rx = await Rxshuttle.remote(lab, ['-H', LAB.targetSubnet]);
    await waitForEntries(rx.port, ['10.98.0.5\tbox5']);
    rx.child.kill('SIGKILL');
    await backToOriginal('after SIGKILL', 2_000);
    expect(hostsText()).not.toContain('rxshuttle');
  });

  it('two instances at once: each keeps its own block, and each removes only its own', async () => {
    const a = await Rxshuttle.remote(lab, ['-H', `${LAB.target4}/32`]);
    const b = await Rxshuttle.remote(lab, ['-H', '--seed-hosts', 'echo5.lab', `${LAB.target5}/32`]);
    expect(a.port).not.toBe(b.port);
    await waitForEntries(a.port, ['10.98.0.4\techo4-srv']);
    await waitForEntries(b.port, ['10.98.0.5\tbox5', '10.98.0.5\techo5.lab', '10.98.0.5\techo5']);
    // Each block holds only names inside its own instance's subnets (issue 17, finding 5); the rest are counted in one warning.
    await a.waitFor(/warning: -H: \d+ names? from the server (was|were) refused/);
    expect(block(a.port).filter((l) => !l.startsWith('10.98.0.4\t'))).toEqual([]);
    expect(block(b.port).filter((l) => !l.startsWith('10.98.0.5\t'))).toEqual([]);
    const bBlock = block(b.port);

    expect((await a.stop('SIGTERM')).killed).toBe(false);
    await waitFast(() => block(a.port).length === 0, 3_000, `the block of ${a.port} gone`);
    expect(hostsText()).not.toContain(`rxshuttle-${a.port}`);
    // B's entries are all still there (it may have found more names since).
    expect(block(b.port)).toEqual(expect.arrayContaining(bBlock));
    expect(b.running).toBe(true);
    expect((await lab.exec('cli', ['getent', 'hosts', 'echo5'])).stdout).toMatch(/^10\.98\.0\.5\s+echo5/);

    expect((await b.stop('SIGTERM')).killed).toBe(false);
    await backToOriginal('after both stopped');
  });
});

describe('--hostwatch', () => {
  it('runs host discovery alone and prints what it finds', async () => {
    const child = lab.spawn('srv', [process.execPath, CLI_JS, '--hostwatch', '--seed-hosts', 'target.lab']);
    let out = '';
    child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    try {
      await waitFast(() => out.includes('hostwatch: Found: box5: 10.98.0.5') && out.includes('hostwatch: Found: target: 10.98.0.3'), 15_000, `hostwatch output:\n${out}`);
      expect(out).not.toMatch(/localhost/);
    } finally {
      child.kill('SIGTERM');
    }
  });
});
