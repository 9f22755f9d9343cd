import dnsPacket from 'dns-packet';
import { describe, expect, it } from 'vitest';
import { checkAnswer, fitForUdp, inspectQuery, MAX_CHAIN, rcodeName, rcodeOf, sanitizeAnswer, servfail } from '../../src/tunnel/dns-message.js';

const DNS_HEADER_SIZE = 12;

const query = (extra: Partial<dnsPacket.Packet> = {}) =>
  dnsPacket.encode({ type: 'query', id: 0xbeef, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type: 'A', name: 'target.lab' }], ...extra });

const bigAnswer = () =>
  dnsPacket.encode({
    type: 'response',
    id: 0xbeef,
    flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE | dnsPacket.AUTHORITATIVE_ANSWER,
    questions: [{ type: 'TXT', name: 'big.lab' }],
    answers: [{ type: 'TXT', name: 'big.lab', data: ['a'.repeat(250), 'b'.repeat(250), 'c'.repeat(250)] }],
  });

describe('DNS messages', () => {
  it('inspectQuery: id, question and the UDP size the asker takes (512, or its EDNS size)', () => {
    expect(inspectQuery(query())).toEqual({ id: 0xbeef, question: 'target.lab A', udpLimit: 512 });
    const edns = query({ additionals: [{ type: 'OPT', name: '.', udpPayloadSize: 1232 } as dnsPacket.Answer] });
    expect(inspectQuery(edns)).toMatchObject({ udpLimit: 1232 });
    const tiny = query({ additionals: [{ type: 'OPT', name: '.', udpPayloadSize: 100 } as dnsPacket.Answer] });
    expect(inspectQuery(tiny)).toMatchObject({ udpLimit: 512 });
  });

  it('inspectQuery: responses and garbage are not queries', () => {
    expect(inspectQuery(bigAnswer())).toBeNull();
    expect(inspectQuery(Buffer.from('hello'))).toBeNull();
    expect(inspectQuery(Buffer.concat([query().subarray(0, 14), Buffer.from([63])]))).toBeNull();
  });

  it('fitForUdp: unchanged when it fits; otherwise header and question with TC set', () => {
    const answer = bigAnswer();
    expect(answer.length).toBeGreaterThan(512);
    expect(fitForUdp(answer, 4096)).toBe(answer);
    const cut = fitForUdp(answer, 512);
    expect(cut.length).toBeLessThanOrEqual(512);
    const decoded = dnsPacket.decode(cut);
    expect(decoded).toMatchObject({ id: 0xbeef, flag_tc: true, flag_qr: true, flag_aa: true, questions: [{ name: 'big.lab', type: 'TXT' }], answers: [] });
  });

  it('servfail: same id and question, rcode 2, recursion desired and available', () => {
    const answer = servfail(query());
    const decoded = dnsPacket.decode(answer);
    expect(decoded).toMatchObject({ id: 0xbeef, flag_qr: true, flag_rd: true, flag_ra: true, rcode: 'SERVFAIL', questions: [{ name: 'target.lab', type: 'A' }] });
    expect(rcodeOf(answer)).toBe(2);
    expect(rcodeName(rcodeOf(answer))).toBe('SERVFAIL');
    expect(rcodeName(9)).toBe('RCODE9');
  });
});

// Answers from the remote are not trusted (issue 17, finding 10): an answer to another query is
// refused, and records that do not belong to the question are taken out.
describe('checkAnswer / sanitizeAnswer', () => {
  const ID = 0x4242;
  const RESPONSE_FLAGS = dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE;
  const ask = (name = 'foo.example', type: dnsPacket.RecordType = 'A', extra: Partial<dnsPacket.Packet> = {}) =>
    dnsPacket.encode({ type: 'query', id: ID, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type, name }], ...extra });
  const respond = (packet: Partial<dnsPacket.Packet>, name = 'foo.example', type: dnsPacket.RecordType = 'A') =>
    dnsPacket.encode({ type: 'response', id: ID, flags: RESPONSE_FLAGS, questions: [{ type, name }], ...packet });
  const a = (name: string, data: string): dnsPacket.Answer => ({ type: 'A', name, ttl: 300, data });
  const cname = (name: string, data: string): dnsPacket.Answer => ({ type: 'CNAME', name, ttl: 300, data });
  const owners = (records: dnsPacket.Answer[] | undefined) => (records ?? []).map((r) => `${r.name} ${r.type}`);
  /** Sanitizes and decodes; fails the test when the answer is rejected. */
  const sanitized = (query: Buffer, answer: Buffer) => {
    const out = sanitizeAnswer(query, answer);
    expect(out).not.toBeNull();
    return dnsPacket.decode(out as Buffer);
  };
  const soa = (name: string): dnsPacket.Answer => ({
    type: 'SOA',
    name,
    ttl: 300,
    data: { mname: `ns1.${name}`, rname: `hostmaster.${name}`, serial: 1, refresh: 2, retry: 3, expire: 4, minimum: 60 },
  });

  it('the finding: an answer about www.bank.example to a question about foo.example loses every record', () => {
    const answer = respond({
      answers: [a('www.bank.example', '6.6.6.6')],
      authorities: [{ type: 'NS', name: 'bank.example', ttl: 300, data: 'ns.evil.example' }],
      additionals: [a('www.bank.example', '6.6.6.7'), a('ns.evil.example', '6.6.6.8')],
    });
    const checked = checkAnswer(ask(), answer);
    expect(checked).toMatchObject({ kind: 'answer', dropped: 4 });
    expect(sanitized(ask(), answer)).toMatchObject({
      id: ID,
      flag_qr: true,
      flag_rd: true,
      flag_ra: true,
      rcode: 'NOERROR',
      questions: [{ name: 'foo.example', type: 'A' }],
      answers: [],
      authorities: [],
      additionals: [],
    });
  });

  it('keeps the answer about the question name and drops the records slipped in beside it', () => {
    const out = sanitized(
      ask(),
      respond({ answers: [a('foo.example', '10.0.0.1'), a('www.bank.example', '6.6.6.6')], additionals: [a('www.bank.example', '6.6.6.7')] }),
    );
    expect(out.answers).toEqual([expect.objectContaining({ name: 'foo.example', type: 'A', data: '10.0.0.1', ttl: 300 })]);
    expect(out.additionals).toEqual([]);
  });

  it('follows the CNAME chain: foo → bar → A is kept, records off the chain are not', () => {
    const out = sanitized(
      ask(),
      respond({
        answers: [cname('foo.example', 'bar.example'), cname('bar.example', 'baz.other'), a('baz.other', '10.0.0.2'), a('qux.other', '6.6.6.6')],
      }),
    );
    expect(owners(out.answers)).toEqual(['foo.example CNAME', 'bar.example CNAME', 'baz.other A']);
  });

  it('a CNAME loop ends the chain (its records are kept, nothing else); a second CNAME at the same name is dropped', () => {
    const answer = respond({
      answers: [cname('foo.example', 'bar.example'), cname('bar.example', 'foo.example'), cname('foo.example', 'www.bank.example'), a('www.bank.example', '6.6.6.6')],
    });
    expect(checkAnswer(ask(), answer)).toMatchObject({ kind: 'answer', dropped: 2 });
    expect(owners(sanitized(ask(), answer).answers)).toEqual(['foo.example CNAME', 'bar.example CNAME']);
  });

  it(`the chain is followed ${MAX_CHAIN} steps at most`, () => {
    const hops = (n: number) => Array.from({ length: n }, (_, i) => cname(`h${i}.example`, `h${i + 1}.example`));
    const full = respond({ answers: [...hops(MAX_CHAIN), a(`h${MAX_CHAIN}.example`, '10.0.0.3')] }, 'h0.example');
    expect(sanitizeAnswer(ask('h0.example'), full)).toBe(full);
    const long = respond({ answers: [...hops(MAX_CHAIN + 3), a(`h${MAX_CHAIN + 3}.example`, '10.0.0.3')] }, 'h0.example');
    const out = sanitized(ask('h0.example'), long);
    expect(out.answers).toHaveLength(MAX_CHAIN);
    expect(out.answers?.at(-1)).toMatchObject({ name: `h${MAX_CHAIN - 1}.example`, type: 'CNAME', data: `h${MAX_CHAIN}.example` });
  });

  it('asking for the CNAME itself: the CNAME is the answer, its target is not followed', () => {
    const out = sanitized(ask('foo.example', 'CNAME'), respond({ answers: [cname('foo.example', 'bar.example'), a('bar.example', '10.0.0.1')] }, 'foo.example', 'CNAME'));
    expect(owners(out.answers)).toEqual(['foo.example CNAME']);
  });

  it('DNAME: the DNAME (with its RRSIG), the synthesized CNAME and the target are kept; other records at the DNAME owner are not', () => {
    const rrsig: dnsPacket.Answer = {
      type: 'RRSIG',
      name: 'foo.example',
      ttl: 300,
      data: { typeCovered: 'DNAME', algorithm: 13, labels: 2, originalTTL: 300, expiration: 2, inception: 1, keyTag: 7, signersName: 'example', signature: Buffer.from('sig') },
    };
    const answer = respond(
      {
        answers: [
          { type: 'DNAME', name: 'foo.example', ttl: 300, data: 'bar.other' },
          rrsig,
          cname('www.foo.example', 'www.bar.other'),
          a('www.bar.other', '10.0.0.4'),
          a('foo.example', '6.6.6.6'),
        ],
      },
      'www.foo.example',
    );
    expect(owners(sanitized(ask('www.foo.example'), answer).answers)).toEqual([
      'foo.example DNAME',
      'foo.example RRSIG',
      'www.foo.example CNAME',
      'www.bar.other A',
    ]);
    // Without the synthesized CNAME, the DNAME itself leads on.
    const bare = respond({ answers: [{ type: 'DNAME', name: 'foo.example', ttl: 300, data: 'bar.other' }, a('www.bar.other', '10.0.0.4')] }, 'www.foo.example');
    expect(sanitizeAnswer(ask('www.foo.example'), bare)).toBe(bare);
  });

  it('NXDOMAIN with the SOA of a zone above the name keeps it (negative caching); unrelated authority goes', () => {
    const answer = respond({
      flags: RESPONSE_FLAGS | dnsPacket.AUTHORITATIVE_ANSWER | 3,
      authorities: [soa('example'), soa('bank.example'), { type: 'NS', name: 'bank.example', ttl: 300, data: 'ns.evil.other' }, a('foo.example', '6.6.6.6')],
    });
    const out = sanitized(ask(), answer);
    expect(out).toMatchObject({ rcode: 'NXDOMAIN', flag_aa: true, answers: [] });
    expect(owners(out.authorities)).toEqual(['example SOA']);
    expect(rcodeOf(sanitizeAnswer(ask(), answer) as Buffer)).toBe(3);
  });

  it('the SOA of the zone of the chain target is kept; a root SOA too (every name is below it)', () => {
    const answer = respond({ flags: RESPONSE_FLAGS | 3, answers: [cname('foo.example', 'gone.other')], authorities: [soa('other'), soa('')] });
    expect(sanitizeAnswer(ask(), answer)).toBe(answer);
  });

  it('DNSSEC proofs in the authority section stay within the zone of a kept SOA or of the signer of the answer', () => {
    const sig = (name: string, covered: string, signer: string): dnsPacket.Answer => ({
      type: 'RRSIG',
      name,
      ttl: 300,
      data: { typeCovered: covered, algorithm: 13, labels: 2, originalTTL: 300, expiration: 2, inception: 1, keyTag: 7, signersName: signer, signature: Buffer.from('sig') },
    });
    const nsec = (name: string, next: string): dnsPacket.Answer => ({ type: 'NSEC', name, ttl: 300, data: { nextDomain: next, rrtypes: ['A', 'RRSIG', 'NSEC'] } });
    // NXDOMAIN: SOA of example, its RRSIG, NSECs of example; an NSEC of another zone goes.
    const nx = sanitized(
      ask(),
      respond({
        flags: RESPONSE_FLAGS | 3,
        authorities: [soa('example'), sig('example', 'SOA', 'example'), nsec('a.example', 'g.example'), sig('a.example', 'NSEC', 'example'), nsec('bank.other', 'x.other')],
      }),
    );
    expect(owners(nx.authorities)).toEqual(['example SOA', 'example RRSIG', 'a.example NSEC', 'a.example RRSIG']);
    // A wildcard answer: no SOA, the NSEC proving no closer name is within the signer's zone.
    const wild = sanitized(
      ask(),
      respond({ answers: [a('foo.example', '10.0.0.1'), sig('foo.example', 'A', 'example')], authorities: [nsec('e.example', 'g.example'), nsec('bank.other', 'x.other')] }),
    );
    expect(owners(wild.authorities)).toEqual(['e.example NSEC']);
  });

  it('glue: addresses of kept NS, MX and SRV targets stay, other additional records go', () => {
    const mx = sanitized(
      ask('foo.example', 'MX'),
      respond(
        {
          answers: [{ type: 'MX', name: 'foo.example', ttl: 300, data: { preference: 10, exchange: 'mail.other' } }],
          authorities: [{ type: 'NS', name: 'example', ttl: 300, data: 'ns1.example' }],
          additionals: [
            a('mail.other', '10.0.0.5'),
            { type: 'AAAA', name: 'mail.other', ttl: 300, data: 'fd00::5' },
            a('ns1.example', '10.0.0.53'),
            a('www.bank.example', '6.6.6.6'),
            { type: 'TXT', name: 'mail.other', ttl: 300, data: 'x' },
          ],
        },
        'foo.example',
        'MX',
      ),
    );
    expect(owners(mx.additionals)).toEqual(['mail.other A', 'mail.other AAAA', 'ns1.example A']);
    const srv = sanitized(
      ask('_sip._tcp.foo.example', 'SRV'),
      respond(
        {
          answers: [{ type: 'SRV', name: '_sip._tcp.foo.example', ttl: 300, data: { priority: 1, weight: 1, port: 5060, target: 'sip.foo.example' } }],
          additionals: [a('sip.foo.example', '10.0.0.6'), a('foo.example', '6.6.6.6')],
        },
        '_sip._tcp.foo.example',
        'SRV',
      ),
    );
    expect(owners(srv.additionals)).toEqual(['sip.foo.example A']);
  });

  it('OPT (EDNS) is kept byte for byte, options, DO bit and extended rcode included; a second OPT goes', () => {
    const opt = {
      type: 'OPT',
      name: '.',
      udpPayloadSize: 1232,
      extendedRcode: 1,
      flags: dnsPacket.DNSSEC_OK,
      options: [{ code: 10, data: Buffer.alloc(24, 7) }, { code: 15, data: Buffer.from([0, 18, 0x68, 0x69]) }],
    } as unknown as dnsPacket.Answer;
    const optBytes = dnsPacket.encode({ type: 'response', id: 0, additionals: [opt] }).subarray(DNS_HEADER_SIZE);
    const answer = respond({ answers: [a('foo.example', '10.0.0.1'), a('evil.example', '6.6.6.6')], additionals: [opt, opt] });
    const out = sanitizeAnswer(ask(), answer) as Buffer;
    expect(out.subarray(out.length - optBytes.length)).toEqual(optBytes);
    expect(dnsPacket.decode(out)).toMatchObject({ answers: [{ name: 'foo.example' }], additionals: [{ type: 'OPT', udpPayloadSize: 1232, flag_do: true }] });
    expect(checkAnswer(ask(), answer)).toMatchObject({ dropped: 2 });
  });

  it('rejects an answer with another id, for another question, or that is no response', () => {
    const good = respond({ answers: [a('foo.example', '10.0.0.1')] });
    expect(checkAnswer(ask(), good)).toEqual({ kind: 'answer', answer: good, dropped: 0 });
    const otherId = Buffer.from(good);
    otherId.writeUInt16BE(ID + 1, 0);
    expect(sanitizeAnswer(ask(), otherId)).toBeNull();
    expect(checkAnswer(ask(), otherId)).toEqual({ kind: 'rejected', reason: 'answer with another id' });
    const another = { kind: 'rejected', reason: 'answer for another question' };
    expect(checkAnswer(ask(), respond({ answers: [a('www.bank.example', '6.6.6.6')] }, 'www.bank.example'))).toEqual(another);
    expect(checkAnswer(ask(), respond({}, 'foo.example', 'AAAA'))).toEqual(another);
    expect(checkAnswer(ask(), respond({ questions: [{ type: 'A', name: 'foo.example', class: 'CH' }] }))).toEqual(another);
    expect(checkAnswer(ask(), respond({ questions: [] }))).toEqual(another);
    // An error without the question passes as the error it is, answering nothing.
    const refused = respond({ flags: RESPONSE_FLAGS | 5, questions: [], answers: [a('www.bank.example', '6.6.6.6')] });
    expect(checkAnswer(ask(), refused)).toMatchObject({ kind: 'answer', dropped: 1 });
    expect(sanitized(ask(), refused)).toMatchObject({ rcode: 'REFUSED', questions: [], answers: [] });
    expect(checkAnswer(ask(), respond({ questions: [{ type: 'A', name: 'foo.example' }, { type: 'A', name: 'bar.example' }] }))).toEqual(another);
    expect(checkAnswer(ask(), ask())).toEqual({ kind: 'rejected', reason: 'answer that is no response' });
    expect(checkAnswer(ask(), good.subarray(0, 20))).toEqual({ kind: 'rejected', reason: 'unreadable answer' });
    expect(checkAnswer(ask(), good.subarray(0, 8))).toEqual({ kind: 'rejected', reason: 'unreadable answer' });
  });

  it('question names compare case-insensitively (0x20 randomisation); records in any case belong', () => {
    const answer = respond({ answers: [cname('FOO.example', 'Bar.Example'), a('bar.EXAMPLE', '10.0.0.1')] }, 'fOo.ExAmPlE');
    expect(sanitizeAnswer(ask('FoO.eXaMpLe'), answer)).toBe(answer);
  });

  it('header flags stay: TC and AA set, rcode kept, when records are dropped', () => {
    const answer = respond({
      flags: RESPONSE_FLAGS | dnsPacket.TRUNCATED_RESPONSE | dnsPacket.AUTHORITATIVE_ANSWER | dnsPacket.AUTHENTIC_DATA,
      answers: [a('foo.example', '10.0.0.1'), a('evil.example', '6.6.6.6')],
    });
    const out = sanitizeAnswer(ask(), answer) as Buffer;
    expect(out.readUInt16BE(2)).toBe(answer.readUInt16BE(2));
    expect(dnsPacket.decode(out)).toMatchObject({ flag_tc: true, flag_aa: true, flag_ad: true, answers: [{ name: 'foo.example' }] });
  });

  it('nothing to drop: the very same bytes', () => {
    const answer = respond({
      answers: [cname('foo.example', 'bar.example'), a('bar.example', '10.0.0.1')],
      authorities: [{ type: 'NS', name: 'example', ttl: 300, data: 'ns1.example' }],
      additionals: [a('ns1.example', '10.0.0.53'), { type: 'OPT', name: '.', udpPayloadSize: 1232 } as dnsPacket.Answer],
    });
    expect(sanitizeAnswer(ask(), answer)).toBe(answer);
    const empty = respond({ flags: RESPONSE_FLAGS | 2 });
    expect(sanitizeAnswer(ask(), empty)).toBe(empty);
    // About the root: records owned by it are the answer, but an OPT belongs in the additional section only.
    const root = respond({ answers: [{ type: 'NS', name: '.', ttl: 300, data: 'a.root-servers.net' }, { type: 'OPT', name: '.' } as dnsPacket.Answer] }, '.', 'NS');
    expect(owners(sanitized(ask('.', 'NS'), root).answers)).toEqual(['. NS']);
  });

  // Hand-built messages: compression and record types dns-packet cannot re-encode faithfully.
  const header = (id: number, flags: number, counts: [number, number, number, number]) => {
    const h = Buffer.alloc(DNS_HEADER_SIZE);
    h.writeUInt16BE(id, 0);
    h.writeUInt16BE(flags, 2);
    counts.forEach((count, i) => h.writeUInt16BE(count, 4 + 2 * i));
    return h;
  };
  const wireName = (...labels: (string | Buffer)[]) =>
    Buffer.concat([...labels.map((l) => (typeof l === 'string' ? Buffer.from(l, 'latin1') : l)).flatMap((l) => [Buffer.from([l.length]), l]), Buffer.from([0])]);
  const pointer = (offset: number) => Buffer.from([0xc0 | (offset >> 8), offset & 0xff]);
  const record = (owner: Buffer, type: number, rdata: Buffer) => {
    const fixed = Buffer.alloc(10);
    fixed.writeUInt16BE(type, 0);
    fixed.writeUInt16BE(1, 2);
    fixed.writeUInt32BE(300, 4);
    fixed.writeUInt16BE(rdata.length, 8);
    return Buffer.concat([owner, fixed, rdata]);
  };
  const question = Buffer.concat([wireName('foo', 'example'), Buffer.from([0, 1, 0, 1])]);

  it('only ASCII letters fold: the bytes 0xC9 and 0xE9 (É and é in latin1) are different labels', () => {
    const latin1 = (byte: number, flags: number) =>
      Buffer.concat([header(ID, flags, [1, 0, 0, 0]), wireName(Buffer.from([byte]), 'example'), Buffer.from([0, 1, 0, 1])]);
    expect(checkAnswer(latin1(0xe9, 0x0100), latin1(0xc9, 0x8180))).toEqual({ kind: 'rejected', reason: 'answer for another question' });
    const same = latin1(0xe9, 0x8180);
    expect(sanitizeAnswer(latin1(0xe9, 0x0100), same)).toBe(same);
  });

  it('names compressed into a dropped record are written out whole', () => {
    // The evil record comes first; the kept one's owner and CNAME target point into its name.
    const evilName = wireName('www', 'bank', 'example');
    const evilAt = DNS_HEADER_SIZE + question.length;
    const evil = record(evilName, 1, Buffer.from([6, 6, 6, 6]));
    const examplePointer = pointer(evilAt + 9); // "example" in www.bank.example
    const kept = record(Buffer.concat([Buffer.from([3]), Buffer.from('foo'), examplePointer]), 5, Buffer.concat([Buffer.from([3]), Buffer.from('bar'), examplePointer]));
    const target = record(Buffer.concat([Buffer.from([3]), Buffer.from('bar'), examplePointer]), 1, Buffer.from([10, 0, 0, 1]));
    const answer = Buffer.concat([header(ID, 0x8180, [1, 3, 0, 0]), question, evil, kept, target]);
    expect(dnsPacket.decode(answer).answers?.map((r) => r.name)).toEqual(['www.bank.example', 'foo.example', 'bar.example']);
    const out = sanitized(ask(), answer);
    expect(out.answers).toEqual([
      expect.objectContaining({ name: 'foo.example', type: 'CNAME', data: 'bar.example' }),
      expect.objectContaining({ name: 'bar.example', type: 'A', data: '10.0.0.1' }),
    ]);
  });

  it('kept records keep their bytes: odd labels, RRSIG, NSEC, unknown and HTTPS types, non-IN classes', () => {
    const owner = wireName('foo', 'example');
    const rrsig = Buffer.concat([Buffer.from('000108020000012c0000000200000001abcd', 'hex'), wireName('example'), Buffer.from('signature')]);
    // An NSEC bitmap with a trailing zero byte: dns-packet would trim it.
    const nsec = Buffer.concat([wireName('a.b', Buffer.from([0xff, 0xfe]), 'example'), Buffer.from('000662000080000000', 'hex').subarray(0, 8)]);
    const unknown = Buffer.from('deadbeef', 'hex');
    const https = Buffer.from('0001000001000302683200', 'hex');
    const kept = [record(owner, 46, rrsig), record(owner, 47, nsec), record(owner, 65280, unknown), record(owner, 65, https), record(owner, 16, Buffer.from('\x05hello'))];
    const chaos = Buffer.from(kept[4] as Buffer);
    chaos.writeUInt16BE(3, owner.length + 2); // class CH
    kept.push(chaos);
    const answer = Buffer.concat([header(ID, 0x8180, [1, kept.length + 1, 0, 0]), question, ...kept, record(wireName('evil', 'example'), 1, Buffer.from([6, 6, 6, 6]))]);
    const out = sanitizeAnswer(ask(), answer) as Buffer;
    expect(out.readUInt16BE(6)).toBe(kept.length);
    // The owner is compressed now; all else of each record is as it was.
    for (const r of kept) expect(out.includes(r.subarray(owner.length))).toBe(true);
    expect(out.length).toBeLessThan(answer.length);
    // And what is left passes the check unchanged.
    expect(sanitizeAnswer(ask(), out)).toBe(out);
  });

  it('records whose data does not fit their type are dropped (an A of 5 bytes, a CNAME with a broken name)', () => {
    const owner = wireName('foo', 'example');
    const answer = Buffer.concat([
      header(ID, 0x8180, [1, 3, 0, 0]),
      question,
      record(owner, 1, Buffer.from([10, 0, 0, 1, 9])),
      record(owner, 5, Buffer.from([3, 0x62, 0x61])),
      record(owner, 1, Buffer.from([10, 0, 0, 2])),
    ]);
    expect(checkAnswer(ask(), answer)).toMatchObject({ kind: 'answer', dropped: 2 });
    expect(sanitized(ask(), answer).answers).toEqual([expect.objectContaining({ name: 'foo.example', data: '10.0.0.2' })]);
  });

  it('a message cut inside a record: unreadable, unless it says so (TC), then cut to what is whole', () => {
    const owner = wireName('foo', 'example');
    const whole = Buffer.concat([header(ID, 0x8180, [1, 2, 0, 0]), question, record(owner, 1, Buffer.from([10, 0, 0, 1])), record(owner, 1, Buffer.from([10, 0, 0, 2]))]);
    const cut = whole.subarray(0, whole.length - 3);
    expect(checkAnswer(ask(), cut)).toEqual({ kind: 'rejected', reason: 'unreadable answer' });
    const tc = Buffer.from(cut);
    tc.writeUInt16BE(0x8380, 2);
    expect(checkAnswer(ask(), tc)).toMatchObject({ kind: 'answer', dropped: 1 });
    expect(sanitized(ask(), tc)).toMatchObject({ flag_tc: true, answers: [{ data: '10.0.0.1' }] });
  });

  it('bounded work: a 64 KiB answer of records is checked and filtered at once; long pointer chains are refused', () => {
    const build = (owner: (i: number, at: number, previous: number) => Buffer) => {
      const parts: Buffer[] = [header(ID, 0x8180, [1, 0, 0, 0]), question];
      let at = DNS_HEADER_SIZE + question.length;
      let previous = DNS_HEADER_SIZE; // the question name
      let count = 0;
      while (at + 16 < 65_000) {
        const r = record(owner(count, at, previous), 1, Buffer.from([10, 0, count >> 8, count & 0xff]));
        previous = at;
        parts.push(r);
        at += r.length;
        count++;
      }
      const message = Buffer.concat(parts);
      message.writeUInt16BE(count, 6);
      return { message, count };
    };
    // Every other record about foo.example (a pointer to the question), the others about evil.example.
    const evil = wireName('evil', 'example');
    const { message, count } = build((i) => (i % 2 === 0 ? pointer(DNS_HEADER_SIZE) : evil));
    let started = performance.now();
    const checked = checkAnswer(ask(), message);
    expect(performance.now() - started).toBeLessThan(1000);
    expect(checked).toMatchObject({ kind: 'answer', dropped: Math.floor(count / 2) });
    const out = sanitized(ask(), message);
    expect(out.answers).toHaveLength(Math.ceil(count / 2));
    expect(new Set(out.answers?.map((r) => r.name))).toEqual(new Set(['foo.example']));
    // Each owner a pointer to the one before: thousands of jumps per name, refused after 127.
    started = performance.now();
    expect(checkAnswer(ask(), build((_, __, previous) => pointer(previous)).message)).toEqual({ kind: 'rejected', reason: 'unreadable answer' });
    expect(performance.now() - started).toBeLessThan(1000);
  });
});
