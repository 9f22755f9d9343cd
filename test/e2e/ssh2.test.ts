// --transport ssh2 in the e2e lab: the in-process ssh connection checks the host key against the
// known_hosts files `ssh -G` names, as StrictHostKeyChecking says, authenticates only with keys it
// can use without asking, and refuses what it cannot do. Every refusal is one line, exit 1, and
// leaves no rule and no process behind.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { LAB, type Lab, labBytes, labBytesSha256, PAGE_MARKER } from './lab.js';
import {
  CLI_JS,
  curl,
  expectNothingLeft,
  oneErrorLine,
  Rxshuttle,
  runRxshuttle,
  useLab,
} from './tunnel-helpers.js';

let lab: Lab;
let dir: string;
/** The lab sshd's host keys, as `ssh-keyscan` prints them (known_hosts lines). */
let scanned: string;
/** No agent: only the keys ssh -G names count. */
const noAgent = { ...process.env, SSH_AUTH_SOCK: '' };

useLab({}, async (up) => {
  lab = up;
  dir = mkdtempSync(join(tmpdir(), 'rxshuttle-ssh2-'));
  const r = await lab.execOk('cli', ['ssh-keyscan', '-p', '22', LAB.srv]);
  scanned = r.stdout;
  expect(scanned).toMatch(/ssh-ed25519 /);
});

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** `-e` for the lab host with these known_hosts and StrictHostKeyChecking (command line beats the config file). */
const sshWith = (knownHosts: string, strict: string, more = '') =>
  `${lab.sshCommand} -o UserKnownHostsFile=${knownHosts} -o StrictHostKeyChecking=${strict} ${more}`.trim();



async function refused(ssh: string, extra: readonly string[] = []): Promise<string> {
  const r = await lab.exec(
    'cli',
    [process.execPath, CLI_JS, '--transport', 'ssh2', '-r', lab.sshHost, '-e', ssh, ...extra, LAB.targetSubnet],
    { timeoutMs: 30_000, env: noAgent },
  );
  expect(r.code, r.stderr).toBe(1);
  const msg = oneErrorLine(r.stderr);
  await expectNothingLeft(lab);
  return msg;
}

async function tunnelWorks(ssh: string): Promise<void> {
  const rx = new Rxshuttle(lab, 'cli', ['-v', '--transport', 'ssh2', '-r', lab.sshHost, '-e', ssh, LAB.targetSubnet], [], noAgent);
  await rx.ready();
  const page = await curl(lab, 'cli', `http://${LAB.target}/`);
  expect(page.code, page.stderr).toBe(0);
  expect(page.stdout).toContain(PAGE_MARKER);
  await rx.stop('SIGTERM');
}

describe('--transport ssh2 host keys', () => {
  it('a hashed known_hosts entry for the host and StrictHostKeyChecking=yes: the tunnel works', async () => {
    const file = join(dir, 'hashed');
    writeFileSync(file, scanned);
    execFileSync('ssh-keygen', ['-q', '-H', '-f', file], { stdio: 'ignore' });
    expect(readFileSync(file, 'utf8')).toMatch(/^\|1\|/);
    await tunnelWorks(sshWith(file, 'yes'));
  });

  it('an unknown host with StrictHostKeyChecking=yes: refused in one line, nothing left', async () => {
    const file = join(dir, 'empty');
    writeFileSync(file, '');
    expect(await refused(sshWith(file, 'yes'))).toMatch(/host key .*not known/);
  });

  it('a changed host key: refused even with StrictHostKeyChecking=no', async () => {
    const keyFile = join(dir, 'other');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', keyFile], { stdio: 'ignore' });
    const other = readFileSync(`${keyFile}.pub`, 'utf8').split(' ').slice(0, 2).join(' ');
    const file = join(dir, 'changed');
    writeFileSync(file, `${LAB.srv} ${other}\n`);
    // Offer only the type whose key we falsified, so the server cannot pick another one.
    const msg = await refused(sshWith(file, 'no', '-o HostKeyAlgorithms=ssh-ed25519'));
    expect(msg).toMatch(/CHANGED|changed/);
    expect(msg).toContain(file);
  });

  it('accept-new: an unknown host is accepted and written to known_hosts, where ssh-keygen finds it', async () => {
    const file = join(dir, 'learned');
    writeFileSync(file, '');
    await tunnelWorks(sshWith(file, 'accept-new'));
    const found = execFileSync('ssh-keygen', ['-F', LAB.srv, '-f', file], { encoding: 'utf8' });
    expect(found).toContain('found');
  });
});

describe('--transport auto (the default) falls back to the ssh binary for what ssh2 cannot do', () => {
  it('ProxyCommand (here: ssh -W through the same host): the binary carries the tunnel, and -v says why', async () => {
    const ssh = `${lab.sshCommand} -o 'ProxyCommand=${lab.sshCommand} -W %h:%p ${lab.sshHost}'`;
    const rx = new Rxshuttle(lab, 'cli', ['-v', '-r', lab.sshHost, '-e', ssh, LAB.targetSubnet], [], noAgent);
    await rx.ready();
    expect(rx.output).toMatch(/Transport: the ssh binary \(ssh2 cannot use ProxyCommand\)/);
    const page = await curl(lab, 'cli', `http://${LAB.target}/`);
    expect(page.stdout).toContain(PAGE_MARKER);
    await rx.stop('SIGTERM');
    await expectNothingLeft(lab);
  });

  it('an unknown host key with StrictHostKeyChecking=yes: ssh2 declines, and ssh itself refuses it in one line', async () => {
    const file = join(dir, 'empty-auto');
    writeFileSync(file, '');
    const r = await lab.exec('cli', [process.execPath, CLI_JS, '-r', lab.sshHost, '-e', sshWith(file, 'yes'), LAB.targetSubnet], {
      timeoutMs: 30_000,
      env: noAgent,
    });
    expect(r.code, r.stderr).toBe(1);
    expect(oneErrorLine(r.stderr)).toMatch(/Host key verification failed/);
    await expectNothingLeft(lab);
  });

  it('the default picks ssh2 when it can, and says so with -v', async () => {
    const rx = new Rxshuttle(lab, 'cli', ['-v', '-r', lab.sshHost, '-e', lab.sshCommand, LAB.targetSubnet], [], noAgent);
    await rx.ready();
    expect(rx.output).toMatch(/Transport: ssh2, in this process\./);
    await rx.stop('SIGTERM');
  });
});

describe('--transport ssh2 refuses what it cannot do', () => {
  it('no usable key (no agent, the only identity file missing): one line that says so', async () => {
    const ssh = `ssh -F /dev/null -o User=root -o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no -o IdentitiesOnly=yes -o IdentityFile=${join(dir, 'missing-key')}`;
    const r = await lab.exec(
      'cli',
      [process.execPath, CLI_JS, '--transport', 'ssh2', '-r', LAB.srv, '-e', ssh, LAB.targetSubnet],
      { timeoutMs: 30_000, env: noAgent },
    );
    expect(r.code, r.stderr).toBe(1);
    expect(oneErrorLine(r.stderr)).toMatch(/no usable key/);
    await expectNothingLeft(lab);
  });

  it('ProxyJump: one line naming it', async () => {
    expect(await refused(`${lab.sshCommand} -o ProxyJump=root@jump.invalid`)).toMatch(/ProxyJump/);
  });

  it('--ssh-forward with ssh2, and an unknown transport: usage errors (exit 2)', async () => {
    for (const args of [
      ['--transport', 'ssh2', '--ssh-forward'],
      ['--transport', 'telnet'],
    ]) {
      const r = await runRxshuttle(lab, 'cli', [...args, '-r', lab.sshHost, '-e', lab.sshCommand, LAB.targetSubnet], 20_000);
      expect(r.code, r.stderr).toBe(2);
      expect(oneErrorLine(r.stderr)).toMatch(/transport|ssh-forward/);
    }
    await expectNothingLeft(lab);
  });
});

describe("--transport ssh2 on ssh2's public API alone (RXSHUTTLE_SSH2_INTERNALS=off)", () => {
  const MB20 = 20_000_000;
  const MB5 = 5_000_000;

  it('says so once at -v, and carries a 20 MB download and a 5 MB upload byte-identical', async () => {
    // The switch that a failed capability check of ssh2's internals amounts to (ssh2-internals.ts).
    const env = { ...noAgent, RXSHUTTLE_SSH2_INTERNALS: 'off' };
    const rx = new Rxshuttle(lab, 'cli', ['-v', '--transport', 'ssh2', '-r', lab.sshHost, '-e', lab.sshCommand, LAB.targetSubnet], [], env);
    await rx.ready();
    expect(rx.output).toMatch(/Transport: ssh2, in this process\./);
    expect(rx.output.match(/ssh2 runs on its public API only \(RXSHUTTLE_SSH2_INTERNALS=off\)/g)).toHaveLength(1);
    const download = await lab.exec(
      'cli',
      ['bash', '-c', `set -o pipefail; curl -sS --fail --max-time 60 http://${LAB.target}/bytes/${MB20} | sha256sum`],
      { timeoutMs: 70_000 },
    );
    expect(download.code, download.stderr).toBe(0);
    expect(download.stdout.split(' ')[0]).toBe(labBytesSha256(MB20));
    const upload = await lab.exec(
      'cli',
      ['curl', '-sS', '--fail', '--max-time', '60', '--data-binary', '@-', '-H', 'content-type: application/octet-stream', `http://${LAB.target}/sha256`],
      { input: labBytes(MB5, 'up'), timeoutMs: 70_000 },
    );
    expect(upload.code, upload.stderr).toBe(0);
    expect(upload.stdout).toBe(labBytesSha256(MB5, 'up'));
    const page = await curl(lab, 'cli', `http://${LAB.target}/`);
    expect(page.stdout).toContain(PAGE_MARKER);
    await rx.stop('SIGTERM');
    await expectNothingLeft(lab);
  });
});
