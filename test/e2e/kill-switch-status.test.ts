// --kill-switch, --flush, `rxshuttle status --json`, --json events and sd_notify (issue 14), with
// the real CLI in the e2e lab. cli reaches the target only through a tunnel (srv does not
// forward), so "blocked" shows as connection refused at once, and "not blocked" as a timeout.
import { type ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { LAB, type Lab, PAGE_MARKER } from './lab.js';
import { CLI_JS, curl, Rxshuttle, remoteNodePids, rxshuttleRules, sshdSessionOf, statusOf, useLab, waitFast } from './tunnel-helpers.js';

let lab: Lab;
useLab({}, (up) => {
  lab = up;
});

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rxs-ks-'));
const socats: ChildProcess[] = [];
afterAll(() => {
  for (const s of socats) s.kill('SIGKILL');
  fs.rmSync(dir, { recursive: true, force: true });
});

const killSwitchLines = async () => (await lab.exec('cli', ['iptables-save', '-t', 'filter'])).stdout.split('\n').filter((l) => l.includes('rxshuttle-ks'));
const flush = () => lab.exec('cli', [process.execPath, CLI_JS, '--flush'], { timeoutMs: 30_000 });

describe('--kill-switch and --flush', () => {
  it('SIGKILL of the client: the subnet is refused at once instead of going direct; --flush lifts it', async () => {
    try {
      const rx = await Rxshuttle.remote(lab, ['--kill-switch', LAB.targetSubnet]);
      expect((await curl(lab, 'cli', `http://${LAB.target}/`)).stdout).toContain(PAGE_MARKER);
      expect(await killSwitchLines()).toEqual([]);
      rx.child.kill('SIGKILL');
      await waitFast(async () => (await rxshuttleRules(lab)).some((l) => l.includes('rxshuttle-ks')), 5_000, 'the kill switch in place');
      await waitFast(async () => (await lab.iptablesSave('cli')).split('\n').every((l) => !/rxshuttle-\d+/.test(l)), 5_000, 'the redirect gone');
      const blocked = await curl(lab, 'cli', `http://${LAB.target}/`, [], 3);
      expect(blocked.code).toBe(7);
      expect(blocked.stderr).toMatch(/Connection refused|Couldn't connect/);
      const lifted = await flush();
      expect(lifted.code, lifted.stderr).toBe(0);
      expect(await killSwitchLines()).toEqual([]);
      const direct = await curl(lab, 'cli', `http://${LAB.target}/`, [], 2);
      expect(direct.stderr).not.toMatch(/Connection refused/);
    } finally {
      await flush();
    }
  });

  it('a clean stop (SIGTERM) leaves no kill switch', async () => {
    const rx = await Rxshuttle.remote(lab, ['--kill-switch', LAB.targetSubnet]);
    const end = await rx.stop('SIGTERM');
    expect(end.code).toBe(0);
    expect(await killSwitchLines()).toEqual([]);
    expect(await rxshuttleRules(lab)).toEqual([]);
  });
});

describe('status, --json, sd_notify', () => {
  it('status --json says connected, then reconnecting while the session is down, then connected again; --json prints events; systemd hears READY and STOPPING', async () => {
    const notifySocket = path.join(dir, 'notify.sock');
    const socat = spawn('socat', ['-u', `UNIX-RECV:${notifySocket}`, 'STDOUT'], { stdio: ['ignore', 'pipe', 'pipe'] });
    socats.push(socat);
    let notified = '';
    socat.stdout.on('data', (c: Buffer) => (notified += c.toString()));
    await waitFast(async () => fs.existsSync(notifySocket), 5_000, 'socat bound');

    const before = new Set(await remoteNodePids(lab));
    const rx = new Rxshuttle(lab, 'cli', ['-v', '--json', '-r', lab.sshHost, '-e', lab.sshCommand, LAB.targetSubnet], [], {
      ...process.env,
      NOTIFY_SOCKET: notifySocket,
    });
    await rx.ready();
    await waitFast(async () => statusOf(rx.pid)?.state === 'connected', 5_000, 'status: connected');
    expect(statusOf(rx.pid)).toMatchObject({ remote: 'lab', transport: 'ssh2', mode: 'node', reconnects: 0 });
    await waitFast(async () => notified.includes('READY=1'), 5_000, 'READY=1');
    expect(notified).toMatch(/STATUS=Connected to lab; tunneling 1 subnet on 127\.0\.0\.1:\d+\./);

    // The session lost: reconnecting for a moment, then connected again, one reconnect counted.
    const remote = (await remoteNodePids(lab)).filter((p) => !before.has(p));
    const seen = new Set<string>();
    process.kill(sshdSessionOf(remote[0] as number) as number, 'SIGKILL');
    await waitFast(
      async () => {
        const s = statusOf(rx.pid);
        if (s) seen.add(String(s.state));
        return seen.has('connected') && s?.reconnects === 1 && s.state === 'connected';
      },
      10_000,
      'connected again',
    );
    expect((await curl(lab, 'cli', `http://${LAB.target}/`)).stdout).toContain(PAGE_MARKER);

    // --json: the events as JSON lines on stdout.
    const events = rx.output
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { kind: string });
    const kinds = events.map((e) => e.kind);
    for (const kind of ['listening', 'connected', 'firewall-ready', 'accept', 'reconnecting']) expect(kinds).toContain(kind);

    const end = await rx.stop('SIGTERM');
    expect(end.code).toBe(0);
    await waitFast(async () => notified.includes('STOPPING=1'), 5_000, 'STOPPING=1');
    expect(statusOf(rx.pid)).toBeUndefined();
  });
});
