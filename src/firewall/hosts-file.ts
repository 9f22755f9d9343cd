/**
 * -H: the firewall helper's edits of /etc/hosts. Each instance keeps its entries in a block of
 * its own, appended at the end of the file and named after its port:
 *
 *   # BEGIN rxshuttle-12300 (added by rxshuttle -H; removed when its tunnel stops)
 *   10.98.0.3	target
 *   # END rxshuttle-12300
 *
 * so several instances merge without touching each other's entries, and removing the block
 * gives back the file as it was, byte for byte. Names the file already defines outside rxshuttle
 * blocks are never added (the machine's own entries win).
 *
 * The file is rewritten in place, never replaced by rename: /etc/hosts is often a bind mount
 * (containers; `ip netns exec` with /etc/netns/<ns>/hosts), where rename fails, and a rename
 * would detach it from those mounts anyway. So that no reader ever sees a half-written file,
 * the new text goes out in one write from offset 0, and when it is shorter than the old one it
 * is first padded with a comment line to the old length, then truncated: at every moment the
 * file is the old text, or the new text plus a harmless comment. Instances serialize their edits
 * with flock(2) on the file (flock.ts; without it, where koffi cannot load libc, they do not).
 */
import { closeSync, constants, fstatSync, fsyncSync, ftruncateSync, openSync, readSync, writeSync } from 'node:fs';
import { unlock, waitLock } from './flock.js';
import type { HostsEntry } from './types.js';

export const HOSTS_PATH = '/etc/hosts';
/** Entries one instance may add. */
export const MAX_HOSTS = 10_000;
/** A hosts file bigger than this is not ours to rewrite. */
const MAX_FILE_BYTES = 16 * 1024 * 1024;
const LOCK_WAIT_MS = 10_000;

const BEGIN = /^# BEGIN rxshuttle-(\d+)(?: |$)/;
/** Marks a block before which we added a newline (the file did not end with one). */
const NO_NEWLINE = ' (no newline before)';
const ENTRY = /^[0-9A-Fa-f.:]+\t\S+$/;

export const beginLine = (port: number): string =>
  `# BEGIN rxshuttle-${port} (added by rxshuttle -H; removed when its tunnel stops)`;
export const endLine = (port: number): string => `# END rxshuttle-${port}`;

const blockPort = (line: string): number | null => {
  const m = BEGIN.exec(line);
  return m ? Number(m[1]) : null;
};

/** The text without instance `port`'s block (or blocks: leftovers of a crash, too). */
export function removeBlock(content: string, port: number): string {
  const lines = content.split('\n');
  for (;;) {
    const i = lines.findIndex((line) => blockPort(line) === port);
    if (i < 0) break;
    let j = i + 1;
    while (j < lines.length && lines[j] !== endLine(port) && ENTRY.test(lines[j] as string)) j++;
    // Without its END line (cut by hand), the block is the BEGIN line and the entries after it.
    const last = lines[j] === endLine(port) ? j : j - 1;
    const noNewline = (lines[i] as string).endsWith(NO_NEWLINE);
    lines.splice(i, last - i + 1);
    if (!noNewline) continue;
    const next = lines[i];
    if (i === lines.length - 1 && next === '') {
      lines.splice(i, 1); // it was the end of the file: take back the newline we added
    } else if (next !== undefined && blockPort(next) !== null && !next.endsWith(NO_NEWLINE)) {
      lines[i] = next + NO_NEWLINE; // another block follows: it inherits the duty
    }
  }
  return lines.join('\n');
}

/** Lower-case names that lines outside every rxshuttle block define. */
export function namesOutsideBlocks(content: string): Set<string> {
  const names = new Set<string>();
  let inside: number | null = null;
  for (const line of content.split('\n')) {
    if (inside !== null) {
      if (line === endLine(inside)) inside = null;
      continue;
    }
    const port = blockPort(line);
    if (port !== null) {
      inside = port;
      continue;
    }
    const [, ...hostNames] = line.replace(/#.*/, '').trim().split(/\s+/);
    for (const name of hostNames) names.add(name.toLowerCase());
  }
  return names;
}

/** The text with instance `port`'s block holding `entries` (minus names defined outside blocks); no block when none. */
export function withBlock(content: string, port: number, entries: readonly HostsEntry[]): string {
  const base = removeBlock(content, port);
  const outside = namesOutsideBlocks(base);
  const kept = entries.filter((entry) => !outside.has(entry.name.toLowerCase()));
  if (kept.length === 0) return base;
  const noNewline = base.length > 0 && !base.endsWith('\n');
  const block = [
    beginLine(port) + (noNewline ? NO_NEWLINE : ''),
    ...kept.map((entry) => `${entry.address}\t${entry.name}`),
    endLine(port),
  ];
  return `${base}${noNewline ? '\n' : ''}${block.join('\n')}\n`;
}

/** A comment line of exactly n bytes (n >= 1) that pads a shrinking file until it is truncated. */
const padding = (n: number): Buffer => Buffer.from(n === 1 ? '\n' : `#${' '.repeat(n - 2)}\n`, 'latin1');

/** Replaces the file's content in place (see the top of this file). */
function writeInPlace(fd: number, data: Buffer, oldSize: number): void {
  const out = data.length < oldSize ? Buffer.concat([data, padding(oldSize - data.length)]) : data;
  let written = 0;
  while (written < out.length) written += writeSync(fd, out, written, out.length - written, written);
  if (out.length !== data.length) ftruncateSync(fd, data.length);
  try {
    fsyncSync(fd);
  } catch {
    // some file systems cannot: the data is written all the same
  }
}

/** Reads, transforms and (if it changed) rewrites the file, under the lock. Bytes are kept as they are (latin1). */
export async function editHostsFile(path: string, transform: (content: string) => string): Promise<void> {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDWR);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    if (transform('') === '') return; // no file, and nothing to put in one
    fd = openSync(path, constants.O_RDWR | constants.O_CREAT, 0o644);
  }
  try {
    await waitLock(fd, LOCK_WAIT_MS, 'the hosts file stays locked by another process');
    const size = fstatSync(fd).size;
    if (size > MAX_FILE_BYTES) throw new Error(`${path} is larger than ${MAX_FILE_BYTES} bytes`);
    const buffer = Buffer.alloc(size);
    let read = 0;
    while (read < size) {
      const n = readSync(fd, buffer, read, size - read, read);
      if (n === 0) break;
      read += n;
    }
    const old = buffer.subarray(0, read).toString('latin1');
    const next = transform(old);
    if (next !== old) writeInPlace(fd, Buffer.from(next, 'latin1'), read);
  } finally {
    unlock(fd);
    closeSync(fd);
  }
}

/**
 * One instance's block, as the helper keeps it: HOST lines are taken one by one and the file is
 * written once per batch (when no more lines are waiting), each line then answered.
 */
export class HostsBlock {
  readonly #entries = new Map<string, string>();
  #waiting = 0;

  private constructor(
    readonly path: string,
    readonly port: number,
  ) {}

  /** Removes leftovers of an earlier instance with this port (a crashed helper), then starts empty. */
  static async open(port: number, path = HOSTS_PATH): Promise<HostsBlock> {
    await editHostsFile(path, (content) => removeBlock(content, port));
    return new HostsBlock(path, port);
  }

  /** Takes an entry for the next write; false when the instance has all it may have. */
  add(entry: HostsEntry): boolean {
    if (!this.#entries.has(entry.name) && this.#entries.size >= MAX_HOSTS) return false;
    this.#entries.set(entry.name, entry.address);
    this.#waiting++;
    return true;
  }

  /** Entries taken since the last write. */
  get waiting(): number {
    return this.#waiting;
  }

  /** Writes the block with every entry taken so far. */
  async write(): Promise<void> {
    this.#waiting = 0;
    const entries = [...this.#entries].map(([name, address]) => ({ name, address }));
    await editHostsFile(this.path, (content) => withBlock(content, this.port, entries));
  }

  /** Removes the block: the file is as it was without this instance. */
  async remove(): Promise<void> {
    this.#entries.clear();
    this.#waiting = 0;
    await editHostsFile(this.path, (content) => removeBlock(content, this.port));
  }
}
