/**
 * DNS over the mux (docs/protocol.md, "DNS"): each captured query travels as one DNS_REQUEST on
 * the control channel, tagged with a request id; the server answers with one DNS_RESPONSE or one
 * DNS_FAILED carrying the same id. The DNS message itself is passed through untouched.
 *
 *   DNS_REQUEST   u32 id, target (one byte 0: the server's own resolvers; or an OPEN-style
 *                 destination: u8 family, u16 port, 4/16 address bytes), DNS message
 *   DNS_RESPONSE  u32 id, DNS message
 *   DNS_FAILED    u32 id, reason (UTF-8)
 */
import { filter, map, Observable, take, throwError, timeout } from 'rxjs';
import { DnsError, ProtocolError } from '../shared/errors.js';
import { decodeDestination, encodeDestination } from './destination.js';
import { CONTROL_CHANNEL, Command, type Destination, type Frame, frame, MAX_PAYLOAD } from './frame.js';

/** A DNS header is 12 bytes: anything shorter is not a DNS message. */
export const DNS_HEADER_SIZE = 12;
/** Longest DNS message a DNS_REQUEST carries (id and the longest target take the rest). */
export const MAX_DNS_QUERY = MAX_PAYLOAD - 4 - 19;
/** Longest DNS message a DNS_RESPONSE carries. */
export const MAX_DNS_ANSWER = MAX_PAYLOAD - 4;

export interface DnsRequest {
  readonly id: number;
  /** --to-ns: the remote nameserver to ask; absent: the server's own (its /etc/resolv.conf). */
  readonly target?: Destination;
  readonly message: Buffer;
}

/** What the server answers to a DNS_REQUEST. */
export type DnsReply =
  | { readonly kind: 'dns-response'; readonly id: number; readonly message: Buffer }
  | { readonly kind: 'dns-failed'; readonly id: number; readonly reason: string };

const u32 = (n: number): Buffer => {
  const out = Buffer.allocUnsafe(4);
  out.writeUInt32BE(n >>> 0, 0);
  return out;
};

export function encodeDnsRequest(request: DnsRequest): Frame {
  if (request.message.length > MAX_DNS_QUERY) throw new RangeError(`DNS query of ${request.message.length} bytes is too long`);
  const target = request.target ? encodeDestination(request.target) : Buffer.alloc(1);
  return frame(CONTROL_CHANNEL, Command.DNS_REQUEST, Buffer.concat([u32(request.id), target, request.message]));
}

export function decodeDnsRequest(payload: Buffer): DnsRequest {
  if (payload.length < 5) throw new ProtocolError(`malformed DNS_REQUEST: ${payload.length} bytes`);
  const id = payload.readUInt32BE(0);
  const family = payload.readUInt8(4);
  const targetLength = family === 0 ? 1 : family === 4 ? 7 : family === 6 ? 19 : -1;
  if (targetLength < 0 || payload.length < 4 + targetLength) throw new ProtocolError(`malformed DNS_REQUEST: target family ${family}`);
  const message = payload.subarray(4 + targetLength);
  if (message.length < DNS_HEADER_SIZE) throw new ProtocolError(`malformed DNS_REQUEST: a DNS message of ${message.length} bytes`);
  if (family === 0) return { id, message };
  return { id, target: decodeDestination(payload.subarray(4, 4 + targetLength)), message };
}

export function encodeDnsResponse(id: number, message: Buffer): Frame {
  if (message.length > MAX_DNS_ANSWER) throw new RangeError(`DNS answer of ${message.length} bytes is too long`);
  return frame(CONTROL_CHANNEL, Command.DNS_RESPONSE, Buffer.concat([u32(id), message]));
}

export function encodeDnsFailed(id: number, reason: string): Frame {
  return frame(CONTROL_CHANNEL, Command.DNS_FAILED, Buffer.concat([u32(id), Buffer.from(reason.slice(0, 500), 'utf8')]));
}

export function decodeDnsReply(f: Frame): DnsReply {
  const name = f.command === Command.DNS_RESPONSE ? 'DNS_RESPONSE' : 'DNS_FAILED';
  if (f.payload.length < 4) throw new ProtocolError(`malformed ${name}: ${f.payload.length} bytes`);
  const id = f.payload.readUInt32BE(0);
  const rest = f.payload.subarray(4);
  if (f.command === Command.DNS_FAILED) return { kind: 'dns-failed', id, reason: rest.toString('utf8') };
  if (rest.length < DNS_HEADER_SIZE) throw new ProtocolError(`malformed DNS_RESPONSE: a DNS message of ${rest.length} bytes`);
  return { kind: 'dns-response', id, message: rest };
}

export interface DnsQueryConfig {
  /** Sends the DNS_REQUEST frame (onto the control channel). */
  readonly send: (f: Frame) => void;
  /** Every reply the server sends; the query picks its own by id. */
  readonly replies$: Observable<DnsReply>;
  /** How long to wait for the reply. */
  readonly timeoutMs: number;
}

/**
 * One DNS query as an Observable: subscribing sends the request; it emits the answer and
 * completes, or errors with a DnsError (RXS_ERR_DNS_FAILED when the server reports failure,
 * RXS_ERR_DNS_TIMEOUT when nothing came in time). A reply that arrives after the query ended is
 * nobody's and is dropped by whoever routes replies.
 */
export function dnsQuery(request: DnsRequest, config: DnsQueryConfig): Observable<Buffer> {
  return new Observable<Buffer>((subscriber) => {
    // Listen first: a reply may come back synchronously (in tests, or a very fast loop).
    const subscription = config.replies$
      .pipe(
        filter((reply) => reply.id === request.id),
        take(1),
        map((reply) => {
          if (reply.kind === 'dns-failed') throw new DnsError('RXS_ERR_DNS_FAILED', reply.reason || 'the server found no answer');
          return reply.message;
        }),
        timeout({
          first: config.timeoutMs,
          with: () => throwError(() => new DnsError('RXS_ERR_DNS_TIMEOUT', `no answer within ${config.timeoutMs} ms`)),
        }),
      )
      .subscribe(subscriber);
    if (!subscriber.closed) config.send(encodeDnsRequest(request));
    return subscription;
  });
}

/**
 * Request ids for DNS queries: u32, counting up and wrapping, skipping ids still in use, so a
 * late reply to an old query can never be taken for a new one's while that one is in flight.
 */
export class DnsIds {
  #next = 1;
  readonly #inUse = new Set<number>();

  take(): number {
    while (this.#inUse.has(this.#next)) this.#next = (this.#next + 1) >>> 0;
    const id = this.#next;
    this.#next = (this.#next + 1) >>> 0;
    this.#inUse.add(id);
    return id;
  }

  release(id: number): void {
    this.#inUse.delete(id);
  }

  get inUse(): number {
    return this.#inUse.size;
  }
}
