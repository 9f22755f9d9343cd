/** What `rxshuttle status` prints (issue 14): the text, with and without -v, and the --json document. */
import { describe, expect, it } from 'vitest';
import { formatBytes, formatDuration, renderStatus, statusJson } from '../../src/status/render.js';
import { initialStatus, type StatusSnapshot } from '../../src/status/snapshot.js';

const NOW = Date.parse('2025-03-01T12:00:00.000Z');

const connected: StatusSnapshot = {
  ...initialStatus({ pid: 4242, remote: 'lab' }, NOW),
  listen: '127.0.0.1:12300',
  transport: 'ssh2',
  mode: 'node',
  state: 'connected',
  since: '2025-03-01T10:57:30.250Z',
  reconnects: 2,
  connections: 3,
  bytesSent: 1536,
  bytesReceived: 5 * 1024 * 1024,
  dns: { answered: 12, failed: 1, timeout: 0 },
  openConnections: [
    { id: 4, source: '127.0.0.1:40004', destination: '10.0.0.1:80' },
    { id: 1, via: 'ssh', source: '[::1]:40001', destination: '[fd00::2]:443' },
  ],
  openConnectionsUnlisted: 1,
};

const starting: StatusSnapshot = { ...initialStatus({ pid: 7 }, NOW - 2_000) };

describe('renderStatus', () => {
  it('a block per instance: pid, state and since, remote, transport and mode, listen, counters', () => {
    expect(renderStatus({ instances: [connected] }, { now: NOW })).toBe(
      [
        'rxshuttle 4242: connected since 2025-03-01T10:57:30Z (for 1 h 2 min)',
        '  remote lab (ssh2, node server), listening on 127.0.0.1:12300',
        '  2 reconnects, 3 open connections, 1.5 KiB sent, 5.0 MiB received',
        '  DNS: 12 answered, 1 failed, 0 timed out',
      ].join('\n'),
    );
  });

  it('-v lists the open connections, and how many more are not listed', () => {
    const lines = renderStatus({ instances: [connected] }, { now: NOW, verbose: true }).split('\n');
    expect(lines.slice(4)).toEqual(['    #4 127.0.0.1:40004 -> 10.0.0.1:80', '    ssh#1 [::1]:40001 -> [fd00::2]:443', '    … and 1 more']);
  });

  it('says what is not known yet, and one of each in the singular', () => {
    const one = { ...starting, reconnects: 1, connections: 1, bytesSent: 1 };
    expect(renderStatus({ instances: [one] }, { now: NOW })).toBe(
      [
        'rxshuttle 7: connecting since 2025-03-01T11:59:58Z (for 2 s)',
        '  remote (not known yet) (transport not known yet), listening on (not yet)',
        '  1 reconnect, 1 open connection, 1 byte sent, 0 bytes received',
        '  DNS: 0 answered, 0 failed, 0 timed out',
      ].join('\n'),
    );
  });

  it('instances apart by a blank line; none: a line that says so', () => {
    const text = renderStatus({ instances: [starting, connected] }, { now: NOW });
    expect(text.split('\n\n').map((block) => block.split('\n')[0])).toEqual([
      'rxshuttle 7: connecting since 2025-03-01T11:59:58Z (for 2 s)',
      'rxshuttle 4242: connected since 2025-03-01T10:57:30Z (for 1 h 2 min)',
    ]);
    expect(renderStatus({ instances: [] })).toBe('No rxshuttle is running (for this user).');
  });

  it('prints what a socket said as printable text', () => {
    const text = renderStatus({ instances: [{ ...connected, remote: 'lab\x1b[2J\nforged' }] }, { now: NOW });
    expect(text).toContain('remote lab\\x1b[2J\\nforged (ssh2');
    expect(text.split('\n')).toHaveLength(4);
  });
});

describe('statusJson', () => {
  it('one document {"instances": [...]} with exactly the snapshot fields', () => {
    const doc = JSON.parse(statusJson({ instances: [connected, starting] }));
    expect(Object.keys(doc)).toEqual(['instances']);
    expect(doc.instances).toEqual([connected, starting]);
    expect(Object.keys(doc.instances[0])).toEqual([
      'pid',
      'listen',
      'remote',
      'transport',
      'mode',
      'state',
      'since',
      'reconnects',
      'connections',
      'bytesSent',
      'bytesReceived',
      'dns',
      'openConnections',
      'openConnectionsUnlisted',
    ]);
    expect(statusJson({ instances: [] })).toBe('{"instances":[]}');
  });

  it('leaves out whatever else an object carries', () => {
    const extra = { ...connected, secret: 'x', dns: { ...connected.dns, other: 1 } } as StatusSnapshot;
    expect(statusJson({ instances: [extra] })).toBe(statusJson({ instances: [connected] }));
  });
});

describe('formatBytes, formatDuration', () => {
  it('bytes below 1 KiB, then binary units with one decimal', () => {
    expect([0, 1, 1023, 1024, 1536, 1024 ** 3 * 2.25].map(formatBytes)).toEqual(['0 bytes', '1 byte', '1023 bytes', '1.0 KiB', '1.5 KiB', '2.3 GiB']);
  });
  it('two units at most', () => {
    expect([0, 59_999, 60_000, 61_000, 3_600_000, 3_723_000, 90_000_000, 86_400_000].map(formatDuration)).toEqual([
      '0 s',
      '59 s',
      '1 min',
      '1 min 1 s',
      '1 h',
      '1 h 2 min',
      '1 d 1 h',
      '1 d',
    ]);
  });
});
