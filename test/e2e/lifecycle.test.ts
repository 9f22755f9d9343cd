// rxshuttle's life cycle in the e2e lab: the target is reachable only while a
// tunnel runs; two instances side by side; and however the client ends
// (SIGINT, SIGTERM, SIGKILL) its firewall rules and every process it started
// — here and on the ssh server — are gone within 2 seconds.
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { LAB, type Lab, PAGE_MARKER } from './lab.js';
import {
  argvOf,
  curl,
  echoOnce,
  isGone,
  Rxshuttle,
  remoteNodePids,
  rxshuttleProcessesIn,
  rxshuttleRules,
  useLab,
  waitFast,
} from './tunnel-helpers.js';

let lab: Lab;

useLab({}, (up) => {
  lab = up;
});

/** Both probes fail without a tunnel: srv does not forward and nothing else routes to tgt. */
async function expectTargetUnreachable(): Promise<void> {
  const [http, echo] = await Promise.all([
    curl(lab, 'cli', `http://${LAB.target}/`, ['--connect-timeout', '2'], 4),
    echoOnce(lab, 'cli', LAB.target, LAB.echoPort, 2_500),
  ]);
  expect(http.code, 'curl without a tunnel').not.toBe(0);
  expect(http.stdout).not.toContain(PAGE_MARKER);
  expect(echo.ok, `echo without a tunnel: ${JSON.stringify(echo)}`).toBe(0);
}

describe('without the tunnel', () => {
  it('the target is unreachable before rxshuttle starts, reachable while it runs, unreachable after it stops', async () => {
    expect(await rxshuttleRules(lab)).toEqual([]);
    await expectTargetUnreachable();

    const rx = await Rxshuttle.remote(lab, [LAB.targetSubnet]);
    const page = await curl(lab, 'cli', `http://${LAB.target}/`);
    expect(page.code, page.stderr).toBe(0);
    expect(page.stdout).toContain(PAGE_MARKER);
    expect((await echoOnce(lab, 'cli', LAB.target)).ok).toBe(1);
    expect(await rx.acceptsAtLeast(2, LAB.target)).toHaveLength(2);

    const end = await rx.stop('SIGTERM');
    expect(end.killed).toBe(false);
    expect(await rxshuttleRules(lab)).toEqual([]);
    await expectTargetUnreachable();
  });
});

describe('two instances at once', () => {
  it('run side by side on 12300 and 12301, each tunnels its own subnet, and stopping one leaves the other working', async () => {
    const a = await Rxshuttle.remote(lab, [`${LAB.target}/32`]);
    const b = await Rxshuttle.remote(lab, [`${LAB.target4}/32`]);
    expect(a.port).toBe(12300);
    expect(b.port).toBe(12301);

    const nat = await lab.iptablesSave('cli', { table: 'nat' });
    expect(nat).toContain(':rxshuttle-12300');
    expect(nat).toContain(':rxshuttle-12301');
    expect(nat).toMatch(/-A rxshuttle-12300 -d 10\.98\.0\.3\/32 .*REDIRECT --to-ports 12300/);
    expect(nat).toMatch(/-A rxshuttle-12301 -d 10\.98\.0\.4\/32 .*REDIRECT --to-ports 12301/);

    const [page, echo4] = await Promise.all([curl(lab, 'cli', `http://${LAB.target}/`), echoOnce(lab, 'cli', LAB.target4)]);
    expect(page.code, page.stderr).toBe(0);
    expect(page.stdout).toContain(PAGE_MARKER);
    expect(echo4.ok, JSON.stringify(echo4)).toBe(1);
    // each connection went through the instance for its subnet, and only that one
    expect(await a.acceptsAtLeast(1, `${LAB.target}:80`)).toHaveLength(1);
    expect(await b.acceptsAtLeast(1, `${LAB.target4}:7`)).toHaveLength(1);
    expect(a.accepts(LAB.target4)).toEqual([]);
    expect(b.accepts(LAB.target)).toEqual([]);

    // stop the first one: its chain goes, the second keeps working
    expect((await a.stop('SIGTERM')).killed).toBe(false);
    const after = await lab.iptablesSave('cli', { table: 'nat' });
    expect(after).not.toContain('rxshuttle-12300');
    expect(after).toContain(':rxshuttle-12301');
    expect(b.running).toBe(true);
    const again = await echoOnce(lab, 'cli', LAB.target4);
    expect(again.ok, JSON.stringify(again)).toBe(1);
    expect(await b.acceptsAtLeast(2, `${LAB.target4}:7`)).toHaveLength(2);
    // …and .3, whose tunnel is gone, is unreachable again
    const gone = await curl(lab, 'cli', `http://${LAB.target}/`, ['--connect-timeout', '2'], 4);
    expect(gone.code).not.toBe(0);

    expect((await b.stop('SIGTERM')).killed).toBe(false);
    expect(await rxshuttleRules(lab)).toEqual([]);
  });
});

describe('cleanup when the client ends', () => {
  // ssh2: no ssh child at all; ssh: the ssh binary, which must go too.
  for (const [signal, transport] of [
    ['SIGINT', 'ssh2'],
    ['SIGTERM', 'ssh2'],
    ['SIGKILL', 'ssh2'],
    ['SIGINT', 'ssh'],
    ['SIGKILL', 'ssh'],
  ] as const) {
    it(`after ${signal} (--transport ${transport}): no rxshuttle rule and no rxshuttle process (client, firewall helper, ssh, remote node) within 2 s`, async () => {
      const remoteBefore = new Set(await remoteNodePids(lab));
      const rx = await Rxshuttle.remote(lab, ['--transport', transport, LAB.targetSubnet]);
      // a working tunnel with a connection open through it, so there is something to tear down
      const page = await curl(lab, 'cli', `http://${LAB.target}/`);
      expect(page.stdout).toContain(PAGE_MARKER);
      const held = lab.spawn('cli', ['curl', '-sS', '--max-time', '30', `http://${LAB.target}/delay/30000`]);
      const heldExit = once(held, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
      expect(await rx.acceptsAtLeast(2, `${LAB.target}:80`)).toHaveLength(2);

      const procs = rx.processes();
      expect(procs.helper, `firewall helper among ${JSON.stringify(procs)}`).toHaveLength(1);
      const ssh = procs.transport.filter((p) => /(^|\/)ssh$/.test(argvOf(p)[0] ?? ''));
      expect(ssh, `the ssh child among ${JSON.stringify(procs)}`).toHaveLength(transport === 'ssh' ? 1 : 0);
      const remote = (await remoteNodePids(lab)).filter((p) => !remoteBefore.has(p));
      expect(remote, 'the remote `node -e` server in srv').toHaveLength(1);
      expect((await rxshuttleRules(lab)).length).toBeGreaterThan(0);

      const pids = [procs.main, ...procs.all];
      const t0 = Date.now();
      rx.child.kill(signal);
      // Within 2 s of the signal: no rule, none of its processes, nothing of it on srv.
      await waitFast(
        async () => (await rxshuttleRules(lab)).length === 0 && pids.every(isGone) && remote.every(isGone),
        2_000,
        `rules and processes gone after ${signal}`,
      ).catch(async (e: unknown) => {
        const left = pids.filter((p) => !isGone(p));
        const leftRemote = remote.filter((p) => !isGone(p));
        throw new Error(
          `${(e as Error).message}\nrules left: ${JSON.stringify(await rxshuttleRules(lab))}\n` +
            `processes left: ${JSON.stringify(left)} remote left: ${JSON.stringify(leftRemote)}\noutput:\n${rx.output}`,
        );
      });
      const elapsed = Date.now() - t0;
      console.log(`${signal}: rules and processes gone in ${elapsed} ms`);

      // the connection that was open is ended too (no hang until its own timeout)
      const heldEnd = await Promise.race([heldExit, sleep(5_000).then(() => 'still open' as const)]);
      if (heldEnd === 'still open') held.kill('SIGKILL');
      expect(heldEnd, 'the held connection after the tunnel ended').not.toBe('still open');
      expect(heldEnd[0], 'curl of the held connection').not.toBe(0);

      const exit = await rx.exited;
      if (signal === 'SIGKILL') expect(exit.signal).toBe('SIGKILL');
      else expect(exit.signal, 'it handles the signal and exits by itself').toBeNull();
      expect(await rxshuttleProcessesIn(lab, 'cli')).toEqual([]);
      expect(await remoteNodePids(lab)).toEqual([...remoteBefore]);
    });
  }
});
