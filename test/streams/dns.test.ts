import { Subject } from 'rxjs';
import { describe, expect, it } from 'vitest';
import { DnsError } from '../../src/shared/errors.js';
import {
  DnsIds,
  type DnsReply,
  decodeDnsReply,
  decodeDnsRequest,
  dnsQuery,
  encodeDnsFailed,
  encodeDnsRequest,
  encodeDnsResponse,
  MAX_DNS_QUERY,
} from '../../src/streams/dns.js';
import { CONTROL_CHANNEL, Command, type Frame, frame, MAX_PAYLOAD } from '../../src/streams/frame.js';
import { unexpectedError } from '../support/unexpected-error.js';
import { protocolError, testScheduler } from './marbles.js';

/** A DNS message: 12-byte header (id 0x1234) and some bytes. */
const QUERY = Buffer.concat([Buffer.from([0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]), Buffer.from('question')]);
const ANSWER = Buffer.concat([Buffer.from([0x12, 0x34, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0]), Buffer.from('answer')]);

const dnsError = (code: 'RXS_ERR_DNS_TIMEOUT' | 'RXS_ERR_DNS_FAILED', pattern: RegExp) => ({
  asymmetricMatch: (actual: unknown) => actual instanceof DnsError && actual.code === code && pattern.test(actual.message),
  toAsymmetricMatcher: () => `DnsError(${code}, ${String(pattern)})`,
});

describe('DNS frames', () => {
  it('DNS_REQUEST round-trips, with and without a --to-ns target', () => {
    const plain = encodeDnsRequest({ id: 7, message: QUERY });
    expect(plain.channel).toBe(CONTROL_CHANNEL);
    expect(plain.command).toBe(Command.DNS_REQUEST);
    expect(plain.payload.subarray(0, 5)).toEqual(Buffer.from([0, 0, 0, 7, 0]));
    expect(decodeDnsRequest(plain.payload)).toEqual({ id: 7, message: QUERY });

    const v4 = { family: 4, address: '10.0.0.53', port: 5353 } as const;
    expect(decodeDnsRequest(encodeDnsRequest({ id: 0xffffffff, target: v4, message: QUERY }).payload)).toEqual({
      id: 0xffffffff,
      target: v4,
      message: QUERY,
    });
    const v6 = { family: 6, address: 'fd00::53', port: 53 } as const;
    expect(decodeDnsRequest(encodeDnsRequest({ id: 1, target: v6, message: QUERY }).payload)).toMatchObject({ target: v6 });
  });

  it('refuses malformed requests with a ProtocolError', () => {
    expect(() => decodeDnsRequest(Buffer.from([0, 0, 0]))).toThrow(protocolError(/malformed DNS_REQUEST/) as never);
    expect(() => decodeDnsRequest(Buffer.from([0, 0, 0, 1, 5, ...QUERY]))).toThrow(/target family 5/);
    expect(() => decodeDnsRequest(Buffer.from([0, 0, 0, 1, 0, 1, 2, 3]))).toThrow(/DNS message of 3 bytes/);
    expect(() => decodeDnsRequest(Buffer.from([0, 0, 0, 1, 4, 0, 53]))).toThrow(/target family 4/);
  });

  it('a query that cannot fit in a frame is refused before sending', () => {
    expect(() => encodeDnsRequest({ id: 1, message: Buffer.alloc(MAX_DNS_QUERY + 1) })).toThrow(RangeError);
    expect(encodeDnsRequest({ id: 1, target: { family: 6, address: '::1', port: 53 }, message: Buffer.alloc(MAX_DNS_QUERY) }).payload.length).toBe(
      MAX_PAYLOAD,
    );
  });

  it('DNS_RESPONSE and DNS_FAILED round-trip', () => {
    expect(decodeDnsReply(encodeDnsResponse(9, ANSWER))).toEqual({ kind: 'dns-response', id: 9, message: ANSWER });
    expect(decodeDnsReply(encodeDnsFailed(9, 'ETIMEDOUT from 10.0.0.1:53'))).toEqual({
      kind: 'dns-failed',
      id: 9,
      reason: 'ETIMEDOUT from 10.0.0.1:53',
    });
    expect(() => decodeDnsReply(frame(0, Command.DNS_RESPONSE, Buffer.from([0, 0, 0, 1, 1])))).toThrow(/malformed DNS_RESPONSE/);
    expect(() => decodeDnsReply(frame(0, Command.DNS_FAILED, Buffer.from([0, 0])))).toThrow(/malformed DNS_FAILED/);
  });
});

describe('dnsQuery', () => {
  it('sends the request on subscribe and emits the answer with its id, ignoring the others', () => {
    testScheduler().run(({ hot, expectObservable }) => {
      const sent: Frame[] = [];
      const replies$ = hot<DnsReply>('--a--b', {
        a: { kind: 'dns-response', id: 8, message: Buffer.from('other') },
        b: { kind: 'dns-response', id: 7, message: ANSWER },
      });
      expectObservable(dnsQuery({ id: 7, message: QUERY }, { send: (f) => sent.push(f), replies$, timeoutMs: 1000 })).toBe('-----(x|)', {
        x: ANSWER,
      });
      testScheduler().flush();
      expect(sent).toEqual([]); // nothing happens before the subscription
    });
  });

  it('the request frame goes out once, when subscribed', () => {
    const sent: Frame[] = [];
    const replies$ = new Subject<DnsReply>();
    const results: Buffer[] = [];
    const sub = dnsQuery({ id: 3, message: QUERY }, { send: (f) => sent.push(f), replies$, timeoutMs: 1000 }).subscribe({ next: (a) => results.push(a), error: unexpectedError });
    expect(sent).toEqual([encodeDnsRequest({ id: 3, message: QUERY })]);
    replies$.next({ kind: 'dns-response', id: 3, message: ANSWER });
    expect(results).toEqual([ANSWER]);
    expect(sub.closed).toBe(true);
  });

  it('DNS_FAILED becomes a DnsError RXS_ERR_DNS_FAILED with the reason', () => {
    testScheduler().run(({ hot, expectObservable }) => {
      const replies$ = hot<DnsReply>('---f', { f: { kind: 'dns-failed', id: 1, reason: 'ETIMEDOUT from 10.98.0.9:53' } });
      expectObservable(dnsQuery({ id: 1, message: QUERY }, { send: () => {}, replies$, timeoutMs: 1000 })).toBe(
        '---#',
        undefined,
        dnsError('RXS_ERR_DNS_FAILED', /ETIMEDOUT from 10\.98\.0\.9:53/),
      );
    });
  });

  it('no reply within the timeout: DnsError RXS_ERR_DNS_TIMEOUT, and a late reply changes nothing', () => {
    testScheduler().run(({ hot, expectObservable }) => {
      const replies$ = hot<DnsReply>('1500ms r', { r: { kind: 'dns-response', id: 1, message: ANSWER } });
      expectObservable(dnsQuery({ id: 1, message: QUERY }, { send: () => {}, replies$, timeoutMs: 1000 })).toBe(
        '1000ms #',
        undefined,
        dnsError('RXS_ERR_DNS_TIMEOUT', /no answer within 1000 ms/),
      );
    });
  });

  it('many queries in flight each get their own answer, in whatever order they come', () => {
    testScheduler().run(({ hot, expectObservable }) => {
      const replies$ = hot<DnsReply>('-c-b-a', {
        a: { kind: 'dns-response', id: 1, message: Buffer.from('A') },
        b: { kind: 'dns-response', id: 2, message: Buffer.from('B') },
        c: { kind: 'dns-failed', id: 3, reason: 'nope' },
      });
      const config = { send: () => {}, replies$, timeoutMs: 100 };
      expectObservable(dnsQuery({ id: 1, message: QUERY }, config)).toBe('-----(a|)', { a: Buffer.from('A') });
      expectObservable(dnsQuery({ id: 2, message: QUERY }, config)).toBe('---(b|)', { b: Buffer.from('B') });
      expectObservable(dnsQuery({ id: 3, message: QUERY }, config)).toBe('-#', undefined, dnsError('RXS_ERR_DNS_FAILED', /nope/));
    });
  });
});

describe('DnsIds', () => {
  it('counts up, skips ids in use, and reuses released ones only after wrapping', () => {
    const ids = new DnsIds();
    expect([ids.take(), ids.take(), ids.take()]).toEqual([1, 2, 3]);
    ids.release(2);
    expect(ids.take()).toBe(4);
    expect(ids.inUse).toBe(3);
  });
});
