// Text from the remote made safe for a terminal and syslog (issue 17, finding 9): printable()
// itself, and the ways remote text reaches the CLI — an EXIT reason, remote output (stderr, a
// login banner) and the stderr lines an error quotes — each printed escaped.
import { PassThrough } from 'node:stream';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { render } from '../../src/cli/render.js';
import type { RxshuttleError } from '../../src/shared/errors.js';
import type { TunnelEvent } from '../../src/shared/events.js';
import { resolveOptions } from '../../src/shared/options.js';
import { printable, printableLines } from '../../src/shared/printable.js';
import { ServerExit, stderrLines } from '../../src/transport/server-process.js';
import { explainFailure } from '../../src/tunnel/explain-failure.js';
import { serverStopped } from '../../src/tunnel/session-events.js';
import { unexpectedError } from '../support/unexpected-error.js';

/** Retitles the terminal window (OSC 0, ended by BEL), then clears the screen (CSI 2J). */
const HOSTILE = '\x1b]0;pwned\x07\x1b[2J';
const ESCAPED = '\\x1b]0;pwned\\x07\\x1b[2J';

/** Anything a terminal could act on: C0 but tab, DEL, C1, line/paragraph separators, bidi controls. */
const UNSAFE = /[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/u;

describe('printable', () => {
  it('writes out terminal escapes as visible text', () => {
    expect(printable(HOSTILE)).toBe(ESCAPED);
    expect(printable('a\x00b\x7fc\x9bd')).toBe('a\\x00b\\x7fc\\x9bd');
  });

  it('a newline or carriage return inside a line does not start a line of its own', () => {
    expect(printable('lost\nrxshuttle: Connected to evil.')).toBe('lost\\nrxshuttle: Connected to evil.');
    expect(printable('100%\rdone\r\n')).toBe('100%\\rdone\\r\\n');
    expect(printable('a\u2028b\u2029c')).toBe('a\\u2028b\\u2029c');
  });

  it('escapes the bidirectional controls that reorder what is shown', () => {
    expect(printable('file\u202egnp.exe')).toBe('file\\u202egnp.exe');
    expect(printable('\u2066\u2067\u2068\u2069\u200e\u200f\u061c\u202a\u202b\u202c\u202d')).toBe(
      '\\u2066\\u2067\\u2068\\u2069\\u200e\\u200f\\u061c\\u202a\\u202b\\u202c\\u202d',
    );
  });

  it('leaves ordinary text alone: tabs, backslashes, accents, CJK, emoji', () => {
    for (const text of ['Permission denied (publickey).', 'a\tb', 'C:\\path \\x1b', 'Grüße, 東京 🚀', '']) {
      expect(printable(text)).toBe(text);
    }
  });

  it('whatever the input, the result has nothing a terminal acts on, and escaping twice changes nothing', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary' }), (text) => {
        const once = printable(text);
        expect(once).not.toMatch(UNSAFE);
        expect(printable(once)).toBe(once);
      }),
      { numRuns: 300 },
    );
  });

  it('printableLines: a banner as its non-blank lines, each printable', () => {
    expect(printableLines(`Welcome\r\n\r\n${HOSTILE}\n  \nlast line  `)).toEqual(['Welcome', ESCAPED, 'last line']);
    expect(printableLines('\n\n')).toEqual([]);
  });
});

describe('remote text reaches the terminal escaped (regressions)', () => {
  const options = resolveOptions({ subnets: ['10/8'] }, () => ['fw']);

  it('an EXIT reason: the remote-exit event, its line at the default verbosity, and the error', async () => {
    const events: TunnelEvent[] = [];
    const error = await new Promise<unknown>((resolve) =>
      serverStopped(`bye${HOSTILE}`, 'srv').subscribe({ next: (e) => events.push(e), error: resolve }),
    );
    expect(events).toEqual([{ kind: 'remote-exit', reason: `bye${ESCAPED}` }]);
    expect(render(events[0] as TunnelEvent, 0)).toBe(`server stopped: bye${ESCAPED}`);
    expect((error as RxshuttleError).code).toBe('RXS_ERR_REMOTE_EXIT');
    expect((error as Error).message).toBe(`server on srv stopped: bye${ESCAPED}`);
  });

  it('render() escapes remote text in any event, however it was made, and keeps each line one line', () => {
    expect(render({ kind: 'remote-exit', reason: HOSTILE }, 0)).toBe(`server stopped: ${ESCAPED}`);
    expect(render({ kind: 'remote-output', line: `x${HOSTILE}` }, 2)).toBe(`remote: x${ESCAPED}`);
    expect(render({ kind: 'warning', message: `a\nrxshuttle: forged` }, 0)).toBe('warning: a\\nrxshuttle: forged');
    expect(render({ kind: 'host', name: `h${HOSTILE}`, address: '10.0.0.1' }, 1)).toBe(`hostwatch: Found: h${ESCAPED}: 10.0.0.1`);
    // The one event of several lines still has them.
    expect(render({ kind: 'routes', routes: [{ family: 4, address: '10.0.0.0', prefix: 8 }], tunneled: 1 }, 1)).toBe(
      'available routes:\n  10.0.0.0/8\n1 of them tunneled (-N).',
    );
  });

  it('stderr lines (remote-output, and the tail an exit is explained with) come out escaped', async () => {
    const stream = new PassThrough();
    const errors = stderrLines(stream);
    const lines: string[] = [];
    errors.lines$.subscribe({ next: (line) => lines.push(line), error: unexpectedError });
    stream.write(`one${HOSTILE}\r\nbanner \u202eevil\n`);
    stream.write(`unterminated${HOSTILE}`);
    await new Promise((r) => setImmediate(r));
    const tail = errors.finish();
    stream.end();
    expect(lines).toEqual([`one${ESCAPED}`, 'banner \\u202eevil', `unterminated${ESCAPED}`]);
    expect(tail).toEqual(lines);
    expect(render({ kind: 'remote-output', line: lines[0] ?? '' }, 2)).toBe(`remote: one${ESCAPED}`);
  });

  it('an error that quotes the remote stderr (explainFailure) quotes it escaped', () => {
    const exit = new ServerExit(255, null, ['debug1: hello', `ssh: connect to host srv: Connection refused${HOSTILE}`]);
    expect((explainFailure(exit, false, 'srv', options) as Error).message).toBe(`ssh to srv failed: ssh: connect to host srv: Connection refused${ESCAPED}`);
    const lost = new ServerExit(1, null, [`fatal${HOSTILE}`]);
    expect((explainFailure(lost, true, 'srv', options) as Error).message).toBe(`connection to srv lost: fatal${ESCAPED}`);
  });
});
