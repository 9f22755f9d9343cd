// Where the CLI's arguments come from (RXSHUTTLE_ARGS/SSHUTTLE_ARGS, @FILE, -s and -X files),
// -l with localhost and lists, options that have no effect, and the error lines the CLI prints
// for usage errors (the option named, errno codes in words, exit status 2). The last part runs
// the built CLI (dist/cli.js), only ever with arguments that fail before anything starts.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { argumentLines, expandArgs } from '../../src/cli/argv.js';
import { CLI_SPEC } from '../../src/cli/definitions.js';
import { withoutEffect } from '../../src/cli/ineffective.js';
import { buildProgram } from '../../src/cli/program.js';
import { errnoWords, withoutErrnoCodes } from '../../src/os/errno.js';
import { UsageError } from '../../src/shared/errors.js';
import { parseListen, parseSubnet, readSubnetFile, resolveOptions, splitShellWords } from '../../src/shared/options.js';
import { listen, listenHosts } from '../../src/tunnel/listener.js';

const dir = mkdtempSync(join(tmpdir(), 'rxs-cli-args-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const file = (name: string, text: string): string => {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
};

/** What commander makes of these arguments: the subnets and the flags. */
function parse(args: readonly string[]): { subnets: string[]; flags: Record<string, unknown> } {
  let subnets: string[] = [];
  const program = buildProgram(CLI_SPEC, '0.0.0-test', { main: (s) => (subnets = s), command: () => {} });
  program.configureOutput({ writeErr: () => {}, writeOut: () => {} });
  program.parse([...args], { from: 'user' });
  return { subnets, flags: program.opts() };
}

describe('RXSHUTTLE_ARGS and SSHUTTLE_ARGS', () => {
  const noFiles = () => {
    throw new Error('no file should be read');
  };

  it('puts the words of RXSHUTTLE_ARGS in front of the command line, split as a shell would', () => {
    const env = { RXSHUTTLE_ARGS: `-r me@bastion -e 'ssh -F "my cfg"' -x\\ 10.9/16` };
    const out = expandArgs(['10/8', '-r', 'other'], env, noFiles);
    expect(out.args).toEqual(['-r', 'me@bastion', '-e', 'ssh -F "my cfg"', '-x 10.9/16', '10/8', '-r', 'other']);
    expect(out.fromEnv).toEqual({ name: 'RXSHUTTLE_ARGS', words: ['-r', 'me@bastion', '-e', 'ssh -F "my cfg"', '-x 10.9/16'] });
    // The command line comes later, so it wins for an option given once.
    expect(parse(out.args).flags['remote']).toBe('other');
  });

  it('expands nothing: no variables, globs, command substitution or ~', () => {
    const env = { RXSHUTTLE_ARGS: '$HOME ~ * $(id) `id` "$USER"', HOME: '/root', USER: 'root' };
    expect(expandArgs([], env, noFiles).args).toEqual(['$HOME', '~', '*', '$(id)', '`id`', '$USER']);
  });

  it('reads SSHUTTLE_ARGS only when RXSHUTTLE_ARGS is not set (set but empty counts as set)', () => {
    expect(expandArgs(['10/8'], { SSHUTTLE_ARGS: '-v -r h' }, noFiles)).toEqual({
      args: ['-v', '-r', 'h', '10/8'],
      fromEnv: { name: 'SSHUTTLE_ARGS', words: ['-v', '-r', 'h'] },
    });
    expect(expandArgs(['10/8'], { RXSHUTTLE_ARGS: '-N', SSHUTTLE_ARGS: '-v' }, noFiles).args).toEqual(['-N', '10/8']);
    expect(expandArgs(['10/8'], { RXSHUTTLE_ARGS: '', SSHUTTLE_ARGS: '-v' }, noFiles)).toEqual({ args: ['10/8'] });
    expect(expandArgs(['10/8'], {}, noFiles)).toEqual({ args: ['10/8'] });
  });

  it('an unbalanced quote is a usage error that names the variable', () => {
    expect(() => expandArgs([], { RXSHUTTLE_ARGS: "-e 'ssh" }, noFiles)).toThrow(UsageError);
    expect(() => expandArgs([], { SSHUTTLE_ARGS: '-e "ssh' }, noFiles)).toThrow(/^SSHUTTLE_ARGS: unbalanced quote/);
    expect(splitShellWords('a "b')).toBeNull();
    expect(splitShellWords('a\\')).toBeNull();
  });
});

describe('@FILE argument files', () => {
  it('are replaced in place by their lines, one argument each (sshuttle reads them so)', () => {
    const conf = file(
      'tunnel.conf',
      [
        '# the office',
        '--remote',
        'me@bastion',
        '',
        '  -x  ',
        '10.9.0.0/16',
        '"--ssh-cmd=ssh -F my config"', // quotes around a whole line, as copied from a shell
        "'10.0.0.0/8'",
        '--listen=localhost:0',
      ].join('\n'),
    );
    const { args } = expandArgs(['-v', `@${conf}`, '192.168.0.0/16'], {});
    expect(args).toEqual(['-v', '--remote', 'me@bastion', '-x', '10.9.0.0/16', '--ssh-cmd=ssh -F my config', '10.0.0.0/8', '--listen=localhost:0', '192.168.0.0/16']);
    const { subnets, flags } = parse(args);
    expect(subnets).toEqual(['10.0.0.0/8', '192.168.0.0/16']);
    expect(flags).toMatchObject({ remote: 'me@bastion', exclude: ['10.9.0.0/16'], sshCmd: 'ssh -F my config', listen: 'localhost:0', verbose: 1 });
  });

  it('may name other argument files, and may come from RXSHUTTLE_ARGS', () => {
    const inner = file('inner.conf', '-N\n');
    const outer = file('outer.conf', `-v\n@${inner}\n10/8\n`);
    expect(expandArgs(['-H'], { RXSHUTTLE_ARGS: `@${outer}` }).args).toEqual(['-v', '-N', '10/8', '-H']);
  });

  it('a file that names itself is an error, not a loop', () => {
    const self = join(dir, 'self.conf');
    writeFileSync(self, `@${self}\n`);
    expect(() => expandArgs([`@${self}`], {})).toThrow(/argument files nested more than 8 deep/);
  });

  it('nothing is expanded after --, and a lone @ is an argument', () => {
    expect(expandArgs(['@', '--', '@nope'], {}, () => 'x').args).toEqual(['@', '--', '@nope']);
  });

  it('an unreadable file is a usage error in words, naming the argument', () => {
    expect(() => expandArgs([`@${join(dir, 'missing.conf')}`], {})).toThrow(/^@.*missing\.conf: cannot read the argument file: no such file$/);
    expect(() => expandArgs([`@${dir}`], {})).toThrow(/: cannot read the argument file: is a directory$/);
  });

  it('an option and its value on one line: says to write one argument per line', () => {
    expect(() => argumentLines('@a.conf', '10/8\n--remote me@bastion\n')).toThrow(
      '@a.conf, line 2: one argument per line: put "--remote" and its value on lines of their own, or write --remote=VALUE',
    );
    expect(() => argumentLines('@a.conf', '-x 10.9/16')).toThrow(/put "-x" and its value on lines of their own$/);
    // `--opt=value with spaces` is one argument, and so is a bare word with spaces (a subnet will refuse it)
    expect(argumentLines('@a.conf', '--ssh-cmd=ssh -v\n')).toEqual(['--ssh-cmd=ssh -v']);
  });
});

describe('-s/--subnets FILE and -X/--exclude-from FILE', () => {
  const subnets = file('subnets.txt', '# office\n10.1.0.0/16\n\n  10.2.0.0/16  # lab\n[fd00::]/64\n');
  const excludes = file('excludes.txt', '10.1.9.0/24\n');

  it('-s reads subnets, -X excludes; both repeatable, with the long forms and -X as short for --exclude-from', () => {
    const { flags } = parse(['-s', subnets, '--subnets', excludes, '-X', excludes, `--exclude-from=${subnets}`]);
    expect(flags['subnets']).toEqual([subnets, excludes]);
    expect(flags['excludeFrom']).toEqual([excludes, subnets]);
    expect(readSubnetFile(subnets, false).map((r) => ('name' in r ? r.name : `${r.address}/${r.prefix}${r.exclude ? ' x' : ''}`))).toEqual([
      '10.1.0.0/16',
      '10.2.0.0/16',
      'fd00::/64',
    ]);
    expect(readSubnetFile(excludes, true)).toEqual([parseSubnet('10.1.9.0/24', true)]);
  });

  it('subnets from a file alone are enough to start', () => {
    const options = resolveOptions({ subnets: readSubnetFile(subnets, false) }, () => ['fw']);
    expect(options.subnets.filter((r) => !r.exclude)).toHaveLength(3);
  });

  it('errors name the option, the file and the line', () => {
    const bad = file('bad.txt', '10.1.0.0/16\n10.2.0.300/16\n');
    expect(() => readSubnetFile(bad, false)).toThrow(`-s/--subnets ${bad}, line 2: invalid subnet "10.2.0.300/16": octet out of range`);
    expect(() => readSubnetFile(join(dir, 'none'), false)).toThrow(/^-s\/--subnets .*none: cannot read it: no such file$/);
    expect(() => readSubnetFile(bad, true)).toThrow(/^-X\/--exclude-from .*bad\.txt, line 2: /);
  });
});

describe('-l/--listen: localhost and comma-separated lists', () => {
  it.each([
    ['localhost', { host: '127.0.0.1', port: 0 }],
    ['localhost:0', { host: '127.0.0.1', port: 0 }],
    ['127.0.0.1', { host: '127.0.0.1', port: 0 }],
    ['127.0.0.1:0,[::1]:0', { host: '127.0.0.1', port: 0, more: ['::1'] }],
    ['localhost,[::1]', { host: '127.0.0.1', port: 0, more: ['::1'] }],
    ['0.0.0.0:12345,[::]', { host: '0.0.0.0', port: 12345, more: ['::'] }], // one port for all
    ['[::1]:4000,127.0.0.1:4000', { host: '::1', port: 4000, more: ['127.0.0.1'] }],
    ['localhost,127.0.0.1:0', { host: '127.0.0.1', port: 0 }], // the same address once
    [' 127.0.0.1:1 , [::1] ', { host: '127.0.0.1', port: 1, more: ['::1'] }],
  ])('%s', (text, expected) => {
    expect(parseListen(text)).toEqual(expected);
  });

  it.each([
    ['127.0.0.1:1,[::1]:2', /one port for all addresses.*got 1 and 2/],
    ['127.0.0.1,', /expected \[ip:\]port/],
    ['localhost,example.com', /expected \[ip:\]port/],
    ['[::1]:70000', /port out of range/],
  ])('refuses %j, naming -l/--listen', (text, why) => {
    expect(() => parseListen(text)).toThrow(UsageError);
    expect(() => parseListen(text)).toThrow(new RegExp(`^-l/--listen "${text.replace(/[[\]]/g, '\\$&')}": `));
    expect(() => parseListen(text)).toThrow(why);
  });

  it('listens on every address, and on ::1 beside 127.0.0.1 only when IPv6 is tunneled and -l names no IPv6 address', () => {
    expect(listenHosts(parseListen('localhost'), false)).toEqual(['127.0.0.1']);
    expect(listenHosts(parseListen('localhost'), true)).toEqual(['127.0.0.1', '::1']);
    expect(listenHosts(parseListen('0.0.0.0:0'), true)).toEqual(['0.0.0.0', '::']);
    expect(listenHosts(parseListen('127.0.0.1,[::1]'), true)).toEqual(['127.0.0.1', '::1']);
    expect(listenHosts(parseListen('127.0.0.1,[::1]'), false)).toEqual(['127.0.0.1', '::1']);
    expect(listenHosts(parseListen('[::]'), true)).toEqual(['::']);
  });

  it('also on 127.0.0.1 (and ::1 for IPv6) when -l does not cover them: the rules deliver this machine\'s connections there (issue 16, finding 1)', () => {
    expect(listenHosts(parseListen('127.0.0.2'), false)).toEqual(['127.0.0.2', '127.0.0.1']);
    expect(listenHosts(parseListen('127.0.0.2'), true)).toEqual(['127.0.0.2', '::1', '127.0.0.1']);
    expect(listenHosts(parseListen('127.0.0.2,[::1]'), false)).toEqual(['127.0.0.2', '::1', '127.0.0.1']);
    expect(listenHosts(parseListen('[::1]'), false)).toEqual(['::1', '127.0.0.1']);
    expect(listenHosts(parseListen('127.0.0.1,[fd00::5]'), true)).toEqual(['127.0.0.1', 'fd00::5', '::1']);
    // Router mode on one address: forwarded traffic comes to it, this machine's own to 127.0.0.1 (::1).
    expect(listenHosts(parseListen('192.168.1.5'), true)).toEqual(['192.168.1.5', '::1', '127.0.0.1']);
    // A :: beside an IPv4 address leaves IPv4 to it (listen() makes it IPv6-only), so 127.0.0.1 is not covered.
    expect(listenHosts(parseListen('127.0.0.2,[::]'), false)).toEqual(['127.0.0.2', '::', '127.0.0.1']);
  });

  it('IPv4 and IPv6 listeners at once, on one port (the first free from 12300 on both)', async () => {
    const listener = await listen(parseListen('127.0.0.1:0,[::1]:0'));
    try {
      const bound = listener.servers.map((s) => s.address() as AddressInfo);
      expect(bound.map((a) => a.address)).toEqual(['127.0.0.1', '::1']);
      expect(new Set(bound.map((a) => a.port)).size).toBe(1);
      expect(bound[0]?.port).toBe(listener.port);
      expect(listener.port).toBeGreaterThanOrEqual(12300);
      expect(listener.host).toBe('127.0.0.1');
    } finally {
      for (const server of listener.servers) server.close();
    }
  });

  it("a busy port is an error in words, naming every address and -l", async () => {
    const first = await listen(parseListen('127.0.0.1:0,[::1]:0'));
    try {
      await expect(listen({ host: '127.0.0.1', port: first.port, more: ['::1'] })).rejects.toThrow(
        `cannot listen on 127.0.0.1, [::1], port ${first.port}: address already in use (-l/--listen chooses another)`,
      );
    } finally {
      for (const server of first.servers) server.close();
    }
  });

  it('the same port on another address (-l 127.0.0.2 beside a 127.0.0.1 instance): refused at once, in words; port 0 takes the next free one (issue 16, finding 1)', async () => {
    const first = await listen(parseListen('127.0.0.1:0'));
    try {
      await expect(listen(parseListen(`127.0.0.2:${first.port}`))).rejects.toThrow(
        `cannot listen on 127.0.0.2, 127.0.0.1, port ${first.port}: address already in use (-l/--listen chooses another; 127.0.0.1 too, where the rules deliver this machine's connections)`,
      );
      const second = await listen(parseListen('127.0.0.2:0'));
      try {
        expect(second.port).not.toBe(first.port);
        expect(second.servers.map((s) => (s.address() as AddressInfo).address)).toEqual(['127.0.0.2', '127.0.0.1']);
        expect(second.host).toBe('127.0.0.2');
      } finally {
        for (const server of second.servers) server.close();
      }
    } finally {
      for (const server of first.servers) server.close();
    }
  });

  it('an IPv4 address and :: on one port: :: is IPv6-only then (dual-stack it would collide with the IPv4 listener)', async () => {
    const listener = await listen(parseListen('127.0.0.1:0,[::]:0'));
    try {
      expect(listener.servers.map((s) => (s.address() as AddressInfo).address)).toEqual(['127.0.0.1', '::']);
    } finally {
      for (const server of listener.servers) server.close();
    }
  });
});

describe('options given without effect', () => {
  it('--pidfile without -D, --sudoers-user and --sudoers-filename without --sudoers: one warning each', () => {
    expect(withoutEffect({ pidfile: 'x.pid' })).toEqual(['--pidfile has no effect without -D/--daemon']);
    expect(withoutEffect({ pidfile: 'x.pid', daemon: true })).toEqual([]);
    expect(withoutEffect({ sudoersUser: 'bob', sudoersFilename: 'f' })).toEqual([
      '--sudoers-user has no effect without --sudoers or --sudoers-no-modify',
      '--sudoers-filename has no effect without --sudoers or --sudoers-no-modify',
    ]);
    expect(withoutEffect({ sudoersUser: 'bob', sudoersNoModify: true })).toEqual([]);
    expect(withoutEffect({ sudoersFilename: 'f', sudoers: true })).toEqual([]);
    expect(withoutEffect({})).toEqual([]);
  });
});

describe('errno codes in words', () => {
  it('a code becomes words; Node\'s "syscall CODE: description" keeps its description', () => {
    expect(errnoWords(Object.assign(new Error('ENOENT: no such file or directory'), { code: 'ENOENT' }))).toBe('no such file');
    expect(errnoWords(Object.assign(new Error('x'), { code: 'EACCES' }))).toBe('permission denied');
    expect(withoutErrnoCodes('cannot write pid file /x/y.pid: ENOENT')).toBe('cannot write pid file /x/y.pid: no such file');
    expect(withoutErrnoCodes('listen EADDRINUSE: address already in use 127.0.0.1:12300')).toBe('address already in use 127.0.0.1:12300');
    expect(withoutErrnoCodes("EACCES: permission denied, open '/etc/x'")).toBe("permission denied, open '/etc/x'");
    expect(withoutErrnoCodes('connect ECONNREFUSED 10.0.0.1:22')).toBe('connection refused 10.0.0.1:22');
    // Words that only look like codes stay.
    expect(withoutErrnoCodes('EXIT EOF ENOTACODE')).toBe('EXIT EOF ENOTACODE');
  });
});

// ---------------------------------------------------------------------------
// The built CLI: one line naming what was wrong, exit status 2

const CLI_JS = fileURLToPath(new URL('../../dist/cli.js', import.meta.url));

function run(args: readonly string[], env: NodeJS.ProcessEnv = {}) {
  if (!existsSync(CLI_JS)) throw new Error(`${CLI_JS} not found: run \`npm run build\` first`);
  const clean = { ...process.env };
  delete clean['RXSHUTTLE_ARGS'];
  delete clean['SSHUTTLE_ARGS'];
  const r = spawnSync(process.execPath, [CLI_JS, ...args], { env: { ...clean, ...env }, encoding: 'utf8', timeout: 20_000, cwd: dir });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr, lines: r.stderr.split('\n').filter((l) => l !== '') };
}

describe('the CLI: usage errors', () => {
  it.each<[string, string[], NodeJS.ProcessEnv, RegExp]>([
    ['a bad -x', ['-x', '10.0.0.300', '10/8'], {}, /^rxshuttle: -x\/--exclude "10\.0\.0\.300": octet out of range/],
    ['a missing -X file', ['-X', join(dir, 'nope'), '10/8'], {}, /^rxshuttle: -X\/--exclude-from .*nope: cannot read it: no such file$/],
    ['a missing -s file', ['-s', join(dir, 'nope')], {}, /^rxshuttle: -s\/--subnets .*nope: cannot read it: no such file$/],
    ['a bad line in a -s file', ['-s', file('s-bad.txt', '10/8\nno pe\n')], {}, /^rxshuttle: -s\/--subnets .*s-bad\.txt, line 2: invalid subnet "no pe": not a subnet, nor a valid host name/],
    ['-l with two ports', ['-l', '127.0.0.1:1,[::1]:2', '10/8'], {}, /^rxshuttle: -l\/--listen "127\.0\.0\.1:1,\[::1\]:2": one port/],
    ['a bad -r', ['-r', 'a b', '10/8'], {}, /^rxshuttle: -r\/--remote "a b": bad host name$/],
    ['a bad --keepalive', ['--keepalive', 'soon', '10/8'], {}, /^rxshuttle: --keepalive "soon": /],
    ['an unbalanced -e', ['-e', 'ssh "x', '10/8'], {}, /^rxshuttle: -e\/--ssh-cmd "ssh "x": unbalanced quote/],
    ['a missing @FILE', [`@${join(dir, 'nope.conf')}`], {}, /^rxshuttle: @.*nope\.conf: cannot read the argument file: no such file$/],
    ['an unbalanced RXSHUTTLE_ARGS', ['10/8'], { RXSHUTTLE_ARGS: "-e 'ssh" }, /^rxshuttle: RXSHUTTLE_ARGS: unbalanced quote/],
    ['an unknown option from SSHUTTLE_ARGS', ['10/8'], { SSHUTTLE_ARGS: '--frobnicate 1' }, /^rxshuttle: unknown option '--frobnicate' \(with SSHUTTLE_ARGS: --frobnicate 1\)$/],
    ['an unknown option', ['--frobnicate', '10/8'], {}, /^rxshuttle: unknown option '--frobnicate'$/],
    ['a misspelt option', ['--exclude-fro', 'x', '10/8'], {}, /^rxshuttle: unknown option '--exclude-fro' \(Did you mean --exclude-from\?\)$/],
    ['a missing value', ['10/8', '-l'], {}, /^rxshuttle: option '-l, --listen .*' argument missing$/],
    ['a bad --transport', ['--transport', 'x', '10/8'], {}, /^rxshuttle: option '--transport .*' argument 'x' is invalid/],
    ['an unknown shell', ['completion', 'fish'], {}, /^rxshuttle: .*'fish' is invalid .*bash, zsh/],
    ['no subnets', [], {}, /^rxshuttle: no subnets given: .*-s FILE/],
    ['a --sudoers-filename sudo would ignore', ['--sudoers-no-modify', '--sudoers-filename', 'a.b'], {}, /^rxshuttle: --sudoers-filename "a\.b": /],
  ])('%s: one line naming it, exit 2', (_, args, env, line) => {
    const r = run(args, env);
    expect(r.lines, r.stderr).toHaveLength(1);
    expect(r.lines[0]).toMatch(line);
    expect(r.lines[0]).not.toMatch(/\bE[A-Z]{3,}\b/);
    expect(r.code, r.stderr).toBe(2);
    expect(r.stdout).toBe('');
  });

  it('options without effect: a warning each, once, before the rest', () => {
    const r = run(['--pidfile', 'x.pid', '--sudoers-filename', 'f', '10.1.2.3/40']);
    expect(r.lines).toEqual([
      'rxshuttle: warning: --pidfile has no effect without -D/--daemon',
      'rxshuttle: warning: --sudoers-filename has no effect without --sudoers or --sudoers-no-modify',
      'rxshuttle: invalid subnet "10.1.2.3/40": width must be 0..32',
    ]);
    expect(r.code).toBe(2);
  });

  it('-V prints the version of package.json; --help exits 0', () => {
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
    expect(run(['-V'])).toMatchObject({ code: 0, stdout: `${pkg.version}\n`, stderr: '' });
    expect(run(['--version']).stdout).toBe(`${pkg.version}\n`);
    const help = run(['--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/^Usage: rxshuttle /);
  });

  it('RXSHUTTLE_ARGS and @FILE reach the parser (a -V among them prints the version)', () => {
    const conf = file('v.conf', '-V\n');
    expect(run([], { RXSHUTTLE_ARGS: '-V' }).code).toBe(0);
    expect(run([`@${conf}`]).stdout).toMatch(/^\d+\.\d+\.\d+/);
    expect(run([], { SSHUTTLE_ARGS: '--help' }).stdout).toMatch(/^Usage: rxshuttle /);
  });
});
