// TCP to an IPv6 destination through the tunnel (ip6tables REDIRECT, SO_ORIGINAL_DST over
// SOL_IPV6, a listener on ::1), on the default path (ssh2 direct-tcpip) and through the ssh
// binary's mux; and ssh itself over IPv6 (the `lab6` host). cli reaches fd00:98::/64 only
// through the tunnel: srv does not forward.
import { describe, expect, it } from 'vitest';
import { LAB, type Lab, PAGE_MARKER } from './lab.js';
import { curl, Rxshuttle, rxshuttleRules, useLab } from './tunnel-helpers.js';

let lab: Lab;

useLab({ ipv6: true }, (up) => {
  lab = up;
});

const url = (path = '/') => `http://[${LAB.target6}]${path}`;

describe.each([
  { path: 'the default (ssh2 direct-tcpip)', extra: [] as string[], host: () => lab.sshHost },
  { path: '--transport ssh (the mux)', extra: ['--transport', 'ssh'], host: () => lab.sshHost },
  { path: 'the default, with ssh itself over IPv6 (lab6)', extra: [] as string[], host: () => lab.sshHost6 },
])('TCP to fd00:98::3 through $path', ({ extra, host }) => {
  it('fetches the page, and the target sees srv as the client', async () => {
    const before = await curl(lab, 'cli', url(), ['--connect-timeout', '2'], 4);
    expect(before.code, 'fd00:98::3 must be unreachable without the tunnel').not.toBe(0);

    const rx = new Rxshuttle(lab, 'cli', ['-v', '-r', host(), '-e', lab.sshCommand, ...extra, LAB.targetSubnet6]);
    await rx.ready();
    const page = await curl(lab, 'cli', url());
    expect(page.stderr).toBe('');
    expect(page.stdout).toContain(PAGE_MARKER);
    await rx.waitFor(/Accept: \[fd00:99::1\]:\d+ -> \[fd00:98::3\]:80\./);
    const who = await curl(lab, 'cli', url('/whoami'));
    expect(JSON.parse(who.stdout)).toMatchObject({ remoteAddress: LAB.srvTargetSide6, localAddress: LAB.target6, localPort: 80 });

    expect((await rx.stop('SIGTERM')).killed).toBe(false);
    expect(await rxshuttleRules(lab)).toEqual([]);
    expect(await lab.iptablesSave('cli', { table: 'nat', ipv6: true })).not.toMatch(/rxshuttle-/);
  });
});
