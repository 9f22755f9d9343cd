import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseSshG } from '../../src/transport/ssh-config.js';

const dir = mkdtempSync(join(tmpdir(), 'rxshuttle-ssh-config-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

// ssh expands ~ with the passwd entry's home, so the expectations use the same one.
const { homedir: home, username: localUser } = userInfo();

/** Real `ssh -G` output, without the user's or the system's config files unless `config` is given. */
function sshG(host: string, options: readonly string[], config?: string): string {
  let file = '/dev/null';
  if (config !== undefined) {
    file = join(dir, 'config');
    writeFileSync(file, config);
  }
  const args = ['-G', '-F', file, ...options.flatMap((o) => ['-o', o]), host];
  // stderr piped: ssh warns that stdin is not a terminal.
  return execFileSync('ssh', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

const resolve = (host: string, options: readonly string[] = [], config?: string) =>
  parseSshG(sshG(host, options, config), { home, localUser, originalHost: host });

describe('parseSshG on real ssh -G output', () => {
  it("reads OpenSSH's defaults", () => {
    const config = resolve('example.com');
    expect(config).toMatchObject({
      hostname: 'example.com',
      port: 22,
      user: localUser,
      identitiesOnly: false,
      identityAgent: undefined,
      userKnownHostsFiles: [`${home}/.ssh/known_hosts`, `${home}/.ssh/known_hosts2`],
      globalKnownHostsFiles: ['/etc/ssh/ssh_known_hosts', '/etc/ssh/ssh_known_hosts2'],
      strictHostKeyChecking: 'ask',
      hashKnownHosts: false,
      hostKeyAlias: undefined,
      proxyJump: undefined,
      proxyCommand: undefined,
      connectTimeoutMs: undefined,
      batchMode: false,
      canonicalizeHostname: false,
    });
    expect(config.identityFiles).toContain(`${home}/.ssh/id_ed25519`);
    expect(config.identityFiles.every((f) => f.startsWith(`${home}/.ssh/id_`))).toBe(true);
  });

  it('applies -o options and expands identity file tokens', () => {
    const config = resolve('myhost', [
      'StrictHostKeyChecking=accept-new',
      'Port=2222',
      'User=bob',
      'HostName=10.1.2.3',
      'IdentityFile=~/.ssh/%h_key',
      'IdentityFile=/keys/%r@%n:%p_%u_%%',
      'IdentitiesOnly=yes',
      'IdentityAgent=none',
      'UserKnownHostsFile=~/kh_%n /tmp/kh2',
      'GlobalKnownHostsFile=none',
      'HashKnownHosts=yes',
      'HostKeyAlias=the-alias',
      'ProxyJump=jump@gate:2200',
      'ConnectTimeout=7',
      'BatchMode=yes',
      'CanonicalizeHostname=yes',
    ]);
    expect(config).toEqual({
      hostname: '10.1.2.3',
      port: 2222,
      user: 'bob',
      identityFiles: [`${home}/.ssh/10.1.2.3_key`, `/keys/bob@myhost:2222_${localUser}_%`],
      identitiesOnly: true,
      identityAgent: null,
      userKnownHostsFiles: [`${home}/kh_myhost`, '/tmp/kh2'],
      globalKnownHostsFiles: [],
      strictHostKeyChecking: 'accept-new',
      hashKnownHosts: true,
      hostKeyAlias: 'the-alias',
      proxyJump: 'jump@gate:2200',
      proxyCommand: undefined,
      connectTimeoutMs: 7000,
      batchMode: true,
      canonicalizeHostname: true,
    });
  });

  it('expands ~ and tokens that ssh prints verbatim from a config file, leaving unknown ones', () => {
    const config = resolve('alias', [], 'Host alias\n  HostName real.example\n  User al\n  IdentityFile ~/k_%h_%r_%d_%l\n');
    expect(config.identityFiles).toEqual([`${home}/k_real.example_al_${home}_%l`]);
  });

  it.each([
    ['yes', 'yes'],
    ['no', 'no'],
    ['off', 'no'],
    ['ask', 'ask'],
  ] as const)('maps StrictHostKeyChecking=%s, which OpenSSH 9 prints as true/false', (option, expected) => {
    expect(resolve('h', [`StrictHostKeyChecking=${option}`]).strictHostKeyChecking).toBe(expected);
  });

  it('reads ProxyCommand and an agent path, and SSH_AUTH_SOCK as the default agent', () => {
    const config = resolve('h', ['ProxyCommand=nc %h %p', 'IdentityAgent=/run/agent.sock']);
    expect(config.proxyCommand).toBe('nc %h %p');
    expect(config.identityAgent).toBe('/run/agent.sock');
    expect(resolve('h', ['IdentityAgent=SSH_AUTH_SOCK']).identityAgent).toBeUndefined();
  });
});

describe('parseSshG on literal text', () => {
  const env = { home: '/home/me', localUser: 'me', originalHost: 'short' };
  const base = 'host short\nhostname long.example\nport 22\nuser you\n';

  it('expands every token it knows in identity files, agent and known_hosts paths', () => {
    const config = parseSshG(
      `${base}identityfile ~/.ssh/%d|%u|%h|%r|%p|%n|%%|%C\nidentityagent ~/agent.%u\nuserknownhostsfile ~/kh %d/kh2\n`,
      env,
    );
    expect(config.identityFiles).toEqual(['/home/me/.ssh//home/me|me|long.example|you|22|short|%|%C']);
    expect(config.identityAgent).toBe('/home/me/agent.me');
    expect(config.userKnownHostsFiles).toEqual(['/home/me/kh', '/home/me/kh2']);
  });

  it('ignores unknown lines, tolerates CRLF and keyword case, and keeps identity file order', () => {
    const config = parseSshG(`${base}SomeFutureOption x y\r\nidentityfile /b\r\nIdentityFile /a\r\nstricthostkeychecking false\r\n`, env);
    expect(config.identityFiles).toEqual(['/b', '/a']);
    expect(config.strictHostKeyChecking).toBe('no');
    expect(config.userKnownHostsFiles).toEqual([]);
  });

  it.each(['hostname', 'port', 'user'])('fails clearly when ssh printed no %s', (keyword) => {
    const text = base.replace(new RegExp(`^${keyword} .*\\n`, 'm'), '');
    expect(() => parseSshG(text, env)).toThrow(`ssh -G short printed no ${keyword}`);
  });

  it('rejects an invalid port', () => {
    expect(() => parseSshG(base.replace('port 22', 'port 0'), env)).toThrow('invalid port: 0');
  });
});
