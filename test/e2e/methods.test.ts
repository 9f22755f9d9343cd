// --method nat and --method nft (issue 13) in the e2e lab: the same tunnel through either capture,
// a 20 MB download byte-identical, --dns through the nft table, and nothing of the instance left
// after a clean stop, after SIGKILL of the client (the helper removes it) and after SIGKILL of the
// helper (its watchdog does).
import { describe, expect, it } from 'vitest';
import { LAB, type Lab, labBytesSha256, PAGE_MARKER } from './lab.js';
import { curl, expectNothingLeft, isGone, Rxshuttle, rxshuttleRules, useLab, waitFast } from './tunnel-helpers.js';

const MB20 = 20_000_000;

let lab: Lab;
useLab({ dns: true, ipv6: true }, (up) => {
  lab = up;
});

/** The 20 MB of /bytes through the tunnel, hashed in cli. */
async function download20MB(): Promise<string> {
  const r = await lab.exec(
    'cli',
    ['bash', '-c', `set -o pipefail; curl -sS --fail --max-time 60 http://${LAB.target}/bytes/${MB20} | sha256sum`],
    { timeoutMs: 70_000 },
  );
  expect(r.code, r.stderr).toBe(0);
  return r.stdout.split(' ')[0] ?? '';
}

describe.each(['nat', 'nft'] as const)('--method %s', (method) => {
  it('carries a 20 MB download byte-identical, in its own kind of rules only, and leaves none', async () => {
    const rx = await Rxshuttle.remote(lab, ['--method', method, LAB.targetSubnet, LAB.targetSubnet6]);
    const port = rx.port;
    expect(rx.output).toContain(`Firewall ready: ${method === 'nft' ? 'table inet' : 'chain'} rxshuttle-${port},`);
    const tables = await lab.nftTables('cli');
    const nat = (await lab.iptablesSave('cli', { table: 'nat' })) + (await lab.iptablesSave('cli', { table: 'nat', ipv6: true }));
    if (method === 'nft') {
      expect(tables).toContain(`table inet rxshuttle-${port}`);
      expect(nat).not.toContain(`rxshuttle-${port}`);
    } else {
      expect(tables).not.toContain(`rxshuttle-${port}`);
      expect(nat).toContain(`-A OUTPUT -p tcp -j rxshuttle-${port}`);
    }
    expect(await download20MB()).toBe(labBytesSha256(MB20));
    const page6 = await curl(lab, 'cli', `http://[${LAB.target6}]/`);
    expect(page6.stdout).toContain(PAGE_MARKER);
    await rx.stop();
    await expectNothingLeft(lab);
  });

  it('--dns: a lab name resolves through the capture', async () => {
    const rx = await Rxshuttle.remote(lab, ['--method', method, '--dns', LAB.targetSubnet]);
    const r = await lab.exec('cli', ['dig', '+time=3', '+tries=1', 'target.lab'], { timeoutMs: 15_000 });
    expect(r.stdout).toMatch(/status: NOERROR/);
    expect(r.stdout).toMatch(/^target\.lab\.\s+\d+\s+IN\s+A\s+10\.98\.0\.3$/m);
    await rx.stop();
    await expectNothingLeft(lab);
  });

  it("--user captures one user's connections and not another's; --group likewise", async () => {
    // nobody (65534:65534) and root; cli reaches the target only through the tunnel.
    const page = (as: 'root' | 'nobody') =>
      lab.exec('cli', [...(as === 'nobody' ? ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups'] : []), 'curl', '-sS', '--max-time', '3', `http://${LAB.target}/`], {
        timeoutMs: 15_000,
      });
    for (const scope of [['--user', 'nobody'], ['--group', '65534']]) {
      const rx = await Rxshuttle.remote(lab, ['--method', method, ...scope, LAB.targetSubnet]);
      expect((await page('nobody')).stdout, `${scope.join(' ')}: nobody's curl`).toContain(PAGE_MARKER);
      const root = await page('root');
      expect(root.stdout, `${scope.join(' ')}: root's curl`).not.toContain(PAGE_MARKER);
      expect(root.code).not.toBe(0);
      await rx.stop();
    }
    await expectNothingLeft(lab);
  });

  it('SIGKILL of the client: the helper removes everything; SIGKILL of the helper: its watchdog does', async () => {
    for (const victim of ['client', 'helper'] as const) {
      const rx = await Rxshuttle.remote(lab, ['--method', method, '--no-reconnect', LAB.targetSubnet]);
      expect((await rxshuttleRules(lab)).length).toBeGreaterThan(0);
      const procs = rx.processes();
      expect(procs.helper).toHaveLength(1);
      const pid = victim === 'client' ? procs.main : (procs.helper[0] as number);
      process.kill(pid, 'SIGKILL');
      await waitFast(async () => (await rxshuttleRules(lab)).length === 0, 5_000, `no rule of the instance after SIGKILL of the ${victim}`).catch(
        async (e: unknown) => {
          throw new Error(`${(e as Error).message}: ${JSON.stringify(await rxshuttleRules(lab))}\n${rx.output}`);
        },
      );
      await rx.exited;
      await waitFast(() => [procs.main, ...procs.all].every(isGone), 5_000, 'every process of the instance gone');
    }
    await expectNothingLeft(lab);
  });
});
