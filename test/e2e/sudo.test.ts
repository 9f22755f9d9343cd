// rxshuttle started by an unprivileged user, in the e2e lab: a test user is created, refused by
// sudo with a clear message, then allowed exactly the restricted firewall helper by the rule that
// `rxshuttle --sudoers` installs; the tunnel then works for that user's own traffic while the main
// process stays that user, and nobody else's traffic is captured (issue 17, finding 3). The rule
// is only installed for a package that only root can change (finding 6), so the tests run a copy
// of this checkout installed under /opt, as `npm install -g` would put it.
// The user, its home, the copy and the sudoers file are removed afterwards, even when a test fails.

import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { skipBecause } from '../support/skip.js';
import { findProgram, LAB, type Lab, PAGE_MARKER, startLab } from './lab.js';
import {
  argvOf,
  assertBuilt,
  CLI_JS,
  curl,
  Rxshuttle,
  reportRxshuttleOnFailure,
  rxshuttleProcessesIn,
  rxshuttleRules,
  stopAllRxshuttle,
  waitFast,
} from './tunnel-helpers.js';

const PROGRAMS = ['sudo', 'visudo', 'useradd', 'userdel', 'setpriv'] as const;
const missing = PROGRAMS.filter((p) => !findProgram(p));
const suffix = randomBytes(3).toString('hex');
const user = `rxst${suffix}`;
const sudoersName = `rxshuttle-test-${suffix}`;
const sudoersFile = `/etc/sudoers.d/${sudoersName}`;
/** The installed copy (root's, 0755 all the way down) and its CLI. */
const installDir = `/opt/rxshuttle-test-${suffix}`;
const installedCli = path.join(installDir, 'dist', 'cli.js');
const installedHelper = path.join(installDir, 'dist', 'firewall-helper.cjs');

let lab: Lab;
let home: string;
let sshConfig: string;
let userCreated = false;

/** [setpriv …] that runs the CLI as the test user, with that user's plain environment. */
const asUser = () => [findProgram('setpriv') as string, `--reuid=${user}`, `--regid=${user}`, '--init-groups', '--reset-env'];

function uidOf(pid: number): number {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/^Uid:\s+(\d+)/m.exec(status)?.[1]);
}

beforeAll(async () => {
  if (missing.length > 0) {
    const message = `sudo e2e: missing ${missing.join(', ')} (apt-get install -y sudo passwd util-linux)`;
    if (process.env['CI'] === 'true') throw new Error(message);
    return;
  }
  assertBuilt();
  // As npm would install it: dist, package.json, node_modules; root's, not writable by others.
  const checkout = path.dirname(path.dirname(CLI_JS));
  fs.mkdirSync(installDir, { recursive: true, mode: 0o755 });
  for (const part of ['dist', 'package.json', 'node_modules']) {
    execFileSync('cp', ['-a', path.join(checkout, part), path.join(installDir, part)]);
  }
  execFileSync('chown', ['-R', 'root:root', installDir]);
  execFileSync('chmod', ['-R', 'go-w', installDir]);
  lab = await startLab();
  // sudo looks up this machine's name; cli has a hosts file of its own and no reachable DNS,
  // so without this every sudo waits for the resolver to time out.
  fs.appendFileSync(`/etc/netns/${lab.ns.cli}/hosts`, `127.0.1.1\t${os.hostname()}\n`);
  home = fs.mkdtempSync(path.join(os.tmpdir(), 'rxs-sudo-'));
  fs.chmodSync(home, 0o755);
  const userHome = path.join(home, user);
  execFileSync(findProgram('useradd') as string, ['-m', '-d', userHome, '-s', '/usr/sbin/nologin', user]);
  userCreated = true;
  // The lab logs in to srv as root with a key in its state dir (root only): give the user its own copies.
  const key = path.join(userHome, 'id_lab');
  fs.copyFileSync(lab.identityPath, key);
  sshConfig = path.join(userHome, 'ssh_config');
  fs.writeFileSync(sshConfig, fs.readFileSync(lab.sshConfigPath, 'utf8').replaceAll(lab.identityPath, key));
  for (const f of [key, sshConfig]) {
    fs.chmodSync(f, 0o600);
    execFileSync('chown', [`${user}:${user}`, f]);
  }
});

afterEach(async (ctx) => {
  reportRxshuttleOnFailure(ctx);
  await stopAllRxshuttle();
});

afterAll(async () => {
  await stopAllRxshuttle();
  fs.rmSync(sudoersFile, { force: true });
  if (userCreated) {
    try {
      execFileSync(findProgram('userdel') as string, ['-r', '-f', user], { stdio: 'ignore' });
    } catch {
      // userdel complains about a missing mail spool; the user itself is gone
    }
  }
  if (home) fs.rmSync(home, { recursive: true, force: true });
  fs.rmSync(installDir, { recursive: true, force: true });
  await lab?.down();
});

describe('as an unprivileged user, through sudo', skipBecause(missing.length > 0 && `${missing.join(', ')} not installed`), () => {
  const args = () => ['-v', '-r', lab.sshHost, '-e', `ssh -F ${sshConfig}`, LAB.targetSubnet];

  it('without a sudoers rule: sudo refuses, one clear line says what to do, nothing stays', async () => {
    expect(fs.existsSync(sudoersFile)).toBe(false);
    const rx = new Rxshuttle(lab, 'cli', args(), asUser(), undefined, installedCli);
    const exit = await rx.exited;
    expect(exit.code, rx.output).toBe(1);
    const last = rx.output.trim().split('\n').at(-1) ?? '';
    expect(last).toMatch(/^rxshuttle: sudo did not start the firewall helper \(exit status 1\).*run rxshuttle as root, or .*rxshuttle --sudoers$/);
    // sudo's own reason is there too (stderr is shared with the helper)
    expect(rx.output).toMatch(/sudo: a (terminal|password) is required/);
    expect(await rxshuttleRules(lab)).toEqual([]);
    await waitFast(async () => (await rxshuttleProcessesIn(lab, 'cli')).length === 0, 5_000, 'no rxshuttle process in cli');
  });

  it('--sudoers-user ALL (or %ALL, or an alias-like name) is a usage error: exit 2, one line, no rule (issue 17, finding 11)', () => {
    for (const who of ['ALL', '%ALL', 'ADMINS']) {
      for (const mode of [['--sudoers-no-modify'], ['--sudoers', '--sudoers-filename', sudoersName]]) {
        try {
          const run = spawnSync(process.execPath, [installedCli, ...mode, '--sudoers-user', who], { encoding: 'utf8' });
          expect(run.status, `${mode[0]} --sudoers-user ${who}: ${run.stdout}${run.stderr}`).toBe(2);
          expect(run.stdout).toBe('');
          expect(run.stderr).toMatch(new RegExp(`^rxshuttle: --sudoers-user "${who}": .*\\n$`));
          expect(run.stderr.trim().split('\n')).toHaveLength(1);
          expect(fs.existsSync(sudoersFile)).toBe(false);
        } finally {
          fs.rmSync(sudoersFile, { force: true });
        }
      }
    }
  });

  it('rxshuttle --sudoers installs a rule that visudo accepts, allowing exactly the restricted firewall helper', () => {
    const printed = execFileSync(process.execPath, [installedCli, '--sudoers-no-modify', '--sudoers-user', user], { encoding: 'utf8' });
    const said = execFileSync(process.execPath, [installedCli, '--sudoers', '--sudoers-user', user, '--sudoers-filename', sudoersName], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    expect(said).toBe('');
    expect(fs.readFileSync(sudoersFile, 'utf8')).toBe(printed);
    expect(fs.statSync(sudoersFile).mode & 0o777).toBe(0o440);
    execFileSync(findProgram('visudo') as string, ['-c', '-f', sudoersFile]);
    const rules = printed.split('\n').filter((l) => l && !l.startsWith('#'));
    expect(rules).toEqual([`${user} ALL=(root) NOPASSWD: ${process.execPath} --max-semi-space-size=1 ${installedHelper} --restricted`]);
    // sudo agrees: that command, and nothing else
    // (sudo folds long lines, and writes = in an argument as \\=)
    const list = execFileSync(findProgram('sudo') as string, ['-l', '-U', user], { encoding: 'utf8' }).replace(/\s+/g, ' ').replaceAll('\\=', '=');
    expect(list).toContain(`(root) NOPASSWD: ${process.execPath} --max-semi-space-size=1 ${installedHelper} --restricted`);
    expect(list).not.toMatch(/\(ALL\)|ALL : ALL/);
  });

  it('with the rule: the tunnel carries the user\'s own traffic, not root\'s; the main process is not root, the helper is; SIGTERM removes the rules', async () => {
    expect(fs.existsSync(sudoersFile), 'the rule from the previous test').toBe(true);
    // --dns too: its UDP listener is the user's own, which the restricted helper checks.
    const rx = new Rxshuttle(lab, 'cli', ['--dns', ...args()], asUser(), undefined, installedCli);
    await rx.ready();
    const page = await lab.exec('cli', [...asUser(), 'curl', '-sS', '--max-time', '10', `http://${LAB.target}/`], { timeoutMs: 20_000 });
    expect(page.code, page.stderr).toBe(0);
    expect(page.stdout).toContain(PAGE_MARKER);
    // root's (and any other user's) connections are not captured: without a tunnel cli cannot reach the target
    const asRoot = await curl(lab, 'cli', `http://${LAB.target}/`, [], 3);
    expect(asRoot.code, 'root reached the target: its traffic went through the tunnel').not.toBe(0);
    expect(asRoot.stdout).not.toContain(PAGE_MARKER);
    const uidRules = (await rxshuttleRules(lab)).filter((l) => l.startsWith('-A OUTPUT'));
    expect(uidRules.length).toBeGreaterThan(0);

    const uid = Number(execFileSync('id', ['-u', user], { encoding: 'utf8' }).trim());
    expect(uid).toBeGreaterThan(0);
    expect(uidOf(rx.pid), 'the main rxshuttle process').toBe(uid);
    const procs = rx.processes();
    const helper = procs.helper.filter((p) => (argvOf(p)[0] ?? '').endsWith('node'));
    expect(helper, `the node firewall helper among ${JSON.stringify(procs.helper.map(argvOf))}`).toHaveLength(1);
    expect(uidOf(helper[0] as number), 'the firewall helper').toBe(0);
    expect(argvOf(helper[0] as number)).toEqual([process.execPath, '--max-semi-space-size=1', installedHelper, '--restricted']);
    for (const line of uidRules) expect(line).toContain(`-m owner --uid-owner ${uid}`);
    expect(procs.watchdog, 'the helper\'s watchdog').toHaveLength(1);
    expect(uidOf(procs.watchdog[0] as number)).toBe(0);
    expect(procs.helper.some((p) => /(^|\/)sudo$/.test(argvOf(p)[0] ?? '')), 'started through sudo').toBe(true);
    // ssh runs as the user too
    for (const p of procs.transport) expect(uidOf(p)).toBe(uid);

    const end = await rx.stop('SIGTERM');
    expect(end.killed).toBe(false);
    expect(end.code).toBe(0);
    await waitFast(async () => (await rxshuttleRules(lab)).length === 0, 3_000, 'rules removed');
    await waitFast(async () => (await rxshuttleProcessesIn(lab, 'cli')).length === 0, 5_000, 'no rxshuttle process in cli');
  });

  it('with the rule: router mode (-l 0.0.0.0) is refused with one line; nothing stays', async () => {
    const rx = new Rxshuttle(lab, 'cli', ['-l', '0.0.0.0:0', ...args()], asUser(), undefined, installedCli);
    const exit = await rx.exited;
    expect(exit.code, rx.output).toBe(1);
    expect(rx.output.trim().split('\n').at(-1)).toMatch(/^rxshuttle: .*router mode .* is refused: the rule of rxshuttle --sudoers allows only your own traffic/);
    expect(await rxshuttleRules(lab)).toEqual([]);
    await waitFast(async () => (await rxshuttleProcessesIn(lab, 'cli')).length === 0, 5_000, 'no rxshuttle process in cli');
  });
});
