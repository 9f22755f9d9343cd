// Coming back by itself (issue 14), in the e2e lab: the sshd session is killed, or the path to
// sshd is dropped for 12 s; the tunnel is working again soon after, in the same process, and its
// firewall rules never went away meanwhile (no traffic to the tunneled subnets leaked onto the
// direct path). Connections open at the loss are reset, not left hanging; one opened during an
// outage waits and is carried once the session is back.
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { waitUntil } from '../support/wait-until.js';
import { LAB, type Lab, PAGE_MARKER } from './lab.js';
import { curl, defaultReceiveBuffers, Rxshuttle, remoteNodePids, rxshuttleRules, sshdSessionOf, statusOf, useLab, waitFast } from './tunnel-helpers.js';

let lab: Lab;

useLab({ dns: true }, (up) => {
  lab = up;
});

/** Samples the instance's rules every 50 ms until stopped; the counts seen. */
function sampleRules(): { stop(): Promise<number[]> } {
  const counts: number[] = [];
  let running = true;
  const loop = (async () => {
    while (running) {
      // The nat table alone (the default method's): a sample that also lists nftables takes longer.
      counts.push((await lab.iptablesSave('cli', { table: 'nat' })).split('\n').filter((l) => l.includes('rxshuttle')).length);
      await sleep(50);
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      return counts;
    },
  };
}

/** Fetches the page until it works (each try bounded); ms from `from` until it did. */
async function workingAgain(from: number, withinMs: number): Promise<number> {
  let stderr = '';
  await waitUntil(
    async () => {
      const page = await curl(lab, 'cli', `http://${LAB.target}/`, [], 2);
      stderr = page.stderr;
      return page.code === 0 && page.stdout.includes(PAGE_MARKER);
    },
    { timeoutMs: Math.max(0, withinMs - (Date.now() - from)), intervalMs: 100, what: () => `the page through the tunnel again (curl: ${stderr})` },
  );
  return Date.now() - from;
}

describe('the session is lost and comes back', () => {
  defaultReceiveBuffers(() => lab);

  // The 3 s is for the default transport (ssh2: about 1 s here); the ssh binary starts a
  // process and logs in again through it (about 2.2 s here), so it gets 5 s on a loaded machine.
  for (const [transport, withinMs] of [['ssh2', 3_000], ['ssh', 5_000]] as const) {
    it(`the sshd session is killed (--transport ${transport}): working again within ${withinMs / 1000} s, same process, the rules there at every 50 ms sample`, async () => {
      const before = new Set(await remoteNodePids(lab));
      const rx = await Rxshuttle.remote(lab, ['--transport', transport, LAB.targetSubnet]);
      expect((await curl(lab, 'cli', `http://${LAB.target}/`)).stdout).toContain(PAGE_MARKER);
      const remote = (await remoteNodePids(lab)).filter((p) => !before.has(p));
      const sshd = sshdSessionOf(remote[0] as number);
      expect(sshd, 'the sshd session process of the tunnel').toBeDefined();
      const samples = sampleRules();
      const t0 = Date.now();
      process.kill(sshd as number, 'SIGKILL');
      const after = await workingAgain(t0, withinMs);
      const counts = await samples.stop();
      console.log(`${transport}: working again ${after} ms after the kill; ${counts.length} samples of the rules`);
      expect(counts.length).toBeGreaterThan(10);
      expect(counts.filter((n) => n === 0), 'samples without the rules').toEqual([]);
      expect(rx.running).toBe(true);
      expect(rx.output).toMatch(/^rxshuttle: connection to lab lost: .*; reconnecting \(the rules stay; new connections wait\)\.$/m);
      const end = await rx.stop('SIGTERM');
      expect(end.code).toBe(0);
      await waitFast(async () => (await rxshuttleRules(lab)).length === 0, 3_000, 'rules removed at the end');
    });
  }

  it('a 12 s outage of the path to sshd (--keepalive 2, --dns): the open download is reset within the keepalive window, DNS gets SERVFAIL at once while down, one connection opened meanwhile is carried, working again within 10 s of the path returning', async () => {
    const rx = await Rxshuttle.remote(lab, ['--keepalive', '2', '--dns', LAB.targetSubnet]);
    const dig = (timeS: number) => lab.exec('cli', ['dig', `+time=${timeS}`, '+tries=1', 'target.lab'], { timeoutMs: (timeS + 10) * 1000 });
    expect((await dig(3)).stdout).toMatch(/status: NOERROR/);
    expect((await curl(lab, 'cli', `http://${LAB.target}/`)).stdout).toContain(PAGE_MARKER);
    // A download in progress, read slowly, when the path goes.
    const open = lab.spawn('cli', ['curl', '-sS', '--limit-rate', '10M', '--max-time', '60', '-o', '/dev/null', `http://${LAB.target}/bytes/200000000`]);
    const openEnded = new Promise<{ code: number | null; at: number }>((resolve) => open.once('exit', (code) => resolve({ code, at: Date.now() })));
    await sleep(1_000);
    const drop = [
      ['-I', 'INPUT', '-s', LAB.cli, '-j', 'DROP'],
      ['-I', 'OUTPUT', '-d', LAB.cli, '-j', 'DROP'],
    ];
    const samples = sampleRules();
    const down = Date.now();
    for (const rule of drop) await lab.execOk('srv', ['iptables', '-w', ...rule]);
    let restored = false;
    const restore = async () => {
      if (restored) return;
      restored = true;
      for (const rule of drop) await lab.exec('srv', ['iptables', '-w', '-D', ...rule.slice(1)]);
    };
    try {
      // Lost within the keepalive window (4 × 2 s): the open download ends with an error then.
      const ended = await Promise.race([openEnded, sleep(12_000).then(() => null)]);
      expect(ended, 'the open download still hung after the keepalive window').not.toBeNull();
      expect(ended?.code).not.toBe(0);
      expect((ended?.at ?? 0) - down).toBeLessThan(11_000);
      // While down, DNS is answered at once, SERVFAIL (the nameserver's address as the source, as always).
      await waitFast(() => /reconnecting/.test(rx.output), 5_000, 'the loss seen');
      // rxshuttle status --json says so.
      expect(statusOf(rx.pid)).toMatchObject({ state: 'reconnecting', reconnects: 1 });
      const asked = Date.now();
      const whileDown = await dig(5);
      expect(whileDown.stdout).toMatch(/status: SERVFAIL/);
      expect(Date.now() - asked).toBeLessThan(2_000);
      // A connection opened during the outage waits for the session.
      const waiting = curl(lab, 'cli', `http://${LAB.target}/`, [], 40);
      await sleep(Math.max(0, 12_000 - (Date.now() - down)));
      await restore();
      const back = Date.now();
      const page = await waiting;
      expect(page.code, page.stderr).toBe(0);
      expect(page.stdout).toContain(PAGE_MARKER);
      const after = await workingAgain(back, 10_000);
      console.log(`outage: open download ended ${(ended?.at ?? 0) - down} ms after the drop; the waiting one carried ${Date.now() - back} ms after the path returned; working again after ${after} ms`);
      const counts = await samples.stop();
      expect(counts.filter((n) => n === 0), 'samples without the rules').toEqual([]);
      expect(rx.running).toBe(true);
      expect(rx.output).toMatch(/reconnecting/);
      expect((await dig(3)).stdout).toMatch(/status: NOERROR/);
      expect(statusOf(rx.pid)).toMatchObject({ state: 'connected', reconnects: 1 });
    } finally {
      await restore();
      await samples.stop();
    }
    const end = await rx.stop('SIGTERM');
    expect(end.code).toBe(0);
  });

  it('--no-reconnect: a lost session ends the tunnel as before (one line, exit 1, rules removed)', async () => {
    const before = new Set(await remoteNodePids(lab));
    const rx = await Rxshuttle.remote(lab, ['--no-reconnect', LAB.targetSubnet]);
    const remote = (await remoteNodePids(lab)).filter((p) => !before.has(p));
    process.kill(sshdSessionOf(remote[0] as number) as number, 'SIGKILL');
    const exit = await Promise.race([rx.exited, sleep(10_000).then(() => 'hang' as const)]);
    expect(exit).toEqual({ code: 1, signal: null });
    expect(rx.output.trim().split('\n').at(-1)).toMatch(/^rxshuttle: connection to lab lost: /);
    expect(rx.output).not.toMatch(/reconnecting/);
    await waitFast(async () => (await rxshuttleRules(lab)).length === 0, 3_000, 'no rxshuttle rule');
  });
});
