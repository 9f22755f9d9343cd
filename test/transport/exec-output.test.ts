import { describe, expect, it } from 'vitest';
import { ExecOutput, MAX_EXEC_OUTPUT } from '../../src/transport/exec-output.js';

describe('ExecOutput', () => {
  it('keeps what a command printed, copied off the chunks it came in', () => {
    const output = new ExecOutput();
    const chunk = Buffer.from('hello ');
    output.add(chunk);
    chunk.fill(0x78);
    output.add(Buffer.from('world'));
    expect(output.result(0)).toEqual({ stdout: 'hello world', code: 0, cut: false });
  });

  it('keeps at most MAX_EXEC_OUTPUT bytes of a command that prints without end, and says it cut', () => {
    const output = new ExecOutput();
    const chunk = Buffer.alloc(1024 * 1024, 0x61);
    for (let i = 0; i < 10; i++) output.add(chunk);
    const result = output.result(null);
    expect(result.stdout.length).toBe(MAX_EXEC_OUTPUT);
    expect(result.cut).toBe(true);
  });
});
