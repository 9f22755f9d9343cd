import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { beginLine, editHostsFile, endLine, HostsBlock, namesOutsideBlocks, removeBlock, withBlock } from '../../src/firewall/hosts-file.js';

const ORIGINAL = '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n10.99.0.1\tcli\n';
const A = [
  { address: '10.98.0.3', name: 'target' },
  { address: '10.98.0.4', name: 'echo4' },
];
const B = [{ address: '10.97.0.1', name: 'other' }];

const dir = mkdtempSync(join(tmpdir(), 'rxs-hosts-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
const hostsFile = (content: string) => {
  const path = join(dir, `hosts${n++}`);
  writeFileSync(path, content);
  return path;
};

describe('hosts blocks (pure)', () => {
  it('appends a block that names the instance, and removing it gives the file back byte for byte', () => {
    const added = withBlock(ORIGINAL, 12300, A);
    expect(added).toBe(`${ORIGINAL}${beginLine(12300)}\n10.98.0.3\ttarget\n10.98.0.4\techo4\n${endLine(12300)}\n`);
    expect(removeBlock(added, 12300)).toBe(ORIGINAL);
  });

  it('two instances: each block apart, each removal takes only its own, in any order', () => {
    const both = withBlock(withBlock(ORIGINAL, 12300, A), 12301, B);
    expect(both).toContain('# BEGIN rxshuttle-12300');
    expect(both).toContain('# BEGIN rxshuttle-12301');
    expect(removeBlock(both, 12300)).toBe(withBlock(ORIGINAL, 12301, B));
    expect(removeBlock(removeBlock(both, 12300), 12301)).toBe(ORIGINAL);
    expect(removeBlock(removeBlock(both, 12301), 12300)).toBe(ORIGINAL);
    // A port that is a prefix of another is not confused with it.
    expect(removeBlock(withBlock(ORIGINAL, 1230, A), 12300)).toBe(withBlock(ORIGINAL, 1230, A));
  });

  it('rewriting a block replaces it where it is; an empty list removes it', () => {
    const one = withBlock(ORIGINAL, 12300, A.slice(0, 1));
    expect(withBlock(one, 12300, A)).toBe(withBlock(ORIGINAL, 12300, A));
    expect(withBlock(one, 12300, [])).toBe(ORIGINAL);
  });

  it('never adds a name the file already defines outside rxshuttle blocks (any case)', () => {
    const mine = `${ORIGINAL}10.0.0.9\tTarget # mine\n`;
    expect(withBlock(mine, 12300, A)).toBe(`${mine}${beginLine(12300)}\n10.98.0.4\techo4\n${endLine(12300)}\n`);
    expect(namesOutsideBlocks(withBlock(mine, 12301, B))).toEqual(new Set(['localhost', 'ip6-localhost', 'cli', 'target']));
    expect(withBlock(ORIGINAL, 12300, [{ address: '10.0.0.1', name: 'cli' }])).toBe(ORIGINAL);
  });

  it('a file without a final newline comes back without one, even when another block followed', () => {
    const bare = '127.0.0.1 localhost';
    const added = withBlock(bare, 12300, A);
    expect(added.startsWith(`${bare}\n# BEGIN rxshuttle-12300`)).toBe(true);
    expect(removeBlock(added, 12300)).toBe(bare);
    const both = withBlock(added, 12301, B);
    expect(removeBlock(removeBlock(both, 12300), 12301)).toBe(bare);
    expect(removeBlock(removeBlock(both, 12301), 12300)).toBe(bare);
  });

  it('removes leftovers: several blocks of the port, or a block cut short', () => {
    const twice = withBlock(ORIGINAL, 12300, A) + `${beginLine(12300)}\n10.0.0.1\tx\n${endLine(12300)}\n`;
    expect(removeBlock(twice, 12300)).toBe(ORIGINAL);
    const cut = `${ORIGINAL}${beginLine(12300)}\n10.98.0.3\ttarget\n# a comment of the user\n`;
    expect(removeBlock(cut, 12300)).toBe(`${ORIGINAL}# a comment of the user\n`);
  });

  it('property: for any file without our markers, add then remove is the identity', () => {
    const line = fc.stringMatching(/^[ -~\t]{0,40}$/).filter((l) => !l.includes('rxshuttle'));
    const file = fc.tuple(fc.array(line, { maxLength: 8 }), fc.boolean()).map(([lines, nl]) => lines.join('\n') + (nl ? '\n' : ''));
    fc.assert(
      fc.property(file, fc.integer({ min: 1, max: 65535 }), (content, port) => {
        expect(removeBlock(withBlock(content, port, [{ address: '10.1.2.3', name: 'zz-rxs-test' }]), port)).toBe(content);
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
    const block = await HostsBlock.open(12300, path);
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
    await editHostsFile(path, (c) => `${c}${'#'.repeat(5000)}\n`);
    await editHostsFile(path, (c) => c.replace(/#+\n$/, ''));
    expect(readFileSync(path, 'utf8')).toBe(ORIGINAL);
  });

  it('open() clears leftovers of the same port only; a missing file stays missing until there is something to add', async () => {
    const leftover = withBlock(withBlock(ORIGINAL, 12300, A), 12301, B);
    const path = hostsFile(leftover);
    await HostsBlock.open(12300, path);
    expect(readFileSync(path, 'utf8')).toBe(withBlock(ORIGINAL, 12301, B));
    const missing = join(dir, 'missing');
    const block = await HostsBlock.open(12300, missing);
    expect(() => statSync(missing)).toThrow();
    block.add(A[0]!);
    await block.write();
    expect(readFileSync(missing, 'utf8')).toBe(withBlock('', 12300, A.slice(0, 1)));
  });

  it('two instances with interleaved writes each keep all their entries, and remove only their own', async () => {
    const path = hostsFile(ORIGINAL);
    const [a, b] = await Promise.all([HostsBlock.open(12300, path), HostsBlock.open(12301, path)]);
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

  it('waits for a lock another process holds on the file (flock)', async () => {
    const path = hostsFile(ORIGINAL);
    const holder = spawn('flock', [path, '-c', 'echo locked; sleep 0.5'], { stdio: ['ignore', 'pipe', 'inherit'] });
    const exited = once(holder, 'exit');
    await once(holder.stdout, 'data');
    const t0 = Date.now();
    const block = await HostsBlock.open(12300, path);
    block.add(A[0]!);
    await block.write();
    expect(Date.now() - t0).toBeGreaterThan(300);
    expect(readFileSync(path, 'utf8')).toBe(withBlock(ORIGINAL, 12300, A.slice(0, 1)));
    await exited;
  });

  it('a name given again with a new address moves; the instance limit holds', async () => {
    const path = hostsFile(ORIGINAL);
    const block = await HostsBlock.open(12300, path);
    block.add({ address: '10.0.0.1', name: 'moving' });
    block.add({ address: '10.0.0.2', name: 'moving' });
    await block.write();
    expect(readFileSync(path, 'utf8')).toBe(withBlock(ORIGINAL, 12300, [{ address: '10.0.0.2', name: 'moving' }]));
  });
});
