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
      expect(() => sudoersSnippet({ ...rule, user }), user).toThrow(SudoersError);
    }
    for (const p of ['/usr/bin/no de', '/opt/*/cli.js', '/a,b', 'relative/cli.js', '/x\ny', '/a:b', '/a=b', '/a\\b', '/a!b']) {
      expect(() => sudoersSnippet({ ...rule, cliPath: p }), p).toThrow(SudoersError);
      expect(() => sudoersSnippet({ ...rule, nodePath: p }), p).toThrow(SudoersError);
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
