/**
 * stderrLines: the remote's (or ssh's) stderr as lines. Issue 17, finding 7: a server that writes
 * stderr without a newline must cost linear time and bounded memory (it took 120 s of CPU and 2 GiB
 * for 154 MiB when every chunk re-split the whole unfinished line).
 */
import { EventEmitter } from 'node:events';
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { stderrLines } from '../../src/transport/server-process.js';
import { unexpectedError } from '../support/unexpected-error.js';

/** The longest piece stderrLines keeps whole (UTF-16 units). */
const MAX_LINE = 8 * 1024;

/** A stand-in for a stream already decoding UTF-8: each push is one 'data' event, synchronously. */
function textStream() {
  const emitter = new EventEmitter();
  const stream = Object.assign(emitter, { setEncoding: () => stream }) as unknown as Parameters<typeof stderrLines>[0];
  return { stream, push: (text: string) => emitter.emit('data', text) };
}

function collect() {
  const t = textStream();
  const errors = stderrLines(t.stream);
  const lines: string[] = [];
  errors.lines$.subscribe({ next: (line) => lines.push(line), error: unexpectedError });
  return { ...t, errors, lines };
}

describe('stderrLines', () => {
  it('splits lines across chunks, drops a trailing \\r and empty lines; finish() adds the unterminated last line', async () => {
    const stream = new PassThrough();
    const errors = stderrLines(stream);
    const lines: string[] = [];
    errors.lines$.subscribe({ next: (line) => lines.push(line), error: unexpectedError });
    stream.write('Warning: Permanently added\r\n\nde');
    stream.write(Buffer.from('bug1: Grüße', 'utf8').subarray(0, 11)); // ends inside the ü
    stream.write(Buffer.from('bug1: Grüße', 'utf8').subarray(11));
    stream.write('\nlast words');
    await new Promise((r) => setImmediate(r));
    expect(lines).toEqual(['Warning: Permanently added', 'debug1: Grüße']);
    expect(errors.finish()).toEqual(['Warning: Permanently added', 'debug1: Grüße', 'last words']);
    stream.end();
  });

  it('cuts a line longer than 8 KiB into pieces of 8 KiB as it arrives', () => {
    const c = collect();
    const line = 'a'.repeat(20_000);
    for (let at = 0; at < line.length; at += 3000) c.push(line.slice(at, at + 3000));
    // Unfinished: what reached 8 KiB has gone out already; less than 8 KiB is held.
    expect(c.lines.map((l) => l.length)).toEqual([MAX_LINE, MAX_LINE]);
    c.push('\r\nnext\n');
    expect(c.lines.map((l) => l.length)).toEqual([MAX_LINE, MAX_LINE, 20_000 - 2 * MAX_LINE, 4]);
    expect(c.lines.join('')).toBe(`${line}next`);
    // One chunk holding a long complete line is cut the same way.
    c.push(`${'b'.repeat(MAX_LINE + 1)}\n`);
    expect(c.lines.slice(4)).toEqual(['b'.repeat(MAX_LINE), 'b']);
  });

  it('does not cut between the two halves of a surrogate pair', () => {
    const c = collect();
    c.push(`${'a'.repeat(MAX_LINE - 1)}😀b`);
    expect(c.lines).toEqual(['a'.repeat(MAX_LINE - 1)]);
    expect(c.errors.finish().at(-1)).toBe('😀b');
  });

  it('50 MB without a newline in 64 KiB chunks: linear time, less than 8 KiB held back, pieces of at most 8 KiB', () => {
    const c = collect();
    let emitted = 0;
    let longest = 0;
    c.errors.lines$.subscribe({ next: (line) => {
      emitted += line.length;
      longest = Math.max(longest, line.length);
    }, error: unexpectedError });
    c.lines.length = 0;
    const chunk = 'x'.repeat(64 * 1024);
    const chunks = Math.ceil((50 * 1024 * 1024) / chunk.length);
    let maxHeld = 0;
    const started = performance.now();
    for (let i = 0; i < chunks; i++) {
      c.push(chunk);
      maxHeld = Math.max(maxHeld, (i + 1) * chunk.length - emitted);
      if (maxHeld >= MAX_LINE) break; // held back without bound: fail now, not after minutes of re-splitting
    }
    const tail = c.errors.finish();
    const elapsed = performance.now() - started;
    const fed = chunks * chunk.length;
    expect(maxHeld).toBeLessThan(MAX_LINE);
    expect(longest).toBeLessThanOrEqual(MAX_LINE);
    expect(emitted).toBe(fed); // nothing lost: the line arrives in pieces
    expect(tail.length).toBeLessThanOrEqual(20);
    // Was quadratic (each chunk re-split everything unfinished): 50 MB took many seconds.
    expect(elapsed).toBeLessThan(1000);
  });
});
