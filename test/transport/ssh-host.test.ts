// Which addresses the firewall must leave alone for ssh's own connection: the host ssh -G names,
// or with ProxyJump the first jump host (ssh reaches the rest through it).
import { type AddressInfo, connect, createServer } from 'node:net';
import { describe, expect, it } from 'vitest';
import { TransportError } from '../../src/shared/errors.js';
import { firstJumpHop, sshHostInfo } from '../../src/transport/ssh.js';
import { parseSshG, type ResolvedSshConfig } from '../../src/transport/ssh-config.js';
import { knownAddresses } from '../../src/transport/ssh2-socket.js';

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

describe('sshHostInfo: the ssh host is looked up once (issue 16, finding 5)', () => {
  /** What `ssh -G` would print for a host, with these extra lines. */
  const sshG = (hostname: string, extra = ''): ResolvedSshConfig =>
    parseSshG(`hostname ${hostname}\nuser alice\nport 22\n${extra}`, { home: '/home/alice', localUser: 'alice', originalHost: hostname });
  const failing = (code: string) => {
    const calls: string[] = [];
    const lookup = async (hostname: string): Promise<string[]> => {
      calls.push(hostname);
      await new Promise((resolve) => setTimeout(resolve, 50)); // a resolver that takes its time
      throw Object.assign(new Error(`getaddrinfo ${code} ${hostname}`), { code, hostname });
    };
    return { calls, lookup };
  };

  it.each([
    ['ENOTFOUND', 'Name or service not known'],
    ['EAI_AGAIN', 'Temporary failure in name resolution'],
  ])("a name that does not resolve (%s): fails at once, in ssh's words, without ssh looking it up again", async (code, words) => {
    const { calls, lookup } = failing(code);
    const started = Date.now();
    await expect(sshHostInfo(['ssh'], { host: 'nosuch' }, { sshG: async () => sshG('nosuch.example'), lookup })).rejects.toThrow(
      new TransportError('RXS_ERR_SSH', `ssh to nosuch failed: Could not resolve hostname nosuch.example: ${words}`),
    );
    expect(calls).toEqual(['nosuch.example']);
    expect(Date.now() - started).toBeLessThan(1000);
  });

  it('with ProxyJump: the jump host is what ssh looks up from here', async () => {
    const { calls, lookup } = failing('ENOTFOUND');
    const configs = (_: readonly string[], remote: { host: string }) =>
      Promise.resolve(remote.host === 'target' ? sshG('target.internal', 'proxyjump bob@gw.example') : sshG('gw.example'));
    await expect(sshHostInfo(['ssh'], { host: 'target' }, { sshG: configs, lookup })).rejects.toThrow(
      'ssh to target failed: Could not resolve hostname gw.example: Name or service not known',
    );
    expect(calls).toEqual(['gw.example']);
  });

  it('with ProxyJump under --transport ssh2: no lookup, so the transport says it takes no ProxyJump', async () => {
    const { calls, lookup } = failing('ENOTFOUND');
    const configs = (_: readonly string[], remote: { host: string }) =>
      Promise.resolve(remote.host === 'target' ? sshG('target.internal', 'proxyjump bob@gw.example') : sshG('gw.example'));
    const info = await sshHostInfo(['ssh'], { host: 'target' }, { sshG: configs, lookup, ssh2Only: true });
    expect(info.addresses).toEqual([]);
    expect(info.config?.proxyJump).toBe('bob@gw.example');
    expect(calls).toEqual([]);
  });

  it.each([
    ['a ProxyCommand (the proxy reaches the host)', async () => sshG('only-behind-the-proxy', 'proxycommand nc -X 5 -x proxy:1080 %h %p')],
    ['CanonicalizeHostname (ssh may find it under another name)', async () => sshG('short', 'canonicalizehostname yes\ncanonicaldomains corp.example')],
    ['a command that is not OpenSSH (it may do anything with the name)', async () => undefined],
    ['a jump host whose own ProxyCommand reaches it', async (_: readonly string[], remote: { host: string }) =>
      remote.host === 'target' ? sshG('target', 'proxyjump gw') : sshG('gw.example', 'proxycommand connect-somehow %h')],
  ])('no address, but with %s: not an error, only no exclude', async (_name, configs: (c: readonly string[], r: { host: string }) => Promise<ResolvedSshConfig | undefined>) => {
    const { lookup } = failing('ENOTFOUND');
    expect((await sshHostInfo(['ssh'], { host: 'target' }, { sshG: configs, lookup })).addresses).toEqual([]);
  });

  it('found: the addresses, looked up once', async () => {
    const calls: string[] = [];
    const lookup = async (hostname: string) => {
      calls.push(hostname);
      return ['192.0.2.7', '2001:db8::7'];
    };
    const info = await sshHostInfo(['ssh'], { host: 'bastion' }, { sshG: async () => sshG('bastion.example'), lookup });
    expect(info.addresses).toEqual(['192.0.2.7', '2001:db8::7']);
    expect(calls).toEqual(['bastion.example']);
  });
});

describe('knownAddresses: ssh2 connects to what sshHostInfo found, without a second lookup', () => {
  it('net.connect with it reaches the address for a name no resolver knows', async () => {
    const server = createServer((socket) => socket.end('hi\n'));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = server.address() as AddressInfo;
      const said = await new Promise<string>((resolve, reject) => {
        const socket = connect({ host: 'rxs-never-looked-up.invalid', port, lookup: knownAddresses(['127.0.0.1']) });
        let data = '';
        socket.on('data', (chunk) => (data += chunk));
        socket.on('end', () => resolve(data));
        socket.on('error', reject);
      });
      expect(said).toBe('hi\n');
    } finally {
      server.close();
    }
  });

  it('answers one address or all, of the family asked for', () => {
    const lookup = knownAddresses(['192.0.2.7', '2001:db8::7']);
    const answers: unknown[] = [];
    lookup('h', { all: true }, (err, all) => answers.push([err, all]));
    lookup('h', { family: 6 }, (err, address, family) => answers.push([err, address, family]));
    lookup('h', { family: 4, all: false }, (err, address, family) => answers.push([err, address, family]));
    expect(answers).toEqual([
      [null, [{ address: '192.0.2.7', family: 4 }, { address: '2001:db8::7', family: 6 }]],
      [null, '2001:db8::7', 6],
      [null, '192.0.2.7', 4],
    ]);
  });
});
