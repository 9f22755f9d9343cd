import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { appendFileSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import {
  beginLine,
  editHostsFile,
  endLine,
  HOSTS_LOCK_NAME,
  HostsBlock,
  hostsBlockName,
  MAX_BLOCK_BYTES,
  MAX_FILE_BYTES,
  MAX_HOSTS,
  namesOutsideBlocks,
  removeBlock,
  removeBlockFromFile,
  withBlock,
} from '../../src/firewall/hosts-file.js';
import { netnsInode } from '../../src/firewall/netns.js';

const ORIGINAL = '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n10.99.0.1\tcli\n';
const A = [
  { address: '10.98.0.3', name: 'target' },
  { address: '10.98.0.4', name: 'echo4' },
];
const B = [{ address: '10.97.0.1', name: 'other' }];
/** Our network namespace, part of every block's name (issue 17, finding 11). */
const NETNS = netnsInode();
const N12300 = hostsBlockName(12300);
const N12301 = hostsBlockName(12301);
const N1230 = hostsBlockName(1230);

const dir = mkdtempSync(join(tmpdir(), 'rxs-hosts-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
/** rxshuttle's lock of the hosts file goes here (in production: /run/rxshuttle/hosts.lock). */
const LOCK_DIR = join(dir, 'locks');
const LOCKS = { lockDirs: [LOCK_DIR] };
let n = 0;
const hostsFile = (content: string) => {
  const path = join(dir, `hosts${n++}`);
  writeFileSync(path, content);
  return path;
};

describe('hosts blocks (pure)', () => {
  it('appends a block that names the instance, and removing it gives the file back byte for byte', () => {
    const added = withBlock(ORIGINAL, N12300, A);
    expect(added).toBe(`${ORIGINAL}${beginLine(N12300)}\n10.98.0.3\ttarget\n10.98.0.4\techo4\n${endLine(N12300)}\n`);
    expect(removeBlock(added, N12300)).toBe(ORIGINAL);
  });

  it('two instances: each block apart, each removal takes only its own, in any order', () => {
    const both = withBlock(withBlock(ORIGINAL, N12300, A), N12301, B);
    expect(both).toContain(`# BEGIN rxshuttle-12300-net${NETNS} (added by rxshuttle -H; removed when its tunnel stops)\n`);
    expect(both).toContain(`# END rxshuttle-12301-net${NETNS}\n`);
    expect(removeBlock(both, N12300)).toBe(withBlock(ORIGINAL, N12301, B));
    expect(removeBlock(removeBlock(both, N12300), N12301)).toBe(ORIGINAL);
    expect(removeBlock(removeBlock(both, N12301), N12300)).toBe(ORIGINAL);
    // A port that is a prefix of another is not confused with it.
    expect(removeBlock(withBlock(ORIGINAL, N1230, A), N12300)).toBe(withBlock(ORIGINAL, N1230, A));
  });

  it('rewriting a block replaces it where it is; an empty list removes it', () => {
    const one = withBlock(ORIGINAL, N12300, A.slice(0, 1));
    expect(withBlock(one, N12300, A)).toBe(withBlock(ORIGINAL, N12300, A));
    expect(withBlock(one, N12300, [])).toBe(ORIGINAL);
  });

  it('never adds a name the file already defines outside rxshuttle blocks (any case)', () => {
    const mine = `${ORIGINAL}10.0.0.9\tTarget # mine\n`;
    expect(withBlock(mine, N12300, A)).toBe(`${mine}${beginLine(N12300)}\n10.98.0.4\techo4\n${endLine(N12300)}\n`);
    expect(namesOutsideBlocks(withBlock(mine, N12301, B))).toEqual(new Set(['localhost', 'ip6-localhost', 'cli', 'target']));
    expect(withBlock(ORIGINAL, N12300, [{ address: '10.0.0.1', name: 'cli' }])).toBe(ORIGINAL);
  });

  it('a file without a final newline comes back without one, even when another block followed', () => {
    const bare = '127.0.0.1 localhost';
    const added = withBlock(bare, N12300, A);
    expect(added.startsWith(`${bare}\n# BEGIN rxshuttle-12300-net${NETNS} `)).toBe(true);
    expect(removeBlock(added, N12300)).toBe(bare);
    const both = withBlock(added, N12301, B);
    expect(removeBlock(removeBlock(both, N12300), N12301)).toBe(bare);
    expect(removeBlock(removeBlock(both, N12301), N12300)).toBe(bare);
  });

  it('removes leftovers: several blocks of the port, or a block cut short', () => {
    const twice = withBlock(ORIGINAL, N12300, A) + `${beginLine(N12300)}\n10.0.0.1\tx\n${endLine(N12300)}\n`;
    expect(removeBlock(twice, N12300)).toBe(ORIGINAL);
    const cut = `${ORIGINAL}${beginLine(N12300)}\n10.98.0.3\ttarget\n# a comment of the user\n`;
    expect(removeBlock(cut, N12300)).toBe(`${ORIGINAL}# a comment of the user\n`);
  });

  it('the same port in another network namespace is another block: removing one never touches the other (issue 17, finding 11)', () => {
    const [here, there] = [hostsBlockName(12300, 4026531840), hostsBlockName(12300, 4026532999)];
    expect([here, there]).toEqual(['rxshuttle-12300-net4026531840', 'rxshuttle-12300-net4026532999']);
    const both = withBlock(withBlock(ORIGINAL, here, A), there, B);
    expect(removeBlock(both, there)).toBe(withBlock(ORIGINAL, here, A));
    expect(removeBlock(both, here)).toBe(withBlock(ORIGINAL, there, B));
    expect(withBlock(both, here, [])).toBe(withBlock(ORIGINAL, there, B));
  });

  it('blocks of the older form (rxshuttle-<port>, no namespace) stay where they are, and their names are not the machine\'s', () => {
    const old = `${ORIGINAL}# BEGIN rxshuttle-12300 (added by rxshuttle -H; removed when its tunnel stops)\n10.0.0.7\tstale\n# END rxshuttle-12300\n`;
    expect(removeBlock(old, N12300)).toBe(old);
    expect(namesOutsideBlocks(old)).toEqual(new Set(['localhost', 'ip6-localhost', 'cli']));
    const added = withBlock(old, N12300, [{ address: '10.0.0.8', name: 'stale' }]);
    expect(added).toBe(`${old}${beginLine(N12300)}\n10.0.0.8\tstale\n${endLine(N12300)}\n`);
    expect(removeBlock(added, N12300)).toBe(old);
  });

  it('property: for any file without our markers, add then remove is the identity', () => {
    const line = fc.stringMatching(/^[ -~\t]{0,40}$/).filter((l) => !l.includes('rxshuttle'));
    const file = fc.tuple(fc.array(line, { maxLength: 8 }), fc.boolean()).map(([lines, nl]) => lines.join('\n') + (nl ? '\n' : ''));
    fc.assert(
      fc.property(file, fc.integer({ min: 1, max: 65535 }), (content, port) => {
        const name = hostsBlockName(port);
        expect(removeBlock(withBlock(content, name, [{ address: '10.1.2.3', name: 'zz-rxs-test' }]), name)).toBe(content);
      }),
    );
  });
});

describe('hosts file on disk', () => {
  it('edits in place (same inode, works where rename cannot) and keeps bytes that are not UTF-8', async () => {
    const original = Buffer.concat([Buffer.from(ORIGINAL), Buffer.from([0x23, 0xe9, 0xff, 0x0a])]);
    const path = join(dir, 'latin');
    writeFileSync(path, original);
    const inode = statSync(path).ino;
    const block = await HostsBlock.open(12300, path, LOCKS);
    block.add(A[0]!);
    block.add(A[1]!);
    await block.write();
    expect(statSync(path).ino).toBe(inode);
    expect(readFileSync(path, 'latin1')).toContain('10.98.0.4\techo4');
    await block.remove();
    expect(statSync(path).ino).toBe(inode);
    expect(readFileSync(path)).toEqual(original);
  });

  it('a shrinking rewrite ends with exactly the new text (no padding left behind)', async () => {
    const path = hostsFile(ORIGINAL);
    await editHostsFile(path, (c) => `${c}${'#'.repeat(5000)}\n`, LOCKS);
    await editHostsFile(path, (c) => c.replace(/#+\n$/, ''), LOCKS);
    expect(readFileSync(path, 'utf8')).toBe(ORIGINAL);
  });

  it('open() clears leftovers of the same port only; a missing file stays missing until there is something to add', async () => {
    const leftover = withBlock(withBlock(ORIGINAL, N12300, A), N12301, B);
    const path = hostsFile(leftover);
    await HostsBlock.open(12300, path, LOCKS);
    expect(readFileSync(path, 'utf8')).toBe(withBlock(ORIGINAL, N12301, B));
    const missing = join(dir, 'missing');
    const block = await HostsBlock.open(12300, missing, LOCKS);
    expect(() => statSync(missing)).toThrow();
    block.add(A[0]!);
    await block.write();
    expect(readFileSync(missing, 'utf8')).toBe(withBlock('', N12300, A.slice(0, 1)));
  });

  it('instances with the same port in different network namespaces keep their own blocks (issue 17, finding 11)', async () => {
    const path = hostsFile(ORIGINAL);
    const a = await HostsBlock.open(12300, path, { ...LOCKS, netns: 4026531840 });
    a.add(A[0]!);
    await a.write();
    const b = await HostsBlock.open(12300, path, { ...LOCKS, netns: 4026532999 }); // before, it took a's block for leftovers
    expect(readFileSync(path, 'utf8')).toBe(withBlock(ORIGINAL, 'rxshuttle-12300-net4026531840', A.slice(0, 1)));
    b.add(B[0]!);
    await b.write();
    await b.remove();
    expect(readFileSync(path, 'utf8')).toBe(withBlock(ORIGINAL, 'rxshuttle-12300-net4026531840', A.slice(0, 1)));
    await a.remove();
    expect(readFileSync(path, 'utf8')).toBe(ORIGINAL);
  });

  it('two instances with interleaved writes each keep all their entries, and remove only their own', async () => {
    const path = hostsFile(ORIGINAL);
    const [a, b] = await Promise.all([HostsBlock.open(12300, path, LOCKS), HostsBlock.open(12301, path, LOCKS)]);
    const writes: Promise<void>[] = [];
    for (let i = 0; i < 20; i++) {
      a.add({ address: `10.0.0.${i + 1}`, name: `a${i}` });
      b.add({ address: `10.0.1.${i + 1}`, name: `b${i}` });
      writes.push(a.write(), b.write());
    }
    await Promise.all(writes);
    const text = readFileSync(path, 'utf8');
    for (let i = 0; i < 20; i++) {
      expect(text).toContain(`10.0.0.${i + 1}\ta${i}\n`);
      expect(text).toContain(`10.0.1.${i + 1}\tb${i}\n`);
    }
    await Promise.all([a.remove(), b.remove()]);
    expect(readFileSync(path, 'utf8')).toBe(ORIGINAL);
  });

  it('a name given again with a new address moves; the instance limit holds', async () => {
    const path = hostsFile(ORIGINAL);
    const block = await HostsBlock.open(12300, path, LOCKS);
    block.add({ address: '10.0.0.1', name: 'moving' });
    block.add({ address: '10.0.0.2', name: 'moving' });
    await block.write();
    expect(readFileSync(path, 'utf8')).toBe(withBlock(ORIGINAL, N12300, [{ address: '10.0.0.2', name: 'moving' }]));
  });
});

/**
 * Another process holding flock(1) on `path` (`-s` shared, `-x` exclusive; a read-only open is
 * all it needs, so any user who can read the file can do this) until `release` or `ms`.
 */
async function holdFlock(path: string, mode: '-s' | '-x', seconds = 60): Promise<{ holder: ChildProcess; release(): void }> {
  // Its own process group: the lock is held by flock and by the shell it forks, both must go.
  const holder = spawn('flock', [mode, path, '-c', `echo locked; exec sleep ${seconds}`], { stdio: ['ignore', 'pipe', 'inherit'], detached: true });
  await once(holder.stdout!, 'data');
  return {
    holder,
    release() {
      try {
        process.kill(-holder.pid!, 'SIGKILL');
      } catch {
        // already gone
      }
    },
  };
}

/** Entry lines of names of 253 characters (as in the review), at least `bytes` of them. */
function bigEntries(bytes: number, tag: string): string {
  const lines: string[] = [];
  for (let i = 0, size = 0; size < bytes; i++) {
    const line = `10.0.0.1\t${tag}${'x'.repeat(253 - tag.length - 8)}${String(i).padStart(8, '0')}\n`;
    lines.push(line);
    size += line.length;
  }
  return lines.join('');
}

const MiB = 1024 * 1024;

/** removeBlock as it was defined before the scan in pieces: the lines spliced out of the whole text. */
function spliceRemoveBlock(content: string, name: string): string {
  const begin = /^# BEGIN (rxshuttle-\d+(?:-net\d+)?)(?: |$)/;
  const entry = /^[0-9A-Fa-f.:]+\t\S+$/;
  const noNl = ' (no newline before)';
  const blockOf = (line: string) => begin.exec(line)?.[1] ?? null;
  const lines = content.split('\n');
  const end = endLine(name);
  for (;;) {
    const i = lines.findIndex((line) => blockOf(line) === name);
    if (i < 0) break;
    let j = i + 1;
    while (j < lines.length && lines[j] !== end && entry.test(lines[j] as string)) j++;
    const last = lines[j] === end ? j : j - 1;
    const noNewline = (lines[i] as string).endsWith(noNl);
    lines.splice(i, last - i + 1);
    if (!noNewline) continue;
    const next = lines[i];
    if (i === lines.length - 1 && next === '') lines.splice(i, 1);
    else if (next !== undefined && blockOf(next) !== null && !next.endsWith(noNl)) lines[i] = next + noNl;
  }
  return lines.join('\n');
}

describe('hosts file: nothing another user does keeps a block in it (issue 17, finding 4)', () => {
  it.each(['-s', '-x'] as const)("a user's flock %s on the hosts file stops neither other instances' edits nor the removal", async (mode) => {
    const path = hostsFile(ORIGINAL);
    const lock = await holdFlock(path, mode);
    try {
      const t0 = Date.now();
      const a = await HostsBlock.open(12300, path, LOCKS);
      a.add(A[0]!);
      await a.write();
      const b = await HostsBlock.open(12301, path, LOCKS);
      b.add(B[0]!);
      await b.write();
      expect(readFileSync(path, 'utf8')).toBe(withBlock(withBlock(ORIGINAL, N12300, A.slice(0, 1)), N12301, B));
      await a.remove();
      expect(readFileSync(path, 'utf8')).toBe(withBlock(ORIGINAL, N12301, B));
      await b.remove();
      expect(readFileSync(path, 'utf8')).toBe(ORIGINAL);
      // Six edits, each waiting at most 250 ms for the user's lock (before: 10 s, then failing).
      expect(Date.now() - t0).toBeLessThan(3000);
    } finally {
      lock.release();
    }
  });

  it('instances serialize their edits with hosts.lock in a directory of root\'s (0700), the file 0600', async () => {
    const path = hostsFile(ORIGINAL);
    const block = await HostsBlock.open(12300, path, LOCKS);
    const lockFile = join(LOCK_DIR, HOSTS_LOCK_NAME);
    expect(statSync(LOCK_DIR).mode & 0o7777).toBe(0o700);
    expect(statSync(lockFile).mode & 0o777).toBe(0o600);
    expect(statSync(lockFile).uid).toBe(process.geteuid?.());
    const lock = await holdFlock(lockFile, '-x', 0.5); // as another rxshuttle in the middle of an edit
    try {
      const t0 = Date.now();
      block.add(A[0]!);
      await block.write();
      expect(Date.now() - t0).toBeGreaterThan(300);
      expect(readFileSync(path, 'utf8')).toBe(withBlock(ORIGINAL, N12300, A.slice(0, 1)));
    } finally {
      lock.release();
    }
  });

  it('one instance adds at most 1 MiB of entry lines and at most 10 000 names', async () => {
    const path = hostsFile(ORIGINAL);
    const long = await HostsBlock.open(12300, path, LOCKS);
    const longName = (i: number) => `n${String(i).padStart(252, '0')}`;
    let accepted = 0;
    while (long.add({ address: '10.0.0.1', name: longName(accepted) })) accepted++;
    expect(accepted).toBe(Math.floor(MAX_BLOCK_BYTES / ('10.0.0.1'.length + 253 + 2))); // 3 986, not 10 000
    expect(long.add({ address: '10.0.0.2', name: longName(0) })).toBe(true); // a name it has may still move
    await long.write();
    expect(statSync(path).size).toBeLessThan(ORIGINAL.length + MAX_BLOCK_BYTES + 200);
    await long.remove();

    const short = await HostsBlock.open(12301, path, LOCKS);
    for (let i = 0; i < MAX_HOSTS; i++) expect(short.add({ address: '10.0.0.1', name: `h${i}` })).toBe(true);
    expect(short.add({ address: '10.0.0.1', name: 'one-more' })).toBe(false);
    expect(short.add({ address: '10.0.0.2', name: 'h0' })).toBe(true);
    await short.write();
    await short.remove();
    expect(readFileSync(path, 'utf8')).toBe(ORIGINAL);
  });

  it('a file over 16 MiB, filled by another instance after our block: ours is still removed, the rest kept byte for byte', async () => {
    const path = hostsFile(ORIGINAL);
    const a = await HostsBlock.open(12300, path, LOCKS);
    a.add(A[0]!);
    await a.write();
    const other = `${beginLine(N12301)}\n${bigEntries(17 * MiB, 'b')}${endLine(N12301)}\n`;
    appendFileSync(path, other); // another instance (or an older version, without a cap)
    expect(statSync(path).size).toBeGreaterThan(MAX_FILE_BYTES);
    a.add(A[1]!);
    await expect(a.write()).rejects.toThrow(/is larger than 16 MiB: nothing more is added to it$/);
    await a.remove();
    expect(readFileSync(path).equals(Buffer.from(ORIGINAL + other, 'latin1'))).toBe(true);
  });

  it.each(['before', 'after'] as const)('a file over 16 MiB, filled by the user %s our block: ours is still removed, the rest kept byte for byte', async (where) => {
    const mine = `# the user's own\n${bigEntries(17 * MiB, 'u')}`;
    const path = hostsFile(where === 'before' ? ORIGINAL + mine : ORIGINAL);
    const a = await HostsBlock.open(12300, path, LOCKS);
    a.add(A[0]!);
    if (where === 'before') {
      await expect(a.write()).rejects.toThrow(/is larger than 16 MiB/);
      writeFileSync(path, withBlock(ORIGINAL + mine, N12300, A.slice(0, 1))); // as a crash of an earlier instance left it
    } else {
      await a.write();
      appendFileSync(path, mine);
    }
    await a.remove();
    expect(readFileSync(path).equals(Buffer.from(ORIGINAL + mine, 'latin1'))).toBe(true);
    // And the leftovers of a crashed instance go at start, whatever the size.
    writeFileSync(path, withBlock(withBlock(ORIGINAL + mine, N12300, A), N12301, B));
    await HostsBlock.open(12300, path, LOCKS);
    expect(readFileSync(path).equals(Buffer.from(withBlock(ORIGINAL + mine, N12301, B), 'latin1'))).toBe(true);
  });

  it('no addition makes the file larger than 16 MiB; a batch that cannot be written is dropped', async () => {
    const mine = bigEntries(MAX_FILE_BYTES - 512 * 1024, 'u');
    const path = hostsFile(ORIGINAL + mine);
    const a = await HostsBlock.open(12300, path, LOCKS);
    a.add(A[0]!);
    await a.write();
    for (let i = 0; i < 3000; i++) a.add({ address: '10.0.0.9', name: `n${String(i).padStart(252, '0')}` });
    await expect(a.write()).rejects.toThrow(/would grow beyond 16 MiB$/);
    expect(statSync(path).size).toBeLessThanOrEqual(MAX_FILE_BYTES);
    expect(a.waiting).toBe(0);
    a.add(A[1]!);
    await a.write(); // only what was answered OK, and the new one
    expect(readFileSync(path, 'latin1')).toBe(withBlock(ORIGINAL + mine, N12300, A));
    await a.remove();
    expect(readFileSync(path, 'latin1')).toBe(ORIGINAL + mine);
  });

  it('a removal that fails is tried again; one that keeps failing says how often it was tried', async () => {
    const path = hostsFile(ORIGINAL);
    let attempts = 0;
    const flaky = await HostsBlock.open(12300, path, {
      ...LOCKS,
      retryDelaysMs: [10, 10, 10],
      removeFromFile: (p, name, opts) => (++attempts === 1 ? Promise.reject(new Error('EIO: i/o error')) : removeBlockFromFile(p, name, opts)),
    });
    flaky.add(A[0]!);
    await flaky.write();
    await flaky.remove();
    expect(attempts).toBe(2);
    expect(readFileSync(path, 'utf8')).toBe(ORIGINAL);

    attempts = 0;
    const broken = await HostsBlock.open(12300, path, {
      ...LOCKS,
      retryDelaysMs: [10, 20, 40],
      removeFromFile: () => Promise.reject(new Error(`EIO: i/o error, attempt ${++attempts}`)),
    });
    await expect(broken.remove()).rejects.toThrow('EIO: i/o error, attempt 4 (4 attempts)');
  });

  it('a removal that finds the lock held by another rxshuttle for too long is tried again', async () => {
    const path = hostsFile(withBlock(ORIGINAL, N12300, A));
    let attempts = 0;
    const block = await HostsBlock.open(12301, path, {
      ...LOCKS,
      lockWaitMs: 100,
      retryDelaysMs: [200, 400, 800],
      removeFromFile: (p, _name, opts) => {
        attempts++;
        return removeBlockFromFile(p, N12300, opts);
      },
    });
    const lock = await holdFlock(join(LOCK_DIR, HOSTS_LOCK_NAME), '-x', 0.4);
    try {
      await block.remove();
    } finally {
      lock.release();
    }
    expect(attempts).toBeGreaterThan(1);
    expect(readFileSync(path, 'utf8')).toBe(ORIGINAL);
  });

  it('property: removal from a file, scanned in pieces, is the removal from the whole text as defined before', async () => {
    const name = hostsBlockName(12300, 7);
    const other = hostsBlockName(12301, 7);
    const line = fc.oneof(
      fc.constantFrom(
        beginLine(name),
        `${beginLine(name)} (no newline before)`,
        endLine(name),
        beginLine(other),
        `${beginLine(other)} (no newline before)`,
        endLine(other),
        `# BEGIN rxshuttle-12300 (old)`,
        '',
        '# a comment',
        '127.0.0.1\tlocalhost',
      ),
      fc.tuple(fc.ipV4(), fc.stringMatching(/^[a-z0-9.-]{1,20}$/)).map(([a, n]) => `${a}\t${n}`),
      fc.stringMatching(/^[ -~\t]{0,30}$/),
    );
    const file = fc.tuple(fc.array(line, { maxLength: 12 }), fc.boolean()).map(([lines, nl]) => lines.join('\n') + (nl ? '\n' : ''));
    await fc.assert(
      fc.asyncProperty(file, async (content) => {
        const expected = spliceRemoveBlock(content, name);
        expect(removeBlock(content, name)).toBe(expected);
        const path = hostsFile(content);
        await removeBlockFromFile(path, name, LOCKS);
        expect(readFileSync(path, 'latin1')).toBe(expected);
      }),
      { numRuns: 300 },
    );
  });
});
