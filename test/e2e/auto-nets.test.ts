// -N in the e2e lab: with no subnet on the command line, the client tunnels what srv's routing
// table names (10.98.0.0/24 towards tgt, 10.99.0.0/24 towards cli), except what -x and the ssh
// server's own address exclude. Only srv's routing table knows 10.98.0.0/24 is there; cli
// cannot reach it otherwise (srv does not forward).
import { describe, expect, it } from 'vitest';
import { LAB, type Lab, PAGE_MARKER } from './lab.js';
import { curl, Rxshuttle, rxshuttleRules, useLab } from './tunnel-helpers.js';

let lab: Lab;

useLab({ noNodeSshd: false }, (up) => {
  lab = up;
});

describe('-N / --auto-nets', () => {
  it('with no subnets given, tunnels the networks of the server routing table and logs them', async () => {
    const rx = await Rxshuttle.remote(lab, ['-N']);
    // sshuttle's "available routes", one route per line
    expect(rx.output).toMatch(/rxshuttle: available routes:\n(rxshuttle: {3}[\d.]+\/\d+\n)*rxshuttle: {3}10\.98\.0\.0\/24\n/);
    expect(rx.output).toMatch(/rxshuttle: {3}10\.99\.0\.0\/24\n/);
    expect(rx.output).toMatch(/Firewall ready: chain rxshuttle-\d+, 2 subnet\(s\) tunneled, 1 excluded/);

    const nat = await lab.iptablesSave('cli', { table: 'nat' });
    expect(nat).toMatch(/-A rxshuttle-\d+ -d 10\.98\.0\.0\/24 -p tcp -j REDIRECT/);
    // no default route, and the ssh server itself stays out
    expect(nat).not.toMatch(/-d 0\.0\.0\.0\/0/);
    expect(nat).toMatch(/-A rxshuttle-\d+ -d 10\.99\.0\.2\/32 -p tcp -j RETURN/);

    const page = await curl(lab, 'cli', `http://${LAB.target}/`);
    expect(page.code, page.stderr).toBe(0);
    expect(page.stdout).toContain(PAGE_MARKER);
    expect(await rx.acceptsAtLeast(1, `${LAB.target}:80`)).toHaveLength(1);

    await rx.stop();
    expect(await rxshuttleRules(lab)).toEqual([]);
  });

  it('a route inside a -x exclude is not tunneled', async () => {
    const rx = await Rxshuttle.remote(lab, ['-N', '-x', '10.98.0.0/16']);
    const nat = await lab.iptablesSave('cli', { table: 'nat' });
    expect(nat).not.toMatch(/-d 10\.98\.0\.0\/24 -p tcp -j REDIRECT/);
    expect(nat).toMatch(/-d 10\.99\.0\.0\/24 -p tcp -j REDIRECT/);
    expect(rx.output).toMatch(/1 of them tunneled \(-N\)/);
    const page = await curl(lab, 'cli', `http://${LAB.target}/`, ['--connect-timeout', '2'], 4);
    expect(page.code).not.toBe(0);
    expect(rx.accepts(LAB.target)).toEqual([]);
  });

  it('routes add to the subnets given on the command line', async () => {
    const rx = await Rxshuttle.remote(lab, ['-N', '10.97.0.0/16']);
    expect(rx.output).toMatch(/Firewall ready: chain rxshuttle-\d+, 3 subnet\(s\) tunneled/);
    const page = await curl(lab, 'cli', `http://${LAB.target}/`);
    expect(page.stdout).toContain(PAGE_MARKER);
  });
});
