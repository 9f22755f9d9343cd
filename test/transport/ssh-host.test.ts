// Which addresses the firewall must leave alone for ssh's own connection: the host ssh -G names,
// or with ProxyJump the first jump host (ssh reaches the rest through it).
import { describe, expect, it } from 'vitest';
import { firstJumpHop, sshHostInfo } from '../../src/transport/ssh.js';

describe('firstJumpHop', () => {
  it.each([
    ['jump', { host: 'jump' }],
    ['bob@jump.example:2222', { user: 'bob', host: 'jump.example', port: 2222 }],
    ['root@[10.99.0.2]', { user: 'root', host: '10.99.0.2' }],
    ['[fd00::1]:22,second', { host: 'fd00::1', port: 22 }],
    ['ssh://alice@gw:2200,inner', { user: 'alice', host: 'gw', port: 2200 }],
  ])('%s', (value, hop) => {
    expect(firstJumpHop(value)).toEqual(hop);
  });

  it('nothing usable: undefined', () => {
    expect(firstJumpHop('')).toBeUndefined();
    expect(firstJumpHop('-oops')).toBeUndefined();
  });
});

describe('sshHostInfo (real ssh -G, no connection)', () => {
  const ssh = ['ssh', '-F', '/dev/null'];

  it('the HostName ssh -G resolves', async () => {
    const info = await sshHostInfo([...ssh, '-o', 'HostName=10.9.9.9'], { host: 'alias' });
    expect(info.addresses).toEqual(['10.9.9.9']);
    expect(info.openssh).toBe(true);
    expect(info.config?.hostname).toBe('10.9.9.9');
  });

  it('with ProxyJump: the first jump host, not the target', async () => {
    const info = await sshHostInfo([...ssh, '-o', 'ProxyJump=bob@10.1.2.3:2222,10.4.5.6', '-o', 'HostName=10.9.9.9'], { host: 'alias' });
    expect(info.addresses).toEqual(['10.1.2.3']);
    expect(info.config?.proxyJump).toContain('10.1.2.3');
  });

  it('a command that is not OpenSSH: the name as given', async () => {
    const info = await sshHostInfo(['false'], { host: '10.7.7.7' });
    expect(info).toEqual({ addresses: ['10.7.7.7'], openssh: false });
  });
});
