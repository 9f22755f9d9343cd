/**
 * `rxshuttle status` (issue 14): each running instance serves its status snapshot on a Unix
 * socket of its own, `<dir>/rxshuttle-<pid>.sock`; `status` connects to every socket there and
 * collects what they say.
 *
 * The directory (statusDirs): `$XDG_RUNTIME_DIR/rxshuttle`, else `/run/user/<uid>/rxshuttle` when
 * that runtime directory exists, else `/tmp/rxshuttle-status-<uid>`; for root (who seldom has
 * XDG_RUNTIME_DIR, and may or may not have it depending on how it was started) always
 * `/run/rxshuttle-status`, then `/tmp/rxshuttle-status-0`. The server uses the first that can be
 * created; `status` looks in all of them that exist, so an instance started without
 * XDG_RUNTIME_DIR (a system service with User=) is found from a login shell that has it.
 *
 * A snapshot lists the user's connections, so nobody else may read it: the directory is created
 * 0700, must be a directory (not a symbolic link) of our user, and is made 0700 if it is not;
 * the socket is 0600. Neither side uses a directory of anyone else: `status` does not believe
 * (or remove) what is in one.
 *
 * The server is a resource tied to a subscription (statusServer$): subscribing creates the
 * socket, unsubscribing closes and removes it. A killed instance leaves its socket behind;
 * `status` removes such a socket when nobody listens on it (ECONNREFUSED) and its process is
 * gone (or the socket is too old to be one still starting up: the pid was reused).
 */
import { chmodSync, closeSync, constants, fchmodSync, fstatSync, lstatSync, mkdirSync, openSync, readdirSync, type Stats, statSync, unlinkSync } from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { isAbsolute, join } from 'node:path';
import { map, type Observable } from 'rxjs';
import { processExists } from '../os/process-exists.js';
import { resource$ } from '../streams/resource.js';
import type { DnsCounters, OpenConnection, StatusSnapshot, TunnelState } from './snapshot.js';

/** The status socket or its directory cannot be used. */
export class StatusError extends Error {
  override name = 'StatusError';
  readonly code = 'RXS_ERR_STATUS';
}

/** Root's directory (root seldom has XDG_RUNTIME_DIR). */
export const ROOT_STATUS_DIR = '/run/rxshuttle-status';
/** Each instance's socket: `rxshuttle-<pid>.sock`. */
export const socketName = (pid: number): string => `rxshuttle-${pid}.sock`;
const SOCKET_NAME = /^rxshuttle-([1-9]\d{0,9})\.sock$/;

/** A client gets this long to take its snapshot before the server drops it. */
const SERVE_TIMEOUT_MS = 5_000;
const MAX_CLIENTS = 16;
/** How long `status` waits for each instance. */
export const QUERY_TIMEOUT_MS = 1_000;
/** Instances asked at once (each a descriptor while asked). */
const QUERIES_AT_ONCE = 32;
/** A snapshot is at most about 150 KB (1 000 connections listed); anything much longer is not one. */
export const MAX_SNAPSHOT_BYTES = 4 * 1024 * 1024;
/**
 * A socket nobody listens on whose pid still runs is removed only if it is older than this: the
 * pid was reused. (Between its bind and its listen a starting instance refuses for microseconds.)
 */
const STALE_AFTER_MS = 10_000;
/** sun_path holds 108 bytes with its NUL. */
const MAX_SOCKET_PATH = 107;
/** mkdir(2) errors that mean "not this directory, try the next". */
const UNUSABLE_DIR = new Set(['EACCES', 'EPERM', 'EROFS', 'ENOENT']);

const ownUid = (): number => process.geteuid?.() ?? process.getuid?.() ?? 0;
const errnoCode = (err: unknown): string | undefined => (err as NodeJS.ErrnoException).code;
const describe = (err: unknown): string => (err instanceof Error ? err.message : String(err));

const isDirectory = (path: string): boolean => {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
};

/**
 * Where status sockets go, most preferred first (see the top of this file). `exists`: whether a
 * path is a directory (tests give their own).
 */
export function statusDirs(
  env: NodeJS.ProcessEnv = process.env,
  uid: number = ownUid(),
  exists: (dir: string) => boolean = isDirectory,
): string[] {
  if (uid === 0) return [ROOT_STATUS_DIR, '/tmp/rxshuttle-status-0'];
  const dirs: string[] = [];
  const runtime = env.XDG_RUNTIME_DIR;
  if (runtime !== undefined && isAbsolute(runtime)) dirs.push(join(runtime, 'rxshuttle'));
  if (exists(`/run/user/${uid}`)) dirs.push(`/run/user/${uid}/rxshuttle`);
  dirs.push(`/tmp/rxshuttle-status-${uid}`);
  return [...new Set(dirs)];
}

/**
 * Checks `dir`: it must be a directory, not a symbolic link, of `uid`. `fix`: create it (0700)
 * when missing, and make it 0700. Returns false when it is missing (and not created); throws
 * StatusError when it is unfit, a system error (with a `code`) when it cannot be created.
 */
function checkDir(dir: string, uid: number, fix: boolean): boolean {
  if (fix) {
    try {
      mkdirSync(dir, { mode: 0o700 });
    } catch (err) {
      if (errnoCode(err) !== 'EEXIST') throw err;
    }
  }
  let fd: number;
  try {
    // Not following a link: a directory someone else links to ours (or theirs) is not used.
    fd = openSync(dir, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
  } catch (err) {
    const code = errnoCode(err);
    if (code === 'ENOENT' && !fix) return false;
    if (code === 'ENOTDIR' || code === 'ELOOP') {
      const what = lstatOrNull(dir)?.isSymbolicLink() ? 'a symbolic link' : 'not a directory';
      throw new StatusError(`the status directory ${dir} is ${what}; remove it`);
    }
    throw err;
  }
  try {
    const st = fstatSync(fd);
    if (st.uid !== uid) {
      throw new StatusError(`the status directory ${dir} belongs to uid ${st.uid}, not ${uid}; remove it`);
    }
    if (fix && (st.mode & 0o777) !== 0o700) fchmodSync(fd, 0o700);
  } finally {
    closeSync(fd);
  }
  return true;
}

const lstatOrNull = (path: string): Stats | null => {
  try {
    return lstatSync(path);
  } catch {
    return null;
  }
};

/**
 * Creates (or checks) the status directory: the first of `dirs` that can be made. Throws
 * StatusError when one that exists is unfit (it is not skipped: `status` would not look past it).
 */
export function openStatusDir(dirs: readonly string[], uid: number = ownUid()): string {
  const problems: string[] = [];
  for (const dir of dirs) {
    try {
      checkDir(dir, uid, true);
      return dir;
    } catch (err) {
      const code = errnoCode(err);
      if (err instanceof StatusError || code === undefined || !UNUSABLE_DIR.has(code)) {
        throw err instanceof StatusError ? err : new StatusError(`cannot create the status directory ${dir}: ${describe(err)}`);
      }
      problems.push(`${dir}: ${describe(err)}`);
    }
  }
  throw new StatusError(`cannot create a status directory: ${problems.join('; ')}`);
}

export interface StatusServerOptions {
  /** The directory; default the first of statusDirs() that can be created. */
  readonly dir?: string;
  /** In the socket's name; default this process's. */
  readonly pid?: number;
  /** Who must own the directory; default our effective uid. */
  readonly uid?: number;
}

interface Listening {
  readonly server: Server;
  readonly path: string;
  readonly ino: number;
}

/**
 * This instance's status socket, for as long as it is subscribed: emits its path once it
 * listens (and never completes); errors with a StatusError when it cannot be made. Each client
 * gets `snapshot()` as one JSON document (and a newline), then the end of the stream.
 * Unsubscribing closes the socket and removes it. One per process: a socket at its name is
 * taken for an earlier process's with the same pid, and replaced.
 */
export function statusServer$(snapshot: () => StatusSnapshot, options: StatusServerOptions = {}): Observable<string> {
  const uid = options.uid ?? ownUid();
  const pid = options.pid ?? process.pid;
  const dirOption = options.dir;
  return resource$<Listening>(
    async () => {
      const dir = openStatusDir(dirOption === undefined ? statusDirs(process.env, uid) : [dirOption], uid);
      const path = join(dir, socketName(pid));
      // Node would cut a longer path short without a word, and listen somewhere else.
      if (Buffer.byteLength(path) > MAX_SOCKET_PATH) throw new StatusError(`the status socket path ${path} is too long for a Unix socket`);
      // Left by an earlier process that had our pid: nobody listens on it (we are that pid).
      const old = lstatOrNull(path);
      if (old !== null) {
        if (!old.isSocket()) throw new StatusError(`${path} is there and is not a socket; remove it`);
        unlinkSync(path);
      }
      const server = createServer((client) => serve(client, snapshot));
      server.maxConnections = MAX_CLIENTS;
      try {
        await new Promise<void>((resolve, reject) => {
          server.once('error', reject);
          server.listen(path, () => {
            server.off('error', reject);
            resolve();
          });
        });
        // The directory keeps others out already; the socket says so too (umask made it 0755).
        chmodSync(path, 0o600);
        server.on('error', () => undefined);
        return { server, path, ino: lstatSync(path).ino };
      } catch (err) {
        server.close();
        throw new StatusError(`cannot make the status socket ${path}: ${describe(err)}`);
      }
    },
    ({ server, path, ino }) => {
      server.close(); // libuv removes the socket file with it
      if (lstatOrNull(path)?.ino === ino) {
        try {
          unlinkSync(path);
        } catch {
          // gone already
        }
      }
    },
  ).pipe(map((listening) => listening.path));
}

function serve(client: Socket, snapshot: () => StatusSnapshot): void {
  client.on('error', () => client.destroy());
  client.setTimeout(SERVE_TIMEOUT_MS, () => client.destroy());
  let text: string;
  try {
    text = `${JSON.stringify(snapshot())}\n`;
  } catch {
    client.destroy();
    return;
  }
  client.end(text);
  client.resume(); // whatever the client sends is not read
}

export interface ListOptions {
  /** Look only here (tests, a --status-dir); default every one of statusDirs(). */
  readonly dirs?: readonly string[];
  readonly uid?: number;
  /** For each instance. */
  readonly timeoutMs?: number;
}

export interface StatusList {
  /** By pid. */
  readonly instances: StatusSnapshot[];
  /** What could not be asked or believed (for stderr; not part of `status --json`). */
  readonly warnings: string[];
}

type Answer =
  | { readonly kind: 'snapshot'; readonly snapshot: StatusSnapshot }
  | { readonly kind: 'refused' }
  | { readonly kind: 'gone' }
  | { readonly kind: 'failed'; readonly why: string };

/**
 * The running instances of this user: asks every status socket (all at once, each for at most
 * `timeoutMs`), and removes the sockets of instances that are gone.
 */
export async function listInstances(options: ListOptions = {}): Promise<StatusList> {
  const uid = options.uid ?? ownUid();
  const timeoutMs = options.timeoutMs ?? QUERY_TIMEOUT_MS;
  const warnings: string[] = [];
  const sockets: { path: string; pid: number; stats: Stats }[] = [];
  for (const dir of options.dirs ?? statusDirs(process.env, uid)) {
    try {
      if (!checkDir(dir, uid, false)) continue;
    } catch (err) {
      warnings.push(describe(err));
      continue;
    }
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch (err) {
      warnings.push(`cannot read ${dir}: ${describe(err)}`);
      continue;
    }
    for (const name of names) {
      const pid = SOCKET_NAME.exec(name)?.[1];
      if (pid === undefined) continue;
      const path = join(dir, name);
      const stats = lstatOrNull(path);
      if (!stats?.isSocket() || stats.uid !== uid) continue;
      if (Buffer.byteLength(path) > MAX_SOCKET_PATH) warnings.push(`${path}: too long a path for a Unix socket`);
      else sockets.push({ path, pid: Number(pid), stats });
    }
  }
  const answers = await mapLimited(sockets, QUERIES_AT_ONCE, async (socket) => ({ ...socket, answer: await query(socket.path, timeoutMs) }));
  const instances: StatusSnapshot[] = [];
  const now = Date.now();
  for (const { path, pid, stats, answer } of answers) {
    switch (answer.kind) {
      case 'snapshot':
        instances.push(answer.snapshot);
        break;
      case 'refused':
        if (!processExists(pid) || now - stats.mtimeMs > STALE_AFTER_MS) removeStale(path, stats);
        break;
      case 'gone':
        break;
      case 'failed':
        warnings.push(`rxshuttle ${pid} (${path}): ${answer.why}`);
        break;
    }
  }
  instances.sort((a, b) => a.pid - b.pid);
  return { instances, warnings };
}

/** `f` of each item, at most `limit` at a time (descriptors), in the items' order. */
async function mapLimited<T, R>(items: readonly T[], limit: number, f: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await f(items[i] as T);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

/** Removes a stale socket, if it is still the one we looked at. */
function removeStale(path: string, stats: Stats): void {
  if (lstatOrNull(path)?.ino !== stats.ino) return;
  try {
    unlinkSync(path);
  } catch {
    // removed meanwhile
  }
}

/** One instance's answer, read in bounded memory and time. */
function query(path: string, timeoutMs: number): Promise<Answer> {
  return new Promise<Answer>((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const socket = createConnection(path);
    const done = (answer: Answer) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(answer);
    };
    const timer = setTimeout(() => done({ kind: 'failed', why: `no answer within ${timeoutMs} ms` }), timeoutMs);
    socket.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_SNAPSHOT_BYTES) return done({ kind: 'failed', why: `answer longer than ${MAX_SNAPSHOT_BYTES} bytes` });
      chunks.push(chunk);
    });
    socket.on('end', () => {
      const snapshot = parseSnapshot(Buffer.concat(chunks).toString('utf8'));
      done(snapshot === null ? { kind: 'failed', why: 'not a status snapshot' } : { kind: 'snapshot', snapshot });
    });
    socket.on('error', (err) => {
      const code = errnoCode(err);
      done(code === 'ECONNREFUSED' ? { kind: 'refused' } : code === 'ENOENT' ? { kind: 'gone' } : { kind: 'failed', why: describe(err) });
    });
  });
}

const STATES: ReadonlySet<string> = new Set<TunnelState>(['connecting', 'connected', 'reconnecting', 'stopping']);

const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
const isNullOr = <T>(v: unknown, ok: (v: unknown) => v is T): v is T | null => v === null || ok(v);
const isString = (v: unknown): v is string => typeof v === 'string';
const oneOf =
  <T extends string>(...values: T[]) =>
  (v: unknown): v is T =>
    values.includes(v as T);

/**
 * A snapshot from its JSON text, with exactly the fields of StatusSnapshot (any others
 * dropped); null when it is not one.
 */
export function parseSnapshot(text: string): StatusSnapshot | null {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return null;
  }
  if (typeof value !== 'object' || value === null) return null;
  const v = value as Record<string, unknown>;
  const dns = v.dns as Record<string, unknown> | null | undefined;
  const list = v.openConnections;
  if (
    !isCount(v.pid) ||
    !isNullOr(v.listen, isString) ||
    !isNullOr(v.remote, isString) ||
    !isNullOr(v.transport, oneOf('ssh', 'ssh2')) ||
    !isNullOr(v.mode, oneOf('node', 'stock')) ||
    !(typeof v.state === 'string' && STATES.has(v.state)) ||
    !isString(v.since) ||
    !isCount(v.reconnects) ||
    !isCount(v.connections) ||
    !isCount(v.bytesSent) ||
    !isCount(v.bytesReceived) ||
    typeof dns !== 'object' ||
    dns === null ||
    !isCount(dns.answered) ||
    !isCount(dns.failed) ||
    !isCount(dns.timeout) ||
    !Array.isArray(list) ||
    !isCount(v.openConnectionsUnlisted)
  ) {
    return null;
  }
  const openConnections: OpenConnection[] = [];
  for (const item of list as unknown[]) {
    const c = item as Record<string, unknown> | null;
    if (typeof c !== 'object' || c === null || !isCount(c.id) || !isString(c.source) || !isString(c.destination)) return null;
    if (c.via !== undefined && c.via !== 'ssh') return null;
    openConnections.push({ id: c.id, ...(c.via === 'ssh' ? { via: 'ssh' as const } : {}), source: c.source, destination: c.destination });
  }
  const counters: DnsCounters = { answered: dns.answered, failed: dns.failed, timeout: dns.timeout };
  return {
    pid: v.pid,
    listen: v.listen,
    remote: v.remote,
    transport: v.transport,
    mode: v.mode,
    state: v.state as TunnelState,
    since: v.since,
    reconnects: v.reconnects,
    connections: v.connections,
    bytesSent: v.bytesSent,
    bytesReceived: v.bytesReceived,
    dns: counters,
    openConnections,
    openConnectionsUnlisted: v.openConnectionsUnlisted,
  };
}
