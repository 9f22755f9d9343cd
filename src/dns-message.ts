/**
 * The little the client needs to know about the DNS messages it carries: is it a query (and
 * what does it ask, for the log), how big an answer may its sender take over UDP, and the two
 * answers the client makes up itself: a truncated one (TC: "ask again over TCP") and SERVFAIL.
 * Pure functions; dns-packet parses, raw bytes where only the header matters.
 */
import dnsPacket, { type OptAnswer } from 'dns-packet';

export const DNS_HEADER = 12;
/** Without EDNS, a UDP answer may have at most 512 bytes (RFC 1035). */
export const CLASSIC_UDP_LIMIT = 512;
/** The largest UDP payload over IPv4. */
const MAX_UDP = 65_507;

export interface QueryInfo {
  readonly id: number;
  /** `name TYPE` of the first question, for the log. */
  readonly question: string;
  /** The largest UDP answer the sender takes: its EDNS buffer size, at least 512. */
  readonly udpLimit: number;
}

/** What a captured message asks, or null when it is no query we forward (a response, or unreadable). */
export function inspectQuery(message: Buffer): QueryInfo | null {
  if (message.length < DNS_HEADER || ((message[2] as number) & 0x80) !== 0) return null;
  let packet: dnsPacket.DecodedPacket;
  try {
    packet = dnsPacket.decode(message);
  } catch {
    return null;
  }
  const first = packet.questions?.[0];
  const question = first ? `${first.name || '.'} ${first.type}` : '(no question)';
  const opt = packet.additionals?.find((record): record is OptAnswer => record.type === 'OPT');
  const udpLimit = Math.min(MAX_UDP, Math.max(CLASSIC_UDP_LIMIT, opt?.udpPayloadSize ?? CLASSIC_UDP_LIMIT));
  return { id: message.readUInt16BE(0), question, udpLimit };
}

/** Where the question section ends (after `count` questions), or null if the message is cut. */
function questionsEnd(message: Buffer, count: number): number | null {
  let at = DNS_HEADER;
  for (let i = 0; i < count; i++) {
    for (;;) {
      const length = message[at];
      if (length === undefined) return null;
      if ((length & 0xc0) === 0xc0) {
        at += 2; // a compression pointer ends the name
        break;
      }
      if ((length & 0xc0) !== 0) return null;
      at += 1 + length;
      if (length === 0) break;
    }
    at += 4; // type, class
    if (at > message.length) return null;
  }
  return at;
}

/** Header and question section of `message`, with new flag bytes and no records. */
function headerAndQuestions(message: Buffer, flags2: number, flags3: number): Buffer {
  const qdcount = message.readUInt16BE(4);
  const end = questionsEnd(message, qdcount);
  const out = Buffer.from(message.subarray(0, end ?? DNS_HEADER));
  out[2] = flags2;
  out[3] = flags3;
  out.writeUInt16BE(end === null ? 0 : qdcount, 4);
  out.writeUInt32BE(0, 6); // ancount, nscount
  out.writeUInt16BE(0, 10); // arcount
  return out;
}

/**
 * The answer as a UDP datagram for a sender that takes at most `limit` bytes: unchanged when it
 * fits, otherwise cut to header and question with TC set, so the sender asks again over TCP
 * (which the firewall also hands to us).
 */
export function fitForUdp(answer: Buffer, limit: number): Buffer {
  if (answer.length <= limit || answer.length < DNS_HEADER) return answer;
  return headerAndQuestions(answer, (answer[2] as number) | 0x02, answer[3] as number);
}

/** A SERVFAIL answer to `query` (same id, opcode, RD and question), with recursion available. */
export function servfail(query: Buffer): Buffer {
  return headerAndQuestions(query, 0x80 | ((query[2] as number) & 0x79), 0x80 | 2);
}

/** The response code of an answer (0 NOERROR, 2 SERVFAIL, 3 NXDOMAIN …). */
export const rcodeOf = (answer: Buffer): number => (answer.length >= DNS_HEADER ? (answer[3] as number) & 0x0f : -1);

const RCODES = ['NOERROR', 'FORMERR', 'SERVFAIL', 'NXDOMAIN', 'NOTIMP', 'REFUSED'];
export const rcodeName = (rcode: number): string => RCODES[rcode] ?? `RCODE${rcode}`;
