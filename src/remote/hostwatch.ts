/**
 * -H: finds names of hosts on the remote host's networks and reports each as it is found, once
 * (again only if its address changes). Sources, all cheap:
 *   - its /etc/hosts;
 *   - its own host name, and the names of its own addresses;
 *   - the seed hosts (--seed-hosts), looked up forwards;
 *   - reverse lookups (with its resolver) of the addresses it knows: its neighbour table (ARP and
 *     NDP: `ip -j neigh`, /proc/net/arp), the peers of its TCP connections (/proc/net/tcp*),
 *     the destinations the tunnel connects to, the seed hosts' addresses.
 * The tables are read again every `pollMs`. Names are reported as found and without their domain
 * too (`db1.corp.example` also as `db1`), as sshuttle does. Runs on the remote host: Node
 * built-ins and rxjs only.
 */
import { execFile } from 'node:child_process';
import { promises as dnsPromises } from 'node:dns';
import { readFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { endianness, hostname, networkInterfaces } from 'node:os';
import { asyncScheduler, Observable, type SchedulerLike } from 'rxjs';
import { formatAddress } from '../streams/destination.js';
import { type HostEntry, isValidHostName } from '../streams/discovery.js';

/** Everything hostwatch reads or asks; injectable so tests need no network. */
export interface HostwatchSources {
  /** Called at the start of each scan: a source that reads everything at once does it here. */
  refresh?(): Promise<void>;
  readFile(path: string): Promise<string | null>;
  /** Addresses in the neighbour tables (both families). */
  neighbours(): Promise<string[]>;
  reverse(address: string): Promise<string[]>;
  lookup(name: string): Promise<string[]>;
  hostname(): string;
  /** This host's own (non-loopback) addresses. */
  ownAddresses(): string[];
}

export interface HostwatchOptions {
  readonly seeds?: readonly string[];
  /** Addresses seen elsewhere (the tunnel's destinations): they are looked up too. */
  readonly seen$?: Observable<string>;
  readonly pollMs?: number;
  /** What times the polls; default asyncScheduler (tests give a virtual-time one). */
  readonly scheduler?: SchedulerLike;
  readonly sources?: HostwatchSources;
  /** Where to report trouble (stderr of the server by default: the client shows it with -vv). */
  readonly log?: (message: string) => void;
}

export const POLL_MS = 60_000;
/** Bounds on what one hostwatch keeps: names reported, addresses looked up. */
export const MAX_NAMES = 10_000;
const MAX_ADDRESSES = 20_000;
const LOOKUP_CONCURRENCY = 4;
const LOOKUP_TIMEOUT_MS = 3_000;
const MAX_SEEDS = 100;

/** Addresses that mean nothing beyond the host that has them. */
export function isLocalOnly(address: string): boolean {
  const family = isIP(address);
  if (family === 4) {
    const [a = 0, b = 0] = address.split('.').map(Number);
    return a === 0 || a === 127 || (a === 169 && b === 254) || a >= 224;
  }
  if (family === 6) {
    const lower = address.toLowerCase();
    return lower === '::' || lower === '::1' || /^fe[89ab]/.test(lower) || lower.startsWith('ff') || lower.startsWith('::ffff:127.');
  }
  return true;
}

const GENERIC_NAMES = /^(localhost|localhost\..*|.*\.localhost|ip6-.*|broadcasthost|localdomain)$/i;

/** A found name cleaned up for a hosts file (sshuttle replaces odd characters with '_'), or null. */
export function cleanName(raw: string): string | null {
  const name = raw.trim().replace(/\.$/, '').replace(/[^-\w.]/g, '_');
  if (GENERIC_NAMES.test(name) || !isValidHostName(name)) return null;
  return name;
}

/** /etc/hosts: address and names of each line, comments and blank lines skipped. */
export function parseHostsFile(text: string): Array<{ address: string; names: string[] }> {
  const entries: Array<{ address: string; names: string[] }> = [];
  for (const line of text.split('\n')) {
    const [address, ...names] = line.replace(/#.*/, '').trim().split(/\s+/);
    if (address && names.length > 0 && isIP(address)) entries.push({ address, names });
  }
  return entries;
}

/** /proc/net/arp: addresses of complete entries (flags 0x2). */
export function parseProcArp(text: string): string[] {
  const out: string[] = [];
  for (const line of text.split('\n').slice(1)) {
    const [address, , flags] = line.trim().split(/\s+/);
    if (address && isIP(address) === 4 && (Number.parseInt(flags ?? '0', 16) & 0x2) !== 0) out.push(address);
  }
  return out;
}

/** `ip -j neigh`: addresses that are not FAILED or INCOMPLETE. */
export function parseIpNeigh(json: string): string[] {
  let entries: unknown;
  try {
    entries = JSON.parse(json);
  } catch {
    return [];
  }
  if (!Array.isArray(entries)) return [];
  const out: string[] = [];
  for (const entry of entries as Array<{ dst?: unknown; state?: unknown }>) {
    const states = Array.isArray(entry.state) ? entry.state : [];
    if (typeof entry.dst !== 'string' || isIP(entry.dst) === 0) continue;
    if (states.includes('FAILED') || states.includes('INCOMPLETE')) continue;
    out.push(entry.dst);
  }
  return out;
}

/** /proc/net/tcp and tcp6: the remote address of every socket (hex, in host byte order per u32). */
export function parseProcTcp(text: string, family: 4 | 6, hostOrder: 'LE' | 'BE' = 'LE'): string[] {
  const out: string[] = [];
  for (const line of text.split('\n').slice(1)) {
    const remote = line.trim().split(/\s+/)[2];
    const hex = remote?.split(':')[0];
    if (!hex || hex.length !== (family === 4 ? 8 : 32)) continue;
    const bytes = Buffer.from(hex, 'hex');
    if (hostOrder === 'LE') for (let i = 0; i < bytes.length; i += 4) bytes.subarray(i, i + 4).reverse();
    let address = formatAddress(bytes);
    const mapped = /^::ffff:([0-9a-f]+):([0-9a-f]+)$/.exec(address);
    if (mapped) address = formatAddress(Buffer.from(`${mapped[1]?.padStart(4, '0')}${mapped[2]?.padStart(4, '0')}`, 'hex'));
    out.push(address);
  }
  return out;
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('timeout')), ms);
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (err: unknown) => {
        clearTimeout(timer);
        reject(err);
      },
    );
  });
}

const run = (file: string, args: string[]): Promise<string> =>
  new Promise((resolve) => {
    execFile(file, args, { timeout: 5_000, maxBuffer: 8 * 1024 * 1024 }, (error, stdout) => resolve(error ? '' : stdout));
  });

/** The real sources of the host this runs on. */
export function systemSources(): HostwatchSources {
  const resolver = new dnsPromises.Resolver({ timeout: LOOKUP_TIMEOUT_MS, tries: 1 });
  const readText = (path: string) => readFile(path, 'utf8').catch(() => null);
  return {
    readFile: readText,
    async neighbours() {
      const fromIp = parseIpNeigh(await run('ip', ['-j', 'neigh', 'show']));
      const fromProc = parseProcArp((await readText('/proc/net/arp')) ?? '');
      const tcp4 = parseProcTcp((await readText('/proc/net/tcp')) ?? '', 4, endianness());
      const tcp6 = parseProcTcp((await readText('/proc/net/tcp6')) ?? '', 6, endianness());
      return [...fromIp, ...fromProc, ...tcp4, ...tcp6];
    },
    reverse: (address) => withTimeout(resolver.reverse(address), LOOKUP_TIMEOUT_MS + 500),
    lookup: async (name) =>
      (await withTimeout(dnsPromises.lookup(name, { all: true }), LOOKUP_TIMEOUT_MS * 2)).map((entry) => entry.address),
    hostname,
    ownAddresses: () =>
      Object.values(networkInterfaces())
        .flatMap((list) => list ?? [])
        .filter((info) => !info.internal)
        .map((info) => info.address),
  };
}

/**
 * Host discovery as a stream of found hosts. Subscribing starts it; it never completes on its
 * own; unsubscribing stops the polling (lookups in flight are left to finish and are ignored).
 */
export function hostwatch$(options: HostwatchOptions = {}): Observable<HostEntry> {
  return new Observable<HostEntry>((subscriber) => {
    const sources = options.sources ?? systemSources();
    const log = options.log ?? (() => {});
    const names = new Map<string, string>();
    const looked = new Set<string>();
    const queue: string[] = [];
    let active = 0;

    const found = (rawName: string, address: string) => {
      if (subscriber.closed || isLocalOnly(address)) return;
      const family = isIP(address);
      if (family === 0) return;
      const name = cleanName(rawName);
      if (name === null) return;
      const short = name.split('.')[0] as string;
      for (const each of short === name ? [name] : [name, short]) {
        if (names.get(each) === address || !isValidHostName(each)) continue;
        if (!names.has(each) && names.size >= MAX_NAMES) return;
        names.set(each, address);
        subscriber.next({ family: family as 4 | 6, address, name: each });
      }
    };

    const pump = () => {
      while (active < LOOKUP_CONCURRENCY && queue.length > 0 && !subscriber.closed) {
        const address = queue.shift() as string;
        active++;
        sources
          .reverse(address)
          .then(
            (hostNames) => {
              for (const name of hostNames) found(name, address);
            },
            () => {}, // no PTR record, or no answer: nothing to report
          )
          .finally(() => {
            active--;
            pump();
          });
      }
    };

    const lookUp = (address: string) => {
      if (looked.has(address) || looked.size >= MAX_ADDRESSES || isIP(address) === 0 || isLocalOnly(address)) return;
      looked.add(address);
      queue.push(address);
      pump();
    };

    const scan = async () => {
      await sources.refresh?.();
      const hosts = await sources.readFile('/etc/hosts');
      for (const entry of parseHostsFile(hosts ?? '')) for (const name of entry.names) found(name, entry.address);
      const own = sources.ownAddresses();
      for (const address of own) lookUp(address);
      const me = sources.hostname();
      if (me) {
        const addresses = await sources.lookup(me).catch(() => [] as string[]);
        const usable = addresses.filter((a) => !isLocalOnly(a));
        // A host name that resolves only to loopback (Debian's 127.0.1.1) stands for the first own address.
        const first = usable[0] ?? own.find((a) => isIP(a) === 4 && !isLocalOnly(a));
        if (first) found(me, first);
      }
      for (const address of await sources.neighbours()) lookUp(address);
    };

    const seed = async (name: string) => {
      if (isIP(name)) return lookUp(name);
      const addresses = await sources.lookup(name).catch((err: Error) => {
        log(`seed host ${name}: ${err.message}`);
        return [] as string[];
      });
      for (const address of addresses) {
        found(name, address);
        lookUp(address);
      }
    };

    const safely = (what: string, promise: Promise<unknown>) =>
      void promise.catch((err: unknown) => log(`hostwatch ${what}: ${err instanceof Error ? err.message : String(err)}`));

    for (const name of (options.seeds ?? []).slice(0, MAX_SEEDS)) safely('seed', seed(name));
    safely('scan', scan());
    // Every pollMs, as setInterval would (asyncScheduler keeps one interval for an action that
    // schedules itself again with the same delay).
    const pollMs = options.pollMs ?? POLL_MS;
    const polling = (options.scheduler ?? asyncScheduler).schedule(function poll() {
      safely('scan', scan());
      this.schedule(undefined, pollMs);
    }, pollMs);
    const seen = options.seen$?.subscribe({ next: (address) => lookUp(address), error: (err: unknown) => subscriber.error(err) });
    return () => {
      polling.unsubscribe();
      seen?.unsubscribe();
      queue.length = 0;
    };
  });
}
