/**
 * The restricted mode (issue 17, finding 3): what the rule of `rxshuttle --sudoers` lets a user
 * start captures that user's own traffic only, never in router mode, and only to that user's own
 * listener. Pure parts here and the helper in-process against a fake iptables; the real thing
 * through sudo in test/e2e/sudo.test.ts.
 */
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { runFirewallHelper } from '../../src/firewall/helper.js';
import { killSwitchScript } from '../../src/firewall/kill-switch.js';
import { nftScript } from '../../src/firewall/nft.js';
import { boundBy, checkRestrictedSetup, restrictedUid } from '../../src/firewall/restricted.js';
import { natRules } from '../../src/firewall/rules.js';
import type { FirewallSetup } from '../../src/firewall/types.js';
import { validateSetup } from '../../src/firewall/validate.js';
import { FakeIptables } from './support/fake-iptables.js';
import { outputLines } from './support/output-lines.js';

const SETUP: FirewallSetup = {
  version: 1,
  method: 'nat',
  port: 12300,
  routerMode: false,
  rules: [{ family: 4, address: '0.0.0.0', prefix: 0, portLow: 0, portHigh: 0, exclude: false }],
  dnsPort: 12301,
  dnsServers: ['10.0.0.53'],
};

// /proc/net/tcp and udp as the kernel writes them (header, then one socket a line).
const TCP = [
  '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode',
  '   0: 0100007F:300C 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 11111 1 0000000000000000 100 0 0 10 0',
  '   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 22222 1 0000000000000000 100 0 0 10 0',
  '   2: 0100007F:300E 0100007F:9C40 01 00000000:00000000 00:00000000 00000000  1000        0 33333 1 0000000000000000 20 4 30 10 -1',
].join('\n');
const UDP = [
  '   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops',
  '  100: 0100007F:300D 00000000:0000 07 00000000:00000000 00:00000000 00000000  1000        0 44444 2 0000000000000000 0',
].join('\n');
const proc = (files: Record<string, string>) => (path: string) => {
  const text = files[path.replace('/proc/net/', '')];
  if (text === undefined) throw Object.assign(new Error('ENOENT'), { code: 'ENOENT' });
  return text;
};
const read = proc({ tcp: TCP, udp: UDP });

describe('restrictedUid', () => {
  it('is SUDO_UID, a user other than root; anything else is refused', () => {
    expect(restrictedUid({ SUDO_UID: '1000' })).toBe(1000);
    for (const bad of [undefined, '', '0', '-1', '01', '1e3', '1000 ', 'x', '4294967295', '99999999999']) {
      expect(() => restrictedUid(bad === undefined ? {} : { SUDO_UID: bad }), String(bad)).toThrow(/run it through sudo/);
    }
  });
});

describe('boundBy: from /proc/net', () => {
  it('a listening TCP socket of that user on that port, over IPv4 or IPv6', () => {
    expect(boundBy(12300, 1000, 'tcp', read)).toBe(true); // 0x300C
    expect(boundBy(12300, 1001, 'tcp', read)).toBe(false); // another user's
    expect(boundBy(22, 1000, 'tcp', read)).toBe(false); // root's sshd
    expect(boundBy(12302, 1000, 'tcp', read)).toBe(false); // 0x300E: connected, not listening
    const v6 = '  sl local rem st\n   0: 00000000000000000000000001000000:300C 00000000000000000000000000000000:0000 0A 0:0 00:0 0 1000 0 1 1';
    expect(boundBy(12300, 1000, 'tcp', proc({ tcp: TCP.split('\n')[0] as string, tcp6: v6 }))).toBe(true);
  });

  it('an unconnected UDP socket of that user (the DNS listener)', () => {
    expect(boundBy(12301, 1000, 'udp', read)).toBe(true);
    expect(boundBy(12301, 0, 'udp', read)).toBe(false);
    expect(boundBy(12300, 1000, 'udp', read)).toBe(false);
  });
});

describe('checkRestrictedSetup', () => {
  const bound = (port: number, uid: number, protocol: 'tcp' | 'udp') => boundBy(port, uid, protocol, read);

  it('takes a setup for loopback with the ports the user listens on', () => {
    expect(() => checkRestrictedSetup(SETUP, 1000, bound)).not.toThrow();
  });

  it('refuses router mode, and ports that are not the user\'s own listeners (sshd\'s 22 above all)', () => {
    expect(() => checkRestrictedSetup({ ...SETUP, routerMode: true }, 1000, bound)).toThrow(/router mode .* is refused: the rule of rxshuttle --sudoers allows only your own traffic/);
    expect(() => checkRestrictedSetup({ ...SETUP, port: 22 }, 1000, bound)).toThrow(/^port 22 is not listened on by uid 1000/);
    expect(() => checkRestrictedSetup(SETUP, 1001, bound)).toThrow(/^port 12300 is not listened on by uid 1001/);
    expect(() => checkRestrictedSetup({ ...SETUP, dnsPort: 53 }, 1000, bound)).toThrow(/^DNS port 53 is not bound by uid 1000/);
  });

  it('refuses the tproxy method, whose transparent sockets need a client running as root', () => {
    expect(() => checkRestrictedSetup({ ...SETUP, method: 'tproxy', tmark: 1, udpPort: 12302 }, 1000, () => true)).toThrow(
      /^method tproxy is refused: its transparent sockets need the client to run as root; run rxshuttle as root/,
    );
  });

  it("--user: only the user's own uid; --group narrows further and is taken", () => {
    expect(() => checkRestrictedSetup({ ...SETUP, user: 1000 }, 1000, bound)).not.toThrow();
    expect(() => checkRestrictedSetup({ ...SETUP, user: 0 }, 1000, bound)).toThrow(/^--user 0 is refused: .* another user's traffic/);
    expect(() => checkRestrictedSetup({ ...SETUP, group: 100 }, 1000, bound)).not.toThrow();
  });
});

describe('--user and --group (natRules, the kill switch, nft)', () => {
  it('owner matches on the OUTPUT jumps: --user, --group, then the bypass group; the restricted uid wins over --user', () => {
    const jumps = (text: string | null) => (text ?? '').split('\n').filter((l) => l.startsWith('-I '));
    expect(jumps(natRules({ ...SETUP, user: 0, group: 100, bypassGid: 4242 }).v4)).toEqual([
      '-I OUTPUT 1 -p tcp -m owner --uid-owner 0 -m owner --gid-owner 100 -m owner ! --gid-owner 4242 -j rxshuttle-12300',
      '-I OUTPUT 1 -p udp --dport 53 -m owner --uid-owner 0 -m owner --gid-owner 100 -m owner ! --gid-owner 4242 -j rxshuttle-12300',
    ]);
    expect(jumps(natRules({ ...SETUP, user: 1000 }, 1000).v4)[0]).toBe('-I OUTPUT 1 -p tcp -m owner --uid-owner 1000 -j rxshuttle-12300');
    expect(jumps(natRules({ ...SETUP, routerMode: true, group: 100 }).v4)).toContain('-I PREROUTING 1 -p tcp -j rxshuttle-12300');
    expect(killSwitchScript({ ...SETUP, user: 1001, group: 100 }, 4)).toContain('-I OUTPUT 1 -m owner --uid-owner 1001 -m owner --gid-owner 100 -j rxshuttle-ks-12300');
    expect(nftScript({ ...SETUP, user: 1001, group: 100 }, SETUP.rules)).toContain('meta l4proto tcp meta skuid 1001 meta skgid 100 jump capture');
  });

  it('the setup line takes them as ids, root included', () => {
    expect(validateSetup({ ...SETUP, user: 0, group: 0 })).toMatchObject({ user: 0, group: 0 });
    expect(() => validateSetup({ ...SETUP, user: 'root' })).toThrow(/user must be an integer/);
    expect(() => validateSetup({ ...SETUP, group: -1 })).toThrow(/group must be an integer/);
  });
});

describe('natRules with an owner', () => {
  it("every OUTPUT jump matches the user's uid (before the bypass group); nothing else changes", () => {
    const v4 = natRules({ ...SETUP, bypassGid: 4242 }, 1000).v4 ?? '';
    const jumps = v4.split('\n').filter((l) => l.startsWith('-I '));
    expect(jumps).toEqual([
      '-I OUTPUT 1 -p tcp -m owner --uid-owner 1000 -m owner ! --gid-owner 4242 -j rxshuttle-12300',
      '-I OUTPUT 1 -p udp --dport 53 -m owner --uid-owner 1000 -m owner ! --gid-owner 4242 -j rxshuttle-12300',
    ]);
    const chain = (text: string) => text.split('\n').filter((l) => l.startsWith('-A '));
    expect(chain(v4)).toEqual(chain(natRules({ ...SETUP, bypassGid: 4242 }).v4 ?? ''));
  });
});

describe('runFirewallHelper in restricted mode (fake iptables)', () => {
  async function run(setup: FirewallSetup) {
    const fake = new FakeIptables();
    const input = new PassThrough();
    const output = new PassThrough();
    const { nextLine } = outputLines(output);
    const done = runFirewallHelper(input, output, {
      run: fake.run,
      handleSignals: false,
      warn: () => {},
      notice: () => {},
      ownerUid: 1000,
      boundBy: (port, uid, protocol) => boundBy(port, uid, protocol, read),
    });
    expect(await nextLine()).toBe('HELLO rxshuttle-fw 1');
    input.write(`${JSON.stringify(setup)}\n`);
    return { fake, input, done, reply: await nextLine() };
  }

  it("installs the user's own capture only", async () => {
    const { fake, input, done, reply } = await run(SETUP);
    expect(reply).toBe('READY');
    expect(fake.tables[4].chains.get('OUTPUT')).toEqual([
      '-p udp --dport 53 -m owner --uid-owner 1000 -j rxshuttle-12300',
      '-p tcp -m owner --uid-owner 1000 -j rxshuttle-12300',
    ]);
    expect(fake.tables[4].chains.get('PREROUTING')).toEqual([]);
    input.end('QUIT\n');
    expect(await done).toBe(0);
    expect(fake.tables[4].chains.has('rxshuttle-12300')).toBe(false);
  });

  it.each([
    ['router mode', { ...SETUP, routerMode: true }, /router mode/],
    ['a port the user does not listen on (sshd)', { ...SETUP, port: 22 }, /port 22 is not listened on by uid 1000/],
  ])('refuses %s before touching any table', async (_what, setup, reason) => {
    const { fake, done, reply } = await run(setup);
    expect(reply).toMatch(new RegExp(`^ERROR .*${reason.source}`));
    expect(await done).toBe(1);
    expect(fake.calls).toEqual([]);
  });
});
