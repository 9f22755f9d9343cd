/**
 * What `rxshuttle status` shows of one tunnel (issue 14), kept from its TunnelEvents alone: a pure
 * reducer (`reduceStatus`) and the operator over it (`tunnelStatus`), so an API user gets the
 * same snapshot as the status socket serves (socket.ts) without any socket.
 *
 *   connecting ──connected──▶ connected ──reconnecting──▶ reconnecting ──connected──▶ connected …
 *   any state ──stopping (from the program, STOPPING)──▶ stopping, for good
 *
 * Memory stays bounded whatever the stream: counters, a few short strings, and at most
 * `maxListed` open connections listed (the rest only counted).
 *
 * Counting: `connections` is accepts minus closes. A session that is lost ends its connections
 * by a reset and says nothing of each (no close event), so a `reconnecting` for a loss (attempt
 * 1) empties the list and the count; the bytes those connections had carried are not known and
 * not added. `bytesSent`/`bytesReceived` are the sums of close events: connections still open
 * count once they close.
 */
import { defer, type Observable, type OperatorFunction, scan } from 'rxjs';
import type { TunnelEvent } from '../shared/events.js';
import { formatDestination } from '../streams/destination.js';

export type TunnelState = 'connecting' | 'connected' | 'reconnecting' | 'stopping';

/** One open connection, for `status -v`. `via: 'ssh'`: carried by ssh in a channel of its own. `id`: the tunnel's (events.ts ConnectionIds), whichever path carries it. */
export interface OpenConnection {
  readonly id: number;
  readonly via?: 'ssh';
  readonly source: string;
  /** `address:port`, IPv6 in brackets. */
  readonly destination: string;
}

export interface DnsCounters {
  readonly answered: number;
  readonly failed: number;
  readonly timeout: number;
}

/** One instance's status; the field names are the issue's, and those of `status --json`. */
export interface StatusSnapshot {
  readonly pid: number;
  /** `host:port` of the listener (IPv6 in brackets); null until it listens. */
  readonly listen: string | null;
  /** The ssh host (or "the local server"); null until known. */
  readonly remote: string | null;
  readonly transport: 'ssh' | 'ssh2' | null;
  readonly mode: 'node' | 'stock' | null;
  readonly state: TunnelState;
  /** When `state` was entered, ISO 8601. */
  readonly since: string;
  /** Sessions lost after they had been up. */
  readonly reconnects: number;
  /** Open connections: accepted and not closed. */
  readonly connections: number;
  readonly bytesSent: number;
  readonly bytesReceived: number;
  readonly dns: DnsCounters;
  /** The open connections, oldest first, at most `maxListed` of them... */
  readonly openConnections: readonly OpenConnection[];
  /** ...and how many more are open but not listed. */
  readonly openConnectionsUnlisted: number;
}

/** The program's own word, besides the tunnel's events: it is stopping (a signal, --flush…). */
export interface StoppingMark {
  readonly kind: 'stopping';
}
export const STOPPING: StoppingMark = { kind: 'stopping' };

export type StatusInput = TunnelEvent | StoppingMark;

export interface StatusOptions {
  /** Default: this process's. */
  readonly pid?: number;
  /** Known before the first `connected` (the -r host); `connected` events say it again. */
  readonly remote?: string | null;
  /** Milliseconds since the epoch, for `since`. Default: Date.now (tests give the TestScheduler's clock). */
  readonly now?: () => number;
  /** At most this many open connections are listed (the others counted). Default MAX_LISTED. */
  readonly maxListed?: number;
}

export const MAX_LISTED = 1_000;

const iso = (ms: number): string => new Date(ms).toISOString();

const hostPort = (host: string, port: number): string => (host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`);

/** The snapshot of a tunnel that has not reported anything yet: connecting since `at`. */
export function initialStatus(options: Pick<StatusOptions, 'pid' | 'remote'> = {}, at: number = Date.now()): StatusSnapshot {
  return {
    pid: options.pid ?? process.pid,
    listen: null,
    remote: options.remote ?? null,
    transport: null,
    mode: null,
    state: 'connecting',
    since: iso(at),
    reconnects: 0,
    connections: 0,
    bytesSent: 0,
    bytesReceived: 0,
    dns: { answered: 0, failed: 0, timeout: 0 },
    openConnections: [],
    openConnectionsUnlisted: 0,
  };
}

const sameConnection = (c: OpenConnection, id: number, via: 'ssh' | undefined): boolean => c.id === id && c.via === via;

/**
 * The snapshot after one input, at time `at` (ms since the epoch; used only when the state
 * changes). Pure: `snapshot` is not changed; what is unchanged is shared. Inputs that change
 * nothing return `snapshot` itself.
 */
export function reduceStatus(snapshot: StatusSnapshot, input: StatusInput, at: number, maxListed: number = MAX_LISTED): StatusSnapshot {
  const enter = (state: TunnelState): Partial<StatusSnapshot> =>
    snapshot.state === state || snapshot.state === 'stopping' ? {} : { state, since: iso(at) };
  switch (input.kind) {
    case 'stopping':
      return snapshot.state === 'stopping' ? snapshot : { ...snapshot, ...enter('stopping') };
    case 'listening':
      return { ...snapshot, listen: hostPort(input.host, input.port) };
    case 'transport':
      return snapshot.transport === input.transport ? snapshot : { ...snapshot, transport: input.transport };
    case 'mode':
      return snapshot.mode === input.mode ? snapshot : { ...snapshot, mode: input.mode };
    case 'connected':
      return { ...snapshot, remote: input.remote, ...enter('connected') };
    case 'reconnecting':
      if (input.attempt !== 1) return { ...snapshot, ...enter('reconnecting') };
      // A loss: the lost session's connections were reset, without a close event each.
      return {
        ...snapshot,
        ...enter('reconnecting'),
        reconnects: snapshot.reconnects + 1,
        connections: 0,
        openConnections: [],
        openConnectionsUnlisted: 0,
      };
    case 'accept': {
      const listed = snapshot.openConnections.length < maxListed;
      const entry: OpenConnection = {
        id: input.id,
        ...(input.via === undefined ? {} : { via: input.via }),
        source: input.source,
        destination: formatDestination(input.destination),
      };
      return {
        ...snapshot,
        connections: snapshot.connections + 1,
        ...(listed
          ? { openConnections: snapshot.openConnections.concat([entry]) }
          : { openConnectionsUnlisted: snapshot.openConnectionsUnlisted + 1 }),
      };
    }
    case 'close': {
      const bytes = { bytesSent: snapshot.bytesSent + input.bytesSent, bytesReceived: snapshot.bytesReceived + input.bytesReceived };
      const index = snapshot.openConnections.findIndex((c) => sameConnection(c, input.id, input.via));
      if (index >= 0) {
        return {
          ...snapshot,
          ...bytes,
          connections: snapshot.connections - 1,
          openConnections: snapshot.openConnections.slice(0, index).concat(snapshot.openConnections.slice(index + 1)),
        };
      }
      // One of those not listed; or one accepted before we were told (then the count is left alone).
      if (snapshot.openConnectionsUnlisted > 0) {
        return {
          ...snapshot,
          ...bytes,
          connections: snapshot.connections - 1,
          openConnectionsUnlisted: snapshot.openConnectionsUnlisted - 1,
        };
      }
      return { ...snapshot, ...bytes };
    }
    case 'dns': {
      const { dns } = snapshot;
      return {
        ...snapshot,
        dns: {
          answered: dns.answered + (input.outcome === 'answered' ? 1 : 0),
          failed: dns.failed + (input.outcome === 'failed' ? 1 : 0),
          timeout: dns.timeout + (input.outcome === 'timeout' ? 1 : 0),
        },
      };
    }
    case 'starting':
    case 'remote-output':
    case 'firewall-ready':
    case 'remote-exit':
    case 'warning':
    case 'notice':
    case 'routes':
    case 'host':
    case 'name':
    case 'udp-open':
    case 'udp-drop':
    case 'udp-close':
      return snapshot;
  }
}

/**
 * The tunnel's status after each event: `connect(options).pipe(tunnelStatus({ remote }))`.
 * Each subscription starts afresh (connecting, since the time of subscribing). Merge STOPPING
 * into the source to say the program is stopping.
 */
export function tunnelStatus(options: StatusOptions = {}): OperatorFunction<StatusInput, StatusSnapshot> {
  const now = options.now ?? Date.now;
  const maxListed = options.maxListed ?? MAX_LISTED;
  return (source: Observable<StatusInput>) =>
    defer(() => source.pipe(scan((snapshot, input) => reduceStatus(snapshot, input, now(), maxListed), initialStatus(options, now()))));
}

/**
 * The latest snapshot, kept as events go by: what the CLI gives the status socket
 * (`statusServer$(() => tracker.current)`) while it renders the same events.
 */
export interface StatusTracker {
  readonly current: StatusSnapshot;
  record(input: StatusInput): void;
}

export function statusTracker(options: StatusOptions = {}): StatusTracker {
  const now = options.now ?? Date.now;
  const maxListed = options.maxListed ?? MAX_LISTED;
  let current = initialStatus(options, now());
  return {
    get current() {
      return current;
    },
    record(input) {
      current = reduceStatus(current, input, now(), maxListed);
    },
  };
}
