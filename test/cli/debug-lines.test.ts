import { format } from 'node:util';
import createDebug from 'debug';
import { afterEach, describe, expect, it } from 'vitest';
import { printableDebugStrings } from '../../src/cli/debug-lines.js';

const formatters = { ...createDebug.formatters };
afterEach(() => {
  for (const key of Object.keys(createDebug.formatters)) delete createDebug.formatters[key];
  Object.assign(createDebug.formatters, formatters);
});

function lineOf(...args: [string, ...unknown[]]): string {
  const debug = createDebug('rxshuttle:test-debug-lines');
  debug.enabled = true;
  debug.useColors = false;
  let line = '';
  // As debug's own log does: what its formatters left goes to util.format.
  debug.log = (...args: unknown[]) => (line = format(...args));
  debug(...args);
  return line;
}

describe('printableDebugStrings', () => {
  it("escapes the terminal controls a server's text may hold, keeping the line one line", () => {
    const hostile = 'refused\x1b]0;owned\x07\nrxshuttle: forged line\u202e';
    expect(lineOf('forwarding check: %s', hostile)).toContain(hostile); // as it was before
    printableDebugStrings(createDebug);
    const line = lineOf('forwarding check: %s', hostile);
    expect(line).toContain('forwarding check: refused\\x1b]0;owned\\x07\\nrxshuttle: forged line\\u202e');
    expect(line).not.toMatch(/[\x1b\x07\n\u202e]/);
  });

  it('formats other values and placeholders as before', () => {
    printableDebugStrings(createDebug);
    expect(lineOf('%s of %d from %s', 3, 7, 'srv')).toContain('3 of 7 from srv');
    expect(lineOf('%o', { reason: 'x' })).toContain("{ reason: 'x' }");
  });
});
