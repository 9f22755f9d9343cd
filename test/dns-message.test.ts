import dnsPacket from 'dns-packet';
import { describe, expect, it } from 'vitest';
import { fitForUdp, inspectQuery, rcodeName, rcodeOf, servfail } from '../src/dns-message.js';

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
