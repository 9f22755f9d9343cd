/**
 * Stock-sshd mode's --dns: the remote host runs no node, so each captured query goes as DNS over
 * TCP (RFC 7766: a two-byte length before each message) through a byte stream the caller opens
 * to a remote nameserver (an ssh direct-tcpip channel). The failover mirrors the server's
 * resolveDns (remote/dns-server.ts): nameservers in order, each with the resolv.conf timeout, the
 * next one on timeout, refusal or a broken connection, `attempts` rounds, one overall budget;
 * any answer, SERVFAIL and REFUSED included, is the answer.
 *
 * One connection per nameserver carries many queries at once (pipelining), each under an id of
 * its own on that connection; answers are matched by id and question, in any order. A connection
 * the server closes with queries in flight has them sent once more on a fresh one; a connection
 * with nothing in flight is closed after `idleMs`.
 */
import { randomInt } from 'node:crypto';
import { isIP } from 'node:net';
import type { Duplex } from 'node:stream';
import createDebug from 'debug';
import dnsPacket, { type Answer } from 'dns-packet';
import {
  catchError,
  concatMap,
  defer,
  EMPTY,
  firstValueFrom,
  from,
  Observable,
  of,
  retry,
  type Subscriber,
  Subscription,
  take,
  throwError,
  throwIfEmpty,
  timeout,
} from 'rxjs';
import { DNS_BUDGET_MS } from '../../remote/dns-server.js';
import { DnsError, errorMessage } from '../../shared/errors.js';
import { parseIp } from '../../shared/ip.js';
import { formatPeer } from '../../streams/destination.js';
import { fromReadable } from '../../streams/from-readable.js';
import type { AskDns } from '../dns-capture.js';
import { DNS_HEADER, rcodeName, rcodeOf } from '../dns-message.js';

const debug = createDebug('rxshuttle:dns');

export interface TcpNameserver {
  readonly address: string;
  readonly port: number;
}

export interface TcpDnsOptions {
  /** In order of preference (from the remote /etc/resolv.conf, or --to-ns). */
  readonly nameservers: readonly TcpNameserver[];
  /** Per nameserver and attempt (resolv.conf `options timeout:N`). */
  readonly timeoutMs: number;
  /** Rounds through the list (resolv.conf `options attempts:N`). */
  readonly attempts: number;
  /** Opens a byte stream to a nameserver: emits it once open, errors if refused; unsubscribing destroys it. */
  readonly open: (nameserver: TcpNameserver) => Observable<Duplex>;
  /** Total budget for one query. */
  readonly budgetMs?: number;
  /** A connection with nothing in flight for this long is closed. */
  readonly idleMs?: number;
}

export interface TcpDnsResolver {
  /** Same contract as AskDns: one answer with the asker's id, or DnsError RXS_ERR_DNS_FAILED. */
  ask: AskDns;
  /** Closes every connection; queries in flight fail with RXS_ERR_DNS_FAILED. */
  close(): void;
}

/**
 * Queries in flight on one connection. One more fails on that nameserver at once (EBUSY), which
 * moves it on to the next, as a timeout would; the capture already caps all queries at 1024.
 */
export const MAX_IN_FLIGHT_PER_CONNECTION = 256;
const IDLE_MS = 10_000;

/** Why one nameserver gave no answer; `lost`: its connection dropped after opening (worth one re-send). */
class NameserverError extends Error {
  constructor(
    readonly code: string,
    server: TcpNameserver,
    readonly lost = false,
  ) {
    super(`${code} from ${formatPeer(server.address, server.port)} over TCP`);
  }
}

const codeOf = (err: unknown, fallback: string): string => (err as NodeJS.ErrnoException | undefined)?.code ?? fallback;

/** Bytes of the question section (after the header), or null when the message is cut. */
function questionSection(message: Buffer): Buffer | null {
  let at = DNS_HEADER;
  for (let count = message.readUInt16BE(4); count > 0; count--) {
    for (;;) {
      const length = message[at];
      if (length === undefined || (length > 63 && length < 0xc0)) return null;
      at += length >= 0xc0 ? 2 : 1 + length; // a compression pointer ends the name
      if (length === 0 || length >= 0xc0) break;
    }
    at += 4; // type, class
    if (at > message.length) return null;
  }
  return message.subarray(DNS_HEADER, at);
}

/**
 * Splits a TCP byte stream into DNS messages. Holds a list of chunks and at most one partial
 * message (so at most 2 + 65535 bytes between reads); a message within one chunk is a view of it,
 * one across chunks is copied once.
 */
export class DnsTcpFramer {
  readonly #chunks: Buffer[] = [];
  #size = 0;

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.#chunks.push(chunk);
    this.#size += chunk.length;
  }

  /** The next whole message, or null until more bytes arrive. */
  next(): Buffer | null {
    if (this.#size < 2) return null;
    const first = this.#chunks[0] as Buffer;
    const length = first.length >= 2 ? first.readUInt16BE(0) : ((first[0] as number) << 8) | (this.#chunks[1]?.[0] ?? 0);
    if (this.#size < 2 + length) return null;
    this.#take(2);
    return this.#take(length);
  }

  #take(n: number): Buffer {
    if (n === 0) return Buffer.alloc(0);
    this.#size -= n;
    const first = this.#chunks[0] as Buffer;
    if (first.length >= n) {
      if (first.length === n) this.#chunks.shift();
      else this.#chunks[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    const out = Buffer.allocUnsafe(n);
    for (let at = 0; at < n; ) {
      const chunk = this.#chunks[0] as Buffer;
      const used = chunk.copy(out, at, 0, n - at);
      at += used;
      if (used === chunk.length) this.#chunks.shift();
      else this.#chunks[0] = chunk.subarray(used);
    }
    return out;
  }
}

interface Pending {
  readonly originalId: number;
  readonly question: Buffer;
  readonly subscriber: Subscriber<Buffer>;
}

/** One DNS-over-TCP connection to one nameserver, opened at construction. */
class Connection {
  readonly #pending = new Map<number, Pending>();
  readonly #life = new Subscription();
  readonly #framer = new DnsTcpFramer();
  #stream: Duplex | null = null;
  /** Queries asked while the connection opens (bounded by the in-flight cap). */
  #unsent: Buffer[] = [];
  #gone = false;
  #idle: NodeJS.Timeout | undefined;
  #nextId = randomInt(0x10000);

  constructor(
    readonly server: TcpNameserver,
    open: TcpDnsOptions['open'],
    private readonly idleMs: number,
    /** Called once, when this connection is done for (the resolver forgets it). */
    private readonly onGone: (connection: Connection) => void,
  ) {
    debug('dns over tcp: connecting to %s', this.#name);
    this.#life.add(
      open(server).subscribe({
        next: (stream) => this.#opened(stream),
        // An error after the stream came is a lost connection (the opener may report the stream's errors).
        error: (err: unknown) => this.end(new NameserverError(codeOf(err, 'ECONNREFUSED'), server, this.#stream !== null)),
        complete: () => {
          if (!this.#stream) this.end(new NameserverError('ECONNABORTED', server));
        },
      }),
    );
  }

  get #name(): string {
    return formatPeer(this.server.address, this.server.port);
  }

  /** Sends `message` under an id unique on this connection; emits its answer with the original id. */
  query(message: Buffer, question: Buffer): Observable<Buffer> {
    return new Observable<Buffer>((subscriber) => {
      if (this.#gone) return subscriber.error(new NameserverError('ECONNRESET', this.server, true));
      if (this.#pending.size >= MAX_IN_FLIGHT_PER_CONNECTION) return subscriber.error(new NameserverError('EBUSY', this.server));
      // Counting up through all 65536 ids: a late answer to an abandoned query meets no new one soon.
      while (this.#pending.has(this.#nextId)) this.#nextId = (this.#nextId + 1) & 0xffff;
      const id = this.#nextId;
      this.#nextId = (id + 1) & 0xffff;
      const entry: Pending = { originalId: message.readUInt16BE(0), question, subscriber };
      this.#pending.set(id, entry);
      clearTimeout(this.#idle);
      const wire = Buffer.allocUnsafe(2 + message.length);
      wire.writeUInt16BE(message.length, 0);
      message.copy(wire, 2);
      wire.writeUInt16BE(id, 2);
      // No wait for 'drain': queries are small and the in-flight cap bounds what is buffered.
      if (this.#stream) this.#stream.write(wire);
      else this.#unsent.push(wire);
      return () => {
        if (this.#pending.get(id) !== entry) return;
        this.#pending.delete(id);
        this.#idleIfDone();
      };
    });
  }

  #opened(stream: Duplex): void {
    if (this.#gone) return;
    debug('dns over tcp: connected to %s', this.#name);
    this.#stream = stream;
    this.#life.add(
      fromReadable(stream).subscribe({
        next: (chunk) => this.#receive(chunk),
        error: (err: unknown) => this.end(new NameserverError(codeOf(err, 'ECONNRESET'), this.server, true)),
        complete: () => this.end(new NameserverError('ECONNRESET', this.server, true)),
      }),
    );
    for (const wire of this.#unsent.splice(0)) if (!this.#gone) stream.write(wire);
    this.#idleIfDone();
  }

  #receive(chunk: Buffer): void {
    this.#framer.push(chunk);
    for (let message = this.#framer.next(); message !== null && !this.#gone; message = this.#framer.next()) {
      if (message.length < DNS_HEADER) {
        debug('dns over tcp: %d-byte message from %s, closing', message.length, this.#name);
        return this.end(new NameserverError('EBADMSG', this.server));
      }
      const id = message.readUInt16BE(0);
      const entry = this.#pending.get(id);
      if (!entry || !this.#answers(message, entry)) {
        debug('dns over tcp: dropping an answer from %s that matches no query (id %d)', this.#name, id);
        continue;
      }
      this.#pending.delete(id);
      const answer = Buffer.from(message); // a copy: the message may be a view of a socket chunk
      answer.writeUInt16BE(entry.originalId, 0);
      entry.subscriber.next(answer);
      entry.subscriber.complete();
    }
    this.#idleIfDone();
  }

  /** A response with the query's question. An error answer may carry no question at all (FORMERR). */
  #answers(message: Buffer, entry: Pending): boolean {
    if (((message[2] as number) & 0x80) === 0) return false;
    if (message.readUInt16BE(4) === 0 && rcodeOf(message) !== 0) return true;
    return questionSection(message)?.equals(entry.question) ?? false;
  }

  #idleIfDone(): void {
    if (this.#gone || this.#pending.size > 0) return;
    clearTimeout(this.#idle);
    this.#idle = setTimeout(() => this.end(null), this.idleMs);
    this.#idle.unref();
  }

  /** Closes the connection; queries in flight fail with `error` (they are abandoned when it is null). */
  end(error: NameserverError | null): void {
    if (this.#gone) return;
    this.#gone = true;
    clearTimeout(this.#idle);
    debug('dns over tcp: closing %s (%s, %d in flight)', this.#name, error?.code ?? 'idle or closed', this.#pending.size);
    this.onGone(this);
    this.#life.unsubscribe();
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    this.#unsent = [];
    if (error) for (const entry of pending) entry.subscriber.error(error);
  }
}

/** DNS over TCP to the remote nameservers, through streams `options.open` provides. */
export function tcpDnsResolver(options: TcpDnsOptions): TcpDnsResolver {
  const connections = new Map<string, Connection>();
  const asks = new Set<Subscriber<Buffer>>();
  const budgetMs = options.budgetMs ?? DNS_BUDGET_MS;
  const plan = Array.from({ length: options.attempts }, () => options.nameservers).flat();
  let closed = false;

  const connectionTo = (server: TcpNameserver): Connection => {
    const key = formatPeer(server.address, server.port);
    let connection = connections.get(key);
    if (!connection) {
      connection = new Connection(server, options.open, options.idleMs ?? IDLE_MS, (gone) => {
        if (connections.get(key) === gone) connections.delete(key);
      });
      connections.set(key, connection);
    }
    return connection;
  };

  /** One query to one nameserver; a connection lost under it is replaced once (RFC 7766 lets servers close). */
  const exchange = (server: TcpNameserver, message: Buffer, question: Buffer): Observable<Buffer> =>
    defer(() => connectionTo(server).query(message, question)).pipe(
      retry({ count: 1, delay: (err: unknown) => (err instanceof NameserverError && err.lost && !closed ? of(0) : throwError(() => err)) }),
    );

  const resolve = (message: Buffer): Observable<Buffer> => {
    const question = message.length >= DNS_HEADER ? questionSection(message) : null;
    if (question === null) return throwError(() => new DnsError('RXS_ERR_DNS_FAILED', 'not a DNS message'));
    const deadline = Date.now() + budgetMs;
    let lastError: Error = new Error('no nameserver to ask');
    return from(plan).pipe(
      concatMap((server) =>
        defer(() => {
          const left = deadline - Date.now();
          if (left <= 0) return EMPTY;
          const timedOut = () => throwError(() => new NameserverError('ETIMEDOUT', server));
          return exchange(server, message, question).pipe(
            timeout({ first: Math.min(options.timeoutMs, left), with: timedOut }),
            catchError((err: unknown) => {
              lastError = err instanceof Error ? err : new Error(String(err));
              debug('dns over tcp: %s', lastError.message);
              return EMPTY;
            }),
          );
        }),
      ),
      take(1),
      throwIfEmpty(() => new DnsError('RXS_ERR_DNS_FAILED', lastError.message)),
    );
  };

  return {
    ask: (message) =>
      new Observable<Buffer>((subscriber) => {
        if (closed) return subscriber.error(new DnsError('RXS_ERR_DNS_FAILED', 'DNS over TCP is closed'));
        asks.add(subscriber);
        resolve(message).subscribe(subscriber); // its teardown joins the subscriber's
        return () => asks.delete(subscriber);
      }),
    close() {
      closed = true;
      // The asks first: their teardown withdraws their queries, so no connection re-sends them.
      for (const subscriber of [...asks]) subscriber.error(new DnsError('RXS_ERR_DNS_FAILED', 'DNS over TCP closed'));
      for (const connection of [...connections.values()]) connection.end(null);
    },
  };
}

export interface DnsLookups {
  /** Names of an address (PTR); rejects (ENOTFOUND, ENODATA, …) when there are none, like dns.Resolver.reverse. */
  reverse(address: string): Promise<string[]>;
  /** Addresses of a name (A, then AAAA); rejects with ENOTFOUND when there are none, like dns.lookup. */
  lookup(name: string): Promise<string[]>;
}

const lookupError = (what: string, code: string, subject: string) =>
  Object.assign(new Error(`${what} ${code} ${subject}`), { code, hostname: subject });

const canonicalName = (name: string) => name.toLowerCase().replace(/\.$/, '');

/** Records of `type` for `name` in an answer section, through the CNAME chain that section holds. */
function recordsFor(answers: readonly Answer[], name: string, type: 'A' | 'AAAA' | 'PTR'): string[] {
  const names = new Set([canonicalName(name)]);
  for (let grew = true; grew; ) {
    grew = false;
    for (const record of answers) {
      if (record.type !== 'CNAME' || !names.has(canonicalName(record.name))) continue;
      const target = canonicalName(record.data);
      if (names.has(target)) continue;
      names.add(target);
      grew = true;
    }
  }
  return answers.flatMap((record) => (record.type === type && names.has(canonicalName(record.name)) ? [record.data] : []));
}

/** The PTR name of an address: 4.3.2.1.in-addr.arpa, or nibbles under ip6.arpa. */
export function reverseName(address: string): string | null {
  const parsed = parseIp(address);
  if (parsed === null) return null;
  const bytes = [...parsed.bytes].reverse();
  if (parsed.family === 4) return `${bytes.join('.')}.in-addr.arpa`;
  return `${bytes.map((byte) => `${(byte & 0xf).toString(16)}.${(byte >> 4).toString(16)}`).join('.')}.ip6.arpa`;
}

/** Host discovery's reverse and forward lookups (HostwatchSources) asked through `ask`. */
export function dnsLookups(ask: AskDns): DnsLookups {
  const query = async (name: string, type: 'A' | 'AAAA' | 'PTR', what: string): Promise<string[]> => {
    const message = dnsPacket.encode({
      type: 'query',
      id: randomInt(0x10000),
      flags: dnsPacket.RECURSION_DESIRED,
      questions: [{ type, name }],
    });
    const answer = await firstValueFrom(ask(message));
    const rcode = rcodeOf(answer);
    if (rcode === 3) throw lookupError(what, 'ENOTFOUND', name);
    if (rcode !== 0) throw lookupError(what, `E${rcodeName(rcode)}`, name);
    let packet: dnsPacket.DecodedPacket;
    try {
      packet = dnsPacket.decode(answer);
    } catch (err) {
      throw lookupError(what, 'EBADRESP', `${name}: ${errorMessage(err)}`);
    }
    return recordsFor(packet.answers ?? [], name, type);
  };

  return {
    async reverse(address) {
      const name = reverseName(address);
      if (name === null) throw lookupError('getHostByAddr', 'EINVAL', address);
      const names = await query(name, 'PTR', 'getHostByAddr');
      if (names.length === 0) throw lookupError('getHostByAddr', 'ENODATA', address);
      return names;
    },
    async lookup(name) {
      if (isIP(name) !== 0) return [name];
      const results = await Promise.allSettled([query(name, 'A', 'getaddrinfo'), query(name, 'AAAA', 'getaddrinfo')]);
      const addresses = results.flatMap((result) => (result.status === 'fulfilled' ? result.value : []));
      if (addresses.length > 0) return addresses;
      // Nothing found is ENOTFOUND; when a query failed (SERVFAIL, no nameserver answered), that failure.
      const failure = results.find((result) => result.status === 'rejected' && codeOf(result.reason, '') !== 'ENOTFOUND');
      throw failure?.status === 'rejected' ? failure.reason : lookupError('getaddrinfo', 'ENOTFOUND', name);
    },
  };
}
