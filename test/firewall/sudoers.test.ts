// The sudoers rule: exactly the firewall helper, checked by the real visudo when it is there.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  checkWithVisudo,
  installSudoers,
  runSudoersCommand,
  SudoersError,
  sudoersSnippet,
  unsafeSudoersPaths,
} from '../../src/firewall/sudoers.js';
import { exitCodeFor, UsageError } from '../../src/shared/errors.js';
import { skipBecause } from '../support/skip.js';

const haveVisudo = ['/usr/sbin/visudo', '/usr/bin/visudo', '/sbin/visudo'].some((p) => fs.existsSync(p));
const rule = { user: 'alice', nodePath: '/usr/bin/node', helperPath: '/opt/rxshuttle/dist/firewall-helper.cjs' };

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rxs-sudoers-'));
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('sudoersSnippet', () => {
  it("allows exactly node + the helper's program + --restricted, as root, without a password", () => {
    const text = sudoersSnippet(rule);
    const rules = text.split('\n').filter((l) => l && !l.startsWith('#'));
    expect(rules).toEqual(['alice ALL=(root) NOPASSWD: /usr/bin/node --max-semi-space-size=1 /opt/rxshuttle/dist/firewall-helper.cjs --restricted']);
    expect(text.endsWith('\n')).toBe(true);
    expect(sudoersSnippet({ ...rule, user: '%vpn' })).toContain('%vpn ALL=(root) NOPASSWD:');
  });

  it('refuses users and paths that sudoers would read as syntax or wildcards', () => {
    for (const user of ['a b', 'a,b', 'root:x', '', '-x', 'x\ny', '%', 'a(b)', 'a!b']) {
      expect(() => sudoersSnippet({ ...rule, user }), user).toThrow(UsageError);
    }
    for (const p of ['/usr/bin/no de', '/opt/*/cli.js', '/a,b', 'relative/cli.js', '/x\ny', '/a:b', '/a=b', '/a\\b', '/a!b']) {
      expect(() => sudoersSnippet({ ...rule, helperPath: p }), p).toThrow(SudoersError);
      expect(() => sudoersSnippet({ ...rule, nodePath: p }), p).toThrow(SudoersError);
    }
  });

  // Issue 17, finding 11: `--sudoers-user ALL` was accepted, a passwordless rule for every user.
  it.each([
    ['ALL', /ALL is sudoers' word for everybody/],
    ['%ALL', /ALL is sudoers' word for everybody/],
    ['all', /ALL is sudoers' word for everybody/],
    ['ADMINS', /sudoers reads an all-capitals name as an alias/],
    ['', /expected a user name or %group/],
    ['%', /expected a user name or %group/],
    ['#0', /expected a user name or %group/],
    ['%#0', /expected a user name or %group/],
    ['+netgroup', /expected a user name or %group/],
    ['%:nonunix', /expected a user name or %group/],
    ['!alice', /expected a user name or %group/],
    ['alice,bob', /expected a user name or %group/],
    ['"alice"', /expected a user name or %group/],
    ['alice\\', /expected a user name or %group/],
    ['a=b', /expected a user name or %group/],
  ])('--sudoers-user %j is a usage error (exit 2), and nothing is printed or run', (user, reason) => {
    const said: string[] = [];
    let thrown: unknown;
    try {
      runSudoersCommand({ install: false, user, nodePath: '/usr/bin/node', cliPath: '/opt/x/dist/cli.js' }, { stdout: (t) => said.push(t), stderr: (t) => said.push(t) });
    } catch (e) {
      thrown = e;
    }
    expect(thrown).toBeInstanceOf(UsageError);
    expect((thrown as UsageError).code).toBe('RXS_ERR_USAGE');
    expect((thrown as Error).message).toMatch(reason);
    expect(exitCodeFor(thrown)).toBe(2);
    expect(said).toEqual([]);
  });

  it('still takes ordinary users and groups', () => {
    for (const user of ['alice', 'bob.smith', 'svc-vpn', '_rxs', 'Alice', 'host$', '%vpn', '%VPN_Users', '%sudo']) {
      expect(sudoersSnippet({ ...rule, user }), user).toContain(`${user} ALL=(root) NOPASSWD:`);
    }
  });

  it('passes visudo -c', skipBecause(!haveVisudo && 'visudo is not installed'), () => {
    const file = path.join(dir, 'rule');
    fs.writeFileSync(file, sudoersSnippet(rule), { mode: 0o440 });
    expect(() => checkWithVisudo(file)).not.toThrow();
    fs.writeFileSync(file, 'alice ALL=(root NOPASSWD /bin/true\n', { mode: 0o440 });
    expect(() => checkWithVisudo(file)).toThrow(/visudo refused/);
  });
});

describe('installSudoers', () => {
  const cannotInstall = process.getuid?.() !== 0 ? 'needs root (writes a root-owned sudoers file)' : !haveVisudo && 'visudo is not installed';
  it('writes a checked 0440 file atomically, and nothing when visudo refuses', skipBecause(cannotInstall), () => {
    const written = installSudoers(sudoersSnippet(rule), 'rxshuttle_test', dir);
    expect(written).toBe(path.join(dir, 'rxshuttle_test'));
    expect(fs.statSync(written).mode & 0o777).toBe(0o440);
    expect(fs.readFileSync(written, 'utf8')).toBe(sudoersSnippet(rule));
    expect(() => installSudoers('this is not sudoers (\n', 'broken', dir)).toThrow(/visudo refused/);
    expect(fs.readdirSync(dir)).toEqual(['rxshuttle_test']);
  });

  it('refuses file names sudo would skip or that leave the directory', () => {
    for (const name of ['a.b', '../x', 'x~', '', 'a/b']) expect(() => installSudoers('', name, dir), name).toThrow(SudoersError);
  });
});

describe('runSudoersCommand', () => {
  it('--sudoers-no-modify prints the rule for the given user', () => {
    let stdout = '';
    const status = runSudoersCommand(
      { install: false, user: 'bob', nodePath: '/usr/bin/node', cliPath: '/opt/x/dist/cli.js' },
      { stdout: (t) => (stdout += t), stderr: () => {} },
    );
    expect(status).toBe(0);
    expect(stdout).toContain('bob ALL=(root) NOPASSWD: /usr/bin/node --max-semi-space-size=1 /opt/x/dist/firewall-helper.cjs --restricted\n');
  });

});

// Issue 17, finding 6: a user-owned package, or one under /tmp, had the rule installed with a
// warning; replacing a file then ran code as root. The rule is refused unless every path it trusts
// is root's and writable by nobody else.
describe('unsafeSudoersPaths (issue 17, finding 6)', () => {
  const isRoot = process.getuid?.() === 0;
  let roots: string[] = [];
  afterEach(() => {
    for (const r of roots) fs.rmSync(r, { recursive: true, force: true });
    roots = [];
  });

  /** A package as npm installs it: pkg/dist/firewall-helper.cjs and pkg/node_modules/koffi/…, 0755/0644. */
  function packageIn(parent: string): { helperPath: string; koffi: string } {
    const root = fs.mkdtempSync(path.join(parent, 'rxs-sudoers-pkg-'));
    fs.chmodSync(root, 0o755);
    roots.push(root);
    const helperPath = path.join(root, 'pkg', 'dist', 'firewall-helper.cjs');
    const koffi = path.join(root, 'pkg', 'node_modules', 'koffi');
    fs.mkdirSync(path.dirname(helperPath), { recursive: true });
    fs.mkdirSync(path.join(koffi, 'build'), { recursive: true });
    fs.writeFileSync(helperPath, '');
    fs.writeFileSync(path.join(koffi, 'index.js'), '');
    fs.writeFileSync(path.join(koffi, 'build', 'koffi.node'), '');
    return { helperPath, koffi };
  }
  // /run is root's and not sticky: a place for a package only root can change.
  const safeParent = () => (isRoot ? '/run' : os.tmpdir());

  it('a package that only root can change, with a node that only root can change: nothing to say', () => {
    const { helperPath } = packageIn(safeParent());
    const problems = unsafeSudoersPaths({ nodePath: process.execPath, helperPath });
    if (isRoot) expect(problems).toEqual([]);
    else expect(problems.join('\n')).toMatch(/owned by uid/);
  });

  it('under a sticky directory others may write to (/tmp): refused, naming it', () => {
    // Like /tmp (1777), but below a directory of root's, so that this one is the first problem.
    const sticky = fs.mkdtempSync(path.join(safeParent(), 'rxs-sticky-'));
    roots.push(sticky);
    fs.chmodSync(sticky, 0o1777);
    const { helperPath } = packageIn(sticky);
    expect(unsafeSudoersPaths({ nodePath: process.execPath, helperPath }).join('\n')).toMatch(isRoot ? `${sticky} is writable by others` : /./);
  });

  it('a file of koffi writable by its group, a link in koffi, koffi missing, a helper that is not a file: refused', () => {
    const one = packageIn(safeParent());
    fs.chmodSync(path.join(one.koffi, 'build', 'koffi.node'), 0o664);
    expect(unsafeSudoersPaths({ nodePath: process.execPath, helperPath: one.helperPath }).join('\n')).toMatch(/koffi\.node is (writable by its group|owned by uid)/);

    const two = packageIn(safeParent());
    fs.symlinkSync('/tmp', path.join(two.koffi, 'build', 'elsewhere'));
    expect(unsafeSudoersPaths({ nodePath: process.execPath, helperPath: two.helperPath }).join('\n')).toMatch(/elsewhere is a symbolic link|owned by uid/);

    const three = packageIn(safeParent());
    fs.rmSync(three.koffi, { recursive: true });
    expect(unsafeSudoersPaths({ nodePath: process.execPath, helperPath: three.helperPath }).join('\n')).toMatch(/koffi .* is not installed beside it/);

    const four = packageIn(safeParent());
    fs.rmSync(four.helperPath);
    fs.mkdirSync(four.helperPath);
    expect(unsafeSudoersPaths({ nodePath: process.execPath, helperPath: four.helperPath }).join('\n')).toMatch(/is not a regular file|owned by uid/);
  });

  it('--sudoers refuses to install the rule for an unsafe package, and writes nothing', () => {
    const { helperPath } = packageIn(fs.mkdtempSync(path.join(os.tmpdir(), 'rxs-sticky-')));
    const cliPath = path.join(path.dirname(helperPath), 'cli.js');
    const filename = `rxshuttle_test_unsafe_${process.pid}`;
    try {
      expect(() =>
        runSudoersCommand({ install: true, user: 'bob', filename, nodePath: process.execPath, cliPath }, { stdout: () => {}, stderr: () => {} }),
      ).toThrow(isRoot ? /^refusing to install the sudoers rule: .*writable by others.*only root can write/ : /./);
      expect(fs.existsSync(`/etc/sudoers.d/${filename}`)).toBe(false);
    } finally {
      fs.rmSync(`/etc/sudoers.d/${filename}`, { force: true });
    }
  });
});
