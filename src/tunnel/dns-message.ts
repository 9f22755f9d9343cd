/**
 * The little the client needs to know about the DNS messages it carries: is it a query (and
 * what does it ask, for the log), how big an answer may its sender take over UDP, the two
 * answers the client makes up itself: a truncated one (TC: "ask again over TCP") and SERVFAIL,
 * and whether an answer from the (untrusted) remote belongs to the query, with what does not
 * belong to it taken out (checkAnswer).
 * Pure functions; dns-packet parses queries, raw bytes where only the header matters, and a
 * wire-level walker for answers (see checkAnswer for why not dns-packet).
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

// ---------------------------------------------------------------------------------------------
// Checking an answer from the remote. The remote (our server, or in stock-sshd mode a nameserver
// over TCP) is not trusted: it answers what it likes for the name asked, but it must not slip in
// records about other names (a program or a caching resolver would take them), nor an answer to
// another query.
//
// Records are walked on the wire, by their RDLENGTH, as a resolver would: dns-packet finds a
// record's end from its own reading of the data (an A record with RDLENGTH 5 desyncs it, so what
// it sees is not what the asker sees), and re-encoding through it is lossy (labels with a dot or
// non-UTF-8 bytes, NSEC bitmaps with trailing zero bytes). Kept records are copied byte for byte;
// only names are rewritten (uncompressed, then compressed again where RFC 1035 allows), as
// compression pointers into dropped records would no longer hold.

const TYPE = { A: 1, NS: 2, CNAME: 5, SOA: 6, MX: 15, AAAA: 28, SRV: 33, DNAME: 39, OPT: 41, DS: 43, RRSIG: 46, NSEC: 47, NSEC3: 50, ANY: 255 } as const;
/** CNAMEs and DNAMEs followed from the question name, at most. */
export const MAX_CHAIN = 16;
/** Compression pointers followed in one name, at most (a name has at most 127 labels). */
const MAX_POINTERS = 127;
const MAX_MESSAGE = 65_535;

/** A name as read: its labels as on the wire (latin1, one char per byte) and a case-folded key. */
interface Name {
  readonly labels: readonly string[];
  /** ASCII case folded (RFC 4343), one char per byte. */
  readonly folded: readonly string[];
  readonly key: string;
}

/** ASCII-only lowering: DNS names compare case-insensitively for A–Z only. */
const foldLabel = (label: string): string => label.replace(/[A-Z]/g, (c) => String.fromCharCode(c.charCodeAt(0) | 0x20));
/** U+0100 joins labels in keys: no latin1 label can contain it. */
const SEPARATOR = '\u0100';

function makeName(labels: readonly string[]): Name {
  const folded = labels.map(foldLabel);
  return { labels, folded, key: folded.join(SEPARATOR) };
}

/** `name` is `zone` or below it. */
function isAtOrBelow(name: Name, zone: Name): boolean {
  const skip = name.folded.length - zone.folded.length;
  return skip >= 0 && zone.folded.every((label, i) => name.folded[skip + i] === label);
}

/** The bytes a name takes uncompressed. */
const wireLength = (labels: readonly string[]): number => labels.reduce((sum, label) => sum + 1 + label.length, 1);

/** The name at `at` (pointers only to earlier bytes, as RFC 1035 says), and where it ends in place. */
function readName(message: Buffer, start: number): { name: Name; end: number } | null {
  const labels: string[] = [];
  let at = start;
  let segment = start;
  let end = -1;
  let length = 1;
  let pointers = 0;
  for (;;) {
    const size = message[at];
    if (size === undefined) return null;
    if (size === 0) return { name: makeName(labels), end: end < 0 ? at + 1 : end };
    if ((size & 0xc0) === 0xc0) {
      const low = message[at + 1];
      const target = ((size & 0x3f) << 8) | (low ?? 0);
      if (low === undefined || target >= segment || ++pointers > MAX_POINTERS) return null;
      if (end < 0) end = at + 2;
      at = segment = target;
      continue;
    }
    if ((size & 0xc0) !== 0) return null;
    length += 1 + size;
    if (length > 255 || at + 1 + size > message.length) return null;
    labels.push(message.toString('latin1', at + 1, at + 1 + size));
    at += 1 + size;
  }
}

/**
 * The layout of the RDATA of the types that hold names (RFC 1035 and the ones RFC 3597 §4 says
 * may be found compressed), and of A and AAAA: bytes of a fixed size, a name ('name', or
 * 'cname' where RFC 1035 allows compression), a character-string, or the rest. Other types'
 * RDATA is copied as it is.
 */
type Field = number | 'cname' | 'name' | 'string' | 'rest';
const LAYOUTS: ReadonlyMap<number, readonly Field[]> = new Map<number, readonly Field[]>([
  [TYPE.A, [4]],
  [TYPE.AAAA, [16]],
  ...[TYPE.NS, 3, 4, TYPE.CNAME, 7, 8, 9, 12].map((type): [number, Field[]] => [type, ['cname']]),
  [TYPE.SOA, ['cname', 'cname', 20]],
  [14, ['cname', 'cname']], // MINFO
  [TYPE.MX, [2, 'cname']],
  [17, ['name', 'name']], // RP
  [18, [2, 'name']], // AFSDB
  [21, [2, 'name']], // RT
  [24, [18, 'name', 'rest']], // SIG
  [26, [2, 'name', 'name']], // PX
  [30, ['name', 'rest']], // NXT
  [TYPE.SRV, [6, 'name']],
  [35, [4, 'string', 'string', 'string', 'name']], // NAPTR
  [36, [2, 'name']], // KX
  [TYPE.DNAME, ['name']],
  [TYPE.RRSIG, [18, 'name', 'rest']],
  [TYPE.NSEC, ['name', 'rest']],
]);

/** A piece of RDATA: bytes copied as they are, or a name (written anew). */
type Piece = { readonly from: number; readonly to: number } | { readonly name: Name; readonly compress: boolean };

interface WireRecord {
  readonly section: 'answer' | 'authority' | 'additional';
  readonly owner: Name;
  readonly type: number;
  /** Offset of TYPE, CLASS, TTL (8 bytes). */
  readonly fixed: number;
  readonly rdata: number;
  readonly rdlength: number;
  /** The RDATA in pieces, per the type's layout; null when it does not fit the layout (malformed). */
  readonly pieces: readonly Piece[] | null;
  /** For an RRSIG, the type it covers; otherwise -1. */
  readonly covered: number;
}

interface WireQuestion {
  readonly name: Name;
  readonly type: number;
  readonly klass: number;
}

function readPieces(message: Buffer, type: number, start: number, end: number): Piece[] | null {
  const layout = LAYOUTS.get(type);
  if (layout === undefined) return [{ from: start, to: end }];
  const pieces: Piece[] = [];
  let at = start;
  for (const field of layout) {
    if (typeof field === 'number' || field === 'string' || field === 'rest') {
      const size = field === 'rest' ? end - at : field === 'string' ? 1 + (message[at] ?? 0) : field;
      if (at + size > end) return null;
      pieces.push({ from: at, to: at + size });
      at += size;
    } else {
      const read = readName(message, at);
      if (read === null || read.end > end) return null;
      pieces.push({ name: read.name, compress: field === 'cname' });
      at = read.end;
    }
  }
  return at === end ? pieces : null;
}

/** The names in a record's RDATA, in order (empty when it has none or is malformed). */
const namesIn = (record: WireRecord): Name[] =>
  (record.pieces ?? []).flatMap((piece) => ('name' in piece ? [piece.name] : []));

function readQuestions(message: Buffer): { questions: WireQuestion[]; end: number } | null {
  if (message.length < DNS_HEADER) return null;
  const questions: WireQuestion[] = [];
  let at = DNS_HEADER;
  for (let i = message.readUInt16BE(4); i > 0; i--) {
    const read = readName(message, at);
    if (read === null || read.end + 4 > message.length) return null;
    questions.push({ name: read.name, type: message.readUInt16BE(read.end), klass: message.readUInt16BE(read.end + 2) });
    at = read.end + 4;
  }
  return { questions, end: at };
}

/**
 * The records after the questions. A message cut in the middle of a record is unreadable, unless
 * it says it was cut (TC): then `missing` counts the records it claims and does not hold.
 */
function readRecords(message: Buffer, start: number): { records: WireRecord[]; missing: number } | null {
  const sections = [
    ['answer', message.readUInt16BE(6)],
    ['authority', message.readUInt16BE(8)],
    ['additional', message.readUInt16BE(10)],
  ] as const;
  const claimed = sections.reduce((sum, [, count]) => sum + count, 0);
  const truncated = ((message[2] as number) & 0x02) !== 0;
  const records: WireRecord[] = [];
  let at = start;
  for (const [section, count] of sections) {
    for (let i = 0; i < count; i++) {
      const read = readName(message, at);
      const fixed = read?.end ?? 0;
      const rdata = fixed + 10;
      const rdlength = read !== null && rdata <= message.length ? message.readUInt16BE(fixed + 8) : -1;
      if (read === null || rdlength < 0 || rdata + rdlength > message.length) {
        return truncated ? { records, missing: claimed - records.length } : null;
      }
      const type = message.readUInt16BE(fixed);
      const pieces = readPieces(message, type, rdata, rdata + rdlength);
      const covered = type === TYPE.RRSIG && pieces !== null ? message.readUInt16BE(rdata) : -1;
      records.push({ section, owner: read.name, type, fixed, rdata, rdlength, pieces, covered });
      at = rdata + rdlength;
    }
  }
  return { records, missing: 0 };
}

/** The names the answer may be about: the question names and the CNAME/DNAME chains from them. */
function followChains(questions: readonly WireQuestion[], records: readonly WireRecord[], keep: boolean[]): {
  chain: Map<string, Name>;
  dnameOwners: Set<string>;
} {
  const chain = new Map<string, Name>();
  const dnameOwners = new Set<string>();
  const answers = [...records.entries()].filter(([, r]) => r.section === 'answer' && r.pieces !== null);
  const cnames = new Map<string, number>();
  for (const [i, r] of answers) if (r.type === TYPE.CNAME && !cnames.has(r.owner.key)) cnames.set(r.owner.key, i);
  const dnames = answers.filter(([, r]) => r.type === TYPE.DNAME);
  for (const question of questions) {
    let current = question.name;
    chain.set(current.key, current);
    for (let hop = 0; hop < MAX_CHAIN; hop++) {
      let next: Name | undefined;
      const cname = question.type === TYPE.CNAME ? undefined : cnames.get(current.key);
      if (cname !== undefined) {
        keep[cname] = true;
        next = namesIn(records[cname] as WireRecord)[0];
      }
      if (question.type !== TYPE.DNAME) {
        for (const [i, dname] of dnames) {
          if (dname.owner.folded.length >= current.folded.length || !isAtOrBelow(current, dname.owner)) continue;
          keep[i] = true;
          dnameOwners.add(dname.owner.key);
          const target = namesIn(dname)[0] as Name;
          const labels = [...current.labels.slice(0, current.labels.length - dname.owner.labels.length), ...target.labels];
          // Without the synthesized CNAME (RFC 6672 says it is there), follow the DNAME itself.
          if (next === undefined && wireLength(labels) <= 255) next = makeName(labels);
        }
      }
      if (next === undefined || chain.has(next.key)) break; // the end, or a loop
      chain.set(next.key, next);
      current = next;
    }
  }
  return { chain, dnameOwners };
}

/**
 * Which records belong to the questions: answers about the chain's names; SOA, NS and DS of a
 * zone above them (negative caching, referrals) with the DNSSEC records of such a zone
 * (RRSIG, NSEC, NSEC3: the proofs a validating asker checks, inert for the others); addresses
 * of the NS/MX/SRV targets kept (glue); the first OPT.
 */
function chooseRecords(questions: readonly WireQuestion[], records: readonly WireRecord[]): boolean[] {
  const keep = records.map(() => false);
  const { chain, dnameOwners } = followChains(questions, records, keep);
  const names = [...chain.values()];
  const isAboveChain = (zone: Name) => names.some((name) => isAtOrBelow(name, zone));
  const asksCname = questions.some((q) => q.type === TYPE.CNAME || q.type === TYPE.ANY);
  const zones: Name[] = [];
  const glue = new Set<string>();
  for (const [i, r] of records.entries()) {
    if (r.pieces === null || (r.type === TYPE.OPT && r.section !== 'additional')) continue;
    if (r.section === 'answer') {
      if (chain.has(r.owner.key)) keep[i] = keep[i] || r.type !== TYPE.CNAME || asksCname;
      else if (dnameOwners.has(r.owner.key)) keep[i] = keep[i] || r.covered === TYPE.DNAME;
    } else if (r.section === 'authority') {
      if ((r.type === TYPE.SOA || r.type === TYPE.NS || r.type === TYPE.DS) && isAboveChain(r.owner)) {
        keep[i] = true;
        if (r.type !== TYPE.DS) zones.push(r.owner);
      }
    }
    if (r.type === TYPE.RRSIG && r.section === 'answer' && keep[i]) {
      const signer = namesIn(r)[0] as Name;
      if (isAboveChain(signer)) zones.push(signer);
    }
    if (keep[i] && (r.type === TYPE.NS || r.type === TYPE.MX || r.type === TYPE.SRV)) glue.add((namesIn(r)[0] as Name).key);
  }
  let opt = false;
  for (const [i, r] of records.entries()) {
    if (r.pieces === null) continue;
    if (r.section === 'authority' && (r.type === TYPE.RRSIG || r.type === TYPE.NSEC || r.type === TYPE.NSEC3)) {
      keep[i] = zones.some((zone) => isAtOrBelow(r.owner, zone));
    } else if (r.section === 'additional') {
      if (r.type === TYPE.OPT) {
        keep[i] = !opt && r.owner.labels.length === 0;
        opt = true;
      } else if (r.type === TYPE.A || r.type === TYPE.AAAA || r.type === TYPE.RRSIG) {
        keep[i] = glue.has(r.owner.key);
      }
    }
  }
  return keep;
}

/** Writes a message of at most 65535 bytes, compressing names against those written before. */
class MessageWriter {
  readonly #out = Buffer.alloc(MAX_MESSAGE);
  readonly #names = new Map<string, number>();
  #at = 0;
  tooBig = false;

  get length(): number {
    return this.#at;
  }

  #room(size: number): boolean {
    if (this.#at + size > MAX_MESSAGE) this.tooBig = true;
    return !this.tooBig;
  }

  bytes(source: Buffer, from: number, to: number): void {
    if (!this.#room(to - from)) return;
    this.#at += source.copy(this.#out, this.#at, from, to);
  }

  u16(value: number): void {
    if (!this.#room(2)) return;
    this.#out.writeUInt16BE(value, this.#at);
    this.#at += 2;
  }

  /** Overwrites two bytes written before. */
  patch16(at: number, value: number): void {
    if (!this.tooBig) this.#out.writeUInt16BE(value, at);
  }

  /** `compress`: may point to an earlier name, and may be pointed to (RFC 1035 positions only). */
  name(name: Name, compress: boolean): void {
    const { labels } = name;
    for (let i = 0; i < labels.length; i++) {
      const suffix = labels.slice(i).join(SEPARATOR);
      const earlier = compress ? this.#names.get(suffix) : undefined;
      if (earlier !== undefined) return this.u16(0xc000 | earlier);
      if (compress && this.#at < 0x4000) this.#names.set(suffix, this.#at);
      const label = labels[i] as string;
      if (!this.#room(1 + label.length)) return;
      this.#out[this.#at] = label.length;
      this.#at += 1 + this.#out.write(label, this.#at + 1, 'latin1');
    }
    if (this.#room(1)) this.#out[this.#at++] = 0;
  }

  done(): Buffer {
    return Buffer.from(this.#out.subarray(0, this.#at));
  }
}

/** `answer` with only the kept records (header flags and rcode as they were, counts updated). */
function rebuild(answer: Buffer, questions: readonly WireQuestion[], records: readonly WireRecord[], keep: readonly boolean[]): Buffer | null {
  const w = new MessageWriter();
  w.bytes(answer, 0, 4);
  w.u16(questions.length);
  for (const section of ['answer', 'authority', 'additional'] as const) {
    w.u16(records.filter((r, i) => keep[i] && r.section === section).length);
  }
  for (const q of questions) {
    w.name(q.name, true);
    w.u16(q.type);
    w.u16(q.klass);
  }
  for (const [i, r] of records.entries()) {
    if (!keep[i] || r.pieces === null) continue;
    w.name(r.owner, true);
    w.bytes(answer, r.fixed, r.fixed + 8);
    const lengthAt = w.length;
    w.u16(0);
    for (const piece of r.pieces) {
      if ('name' in piece) w.name(piece.name, piece.compress);
      else w.bytes(answer, piece.from, piece.to);
    }
    w.patch16(lengthAt, w.length - lengthAt - 2);
  }
  return w.tooBig ? null : w.done();
}

/** What became of an answer: passed on (with `dropped` records taken out), or rejected and why. */
export type CheckedAnswer =
  | { readonly kind: 'answer'; readonly answer: Buffer; readonly dropped: number }
  | { readonly kind: 'rejected'; readonly reason: string };

/**
 * Checks an answer from the remote against the query it answers. Rejected: not a response, an
 * id or question section (names compared case-insensitively, type and class equal) other than
 * the query's (an error rcode without a question section passes, with no records but OPT), or
 * unreadable. Otherwise only what belongs to the question is kept:
 * - answer section: records about the question name and the names its CNAME/DNAME chain leads
 *   to (followed up to MAX_CHAIN steps, loops stopped), a DNAME on the way with its RRSIG;
 * - authority: SOA, NS and DS of a zone at or above those names, and RRSIG/NSEC/NSEC3 within
 *   such a zone or the zone whose RRSIG signs a kept answer (denial and wildcard proofs);
 * - additional: A/AAAA (and RRSIG) of the targets of kept NS, MX and SRV records, and the first
 *   OPT as it is.
 * Records whose data does not fit their type (an A of 5 bytes, a broken name) are dropped too.
 * Header flags (TC included) and rcode stay. With nothing to drop, `answer` is the very same
 * Buffer; otherwise a new message in which kept records keep their bytes and only names are
 * written anew. Work is linear in the size of the answer (at most 65535 bytes).
 */
export function checkAnswer(query: Buffer, answer: Buffer): CheckedAnswer {
  const asked = readQuestions(query);
  if (asked === null) return { kind: 'rejected', reason: 'unreadable query' };
  if (answer.length < DNS_HEADER || answer.length > MAX_MESSAGE) return { kind: 'rejected', reason: 'unreadable answer' };
  if (((answer[2] as number) & 0x80) === 0) return { kind: 'rejected', reason: 'answer that is no response' };
  if (answer.readUInt16BE(0) !== query.readUInt16BE(0)) return { kind: 'rejected', reason: 'answer with another id' };
  const answered = readQuestions(answer);
  if (answered === null) return { kind: 'rejected', reason: 'unreadable answer' };
  const same =
    answered.questions.length === asked.questions.length &&
    answered.questions.every((q, i) => {
      const a = asked.questions[i] as WireQuestion;
      return q.name.key === a.name.key && q.type === a.type && q.klass === a.klass;
    });
  // An error (FORMERR, REFUSED …) may come without the question: it then answers nothing.
  const bareError = answered.questions.length === 0 && rcodeOf(answer) !== 0;
  if (!same && !bareError) return { kind: 'rejected', reason: 'answer for another question' };
  const read = readRecords(answer, answered.end);
  if (read === null) return { kind: 'rejected', reason: 'unreadable answer' };
  const keep = chooseRecords(answered.questions, read.records);
  const dropped = read.missing + keep.filter((k) => !k).length;
  if (dropped === 0) return { kind: 'answer', answer, dropped };
  const rebuilt = rebuild(answer, answered.questions, read.records, keep);
  return rebuilt === null ? { kind: 'rejected', reason: 'answer too big once filtered' } : { kind: 'answer', answer: rebuilt, dropped };
}

/** checkAnswer's answer, or null when the answer is rejected (the asker gets SERVFAIL). */
export function sanitizeAnswer(query: Buffer, answer: Buffer): Buffer | null {
  const checked = checkAnswer(query, answer);
  return checked.kind === 'answer' ? checked.answer : null;
}
