import dnsPacket from 'dns-packet';
import { type Observable, of, Subject, throwError, VirtualTimeScheduler } from 'rxjs';
import { TestScheduler } from 'rxjs/testing';
import { describe, expect, it } from 'vitest';
import { DnsError, UsageError } from '../../src/shared/errors.js';
import type { NamedSubnet } from '../../src/shared/options.js';
import {
  addressesOf,
  encodeQuery,
  MAX_ADDRESSES_PER_FAMILY,
  MAX_REFRESH_S,
  MIN_REFRESH_S,
  type NameEvent,
  namedRules,
  RETRY_S,
  resolveName$,
  resolveNames$,
  watchNames$,
} from '../../src/tunnel/name-rules.js';
import { unexpectedError } from '../support/unexpected-error.js';

type Zone = Record<string, { A?: string[]; AAAA?: string[]; ttl?: number; rcode?: 'NXDOMAIN' | 'SERVFAIL'; cname?: string }>;

/** The remote's resolver, answering from a zone (which a test may change between lookups). */
function resolver(zone: () => Zone): (query: Buffer) => Observable<Buffer> {
  return (query) => {
    const q = dnsPacket.decode(query);
    const question = q.questions?.[0];
    if (!question) return throwError(() => new Error('no question'));
    const entry = zone()[question.name];
    const type = question.type as 'A' | 'AAAA';
    const answers: dnsPacket.Answer[] = [];
    if (entry?.cname) answers.push({ type: 'CNAME', name: question.name, ttl: entry.ttl ?? 300, data: entry.cname });
    const owner = entry?.cname ?? question.name;
    for (const data of entry?.[type] ?? []) answers.push({ type, name: owner, ttl: entry?.ttl ?? 300, data } as dnsPacket.Answer);
    const rcode = entry?.rcode ?? (entry ? 'NOERROR' : 'NXDOMAIN');
    const flags = dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE | (rcode === 'NXDOMAIN' ? 3 : rcode === 'SERVFAIL' ? 2 : 0);
    return of(dnsPacket.encode({ type: 'response', id: q.id, flags, questions: q.questions, answers }));
  };
}

const named = (name: string, extra: Partial<NamedSubnet> = {}): NamedSubnet => ({ name, portLow: 0, portHigh: 0, exclude: false, ...extra });

describe('addressesOf: what an answer gives', () => {
  it('canonical addresses of the question chain, local-only ones and foreign records left out, the lowest TTL', () => {
    const query = encodeQuery('www.lab', 'AAAA');
    const q = dnsPacket.decode(query);
    const answer = dnsPacket.encode({
      type: 'response',
      id: q.id,
      flags: dnsPacket.RECURSION_DESIRED,
      questions: q.questions,
      answers: [
        { type: 'CNAME', name: 'www.lab', ttl: 600, data: 'web.lab' },
        { type: 'AAAA', name: 'web.lab', ttl: 120, data: 'fd00:0:0:0:0:0:0:5' },
        { type: 'AAAA', name: 'web.lab', ttl: 600, data: '::1' },
        { type: 'AAAA', name: 'web.lab', ttl: 600, data: 'fe80::1' },
        // Not in the chain: a hostile server's extra, which checkAnswer takes out.
        { type: 'AAAA', name: 'bank.example', ttl: 5, data: 'fd00::66' },
      ],
    });
    expect(addressesOf(query, answer, 'AAAA')).toEqual({ addresses: ['fd00::5'], ttlS: 120 });
  });

  it(`TTLs are held within ${MIN_REFRESH_S}..${MAX_REFRESH_S} s; at most ${MAX_ADDRESSES_PER_FAMILY} addresses`, () => {
    const zone: Zone = { 'rr.lab': { A: ['10.0.0.1', '10.0.0.2', '10.0.0.3', '10.0.0.4', '10.0.0.5', '10.0.0.6'], ttl: 0 }, 'slow.lab': { A: ['10.0.0.9'], ttl: 86_400 } };
    const ask = resolver(() => zone);
    const got: unknown[] = [];
    resolveName$('rr.lab', ask, false).subscribe({ next: (a) => got.push(a), error: unexpectedError });
    resolveName$('slow.lab', ask, false).subscribe({ next: (a) => got.push(a), error: unexpectedError });
    expect(got).toEqual([
      { addresses: ['10.0.0.1', '10.0.0.2', '10.0.0.3', '10.0.0.4'], ttlS: MIN_REFRESH_S },
      { addresses: ['10.0.0.9'], ttlS: MAX_REFRESH_S },
    ]);
  });

  it('an answer for another question gives nothing', () => {
    const query = encodeQuery('a.lab', 'A');
    const other = resolver(() => ({ 'b.lab': { A: ['10.0.0.2'] } }))(encodeQuery('b.lab', 'A'));
    let answer: Buffer = Buffer.alloc(0);
    other.subscribe({ next: (a) => {
      answer = a;
    }, error: unexpectedError });
    expect(() => addressesOf(query, answer, 'A')).toThrow(/unusable answer/);
  });
});

describe('resolveName$ and resolveNames$', () => {
  const zone: Zone = {
    'both.lab': { A: ['10.5.0.1'], AAAA: ['fd00:5::1'], ttl: 60 },
    'v6only.lab': { AAAA: ['fd00:5::2'], ttl: 30 },
    'alias.lab': { cname: 'both.lab', A: ['10.5.0.1'] },
    'broken.lab': { rcode: 'SERVFAIL' },
  };
  const ask = resolver(() => zone);
  const take = (o: Observable<unknown>) => {
    const out: unknown[] = [];
    let error: unknown;
    o.subscribe({ next: (v) => out.push(v), error: (e: unknown) => (error = e) });
    return { out, error };
  };

  it('A and AAAA together (AAAA only with IPv6); the lower TTL', () => {
    expect(take(resolveName$('both.lab', ask, true)).out).toEqual([{ addresses: ['10.5.0.1', 'fd00:5::1'], ttlS: 60 }]);
    expect(take(resolveName$('both.lab', ask, false)).out).toEqual([{ addresses: ['10.5.0.1'], ttlS: 60 }]);
    expect(take(resolveName$('v6only.lab', ask, true)).out).toEqual([{ addresses: ['fd00:5::2'], ttlS: 30 }]);
    expect(take(resolveName$('alias.lab', ask, false)).out).toEqual([{ addresses: ['10.5.0.1'], ttlS: 300 }]);
  });

  it('a name without an address is an error that says why', () => {
    expect(String(take(resolveName$('nope.lab', ask, true)).error)).toMatch(/NXDOMAIN/);
    expect(String(take(resolveName$('broken.lab', ask, false)).error)).toMatch(/SERVFAIL/);
    expect(String(take(resolveName$('v6only.lab', ask, false)).error)).toMatch(/no address/);
    const failing = () => throwError(() => new DnsError('RXS_ERR_DNS_TIMEOUT', 'no answer within 15000 ms'));
    expect(String(take(resolveName$('both.lab', failing, true)).error)).toMatch(/no answer within/);
  });

  it('resolveNames$: every name once; one that does not resolve is a UsageError naming it, unless known from before', () => {
    const names = [named('both.lab', { portLow: 443, portHigh: 443 }), named('both.lab', { exclude: true }), named('v6only.lab')];
    const ok = take(resolveNames$(names, ask, { ipv6: true }));
    expect(ok.out).toEqual([
      new Map([
        ['both.lab', { addresses: ['10.5.0.1', 'fd00:5::1'], ttlS: 60 }],
        ['v6only.lab', { addresses: ['fd00:5::2'], ttlS: 30 }],
      ]),
    ]);
    const bad = take(resolveNames$([named('both.lab'), named('nope.lab')], ask, { ipv6: true }));
    expect(bad.error).toBeInstanceOf(UsageError);
    expect(String(bad.error)).toMatch(/host name "nope\.lab" does not resolve through the tunnel: NXDOMAIN/);
    const known = new Map([['nope.lab', { addresses: ['10.9.9.9'], ttlS: 10 }]]);
    expect(take(resolveNames$([named('nope.lab')], ask, { ipv6: true, known })).out).toEqual([known]);
  });

  it('namedRules: one /32 or /128 per address with the name\'s ports, duplicates once', () => {
    const rules = namedRules(
      [named('a.lab', { portLow: 443, portHigh: 443 }), named('a.lab', { portLow: 443, portHigh: 443 }), named('b.lab', { exclude: true })],
      new Map([
        ['a.lab', ['10.0.0.1', 'fd00::1']],
        ['b.lab', ['10.0.0.2']],
      ]),
    );
    expect(rules).toEqual([
      { family: 4, address: '10.0.0.1', prefix: 32, portLow: 443, portHigh: 443, exclude: false },
      { family: 6, address: 'fd00::1', prefix: 128, portLow: 443, portHigh: 443, exclude: false },
      { family: 4, address: '10.0.0.2', prefix: 32, portLow: 0, portHigh: 0, exclude: true },
    ]);
  });
});

describe('watchNames$ (virtual time)', () => {
  it('asks again when the TTL runs out; reports and re-rules only changes; a failure keeps the addresses and retries', () => {
    const scheduler = new VirtualTimeScheduler();
    let zone: Zone = { 'a.lab': { A: ['10.0.0.1'], ttl: 60 }, 'b.lab': { A: ['10.0.0.2'], ttl: 600 } };
    const asked: string[] = [];
    const ask = (query: Buffer) => {
      asked.push(`${scheduler.now() / 1000}s ${dnsPacket.decode(query).questions?.[0]?.name}`);
      return resolver(() => zone)(query);
    };
    const names = [named('a.lab'), named('b.lab', { portLow: 22, portHigh: 22 })];
    const first = new Map([
      ['a.lab', { addresses: ['10.0.0.1'], ttlS: 60 }],
      ['b.lab', { addresses: ['10.0.0.2'], ttlS: 600 }],
    ]);
    const events: string[] = [];
    const seen: Array<[string, string[]]> = [];
    const sub = watchNames$(names, ask, first, { ipv6: false, scheduler, onAnswer: (n, a) => seen.push([n, [...a.addresses]]) }).subscribe({ next: (e: NameEvent) =>
      events.push(`${scheduler.now() / 1000}s ${e.kind === 'rules' ? `rules ${e.rules.map((r) => `${r.address}:${r.portLow}`).join(' ')}` : e.kind === 'resolved' ? `${e.name} ${e.addresses.join(' ')}` : `stale ${e.name} ${e.reason}`}`), error: unexpectedError },
    );
    // 60 s: a.lab asked again, unchanged: nothing reported.
    const advance = (toS: number) => {
      scheduler.maxFrames = toS * 1000;
      scheduler.flush();
    };
    advance(61);
    expect(asked).toEqual(['60s a.lab']);
    expect(events).toEqual([]);
    // It moves: reported at the next lookup, with the rules of both names.
    zone = { ...zone, 'a.lab': { A: ['10.0.0.7'], ttl: 60 } };
    advance(121);
    expect(events).toEqual(['120s a.lab 10.0.0.7', '120s rules 10.0.0.7:0 10.0.0.2:22']);
    // Its nameserver fails: the addresses stay, the next try comes after RETRY_S.
    zone = { ...zone, 'a.lab': { rcode: 'SERVFAIL' } };
    advance(181);
    expect(events.at(-1)).toBe('180s stale a.lab SERVFAIL');
    zone = { ...zone, 'a.lab': { A: ['10.0.0.7'], ttl: 60 } };
    advance(180 + RETRY_S + 1);
    expect(asked.at(-1)).toBe(`${180 + RETRY_S}s a.lab`);
    expect(events).toHaveLength(3);
    advance(601);
    expect(asked).toContain('600s b.lab');
    // Every answer taken is kept for the next session; the failed lookup gave none.
    expect(seen.filter(([n]) => n === 'a.lab').map(([, a]) => a).slice(0, 3)).toEqual([['10.0.0.1'], ['10.0.0.7'], ['10.0.0.7']]);
    sub.unsubscribe();
  });

  it('marbles: a TTL of 0 asks again after the minimum, never in a loop; unsubscribing stops the lookups', () => {
    const testScheduler = new TestScheduler((a, b) => expect(a).toEqual(b));
    testScheduler.run(({ expectObservable }) => {
      let n = 0;
      const ask = (query: Buffer) => {
        n++;
        return resolver(() => ({ 'z.lab': { A: [`10.0.0.${n}`], ttl: 0 } }))(query);
      };
      const first = new Map([['z.lab', { addresses: ['10.0.0.0'], ttlS: MIN_REFRESH_S }]]);
      const events$ = watchNames$([named('z.lab')], ask, first, { ipv6: false, scheduler: testScheduler });
      const rules = (address: string) => ({ kind: 'rules', rules: [{ family: 4, address, prefix: 32, portLow: 0, portHigh: 0, exclude: false }] });
      const resolved = (address: string) => ({ kind: 'resolved', name: 'z.lab', addresses: [address], ttlS: MIN_REFRESH_S });
      expectObservable(events$, '25s !').toBe('10s (ab) 9996ms (cd)', {
        a: resolved('10.0.0.1'),
        b: rules('10.0.0.1'),
        c: resolved('10.0.0.2'),
        d: rules('10.0.0.2'),
      });
    });
  });

  it('a slow nameserver: the next lookup waits for the answer (no pile-up)', () => {
    const scheduler = new VirtualTimeScheduler();
    const pending: Subject<Buffer>[] = [];
    const ask = () => {
      const answer = new Subject<Buffer>();
      pending.push(answer);
      return answer;
    };
    const sub = watchNames$([named('slow.lab')], ask, new Map([['slow.lab', { addresses: ['10.0.0.1'], ttlS: 10 }]]), { ipv6: false, scheduler }).subscribe();
    scheduler.maxFrames = 1_000_000;
    scheduler.flush();
    expect(pending).toHaveLength(1);
    sub.unsubscribe();
  });
});
