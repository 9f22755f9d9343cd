/**
 * -H: the firewall helper's edits of /etc/hosts. Each instance keeps its entries in a block of
 * its own, appended at the end of the file and named after its port and its network namespace
 * (the inode of /proc/self/ns/net, netns.ts):
 *
 *   # BEGIN rxshuttle-12300-net4026531840 (added by rxshuttle -H; removed when its tunnel stops)
 *   10.98.0.3	target
 *   # END rxshuttle-12300-net4026531840
 *
 * so several instances merge without touching each other's entries, and removing the block
 * gives back the file as it was, byte for byte. The namespace is in the name because helpers in
 * different network namespaces may share one /etc/hosts (no /etc/netns/<ns>/hosts): by port
 * alone, one took the other's live block for a crash's leftovers and removed it (issue 17,
 * finding 11). Blocks of the older form `rxshuttle-12300` are still known as rxshuttle blocks (their
 * names are not the machine's own), but never removed: nothing tells which namespace wrote them.
 * Names the file already defines outside rxshuttle blocks are never added (the machine's own
 * entries win).
 *
 * The file is rewritten in place, never replaced by rename: /etc/hosts is often a bind mount
 * (containers; `ip netns exec` with /etc/netns/<ns>/hosts), where rename fails, and a rename
 * would detach it from those mounts anyway. So that no reader ever sees a half-written file,
 * the new text goes out in one write from offset 0 (a removal: from its block on, the bytes
 * before being the same), and when it is shorter than the old one it is first padded with a
 * comment line to the old length, then truncated: at every moment the file is the old text, or
 * the new text plus a harmless comment.
 *
 * Nothing another user does may keep a block in the file (issue 17, finding 4):
 * - Instances serialize their edits with flock(2) on `hosts.lock` in rxshuttle's lock directory
 *   (/run/rxshuttle, root's, 0700: port-lock.ts), which no other user can open. A flock on
 *   /etc/hosts itself, which anyone who can read the file can take and hold, is only a courtesy
 *   to other tools: waited for at most 250 ms, then the edit goes on without it.
 * - What one instance adds is capped (10 000 names, 1 MiB of entry lines), and no addition makes
 *   the file larger than 16 MiB; a larger file is not read for an addition at all.
 * - Removal works whatever the size: the file is scanned in pieces for the block, and only the
 *   part from the block on is rewritten (in one write when it is at most 16 MiB, the block being
 *   at the end as a rule; in pieces otherwise). A removal that fails is tried again, four times
 *   in all over about 5 s, before the failure is reported.
 */
import { closeSync, constants, fstatSync, fsyncSync, ftruncateSync, openSync, readSync, writeSync } from 'node:fs';
import createDebug from 'debug';
import { waitLock } from './flock.js';
import { netnsInode, netnsTag } from './netns.js';
import { LOCK_DIRS, openLockFileIn } from './port-lock.js';
import type { HostsEntry } from './types.js';

const log = createDebug('rxshuttle:fw');

export const HOSTS_PATH = '/etc/hosts';
/** Entries one instance may add. */
export const MAX_HOSTS = 10_000;
/** Bytes the entry lines of one instance's block (address, tab, name, newline) may take: 10 000 names of about 90 characters. */
export const MAX_BLOCK_BYTES = 1024 * 1024;
/** An addition never makes the file larger than this, and a larger file is not read for one. */
export const MAX_FILE_BYTES = 16 * 1024 * 1024;
/** On removal, from the block to the end of the file up to this is rewritten in one write; more goes in pieces. */
const MAX_TAIL_BYTES = 16 * 1024 * 1024;
/** What a removal reads (and copies) at a time. */
const CHUNK_BYTES = 1024 * 1024;
/** A longer line is never part of a block (ours are under 400 bytes), and only this much of one is kept while scanning. */
const MAX_BLOCK_LINE = 1024;
/** rxshuttle's lock of the hosts file, in the lock directory (port-lock.ts). */
export const HOSTS_LOCK_NAME = 'hosts.lock';
const LOCK_WAIT_MS = 10_000;
/** How long an edit waits for a flock on the hosts file itself (anyone may hold one) before it goes on without. */
const COURTESY_LOCK_MS = 250;
/** Pauses between the attempts at a removal that fails. */
const REMOVAL_RETRY_MS: readonly number[] = [250, 1000, 4000];

const MiB = (bytes: number) => `${bytes / (1024 * 1024)} MiB`;
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** A block's BEGIN line; group 1 its name (`rxshuttle-<port>-net<N>`, or the older `rxshuttle-<port>`). */
const BEGIN = /^# BEGIN (rxshuttle-\d+(?:-net\d+)?)(?: |$)/;
/** Marks a block before which we added a newline (the file did not end with one). */
const NO_NEWLINE = ' (no newline before)';
const ENTRY = /^[0-9A-Fa-f.:]+\t\S+$/;

/** The name of the block of the instance with `port` in network namespace `netns` (default: ours). */
export const hostsBlockName = (port: number, netns: number | null = netnsInode()): string => `rxshuttle-${port}-${netnsTag(netns)}`;

export const beginLine = (name: string): string => `# BEGIN ${name} (added by rxshuttle -H; removed when its tunnel stops)`;
export const endLine = (name: string): string => `# END ${name}`;

const blockName = (line: string): string | null => BEGIN.exec(line)?.[1] ?? null;

/** A change of the text: bytes [start, end) give way to `insert`. */
interface Edit {
  start: number;
  end: number;
  insert: string;
}

/**
 * Where removing the block called `name` (or blocks: leftovers of a crash, too) changes a text,
 * fed line by line (what `split('\n')` gives, with offsets), so that a file of any size can be
 * scanned in pieces. A block is its BEGIN line, the entry lines after it and its END line;
 * without its END line (cut by hand), the BEGIN line and the entries after it. A block before
 * which we added a newline (NO_NEWLINE) takes it back when nothing follows it; when another block
 * follows, that one inherits the duty.
 */
class BlockRemoval {
  /** In order, not overlapping. */
  readonly edits: Edit[] = [];
  readonly #name: string;
  readonly #end: string;
  #block: { start: number; noNewline: boolean } | null = null;
  /** The block just cut had NO_NEWLINE: the next line decides what becomes of it. */
  #carry = false;

  constructor(name: string) {
    this.#name = name;
    this.#end = endLine(name);
  }

  /** The next line: `text` without its newline (null when longer than MAX_BLOCK_LINE); `last`: no newline after it. */
  line(text: string | null, start: number, length: number, last: boolean): void {
    const block = this.#block;
    if (block) {
      if (text === this.#end) {
        if (last) this.#cutToEnd(block.start, start + length);
        else this.#cut(block.start, start + length + 1, block.noNewline);
        return;
      }
      if (text !== null && ENTRY.test(text)) {
        if (last) this.#cutToEnd(block.start, start + length);
        return;
      }
      this.#cut(block.start, start, block.noNewline); // the block ended with the line before
    }
    const name = text === null ? null : blockName(text);
    const carry = this.#carry;
    this.#carry = false;
    if (text !== null && name === this.#name) {
      this.#block = { start, noNewline: carry || text.endsWith(NO_NEWLINE) };
      if (last) this.#cutToEnd(start, start + length);
      return;
    }
    if (!carry) return;
    if (text !== null && name !== null && !text.endsWith(NO_NEWLINE)) {
      this.edits.push({ start: start + length, end: start + length, insert: NO_NEWLINE }); // another block: it inherits the duty
    } else if (last && length === 0) {
      const cut = this.edits[this.edits.length - 1] as Edit; // it was the end of the file: take back the newline we added
      cut.start = Math.max(0, cut.start - 1);
    }
  }

  /** Removes [start, end) (whole lines with their newlines); `noNewline`: the next line decides about the newline we added. */
  #cut(start: number, end: number, noNewline: boolean): void {
    this.#block = null;
    this.#carry = noNewline;
    const last = this.edits[this.edits.length - 1];
    if (last && last.insert === '' && start <= last.end) last.end = Math.max(last.end, end);
    else this.edits.push({ start, end, insert: '' });
  }

  /** Removes from `start` to the end of the text, and the newline that ended the last line kept. */
  #cutToEnd(start: number, end: number): void {
    this.#cut(start, end, false);
    const cut = this.edits[this.edits.length - 1] as Edit; // with the lines removed just before, if any
    cut.start = Math.max(0, cut.start - 1);
  }
}

/** The text without the block called `name` (or blocks: leftovers of a crash, too). */
export function removeBlock(content: string, name: string): string {
  const removal = new BlockRemoval(name);
  for (let start = 0; ; ) {
    const newline = content.indexOf('\n', start);
    const end = newline < 0 ? content.length : newline;
    removal.line(end - start <= MAX_BLOCK_LINE ? content.slice(start, end) : null, start, end - start, newline < 0);
    if (newline < 0) break;
    start = newline + 1;
  }
  let out = '';
  let pos = 0;
  for (const edit of removal.edits) {
    out += content.slice(pos, edit.start) + edit.insert;
    pos = edit.end;
  }
  return out + content.slice(pos);
}

/** Lower-case names that lines outside every rxshuttle block define. */
export function namesOutsideBlocks(content: string): Set<string> {
  const names = new Set<string>();
  let inside: string | null = null;
  for (const line of content.split('\n')) {
    if (inside !== null) {
      if (line === endLine(inside)) inside = null;
      continue;
    }
    const name = blockName(line);
    if (name !== null) {
      inside = name;
      continue;
    }
    const [, ...hostNames] = line.replace(/#.*/, '').trim().split(/\s+/);
    for (const name of hostNames) names.add(name.toLowerCase());
  }
  return names;
}

/** The text with block `name` holding `entries` (minus names defined outside blocks); no block when none. */
export function withBlock(content: string, name: string, entries: readonly HostsEntry[]): string {
  const base = removeBlock(content, name);
  const outside = namesOutsideBlocks(base);
  const kept = entries.filter((entry) => !outside.has(entry.name.toLowerCase()));
  if (kept.length === 0) return base;
  const noNewline = base.length > 0 && !base.endsWith('\n');
  const block = [
    beginLine(name) + (noNewline ? NO_NEWLINE : ''),
    ...kept.map((entry) => `${entry.address}\t${entry.name}`),
    endLine(name),
  ];
  return `${base}${noNewline ? '\n' : ''}${block.join('\n')}\n`;
}

/** A comment line of exactly n bytes (n >= 1) that pads a shrinking file until it is truncated. */
const padding = (n: number): Buffer => Buffer.from(n === 1 ? '\n' : `#${' '.repeat(n - 2)}\n`, 'latin1');

function writeAll(fd: number, data: Buffer, offset: number): void {
  let written = 0;
  while (written < data.length) written += writeSync(fd, data, written, data.length - written, offset + written);
}

function syncFile(fd: number): void {
  try {
    fsyncSync(fd);
  } catch {
    // some file systems cannot: the data is written all the same
  }
}

/** Replaces the file's content from `offset` on, `oldLength` bytes, with `data`, in one write (see the top of this file). */
function writeInPlace(fd: number, data: Buffer, oldLength: number, offset: number): void {
  const out = data.length < oldLength ? Buffer.concat([data, padding(oldLength - data.length)]) : data;
  writeAll(fd, out, offset);
  if (out.length !== data.length) ftruncateSync(fd, offset + data.length);
  syncFile(fd);
}

/** Up to `length` bytes from `offset` (fewer at the end of the file). */
function readAt(fd: number, offset: number, length: number): Buffer {
  const buffer = Buffer.alloc(length);
  let read = 0;
  while (read < length) {
    const n = readSync(fd, buffer, read, length - read, offset + read);
    if (n === 0) break;
    read += n;
  }
  return buffer.subarray(0, read);
}

/** Options of the edits of a hosts file. */
export interface HostsLockOptions {
  /**
   * Where rxshuttle's lock of the hosts file goes: `hosts.lock` in the first usable of these
   * directories (port-lock.ts: root's, 0700). Default LOCK_DIRS. null: no lock, for tests within
   * one process (an edit runs without a pause once it has begun, so they cannot interleave).
   */
  readonly lockDirs?: readonly string[] | null;
  /** How long an edit waits for that lock (default 10 s). */
  readonly lockWaitMs?: number;
}

/** Runs `edit` on the hosts file (opened read-write; created if missing when `create`, else nothing is done) under the locks (see the top of this file). */
async function underLocks(path: string, create: boolean, opts: HostsLockOptions, edit: (fd: number) => void): Promise<void> {
  const dirs = opts.lockDirs === undefined ? LOCK_DIRS : opts.lockDirs;
  const lock = dirs === null ? null : openLockFileIn(dirs, HOSTS_LOCK_NAME, 'the lock file of the hosts file').fd;
  try {
    if (lock !== null) await waitLock(lock, opts.lockWaitMs ?? LOCK_WAIT_MS, 'the hosts file stays locked by another rxshuttle');
    let fd: number;
    try {
      fd = openSync(path, constants.O_RDWR);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      if (!create) return; // no file: no block, and nothing to put in one
      fd = openSync(path, constants.O_RDWR | constants.O_CREAT, 0o644);
    }
    try {
      // A courtesy to other tools that lock the file: bounded, since any user can hold it.
      await waitLock(fd, COURTESY_LOCK_MS, 'busy').catch(() => log('%s stays locked by another process: editing it all the same', path));
      edit(fd);
    } finally {
      closeSync(fd); // drops the flock, if we got it
    }
  } finally {
    if (lock !== null) closeSync(lock); // drops our lock
  }
}

/**
 * Reads, transforms and (if it changed) rewrites the file, under the locks. Bytes are kept as
 * they are (latin1). For additions: a file larger than MAX_FILE_BYTES is refused, and so is a
 * text that would grow beyond it.
 */
export async function editHostsFile(path: string, transform: (content: string) => string, opts: HostsLockOptions = {}): Promise<void> {
  await underLocks(path, transform('') !== '', opts, (fd) => {
    const size = fstatSync(fd).size;
    if (size > MAX_FILE_BYTES) throw new Error(`${path} is larger than ${MiB(MAX_FILE_BYTES)}: nothing more is added to it`);
    const old = readAt(fd, 0, size).toString('latin1');
    const next = transform(old);
    if (next === old) return;
    if (next.length > MAX_FILE_BYTES && next.length > old.length) throw new Error(`${path} would grow beyond ${MiB(MAX_FILE_BYTES)}`);
    writeInPlace(fd, Buffer.from(next, 'latin1'), old.length, 0);
  });
}

/**
 * Removes the block called `name` (all of them: leftovers too) from the file, whatever its size,
 * under the locks: the file is scanned in pieces, and only the part from the block on is
 * rewritten. A missing file has no block.
 */
export async function removeBlockFromFile(path: string, name: string, opts: HostsLockOptions = {}): Promise<void> {
  await underLocks(path, false, opts, (fd) => {
    const size = fstatSync(fd).size;
    const edits = scanFile(fd, size, name);
    const first = edits[0];
    if (first === undefined) return;
    if (size - first.start <= MAX_TAIL_BYTES) {
      const tail = readAt(fd, first.start, size - first.start);
      const parts: Buffer[] = [];
      let pos = 0;
      for (const edit of edits) {
        parts.push(tail.subarray(pos, edit.start - first.start), Buffer.from(edit.insert, 'latin1'));
        pos = edit.end - first.start;
      }
      parts.push(tail.subarray(pos));
      writeInPlace(fd, Buffer.concat(parts), tail.length, first.start);
    } else {
      shiftInPlace(fd, size, edits);
    }
  });
}

/** The edits that remove block `name` from the first `size` bytes of the file, read in pieces. */
function scanFile(fd: number, size: number, name: string): Edit[] {
  const removal = new BlockRemoval(name);
  const chunk = Buffer.alloc(Math.max(1, Math.min(CHUNK_BYTES, size)));
  const line = Buffer.alloc(MAX_BLOCK_LINE);
  let lineStart = 0;
  let lineLength = 0;
  const take = (from: Buffer) => {
    if (lineLength < MAX_BLOCK_LINE) from.copy(line, lineLength, 0, Math.min(from.length, MAX_BLOCK_LINE - lineLength));
    lineLength += from.length;
  };
  const emit = (last: boolean) => {
    const text = lineLength <= MAX_BLOCK_LINE ? line.toString('latin1', 0, lineLength) : null;
    removal.line(text, lineStart, lineLength, last);
  };
  let offset = 0;
  while (offset < size) {
    const n = readSync(fd, chunk, 0, Math.min(chunk.length, size - offset), offset);
    if (n === 0) break;
    const data = chunk.subarray(0, n);
    for (let pos = 0; ; ) {
      const newline = data.indexOf(10, pos);
      if (newline < 0) {
        take(data.subarray(pos));
        break;
      }
      take(data.subarray(pos, newline));
      emit(false);
      lineStart = offset + newline + 1;
      lineLength = 0;
      pos = newline + 1;
    }
    offset += n;
  }
  emit(true);
  return removal.edits;
}

/**
 * Applies `edits` (each one shrinking the text so far) by copying the rest of the file down in
 * pieces, then truncating: for a removal with more than MAX_TAIL_BYTES after the block, where one
 * write would cost too much memory. Readers may see the file half-copied meanwhile.
 */
function shiftInPlace(fd: number, size: number, edits: readonly Edit[]): void {
  const buffer = Buffer.alloc(CHUNK_BYTES);
  let from = (edits[0] as Edit).start;
  let to = from;
  const copy = (until: number) => {
    while (from < until) {
      const n = readSync(fd, buffer, 0, Math.min(buffer.length, until - from), from);
      if (n === 0) throw new Error('the hosts file shrank while it was rewritten');
      writeAll(fd, buffer.subarray(0, n), to);
      from += n;
      to += n;
    }
  };
  for (const edit of edits) {
    copy(edit.start);
    const insert = Buffer.from(edit.insert, 'latin1');
    if (to + insert.length > edit.end) throw new Error('a removal would overwrite what it has yet to copy'); // never: see BlockRemoval
    writeAll(fd, insert, to);
    to += insert.length;
    from = edit.end;
  }
  copy(size);
  ftruncateSync(fd, to);
  syncFile(fd);
}

/** Bytes of an entry line: address, tab, name, newline. */
const entryBytes = (address: string, name: string): number => address.length + name.length + 2;

export interface HostsBlockOptions extends HostsLockOptions {
  /** The network namespace in the block's name (default: ours). */
  readonly netns?: number | null;
  /** Pauses between the attempts at a removal that fails (default 0.25 s, 1 s, 4 s: four attempts). */
  readonly retryDelaysMs?: readonly number[];
  /** One attempt of remove() (default removeBlockFromFile); tests make it fail. */
  readonly removeFromFile?: (path: string, name: string, opts: HostsLockOptions) => Promise<void>;
}

/**
 * One instance's block, as the helper keeps it: HOST lines are taken one by one and the file is
 * written once per batch (when no more lines are waiting), each line then answered. A batch that
 * cannot be written is dropped (its lines are answered ERROR): the block holds what was answered OK.
 */
export class HostsBlock {
  readonly #entries = new Map<string, string>();
  /** Bytes of the entry lines (entryBytes), at most MAX_BLOCK_BYTES. */
  #bytes = 0;
  /** The changes since the last write, to undo if it fails: a name and its address before (undefined: it was new). */
  #pending: Array<[string, string | undefined]> = [];
  readonly #opts: HostsBlockOptions;

  private constructor(
    readonly path: string,
    /** The block's name: `rxshuttle-<port>-net<N>`. */
    readonly name: string,
    opts: HostsBlockOptions,
  ) {
    this.#opts = opts;
  }

  /** Removes leftovers of an earlier instance with this port in this network namespace (a crashed helper), then starts empty. */
  static async open(port: number, path = HOSTS_PATH, opts: HostsBlockOptions = {}): Promise<HostsBlock> {
    const name = hostsBlockName(port, opts.netns === undefined ? netnsInode() : opts.netns);
    await removeBlockFromFile(path, name, opts);
    return new HostsBlock(path, name, opts);
  }

  /** Takes an entry for the next write; false when that would be more than MAX_HOSTS names or MAX_BLOCK_BYTES. */
  add(entry: HostsEntry): boolean {
    const before = this.#entries.get(entry.name);
    if (before === undefined && this.#entries.size >= MAX_HOSTS) return false;
    const bytes = this.#bytes + entryBytes(entry.address, entry.name) - (before === undefined ? 0 : entryBytes(before, entry.name));
    if (bytes > MAX_BLOCK_BYTES) return false;
    this.#entries.set(entry.name, entry.address);
    this.#bytes = bytes;
    this.#pending.push([entry.name, before]);
    return true;
  }

  /** Entries taken since the last write. */
  get waiting(): number {
    return this.#pending.length;
  }

  /** Writes the block with every entry taken so far; if that fails, the entries taken since the last write are dropped. */
  async write(): Promise<void> {
    const pending = this.#pending;
    this.#pending = [];
    const entries = [...this.#entries].map(([name, address]) => ({ name, address }));
    try {
      await editHostsFile(this.path, (content) => withBlock(content, this.name, entries), this.#opts);
    } catch (e) {
      for (const [name, before] of pending.reverse()) {
        const now = this.#entries.get(name);
        if (now !== undefined) this.#bytes -= entryBytes(now, name);
        if (before === undefined) {
          this.#entries.delete(name);
        } else {
          this.#entries.set(name, before);
          this.#bytes += entryBytes(before, name);
        }
      }
      throw e;
    }
  }

  /**
   * Removes the block: the file is as it was without this instance. A failed attempt is made
   * again after each of the retry delays; then the last error is thrown.
   */
  async remove(): Promise<void> {
    this.#entries.clear();
    this.#bytes = 0;
    this.#pending = [];
    await removeBlockWithRetries(this.path, this.name, this.#opts);
  }
}

/**
 * removeBlockFromFile, tried again after each of the retry delays (default 0.25 s, 1 s, 4 s) while
 * it fails (another instance may hold the hosts file's lock a while); then the last error is
 * thrown. The helper's end (HostsBlock.remove) and its watchdog both remove blocks this way.
 */
export async function removeBlockWithRetries(path: string, name: string, opts: HostsBlockOptions = {}): Promise<void> {
  const attempt = opts.removeFromFile ?? removeBlockFromFile;
  const delays = opts.retryDelaysMs ?? REMOVAL_RETRY_MS;
  for (let i = 0; ; i++) {
    try {
      await attempt(path, name, opts);
      return;
    } catch (e) {
      const delay = delays[i];
      if (delay === undefined) throw new Error(`${(e as Error).message} (${i + 1} attempts)`);
      log('removing %s from %s failed (%s): again in %d ms', name, path, (e as Error).message, delay);
      await sleep(delay);
    }
  }
}
