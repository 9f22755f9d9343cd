// The client's DNS sockets with real UDP and TCP on 127.0.0.1 (no firewall: the test sends to
// the port directly) and a fake tunnel behind them.
import { createSocket } from 'node:dgram';
import { once } from 'node:events';
import { connect, createServer } from 'node:net';
import dnsPacket from 'dns-packet';
import { map, NEVER, Observable, type Subscription, throwError, timer } from 'rxjs';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { DnsError } from '../../src/shared/errors.js';
import type { TunnelEvent } from '../../src/shared/events.js';
import { type AskDns, bindDnsSockets, type DnsSockets, dnsCapture$, resolvConfNameservers } from '../../src/tunnel/dns-capture.js';
import { unexpectedError } from '../support/unexpected-error.js';

const query = (id: number, name = 'target.lab', edns?: number) =>
  dnsPacket.encode({
    type: 'query',
    id,
    flags: dnsPacket.RECURSION_DESIRED,
    questions: [{ type: 'A', name }],
    ...(edns ? { additionals: [{ type: 'OPT', name: '.', udpPayloadSize: edns } as dnsPacket.Answer] } : {}),
  });

/** What the "remote resolver" answers: A 10.98.0.3, or a big TXT for big.lab. */
function answerFor(message: Buffer): Buffer {
  const q = dnsPacket.decode(message);
  const name = q.questions?.[0]?.name ?? '';
  return dnsPacket.encode({
    type: 'response',
    id: q.id,
    flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE,
    questions: q.questions,
    answers:
      name === 'big.lab'
        ? [{ type: 'TXT', name, data: ['x'.repeat(250), 'y'.repeat(250), 'z'.repeat(250)] }]
        : [{ type: 'A', name, data: '10.98.0.3' }],
  });
}

const resolving: AskDns = (message) => timer(5).pipe(map(() => answerFor(message)));

let sockets: DnsSockets | undefined;
let capture: Subscription | undefined;
afterEach(() => {
  capture?.unsubscribe();
  for (const s of sockets?.udp ?? []) s.close();
  for (const s of sockets?.tcp ?? []) s.close();
  sockets = undefined;
});

async function start(ask: AskDns, maxInFlight?: number): Promise<{ port: number; events: TunnelEvent[] }> {
  sockets = await bindDnsSockets(['127.0.0.1'], 20000 + Math.floor(Math.random() * 20000), 0);
  const events: TunnelEvent[] = [];
  capture = dnsCapture$(sockets, ask, maxInFlight).subscribe({ next: (e) => events.push(e), error: unexpectedError });
  return { port: sockets.port, events };
}

/**
 * One UDP query; resolves with the answer, or null if none came within timeoutMs: generous by
 * default (an answer ends the wait), short only where no answer may come.
 */
async function udpAsk(port: number, message: Buffer, timeoutMs = 5000): Promise<Buffer | null> {
  const socket = createSocket('udp4');
  socket.on('error', () => undefined); // a lost question reads as no answer
  let timer: NodeJS.Timeout | undefined;
  try {
    const answer = new Promise<Buffer | null>((resolve) => {
      socket.on('message', (m) => resolve(m));
      timer = setTimeout(() => resolve(null), timeoutMs);
    });
    socket.send(message, port, '127.0.0.1');
    return await answer;
  } finally {
    clearTimeout(timer);
    socket.close();
  }
}

describe('resolvConfNameservers', () => {
  it('canonical addresses of the nameserver lines, without zoned ones and duplicates', () => {
    const text = 'nameserver 10.98.0.3\n# nameserver 1.1.1.1\nnameserver FD00:0::53\nnameserver fe80::1%eth0\nnameserver 10.98.0.3\nsearch x\n';
    expect(resolvConfNameservers(text)).toEqual(['10.98.0.3', 'fd00::53']);
  });
});

describe('bindDnsSockets', () => {
  it('takes the first port free for both UDP and TCP, skipping the one to avoid', async () => {
    // Below the kernel's ephemeral range (32768-60999), where other tests' connections take ports.
    const base = 10000 + Math.floor(Math.random() * 20000);
    const blocker = createServer().listen(base + 1, '127.0.0.1');
    await once(blocker, 'listening');
    try {
      sockets = await bindDnsSockets(['127.0.0.1'], base, base);
      expect(sockets.port).toBe(base + 2);
    } finally {
      blocker.close();
    }
  });
});

describe('dnsCapture$', () => {
  it('answers a UDP query through the tunnel and reports it', async () => {
    const { port, events } = await start(resolving);
    const answer = await udpAsk(port, query(0x1111));
    expect(answer && dnsPacket.decode(answer)).toMatchObject({ id: 0x1111, answers: [{ type: 'A', data: '10.98.0.3' }] });
    expect(events).toEqual([
      expect.objectContaining({ kind: 'dns', question: 'target.lab A', transport: 'udp', outcome: 'answered', detail: expect.stringMatching(/^NOERROR, \d+ bytes$/) }),
    ]);
  });

  it('many queries at once are all answered, each to its own asker', async () => {
    const { port } = await start(resolving);
    const answers = await Promise.all(Array.from({ length: 100 }, (_, i) => udpAsk(port, query(i, `h${i}.lab`))));
    answers.forEach((answer, i) => expect(answer && dnsPacket.decode(answer)).toMatchObject({ id: i, questions: [{ name: `h${i}.lab` }] }));
  });

  it('an answer too big for the asker goes out cut with TC; with a big enough EDNS size, whole', async () => {
    const { port, events } = await start(resolving);
    const cut = await udpAsk(port, query(5, 'big.lab'));
    expect(cut && dnsPacket.decode(cut)).toMatchObject({ id: 5, flag_tc: true, answers: [] });
    expect(events[0]).toMatchObject({ outcome: 'answered', detail: expect.stringMatching(/cut to \d+ for UDP \(TC\)/) });
    const whole = await udpAsk(port, query(6, 'big.lab', 4096));
    expect(whole && dnsPacket.decode(whole)).toMatchObject({ id: 6, flag_tc: false, answers: [{ type: 'TXT' }] });
  });

  it('TCP: length-prefixed queries, whole answers, and the connection ends after a half-close once answered', async () => {
    const { port, events } = await start(resolving);
    const socket = connect(port, '127.0.0.1');
    await once(socket, 'connect');
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    const frame = (m: Buffer) => Buffer.concat([Buffer.from([m.length >> 8, m.length & 0xff]), m]);
    socket.end(Buffer.concat([frame(query(1, 'big.lab')), frame(query(2))]));
    await once(socket, 'close');
    const all = Buffer.concat(chunks);
    const first = all.readUInt16BE(0);
    const a = dnsPacket.decode(all.subarray(2, 2 + first));
    const b = dnsPacket.decode(all.subarray(4 + first, 4 + first + all.readUInt16BE(2 + first)));
    expect([a.id, b.id].sort()).toEqual([1, 2]);
    const big = a.id === 1 ? a : b;
    expect(big).toMatchObject({ flag_tc: false, answers: [{ type: 'TXT' }] });
    expect(events.map((e) => e.kind === 'dns' && e.transport)).toEqual(['tcp', 'tcp']);
  });

  it('the server found no answer: the asker gets SERVFAIL at once', async () => {
    const { port, events } = await start(() => throwError(() => new DnsError('RXS_ERR_DNS_FAILED', 'ETIMEDOUT from 10.98.0.9:53')));
    const answer = await udpAsk(port, query(9));
    expect(answer && dnsPacket.decode(answer)).toMatchObject({ id: 9, rcode: 'SERVFAIL' });
    expect(events[0]).toMatchObject({ outcome: 'failed', detail: 'ETIMEDOUT from 10.98.0.9:53' });
  });

  // Issue 17, finding 10: the remote is not trusted with names nobody asked about.
  const malicious = (message: Buffer) => {
    const q = dnsPacket.decode(message);
    return dnsPacket.encode({
      type: 'response',
      id: q.id,
      flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE,
      questions: q.questions,
      answers: [{ type: 'A', name: 'www.bank.lab', data: '6.6.6.6' }],
      additionals: [{ type: 'A', name: 'mail.bank.lab', data: '6.6.6.7' }],
    });
  };

  it('an answer about names not asked for reaches the asker without them, over UDP and TCP', async () => {
    const { port, events } = await start((message) => timer(5).pipe(map(() => malicious(message))));
    const answer = await udpAsk(port, query(0x2222, 'foo.lab'));
    expect(answer && dnsPacket.decode(answer)).toMatchObject({ id: 0x2222, rcode: 'NOERROR', questions: [{ name: 'foo.lab' }], answers: [], additionals: [] });
    expect(events[0]).toMatchObject({ outcome: 'answered', detail: expect.stringMatching(/^NOERROR, \d+ bytes, 2 records dropped$/) });

    const socket = connect(port, '127.0.0.1');
    await once(socket, 'connect');
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    const q = query(0x3333, 'foo.lab');
    socket.end(Buffer.concat([Buffer.from([q.length >> 8, q.length & 0xff]), q]));
    await once(socket, 'close');
    const all = Buffer.concat(chunks);
    expect(dnsPacket.decode(all.subarray(2, 2 + all.readUInt16BE(0)))).toMatchObject({ id: 0x3333, answers: [], additionals: [] });
  });

  it('an answer with another id or for another question: the asker gets SERVFAIL, the event says why', async () => {
    const { port, events } = await start((message) => {
      const name = dnsPacket.decode(message).questions?.[0]?.name;
      const answer = answerFor(name === 'other-id.lab' ? message : query(7, 'www.bank.lab'));
      if (name === 'other-id.lab') answer.writeUInt16BE(answer.readUInt16BE(0) ^ 0xffff, 0);
      else answer.writeUInt16BE(message.readUInt16BE(0), 0);
      return timer(5).pipe(map(() => answer));
    });
    const a = await udpAsk(port, query(0x4444, 'other-id.lab'));
    expect(a && dnsPacket.decode(a)).toMatchObject({ id: 0x4444, rcode: 'SERVFAIL', questions: [{ name: 'other-id.lab' }], answers: [] });
    const b = await udpAsk(port, query(0x5555, 'foo.lab'));
    expect(b && dnsPacket.decode(b)).toMatchObject({ id: 0x5555, rcode: 'SERVFAIL', questions: [{ name: 'foo.lab' }], answers: [] });
    expect(events).toEqual([
      expect.objectContaining({ question: 'other-id.lab A', outcome: 'failed', detail: 'answer with another id' }),
      expect.objectContaining({ question: 'foo.lab A', outcome: 'failed', detail: 'answer for another question' }),
    ]);
  });

  it('no reply from the tunnel in time: the asker gets nothing (its own timeout applies)', async () => {
    const { port, events } = await start(() => throwError(() => new DnsError('RXS_ERR_DNS_TIMEOUT', 'no answer within 15000 ms')));
    expect(await udpAsk(port, query(9), 300)).toBeNull();
    await vi.waitFor(() => expect(events[0]).toMatchObject({ outcome: 'timeout' }));
  });

  it('over the in-flight limit: SERVFAIL at once; garbage is dropped without asking', async () => {
    let asked = 0;
    const { port, events } = await start(() => {
      asked++;
      return NEVER;
    }, 1);
    void udpAsk(port, query(1), 200);
    await vi.waitFor(() => expect(asked).toBe(1)); // the first is in flight
    const second = await udpAsk(port, query(2));
    expect(second && dnsPacket.decode(second)).toMatchObject({ id: 2, rcode: 'SERVFAIL' });
    expect(events).toEqual([expect.objectContaining({ outcome: 'failed', detail: '1 queries in flight already' })]);
    expect(await udpAsk(port, Buffer.from('not dns at all'), 200)).toBeNull();
    expect(asked).toBe(1);
  });

  it('unsubscribing drops the queries in flight', async () => {
    let asking = false;
    let unsubscribed = false;
    const { port } = await start(
      () =>
        new Observable<Buffer>(() => {
          asking = true;
          return () => (unsubscribed = true);
        }),
    );
    void udpAsk(port, query(1), 100);
    await vi.waitFor(() => expect(asking).toBe(true));
    expect(unsubscribed).toBe(false);
    capture?.unsubscribe();
    expect(unsubscribed).toBe(true);
  });
});
