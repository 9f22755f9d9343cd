/**
 * The programs the root helper runs (issue 17, finding 2): found in fixed directories only,
 * never on $PATH, taken only when root alone can change them, run with a fixed environment.
 *
 * The trust check needs files of root and of another user: those tests need root (they chown).
 * Without root they are skipped, except in CI, where that is a failure (STYLE.md).
 */
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { runFirewallHelper } from '../../src/firewall/helper.js';
import { CommandNotFoundError, natTable, type RunCommand } from '../../src/firewall/iptables.js';
import {
  findPrograms,
  HELPER_PROGRAMS,
  PROGRAM_DIRS,
  PROGRAM_ENV,
  programRunner,
  UntrustedProgramError,
  untrustedReason,
} from '../../src/firewall/programs.js';
import { skipBecause } from '../support/skip.js';
import { CONNTRACK_LINE } from './redirected.test.js';
import { FakeIptables } from './support/fake-iptables.js';

const NOBODY = 65534;
const asRoot = process.getuid?.() === 0;
if (!asRoot && process.env.CI === 'true') throw new Error('programs.test.ts: the trust tests need root (they chown files)');

const cleanups: Array<() => void> = [];
afterAll(() => {
  for (const cleanup of cleanups.splice(0)) cleanup();
});

/** A directory root alone can write to, on a path root alone can write to (not /tmp, which is sticky). */
function trustedDir(): string {
  const dir = mkdtempSync('/run/rxs-progtest-');
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** An executable shell script. */
function script(path: string, body: string, mode = 0o755): string {
  writeFileSync(path, `#!/bin/sh\n${body}\n`);
  chmodSync(path, mode);
  return path;
}

/** A directory in /tmp with `names` as scripts that leave a mark when run (as a user would plant them). */
function plantedDir(names: readonly string[]): { dir: string; marker: string } {
  const dir = mkdtempSync(join(tmpdir(), 'rxs-planted-'));
  chmodSync(dir, 0o755);
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const marker = join(dir, 'ran');
  for (const name of names) script(join(dir, name), `echo "$0" >> ${marker}\necho planted`);
  return { dir, marker };
}

const ran = (marker: string) => (existsSync(marker) ? 'a planted program ran' : 'none ran');

describe('findPrograms and programRunner', () => {
  const path = process.env.PATH;
  afterEach(() => {
    process.env.PATH = path;
    delete process.env.RXS_TEST_LEAK;
  });

  it('looks in /usr/sbin, /sbin, /usr/bin and /bin only', () => {
    expect(PROGRAM_DIRS).toEqual(['/usr/sbin', '/sbin', '/usr/bin', '/bin']);
    expect(PROGRAM_ENV).toEqual({ PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' });
  });

  it('never runs an iptables-save planted earlier on PATH: only the one in the given directories', skipBecause(!asRoot && 'needs root (chowns files)'), async () => {
    const planted = plantedDir(['iptables-save', 'iptables-restore']);
    process.env.PATH = `${planted.dir}:${path ?? '/usr/bin:/bin'}`;
    const trusted = trustedDir();
    script(join(trusted, 'iptables-save'), 'echo "trusted $*"');

    const programs = findPrograms(['iptables-save', 'iptables-restore'], [trusted]);
    expect(programs.get('iptables-save')).toEqual({ path: join(trusted, 'iptables-save') });
    const run = programRunner(programs);
    expect(await run('iptables-save', ['-t', 'nat'])).toBe('trusted -t nat\n');
    // Found in none of the directories: not run from PATH either, and the error says what to install.
    await expect(run('iptables-restore', ['--noflush'], '')).rejects.toBeInstanceOf(CommandNotFoundError);
    await expect(natTable(4, run).restore('*nat\nCOMMIT\n')).rejects.toThrow(/^iptables not found: install iptables$/);
    expect(ran(planted.marker)).toBe('none ran');
  });

  it('refuses a file of another user, a file or directory others may write to, and a link that leads through one; none of them runs', skipBecause(!asRoot && 'needs root (chowns files)'), async () => {
    const trusted = trustedDir();
    const marker = join(trusted, 'ran');
    const body = `echo "$0" >> ${marker}`;
    const refusedWith = (dir: string) => {
      const programs = findPrograms(['iptables-save'], [dir]);
      return programs.get('iptables-save')?.refused;
    };

    const theirs = join(trusted, 'theirs');
    mkdirSync(theirs);
    chownSync(script(join(theirs, 'iptables-save'), body), NOBODY, NOBODY);
    expect(refusedWith(theirs)).toBe(`${theirs}/iptables-save is owned by uid ${NOBODY}, not root`);

    const groupWritable = join(trusted, 'group-writable');
    mkdirSync(groupWritable);
    chmodSync(groupWritable, 0o775);
    script(join(groupWritable, 'iptables-save'), body);
    expect(refusedWith(groupWritable)).toBe(`${groupWritable} is writable by its group`);

    const otherWritable = join(trusted, 'other-writable');
    mkdirSync(otherWritable);
    chmodSync(otherWritable, 0o1777); // sticky, as /tmp: still not trusted
    script(join(otherWritable, 'iptables-save'), body);
    expect(refusedWith(otherWritable)).toBe(`${otherWritable} is writable by others`);

    const theirDir = join(trusted, 'their-dir');
    mkdirSync(theirDir, { mode: 0o755 });
    chownSync(theirDir, NOBODY, NOBODY);
    script(join(theirDir, 'iptables-save'), body);
    expect(refusedWith(theirDir)).toBe(`${theirDir} is owned by uid ${NOBODY}, not root`);

    const writableFile = join(trusted, 'writable-file');
    mkdirSync(writableFile);
    script(join(writableFile, 'iptables-save'), body, 0o775);
    expect(refusedWith(writableFile)).toBe(`${writableFile}/iptables-save is writable by its group`);

    // A root-owned link in a trusted directory that points into a directory others may write to.
    const linked = join(trusted, 'linked');
    mkdirSync(linked);
    symlinkSync(join(groupWritable, 'iptables-save'), join(linked, 'iptables-save'));
    expect(refusedWith(linked)).toBe(`${groupWritable} is writable by its group`);

    const run = programRunner(findPrograms(['iptables-save'], [theirs]));
    const refusal = run('iptables-save', ['-t', 'nat']);
    await expect(refusal).rejects.toBeInstanceOf(UntrustedProgramError);
    await expect(refusal).rejects.toThrow(`refusing to run ${theirs}/iptables-save as root: ${theirs}/iptables-save is owned by uid ${NOBODY}, not root`);
    for (const dir of [groupWritable, otherWritable, theirDir, writableFile, linked]) {
      await expect(programRunner(findPrograms(['iptables-save'], [dir]))('iptables-save', [])).rejects.toBeInstanceOf(UntrustedProgramError);
    }
    expect(ran(marker)).toBe('none ran');
  });

  it('follows links one at a time (a merged /usr, /etc/alternatives) and runs the program by the name it was found under', skipBecause(!asRoot && 'needs root (chowns files)'), async () => {
    // s -> sbin (a directory link, as /sbin -> usr/sbin); sbin/iptables-save -> <abs>/alt/iptables-save
    // -> ../bin/multi (as /etc/alternatives/… -> xtables-nft-multi, which acts on the name it was started by).
    const trusted = trustedDir();
    for (const d of ['bin', 'alt', 'sbin']) mkdirSync(join(trusted, d), { mode: 0o755 });
    script(join(trusted, 'bin', 'multi'), 'echo "$(basename "$0") $*"');
    symlinkSync('../bin/multi', join(trusted, 'alt', 'iptables-save'));
    symlinkSync(join(trusted, 'alt', 'iptables-save'), join(trusted, 'sbin', 'iptables-save'));
    symlinkSync('sbin', join(trusted, 's'));
    const dir = join(trusted, 's');

    expect(findPrograms(['iptables-save'], [dir]).get('iptables-save')).toEqual({ path: join(dir, 'iptables-save') });
    expect(await programRunner(findPrograms(['iptables-save'], [dir]))('iptables-save', ['-t', 'nat'])).toBe('iptables-save -t nat\n');

    // The directory a link leads through counts as much as the one the file is in.
    chmodSync(join(trusted, 'alt'), 0o775);
    expect(findPrograms(['iptables-save'], [dir]).get('iptables-save')?.refused).toBe(`${join(trusted, 'alt')} is writable by its group`);
    chmodSync(join(trusted, 'alt'), 0o755);
    chmodSync(join(trusted, 'bin'), 0o757);
    expect(findPrograms(['iptables-save'], [dir]).get('iptables-save')?.refused).toBe(`${join(trusted, 'bin')} is writable by others`);
  });

  it("trusts this machine's own iptables (through /sbin and /etc/alternatives where they are links)", () => {
    const programs = findPrograms(['iptables-save', 'iptables-restore']);
    for (const [name, program] of programs) {
      expect(program.refused, name).toBeUndefined();
      expect(untrustedReason(program.path), name).toBeNull();
    }
    if (existsSync('/sbin/iptables-save')) expect(untrustedReason('/sbin/iptables-save')).toBeNull();
    expect(untrustedReason('relative/iptables-save')).toBe('relative/iptables-save is not an absolute path');
  });

  it('runs a program with exactly the fixed environment, in /, inheriting nothing', async () => {
    process.env.RXS_TEST_LEAK = 'secret';
    process.env.PATH = `/nonexistent:${path ?? ''}`;
    const run = programRunner(findPrograms(['env', 'pwd']));
    expect(await run('env', [])).toBe('PATH=/usr/sbin:/usr/bin:/sbin:/bin\nLC_ALL=C\n');
    expect(await run('pwd', [])).toBe('/\n');
  });

  it('a program found nowhere gives the same message as before: what to install', async () => {
    const empty = mkdtempSync(join(tmpdir(), 'rxs-noprog-'));
    cleanups.push(() => rmSync(empty, { recursive: true, force: true }));
    const run = programRunner(findPrograms(HELPER_PROGRAMS, [empty]));
    await expect(natTable(4, run).save()).rejects.toThrow(/^iptables not found: install iptables$/);
    await expect(natTable(6, run).save()).rejects.toThrow(/^ip6tables not found: install iptables$/);
    expect(() => findPrograms(['../bin/sh'])).toThrow(/not a program name/);
  });

  it('HELPER_PROGRAMS holds every program the helper runs (with --dns, -H and systemd-resolved)', async () => {
    const fake = new FakeIptables();
    const names = new Set<string>();
    const run: RunCommand = async (name, args, input) => {
      names.add(name);
      if (name === 'resolvectl') throw new Error('resolvectl failed'); // so that the fallback runs too
      if (name === 'systemd-resolve' || name === 'ss') return '';
      return fake.run(name, args, input);
    };
    // The client "dies" (input ends without QUIT) with one redirected connection: ss ends it.
    const conntrack = join(mkdtempSync(join(tmpdir(), 'rxs-conntrack-')), 'nf_conntrack');
    writeFileSync(conntrack, `${CONNTRACK_LINE}\n`);
    const input = new PassThrough();
    const setup = {
      version: 1,
      method: 'nat',
      port: 12300,
      routerMode: false,
      rules: [{ family: 6, address: 'fd00::', prefix: 8, portLow: 0, portHigh: 0, exclude: false }],
      dnsPort: 12301,
      dnsServers: ['10.98.0.3'],
    };
    const done = runFirewallHelper(input, new PassThrough(), { run, handleSignals: false, resolvedRunning: () => true, notice: () => {}, conntrackPath: conntrack });
    input.end(`${JSON.stringify(setup)}\n`);
    expect(await done).toBe(0);
    expect([...names].sort()).toEqual([...HELPER_PROGRAMS].sort());
  });
});
