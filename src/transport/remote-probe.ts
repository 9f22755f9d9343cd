/**
 * What the remote host has, found with one exec of plain POSIX shell at start-up: its node (if
 * any), its OS, its resolv.conf, and, for -N, its routing table. The answer decides between the
 * node server and stock-sshd mode (docs/protocol.md, "Stock-sshd mode"), and in stock-sshd mode
 * it is what -N and --dns work from. -H's tables are read with `hostsScanCommand` each poll.
 *
 * Everything the remote prints is untrusted: sections are split on a marker with a nonce the
 * remote cannot guess in advance, the whole output is bounded by the exec, and each parser takes
 * only what it recognises.
 */
import { randomBytes } from 'node:crypto';
import { concat, defer, filter, map, type Observable, of, take } from 'rxjs';
import { TransportError } from '../shared/errors.js';
import { MIN_REMOTE_NODE_MAJOR, remoteCommand, shellQuote } from './stub.js';

/** Sections of one exec's output, by name (`@@rxs-NONCE name` lines start each). */
export type Sections = ReadonlyMap<string, string>;

export interface RemoteScript {
  readonly command: string;
  /** Starts every section's line: `${marker} name`. */
  readonly marker: string;
  /** Splits what the command printed into its sections. */
  parse(stdout: string): Sections;
}

/** Prints a marker line, on a line of its own even after output without a final newline. */
const markerLine = (text: string) => `printf '\\n%s\\n' '${text}'`;

/** A shell script whose sections (name → commands) print under a marker the output cannot forge. */
export function sectionScript(sections: ReadonlyArray<readonly [name: string, commands: string]>): RemoteScript {
  const marker = `@@rxs-${randomBytes(6).toString('hex')}`;
  const command = sections.map(([name, commands]) => `${markerLine(`${marker} ${name}`)}; { ${commands}; } 2>/dev/null`).join('\n');
  return {
    marker,
    command: `${command}\nexit 0`,
    parse(stdout) {
      const out = new Map<string, string>();
      let name: string | undefined;
      let lines: string[] = [];
      const flush = () => {
        // Drop the newline that the next marker's printf put before itself.
        if (lines.at(-1) === '') lines.pop();
        if (name !== undefined && !out.has(name)) out.set(name, lines.join('\n'));
      };
      for (const line of stdout.split('\n')) {
        if (line.startsWith(`${marker} `)) {
          flush();
          name = line.slice(marker.length + 1).trim();
          lines = [];
        } else if (name !== undefined) lines.push(line);
      }
      flush();
      return out;
    },
  };
}

/** Reads a file where it exists: `cat` prints nothing (and fails) where it does not. */
const cat = (path: string) => `cat ${path}`;

/** -N's sources: /proc on Linux; `ip route` or `netstat -rn` only where /proc has no table. */
const ROUTE_SECTIONS: ReadonlyArray<readonly [string, string]> = [
  ['route', cat('/proc/net/route')],
  ['ipv6_route', cat('/proc/net/ipv6_route')],
  ['ip-route', '[ -r /proc/net/route ] || { ip -4 route show table main; ip -6 route show table main; }'],
  ['netstat', '[ -r /proc/net/route ] || command -v ip >/dev/null || netstat -rn'],
];

export interface ProbeRequest {
  /** --remote-node; 'none': do not look for node. */
  readonly remoteNode: string;
  /** -N: read the routing table in the same exec. */
  readonly routes: boolean;
}

export function probeScript(request: ProbeRequest): RemoteScript {
  // Kept in $v for probeThenServerScript, which decides in the same shell.
  const node = request.remoteNode === 'none' ? [] : [['node', `v=$(${shellQuote(request.remoteNode)} --version); echo "$v"`] as const];
  return sectionScript([
    ...node,
    ['os', 'uname -s'],
    ['arch', 'uname -m'],
    ['hostname', 'hostname || uname -n'],
    ['resolv', cat('/etc/resolv.conf')],
    ...(request.routes ? ROUTE_SECTIONS : []),
  ]);
}

/**
 * The ssh binary's one command (no second exec without a second login): the probe, then the
 * remote's own decision on a line `${marker} end node|stock`, then either the node server (the
 * stub reads the upload from stdin, as with remoteCommand) or, in stock-sshd mode, a `cat` that
 * swallows the upload and keeps the session open for the ControlMaster's channels.
 */
export function probeThenServerScript(request: ProbeRequest): RemoteScript & { readonly endPrefix: string } {
  const probe = probeScript(request);
  const end = `${probe.marker} end`;
  const stock = `${markerLine(`${end} stock`)}; exec cat >/dev/null`;
  const command = probe.command.replace(/\nexit 0$/, '');
  if (request.remoteNode === 'none') return { ...probe, endPrefix: `${end} `, command: `${command}\n${stock}` };
  const decide = [
    'm=${v#v}; m=${m%%.*}',
    `if [ "$m" -ge ${MIN_REMOTE_NODE_MAJOR} ] 2>/dev/null; then ${markerLine(`${end} node`)}; ${remoteCommand(request.remoteNode)}; fi`,
    stock,
  ].join('\n');
  return { ...probe, endPrefix: `${end} `, command: `${command}\n${decide}` };
}

/** The remote node, if one is there and new enough to run the server. */
export type RemoteNode =
  | { readonly usable: true; readonly version: string }
  | { readonly usable: false; readonly why: string };

export interface ProbeResult {
  readonly node: RemoteNode;
  /** `uname -s` (Linux, Darwin, FreeBSD…), or '' when it did not answer. */
  readonly os: string;
  /** Byte order of the remote's /proc tables (from `uname -m`). */
  readonly hostOrder: 'LE' | 'BE';
  readonly hostname: string;
  readonly resolvConf: string;
  readonly sections: Sections;
}

/** Machines (`uname -m`) whose /proc hex fields are big-endian. */
const BIG_ENDIAN = /^(s390x?|ppc|ppc64|powerpc|powerpc64|mips|mips64|sparc.*|m68k|hppa.*|or1k)$/;

const firstLine = (text: string | undefined): string => (text ?? '').split('\n').find((line) => line.trim() !== '')?.trim() ?? '';

export function parseProbe(sections: Sections, remoteNode: string): ProbeResult {
  return {
    node: remoteNodeOf(sections, remoteNode),
    os: firstLine(sections.get('os')).slice(0, 64),
    hostOrder: BIG_ENDIAN.test(firstLine(sections.get('arch'))) ? 'BE' : 'LE',
    hostname: firstLine(sections.get('hostname')).slice(0, 253),
    resolvConf: sections.get('resolv') ?? '',
    sections,
  };
}

function remoteNodeOf(sections: Sections, remoteNode: string): RemoteNode {
  if (remoteNode === 'none') return { usable: false, why: '--remote-node none' };
  const version = /^v(\d+)\.\d+\.\d+\S*$/.exec(firstLine(sections.get('node')));
  if (!version) return { usable: false, why: `no "${remoteNode}" there` };
  if (Number(version[1]) < MIN_REMOTE_NODE_MAJOR) {
    return { usable: false, why: `its node ${version[0]} is older than ${MIN_REMOTE_NODE_MAJOR}` };
  }
  return { usable: true, version: version[0] };
}

/** -H: everything one scan needs, in one exec (run again every poll). */
export function hostsScanScript(): RemoteScript {
  return sectionScript([
    ['hosts', cat('/etc/hosts')],
    ['hostname', 'hostname || uname -n'],
    ['addr', 'ip -o addr show'],
    ['neigh', 'ip -j neigh show'],
    ['arp', cat('/proc/net/arp')],
    ['tcp', cat('/proc/net/tcp')],
    ['tcp6', cat('/proc/net/tcp6')],
    ['arp-a', '[ -r /proc/net/arp ] || arp -an'],
  ]);
}

/** Output before the decision line that we read at most (login chatter plus the probe). */
const MAX_PROBE_OUTPUT = 4 * 1024 * 1024;

/**
 * Reads the server's output up to probeThenServerScript's decision line: emits the probe's
 * sections, the remote's decision, and the output that follows (the node server's bytes, to the
 * session), then completes. Errors as `bytes$` does when ssh ends first.
 */
export function splitProbe(
  bytes$: Observable<Buffer>,
  script: Pick<RemoteScript, 'parse'> & { readonly endPrefix: string },
): Observable<{ readonly sections: Sections; readonly mode: 'node' | 'stock'; readonly rest$: Observable<Buffer> }> {
  return defer(() => {
    const end = Buffer.from(`\n${script.endPrefix}`);
    const chunks: Buffer[] = [];
    let size = 0;
    /** Where the end line starts, once found. */
    let at = -1;
    /** The last bytes before this chunk, for an end line split across chunks: each byte is searched once. */
    let tail: Buffer = Buffer.alloc(0);
    return bytes$.pipe(
      map((chunk) => {
        const base = size;
        chunks.push(chunk);
        size += chunk.length;
        let eol = -1;
        if (at < 0) {
          const joined = tail.length > 0 ? Buffer.concat([tail, chunk]) : chunk;
          const offset = base - tail.length;
          const found = joined.indexOf(end);
          if (found >= 0) {
            at = offset + found;
            const nl = joined.indexOf(0x0a, found + end.length);
            if (nl >= 0) eol = offset + nl;
          } else tail = Buffer.from(joined.subarray(Math.max(0, joined.length - (end.length - 1))));
        } else {
          const nl = chunk.indexOf(0x0a);
          if (nl >= 0) eol = base + nl;
        }
        if (eol < 0) {
          if (size > MAX_PROBE_OUTPUT) throw new TransportError('RXS_ERR_SSH', 'the remote printed too much before starting');
          return null;
        }
        const seen = Buffer.concat(chunks, size);
        const mode = seen.subarray(at + end.length, eol).toString('utf8').trim() === 'node' ? 'node' : 'stock';
        const leftover = Buffer.from(seen.subarray(eol + 1));
        const sections = script.parse(seen.subarray(0, at).toString('utf8'));
        return { sections, mode, rest$: leftover.length > 0 ? concat(of(leftover), bytes$) : bytes$ } as const;
      }),
      filter((found) => found !== null),
      take(1),
    );
  });
}
