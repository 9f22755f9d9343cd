/**
 * What `rxshuttle status` prints: a block of lines per instance (`renderStatus`; with verbose,
 * its open connections too), or with --json one document `{"instances": [...]}` whose entries
 * have exactly the fields of StatusSnapshot (`statusJson`).
 */
import { printable } from '../shared/printable.js';
import type { StatusSnapshot } from './snapshot.js';

export interface StatusRenderOptions {
  /** -v: list each instance's open connections. */
  readonly verbose?: boolean;
  /** Now, in ms since the epoch, for "for 5 min"; default Date.now(). */
  readonly now?: number;
}

const plural = (n: number, word: string, words = `${word}s`): string => `${n} ${n === 1 ? word : words}`;

/** 1536 → "1.5 KiB"; below 1 KiB in bytes. */
export function formatBytes(n: number): string {
  if (n < 1024) return plural(n, 'byte');
  const units = ['KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let value = n / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(1)} ${units[unit]}`;
}

/** 3723 000 ms → "1 h 2 min"; two units at most. */
export function formatDuration(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s} s`;
  const min = Math.floor(s / 60);
  if (min < 60) return `${min} min${s % 60 ? ` ${s % 60} s` : ''}`;
  const h = Math.floor(min / 60);
  if (h < 24) return `${h} h${min % 60 ? ` ${min % 60} min` : ''}`;
  const d = Math.floor(h / 24);
  return `${d} d${h % 24 ? ` ${h % 24} h` : ''}`;
}

/** `since` without its milliseconds, and how long ago; the text as it came if it is not a time. */
function since(iso: string, now: number): string {
  const at = Date.parse(iso);
  if (Number.isNaN(at)) return iso;
  return `${new Date(at).toISOString().replace(/\.\d{3}Z$/, 'Z')} (for ${formatDuration(now - at)})`;
}

function instanceLines(s: StatusSnapshot, options: StatusRenderOptions): string[] {
  const now = options.now ?? Date.now();
  const how = [s.transport ?? 'transport not known yet', s.mode === null ? null : s.mode === 'node' ? 'node server' : 'stock sshd'];
  const lines = [
    `rxshuttle ${s.pid}: ${s.state} since ${since(s.since, now)}`,
    `  remote ${s.remote ?? '(not known yet)'} (${how.filter((x) => x !== null).join(', ')}), listening on ${s.listen ?? '(not yet)'}`,
    `  ${plural(s.reconnects, 'reconnect')}, ${plural(s.connections, 'open connection')}, ${formatBytes(s.bytesSent)} sent, ${formatBytes(s.bytesReceived)} received`,
    `  DNS: ${s.dns.answered} answered, ${s.dns.failed} failed, ${s.dns.timeout} timed out`,
  ];
  if (options.verbose) {
    for (const c of s.openConnections) lines.push(`    ${c.via ?? ''}#${c.id} ${c.source} -> ${c.destination}`);
    if (s.openConnectionsUnlisted > 0) lines.push(`    … and ${s.openConnectionsUnlisted} more`);
  }
  return lines.map(printable);
}

/** The text of `rxshuttle status`: each instance a block, a blank line between; a line that says so when there are none. */
export function renderStatus(list: { readonly instances: readonly StatusSnapshot[] }, options: StatusRenderOptions = {}): string {
  if (list.instances.length === 0) return 'No rxshuttle is running (for this user).';
  return list.instances.map((s) => instanceLines(s, options).join('\n')).join('\n\n');
}

/** One instance for --json: exactly the snapshot's fields, in this order. */
const jsonInstance = (s: StatusSnapshot): StatusSnapshot => ({
  pid: s.pid,
  listen: s.listen,
  remote: s.remote,
  transport: s.transport,
  mode: s.mode,
  state: s.state,
  since: s.since,
  reconnects: s.reconnects,
  connections: s.connections,
  bytesSent: s.bytesSent,
  bytesReceived: s.bytesReceived,
  dns: { answered: s.dns.answered, failed: s.dns.failed, timeout: s.dns.timeout },
  openConnections: s.openConnections.map((c) => ({
    id: c.id,
    ...(c.via === undefined ? {} : { via: c.via }),
    source: c.source,
    destination: c.destination,
  })),
  openConnectionsUnlisted: s.openConnectionsUnlisted,
});

/** `rxshuttle status --json`: one JSON document on one line, `{"instances":[...]}`. */
export function statusJson(list: { readonly instances: readonly StatusSnapshot[] }): string {
  return JSON.stringify({ instances: list.instances.map(jsonInstance) });
}
