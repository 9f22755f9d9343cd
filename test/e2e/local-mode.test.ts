// Local mode (no -r): the server runs on this machine, no ssh. Run in the srv
// namespace, which reaches the target directly, so the proxied connection
// really goes out — and must not be caught by the tunnel's own rule again
// (a loop would show up as a storm of Accept lines for one request).
import { describe, expect, it } from 'vitest';
import { LAB, type Lab, PAGE_MARKER } from './lab.js';
import {
  argvOf,
  curl,
  isRemoteNode,
  Rxshuttle,
  rxshuttleProcessesIn,
  rxshuttleRules,
  useLab,
  waitFast,
} from './tunnel-helpers.js';

let lab: Lab;

useLab({ noNodeSshd: false }, (up) => {
  lab = up;
});

/** One curl to the target from srv; returns once rxshuttle logged the connection's close. */
async function oneFetch(rx: Rxshuttle): Promise<void> {
  const closesBefore = rx.closes().length;
  const r = await curl(lab, 'srv', `http://${LAB.target}/`);
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
  expect(r.stdout).toContain(PAGE_MARKER);
  await waitFast(() => rx.closes().length > closesBefore, 5_000, 'the close line of the fetch');
}

async function stopAndCheckClean(rx: Rxshuttle): Promise<void> {
  expect((await rx.stop('SIGTERM')).killed).toBe(false);
  expect(await rxshuttleRules(lab, 'srv')).toEqual([]);
  expect(await rxshuttleProcessesIn(lab, 'srv')).toEqual([]);
}

describe('local mode in srv', () => {
  it('10.98.0.0/24: curl from srv gets the page through rxshuttle (one Accept, no loop)', async () => {
    const rx = await Rxshuttle.local(lab, 'srv', [LAB.targetSubnet]);
    expect(rx.output).toMatch(/Connected to /);
    expect(await rxshuttleRules(lab, 'srv')).not.toEqual([]);
    // no ssh anywhere: the server is a local child
    const procs = rx.processes();
    expect(procs.helper).toHaveLength(1);
    expect(procs.all.map(argvOf).filter((a) => /(^|\/)ssh$/.test(a[0] ?? ''))).toEqual([]);
    expect(procs.transport.map(argvOf).filter(isRemoteNode)).toHaveLength(1);

    await oneFetch(rx);
    expect(rx.accepts(`${LAB.target}:80`)).toHaveLength(1);
    expect(rx.accepts(`${LAB.target}:80`)[0]).toMatch(/Accept: 10\.98\.0\.2:\d+ -> 10\.98\.0\.3:80\./);
    await oneFetch(rx);
    expect(rx.accepts()).toHaveLength(2);

    await stopAndCheckClean(rx);
  });

  it('0/0: curl from srv still gets the page, with exactly one Accept per request', async () => {
    const rx = await Rxshuttle.local(lab, 'srv', ['0/0']);
    await oneFetch(rx);
    expect(rx.accepts()).toHaveLength(1);
    expect(rx.accepts(`${LAB.target}:80`)).toHaveLength(1);
    await oneFetch(rx);
    expect(rx.accepts()).toHaveLength(2);
    expect(rx.closes()).toHaveLength(2);
    expect(rx.running).toBe(true);

    await stopAndCheckClean(rx);
  });
});
