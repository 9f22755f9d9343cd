import { execFileSync } from 'node:child_process';
import { Socket } from 'node:net';
import { firstValueFrom, Observable, of, switchMap } from 'rxjs';
import { describe, expect, it, vi } from 'vitest';
import { fdSocket } from '../../src/streams/fd-socket.js';
import { hostsScanScript, parseProbe, probeScript, probeThenServerScript, sectionScript, splitProbe } from '../../src/transport/remote-probe.js';
import { socketPair } from '../../src/transport/socketpair.js';

/** Runs a script as the remote shell would (sh -c), here on this machine. */
const runHere = (command: string) => execFileSync('/bin/sh', ['-c', command], { encoding: 'utf8', env: { ...process.env, PATH: process.env['PATH'] ?? '' } });

describe('sectionScript', () => {
  it('prints each section under its marker, and parse() gives them back; a failing command leaves its section empty; output without a final newline does not swallow the next marker', () => {
    const script = sectionScript([
      ['one', 'echo first; echo second'],
      ['missing', 'cat /nonexistent/file'],
      ['three', 'printf "no newline"'],
      ['four', 'echo after'],
    ]);
    const sections = script.parse(runHere(script.command));
    expect(sections.get('one')).toBe('first\nsecond');
    expect(sections.get('missing')).toBe('');
    expect(sections.get('three')).toBe('no newline');
    expect(sections.get('four')).toBe('after');
  });

  it('a line that looks like a marker but lacks the nonce is content, not a section (the output cannot forge one)', () => {
    const script = sectionScript([['hosts', 'echo "@@rxs-000000000000 evil"; echo real']]);
    const sections = script.parse(runHere(script.command));
    expect([...sections.keys()]).toEqual(['hosts']);
    expect(sections.get('hosts')).toContain('@@rxs-000000000000 evil');
  });

  it('a section printed twice keeps its first copy; text before the first marker is dropped', () => {
    const script = sectionScript([['a', 'echo x']]);
    const marker = /@@rxs-[0-9a-f]+/.exec(script.command)?.[0] as string;
    const sections = script.parse(`banner\n${marker} a\nfirst\n${marker} a\nsecond\n`);
    expect(sections.get('a')).toBe('first');
  });
});

describe('probeScript / parseProbe', () => {
  it('here (node on PATH): node usable with its version, the OS, the resolv.conf', () => {
    const script = probeScript({ remoteNode: process.execPath, routes: true });
    const probe = parseProbe(script.parse(runHere(script.command)), process.execPath);
    expect(probe.node).toEqual({ usable: true, version: process.version });
    expect(probe.os).toBe('Linux');
    expect(probe.hostOrder).toBe('LE');
    expect(probe.hostname).not.toBe('');
    expect(probe.sections.get('route')).toMatch(/Iface/);
  });

  it('a node that is missing, too old, or not asked for', () => {
    const probe = (node: string, remoteNode = 'node') => parseProbe(new Map([['node', node], ['os', 'Linux\n']]), remoteNode).node;
    expect(probe('')).toEqual({ usable: false, why: 'no "node" there' });
    expect(probe('sh: 1: node: not found')).toEqual({ usable: false, why: 'no "node" there' });
    expect(probe('v14.21.3')).toEqual({ usable: false, why: 'its node v14.21.3 is older than 16' });
    expect(probe('v20.19.2\n')).toEqual({ usable: true, version: 'v20.19.2' });
    expect(parseProbe(new Map(), 'none').node).toEqual({ usable: false, why: '--remote-node none' });
  });

  it('--remote-node none does not run node, and -N off reads no routes', () => {
    const script = probeScript({ remoteNode: 'none', routes: false });
    expect(script.command).not.toMatch(/--version/);
    expect(script.command).not.toMatch(/proc\/net\/route/);
  });

  it('big-endian machines are told from uname -m', () => {
    expect(parseProbe(new Map([['arch', 's390x\n']]), 'node').hostOrder).toBe('BE');
    expect(parseProbe(new Map([['arch', 'ppc64le\n']]), 'node').hostOrder).toBe('LE');
    expect(parseProbe(new Map([['arch', 'x86_64\n']]), 'node').hostOrder).toBe('LE');
  });

  it('quotes the node path for the remote shell', () => {
    const script = probeScript({ remoteNode: "/opt/my node/bin/node'x", routes: false });
    const sections = script.parse(runHere(script.command));
    expect(sections.get('node')).toBe('');
  });
});

describe('hostsScanScript', () => {
  it('runs here and reads the hosts file and the neighbour and socket tables', () => {
    const script = hostsScanScript();
    const sections = script.parse(runHere(script.command));
    expect(sections.get('hosts')).toMatch(/localhost/);
    expect(sections.get('tcp')).toMatch(/local_address/);
    expect([...sections.keys()]).toEqual(['hosts', 'hostname', 'addr', 'neigh', 'arp', 'tcp', 'tcp6', 'arp-a']);
  });
});

describe('splitProbe', () => {
  const script = probeThenServerScript({ remoteNode: 'node', routes: false });
  const end = script.endPrefix;

  it('gives the sections, the decision and every byte after it, also those arriving while the reader changes (fdSocket)', async () => {
    const pair = socketPair(null);
    if (!pair) throw new Error('no socket pair');
    const { bytes$ } = fdSocket(pair.ours, { readable: true, writable: false });
    const writer = new Socket({ fd: pair.theirs, readable: false, writable: true });
    const got: { mode: string; os: string | undefined; rest: string } = { mode: '', os: undefined, rest: '' };
    const done = new Promise<void>((resolve, reject) =>
      splitProbe(bytes$, script)
        .pipe(
          switchMap(({ sections, mode, rest$ }) => {
            got.mode = mode;
            got.os = sections.get('os');
            return rest$;
          }),
        )
        .subscribe({ next: (chunk) => (got.rest += chunk.toString()), error: reject, complete: resolve }),
    );
    writer.write(`login banner\n${script.marker} os\nLinux\n\n${end}node\nHEL`);
    // The rest comes once the decision is taken: the reader has changed by then.
    await vi.waitFor(() => expect(got.mode).toBe('node'));
    writer.end('LO');
    await done;
    expect(got).toEqual({ mode: 'node', os: 'Linux', rest: 'HELLO' });
  });

  it('stock when the remote says so; an output that never decides is bounded', async () => {
    const decided = await firstValueFrom(splitProbe(of(Buffer.from(`\n${end}stock\n`)), script));
    expect(decided.mode).toBe('stock');
    const endless = new Observable<Buffer>((subscriber) => {
      for (let i = 0; i < 80 && !subscriber.closed; i++) subscriber.next(Buffer.alloc(64 * 1024, 0x61));
    });
    await expect(firstValueFrom(splitProbe(endless, script))).rejects.toThrow(/printed too much/);
  });

  it('finds the end line split across one-byte chunks, and reads a trickle of output in linear time', async () => {
    const text = `${script.marker} os\nLinux\n\n${end}stock`;
    const bytes = [...[...Buffer.from(text)].map((byte) => Buffer.from([byte])), Buffer.from('\nREST')];
    const split = await firstValueFrom(splitProbe(of(...bytes), script).pipe(switchMap(({ sections, mode, rest$ }) => of({ os: sections.get('os'), mode, rest$ }))));
    expect(split.os).toBe('Linux');
    expect(split.mode).toBe('stock');
    // What came after the end line in its chunk is the first of the rest.
    expect((await firstValueFrom(split.rest$)).toString()).toBe('REST');
    // 4 MiB in 64-byte pieces without an end line: 65 536 chunks, refused in well under a second.
    const trickle = new Observable<Buffer>((subscriber) => {
      const piece = Buffer.alloc(64, 0x61);
      for (let i = 0; i < 70_000 && !subscriber.closed; i++) subscriber.next(piece);
    });
    const t0 = performance.now();
    await expect(firstValueFrom(splitProbe(trickle, script))).rejects.toThrow(/printed too much/);
    expect(performance.now() - t0).toBeLessThan(1_000);
  });

  it('the ssh binary script: node decides on the remote, none means stock without asking node', () => {
    expect(script.command).toMatch(/exec node -e /);
    expect(script.command).toMatch(/exec cat >\/dev\/null$/);
    const none = probeThenServerScript({ remoteNode: 'none', routes: false });
    expect(none.command).not.toMatch(/node/);
  });
});
