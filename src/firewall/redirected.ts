/**
 * When the client dies (SIGKILL, a crash) the programs whose connections it carried must not hang
 * (issue 14). The kernel closes the dead client's sockets, but one with data still queued for a
 * slow reader closes in order: its data and FIN go out later, after the helper has removed the
 * chain, and conntrack lets them through untranslated (out of its window), so the program's
 * socket never hears a FIN or RST and waits forever.
 *
 * So before it removes the rules after such an end, the helper ends the programs' side of every
 * connection that was redirected to the instance's port: it finds them in the conntrack table
 * (`/proc/net/nf_conntrack`: reply source port = our port, the original destination translated)
 * and destroys those sockets with `ss -K` (SOCK_DESTROY): the program's next read fails with
 * ECONNABORTED. Best effort: without the conntrack file or kernel support nothing happens, as
 * before. Only connections our own rules redirected to our own port are touched.
 */
import { createReadStream } from 'node:fs';
import { isIP } from 'node:net';
import { createInterface } from 'node:readline';
import createDebug from 'debug';
import type { RunCommand } from './iptables.js';

const log = createDebug('rxshuttle:fw');

export const CONNTRACK_PATH = '/proc/net/nf_conntrack';
/** Connections ended at most (a bound on work and memory, whatever the table holds). */
const MAX_CONNECTIONS = 50_000;
/** Connections per `ss -K` run (one filter expression each). */
const BATCH = 64;

/** The program's end of one redirected connection, as it sees it. */
export interface RedirectedConnection {
  readonly src: string;
  readonly sport: number;
  readonly dst: string;
  readonly dport: number;
}

/**
 * One line of /proc/net/nf_conntrack, if it is a TCP connection redirected to `port`: its original
 * tuple (what the program's socket is bound and connected to). Format:
 * `ipv4 2 tcp 6 431999 ESTABLISHED src=A dst=B sport=a dport=b src=127.0.0.1 dst=A sport=P dport=a [ASSURED] …`
 */
export function redirectedTo(line: string, port: number): RedirectedConnection | null {
  const words = line.split(' ').filter(Boolean);
  if (words[2] !== 'tcp') return null;
  const tuples: Array<Record<string, string>> = [];
  for (const word of words) {
    const eq = word.indexOf('=');
    if (eq < 0) continue;
    const key = word.slice(0, eq);
    if (key === 'src') tuples.push({});
    const tuple = tuples.at(-1);
    if (tuple && !(key in tuple)) tuple[key] = word.slice(eq + 1);
  }
  const [orig, reply] = tuples;
  if (!orig || !reply) return null;
  const sport = Number(orig.sport);
  const dport = Number(orig.dport);
  if (Number(reply.sport) !== port || dport === port) return null;
  if (!isIP(orig.src ?? '') || !isIP(orig.dst ?? '') || !(sport > 0 && sport < 65536) || !(dport > 0 && dport < 65536)) return null;
  return { src: orig.src as string, sport, dst: orig.dst as string, dport };
}

/** The connections redirected to `port`, read from the conntrack file line by line (bounded). */
export async function findRedirected(port: number, path = CONNTRACK_PATH): Promise<RedirectedConnection[]> {
  const found: RedirectedConnection[] = [];
  const lines = createInterface({ input: createReadStream(path, { encoding: 'latin1' }), crlfDelay: Infinity });
  try {
    for await (const line of lines) {
      const c = redirectedTo(line, port);
      if (c) found.push(c);
      if (found.length >= MAX_CONNECTIONS) break;
    }
  } finally {
    lines.close();
  }
  return found;
}

const address = (ip: string) => (ip.includes(':') ? `[${ip}]` : ip);

/** `ss` arguments that destroy the program sockets of these connections. */
export function ssKillArgs(connections: readonly RedirectedConnection[]): string[] {
  const args = ['-K', '-t', '-n'];
  connections.forEach((c, i) => {
    if (i > 0) args.push('or');
    args.push('(', 'src', address(c.src), 'and', 'sport', '=', `:${c.sport}`, 'and', 'dst', address(c.dst), 'and', 'dport', '=', `:${c.dport}`, ')');
  });
  return args;
}

/** Ends the programs' side of the connections redirected to `port`; returns how many were found. Never throws. */
export async function endRedirected(run: RunCommand, port: number, path = CONNTRACK_PATH): Promise<number> {
  let connections: RedirectedConnection[];
  try {
    connections = await findRedirected(port, path);
  } catch (e) {
    log('cannot read %s: %s', path, (e as Error).message);
    return 0;
  }
  for (let i = 0; i < connections.length; i += BATCH) {
    await run('ss', ssKillArgs(connections.slice(i, i + BATCH))).catch((e: Error) => log('ss -K: %s', e.message));
  }
  if (connections.length > 0) log('ended %d redirected connections of port %d', connections.length, port);
  return connections.length;
}
