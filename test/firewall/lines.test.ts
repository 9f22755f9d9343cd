import { describe, expect, it } from 'vitest';
import { LINE_TOO_LONG, LineSplitter } from '../../src/firewall/lines.js';

const b = (s: string) => Buffer.from(s);

describe('LineSplitter', () => {
  it('splits lines across chunks', () => {
    const s = new LineSplitter(100);
    expect(s.push(b('HEL'))).toEqual([]);
    expect(s.push(b('LO\nREA'))).toEqual(['HELLO']);
    expect(s.push(b('DY\n\nx\n'))).toEqual(['READY', '', 'x']);
    expect(s.pending).toBe(0);
  });

  it('keeps multi-byte characters split between chunks intact', () => {
    const s = new LineSplitter(100);
    const bytes = b('é\n');
    expect(s.push(bytes.subarray(0, 1))).toEqual([]);
    expect(s.push(bytes.subarray(1))).toEqual(['é']);
  });

  it('accepts a line of exactly the bound', () => {
    expect(new LineSplitter(5).push(b('12345\n'))).toEqual(['12345']);
  });

  it('reports an overlong line once and skips its remainder', () => {
    const s = new LineSplitter(5);
    expect(s.push(b('1234'))).toEqual([]);
    expect(s.push(b('56'))).toEqual([LINE_TOO_LONG]);
    expect(s.pending).toBe(0);
    expect(s.push(b('7890'))).toEqual([]);
    expect(s.pending).toBe(0);
    expect(s.push(b('xx\nok\n'))).toEqual(['ok']);
  });

  it('reports an overlong line that ends in the same chunk', () => {
    expect(new LineSplitter(3).push(b('abcdef\nok\n'))).toEqual([LINE_TOO_LONG, 'ok']);
  });

  it('never holds more than the bound', () => {
    const s = new LineSplitter(1000);
    for (let i = 0; i < 100; i++) {
      s.push(Buffer.alloc(512, 0x61));
      expect(s.pending).toBeLessThanOrEqual(1000);
    }
  });
});
