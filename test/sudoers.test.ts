// The sudoers rule: exactly the firewall helper, checked by the real visudo when it is there.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { exitCodeFor, UsageError } from '../src/errors.js';
import {
  checkWithVisudo,
  installSudoers,
  runSudoersCommand,
  SudoersError,
  sudoersSnippet,
  unsafeSudoersPaths,
} from '../src/firewall/sudoers.js';

const haveVisudo = ['/usr/sbin/visudo', '/usr/bin/visudo', '/sbin/visudo'].some((p) => fs.existsSync(p));
const rule = { user: 'alice', nodePath: '/usr/bin/node', cliPath: '/opt/rxshuttle/dist/cli.js' };

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rxs-sudoers-'));
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('sudoersSnippet', () => {
  it('allows exactly node + cli + --firewall, as root, without a password', () => {
    const text = sudoersSnippet(rule);
    const rules = text.split('\n').filter((l) => l && !l.startsWith('#'));
    expect(rules).toEqual(['alice ALL=(root) NOPASSWD: /usr/bin/node /opt/rxshuttle/dist/cli.js --firewall']);
    expect(text.endsWith('\n')).toBe(true);
    expect(sudoersSnippet({ ...rule, user: '%vpn' })).toContain('%vpn ALL=(root) NOPASSWD:');
  });

  it('refuses users and paths that sudoers would read as syntax or wildcards', () => {
    for (const user of ['a b', 'a,b', 'root:x', '', '-x', 'x\ny', '%', 'a(b)', 'a!b']) {
      expect(() => sudoersSnippet({ ...rule, user }), user).toThrow(UsageError);
    }
    for (const p of ['/usr/bin/no de', '/opt/*/cli.js', '/a,b', 'relative/cli.js', '/x\ny', '/a:b', '/a=b', '/a\\b', '/a!b']) {
      expect(() => sudoersSnippet({ ...rule, cliPath: p }), p).toThrow(SudoersError);
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

  it.skipIf(!haveVisudo)('passes visudo -c', () => {
    const file = path.join(dir, 'rule');
    fs.writeFileSync(file, sudoersSnippet(rule), { mode: 0o440 });
    expect(() => checkWithVisudo(file)).not.toThrow();
    fs.writeFileSync(file, 'alice ALL=(root NOPASSWD /bin/true\n', { mode: 0o440 });
    expect(() => checkWithVisudo(file)).toThrow(/visudo refused/);
  });
});

describe('installSudoers', () => {
  it.skipIf(process.getuid?.() !== 0 || !haveVisudo)('writes a checked 0440 file atomically, and nothing when visudo refuses', () => {
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
    expect(stdout).toContain('bob ALL=(root) NOPASSWD: /usr/bin/node /opt/x/dist/cli.js --firewall\n');
  });

  it('warns about paths others than root could change', () => {
    const cli = path.join(dir, 'pkg', 'dist', 'cli.js');
    fs.mkdirSync(path.dirname(cli), { recursive: true });
    fs.writeFileSync(cli, '');
    fs.chmodSync(path.dirname(cli), 0o777);
    expect(unsafeSudoersPaths({ nodePath: process.execPath, cliPath: cli })).toContain(path.dirname(cli));
    let stderr = '';
    runSudoersCommand({ install: false, user: 'bob', nodePath: process.execPath, cliPath: cli }, { stdout: () => {}, stderr: (t) => (stderr += t) });
    expect(stderr).toMatch(/warning: .*dist is not owned by root or is writable by others/);
  });
});
