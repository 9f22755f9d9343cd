// DNS over TCP against real local TCP nameservers (net servers on 127.0.0.1 that the test
// scripts), with `open` a plain net.connect: what an ssh direct-tcpip channel would carry.
import { once } from 'node:events';
import { type AddressInfo, connect, createServer, type Server, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import dnsPacket, { type Answer, type DecodedPacket } from 'dns-packet';
import { firstValueFrom, lastValueFrom, Observable, toArray } from 'rxjs';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { DnsError } from '../../../src/shared/errors.js';
import {
  DnsTcpFramer,
  dnsLookups,
  MAX_IN_FLIGHT_PER_CONNECTION,
  reverseName,
  type TcpDnsOptions,
  type TcpDnsResolver,
  type TcpNameserver,
  tcpDnsResolver,
} from '../../../src/tunnel/stock/dns-over-tcp.js';

const query = (id: number, name = 'a.lab', type: 'A' | 'TXT' = 'A') =>
  dnsPacket.encode({ type: 'query', id, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type, name }] });

const frame = (message: Buffer) => {
  const prefix = Buffer.alloc(2);
  prefix.writeUInt16BE(message.length);
  return Buffer.concat([prefix, message]);
};

/** A response to `q` with these answers (the question echoed), and an rcode. */
const respond = (q: DecodedPacket, answers: Answer[], rcode = 0) => {
  const out = dnsPacket.encode({ type: 'response', id: q.id, flags: dnsPacket.RECURSION_AVAILABLE, questions: q.questions, answers });
  out[3] = ((out[3] as number) & 0xf0) | rcode;
  return out;
};

/** The address a name resolves to here: 10.0.0.<length of the name>, so each query has its own answer. */
const addressOf = (name: string) => `10.0.0.${name.length}`;
const resolveA = (q: DecodedPacket) => {
  const name = q.questions?.[0]?.name ?? '';
  return respond(q, [{ type: 'A', name, data: addressOf(name) }]);
};

interface Query {
  readonly packet: DecodedPacket;
  readonly socket: Socket;
  readonly connection: number;
  reply(message: Buffer): void;
}

interface TestServer {
  nameserver: TcpNameserver;
  readonly queries: Query[];
  /** Connections accepted so far, and how many of them the client closed. */
  connections: number;
  closedByClient: number;
}

const servers: Server[] = [];
const resolvers: TcpDnsResolver[] = [];
afterEach(async () => {
  for (const resolver of resolvers.splice(0)) resolver.close();
  await Promise.all(servers.splice(0).map((server) => new Promise((resolve) => server.close(resolve))));
});

/** A TCP nameserver that hands each query to `behave` (by default: answers it at once). */
async function nameserver(behave: (query: Query) => void = (q) => q.reply(resolveA(q.packet))): Promise<TestServer> {
  const state: TestServer = { nameserver: { address: '127.0.0.1', port: 0 }, queries: [], connections: 0, closedByClient: 0 };
  const server = createServer({ noDelay: true }, (socket) => {
    const connection = ++state.connections;
    socket.on('error', () => {});
    socket.on('end', () => state.closedByClient++);
    const framer = new DnsTcpFramer();
    socket.on('data', (chunk: Buffer) => {
      framer.push(chunk);
      for (let message = framer.next(); message !== null; message = framer.next()) {
        const q: Query = { packet: dnsPacket.decode(message), socket, connection, reply: (m) => socket.write(frame(m)) };
        state.queries.push(q);
        behave(q);
      }
    });
  });
  servers.push(server);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  state.nameserver = { address: '127.0.0.1', port: (server.address() as AddressInfo).port };
  return state;
}

/** A port nobody listens on. */
async function closedPort(): Promise<TcpNameserver> {
  const server = createServer().listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as AddressInfo).port;
  await new Promise((resolve) => server.close(resolve));
  return { address: '127.0.0.1', port };
}

const open = (ns: TcpNameserver) =>
  new Observable<Duplex>((subscriber) => {
    const socket = connect({ host: ns.address, port: ns.port, noDelay: true });
    socket.once('connect', () => subscriber.next(socket));
    socket.once('error', (err) => subscriber.error(err));
    return () => socket.destroy();
  });

function resolver(nameservers: TcpNameserver[], options: Partial<TcpDnsOptions> = {}): TcpDnsResolver {
  const made = tcpDnsResolver({ nameservers, timeoutMs: 1000, attempts: 1, open, ...options });
  resolvers.push(made);
  return made;
}

const decode = (answer: Buffer) => dnsPacket.decode(answer);
const firstA = (answer: Buffer) => (decode(answer).answers?.[0] as { data?: unknown } | undefined)?.data;
const failure = (promise: Promise<unknown>) => promise.then(() => expect.fail('answered'), (err: unknown) => err);

describe('DnsTcpFramer', () => {
  it('reassembles messages split anywhere and splits several in one chunk', () => {
    const messages = [query(1), query(2, 'b.lab'), Buffer.alloc(0), query(3, 'x'.repeat(60))];
    const stream = Buffer.concat(messages.map(frame));
    for (const size of [1, 2, 3, 7, stream.length]) {
      const framer = new DnsTcpFramer();
      const out: Buffer[] = [];
      for (let at = 0; at < stream.length; at += size) {
        framer.push(stream.subarray(at, at + size));
        for (let m = framer.next(); m !== null; m = framer.next()) out.push(Buffer.from(m));
      }
      expect(out).toEqual(messages);
    }
  });
});

describe('reverseName', () => {
  it('in-addr.arpa and ip6.arpa names', () => {
    expect(reverseName('10.98.0.3')).toBe('3.0.98.10.in-addr.arpa');
    expect(reverseName('fd00::53')).toBe(`3.5.0.0.${'0.'.repeat(26)}d.f.ip6.arpa`);
    expect(reverseName('not an address')).toBeNull();
  });
});

describe('tcpDnsResolver', () => {
  it("answers with the asker's id", async () => {
    const server = await nameserver();
    const answer = await firstValueFrom(resolver([server.nameserver]).ask(query(0x1234, 'host.lab')));
    expect(answer.readUInt16BE(0)).toBe(0x1234);
    expect(firstA(answer)).toBe(addressOf('host.lab'));
  });

  it('pipelines several queries on one connection, each under its own id', async () => {
    const server = await nameserver();
    const { ask } = resolver([server.nameserver]);
    const names = ['a.lab', 'bb.lab', 'ccc.lab', 'dddd.lab', 'eeeee.lab'];
    // The same asker id for all: the connection-unique ids keep them apart.
    const answers = await Promise.all(names.map((name) => firstValueFrom(ask(query(7, name)))));
    expect(answers.map(firstA)).toEqual(names.map(addressOf));
    expect(answers.every((a) => a.readUInt16BE(0) === 7)).toBe(true);
    expect(server.connections).toBe(1);
    expect(new Set(server.queries.map((q) => q.packet.id)).size).toBe(names.length);
  });

  it('matches answers that come out of order', async () => {
    const held: Query[] = [];
    const server = await nameserver((q) => {
      held.push(q);
      if (held.length === 3) for (const h of held.reverse()) h.reply(resolveA(h.packet));
    });
    const { ask } = resolver([server.nameserver]);
    const names = ['a.lab', 'bb.lab', 'ccc.lab'];
    const answers = await Promise.all(names.map((name, i) => firstValueFrom(ask(query(100 + i, name)))));
    expect(answers.map(firstA)).toEqual(names.map(addressOf));
    expect(answers.map((a) => a.readUInt16BE(0))).toEqual([100, 101, 102]);
  });

  it('fails over to the next nameserver when the first refuses the connection', async () => {
    const server = await nameserver();
    const answer = await firstValueFrom(resolver([await closedPort(), server.nameserver]).ask(query(1)));
    expect(firstA(answer)).toBe(addressOf('a.lab'));
  });

  it('fails over to the next nameserver when the first does not answer in time', async () => {
    const silent = await nameserver(() => {});
    const server = await nameserver();
    const started = Date.now();
    const answer = await firstValueFrom(resolver([silent.nameserver, server.nameserver], { timeoutMs: 200 }).ask(query(1)));
    expect(firstA(answer)).toBe(addressOf('a.lab'));
    expect(Date.now() - started).toBeGreaterThanOrEqual(190);
    expect(silent.queries).toHaveLength(1);
  });

  it('takes any answer, SERVFAIL included, as resolveDns does', async () => {
    const failing = await nameserver((q) => q.reply(respond(q.packet, [], 2)));
    const server = await nameserver();
    const answer = await firstValueFrom(resolver([failing.nameserver, server.nameserver]).ask(query(1)));
    expect(answer[3]! & 0x0f).toBe(2);
    expect(server.queries).toHaveLength(0);
  });

  it('errors with RXS_ERR_DNS_FAILED when no nameserver answers, after every attempt', async () => {
    const silent = await nameserver(() => {});
    const { ask } = resolver([await closedPort(), silent.nameserver], { timeoutMs: 100, attempts: 2 });
    const err = await failure(firstValueFrom(ask(query(1))));
    expect(err).toBeInstanceOf(DnsError);
    expect(err).toMatchObject({ code: 'RXS_ERR_DNS_FAILED', message: expect.stringMatching(/ETIMEDOUT from 127\.0\.0\.1:\d+/) });
    expect(silent.queries).toHaveLength(2);
  });

  it('stops when the budget is spent', async () => {
    const silent = await nameserver(() => {});
    const started = Date.now();
    const { ask } = resolver([silent.nameserver], { timeoutMs: 150, attempts: 5, budgetMs: 250 });
    expect(await failure(firstValueFrom(ask(query(1))))).toMatchObject({ code: 'RXS_ERR_DNS_FAILED' });
    expect(Date.now() - started).toBeLessThan(600);
    expect(silent.queries).toHaveLength(2);
  });

  it('sends the queries in flight again on a new connection when the server closes one', async () => {
    const server = await nameserver((q) => {
      if (q.connection === 1) q.socket.end(); // RFC 7766: a server may close at any time
      else q.reply(resolveA(q.packet));
    });
    const answer = await firstValueFrom(resolver([server.nameserver]).ask(query(9, 'again.lab')));
    expect(answer.readUInt16BE(0)).toBe(9);
    expect(firstA(answer)).toBe(addressOf('again.lab'));
    expect(server.connections).toBe(2);
  });

  it('sends a query again only once: a second close fails that nameserver', async () => {
    const server = await nameserver((q) => q.socket.destroy());
    const err = await failure(firstValueFrom(resolver([server.nameserver]).ask(query(1))));
    expect(err).toMatchObject({ code: 'RXS_ERR_DNS_FAILED', message: expect.stringContaining('ECONNRESET') });
    expect(server.connections).toBe(2);
  });

  it('ignores an answer with another question (the query then fails over)', async () => {
    const liar = await nameserver((q) => q.reply(respond({ ...q.packet, questions: [{ type: 'A', name: 'other.lab' }] }, [])));
    const server = await nameserver();
    const answer = await firstValueFrom(resolver([liar.nameserver, server.nameserver], { timeoutMs: 200 }).ask(query(1)));
    expect(firstA(answer)).toBe(addressOf('a.lab'));
    expect(liar.queries).toHaveLength(1);
  });

  it('closes a connection that sends a malformed (short) message, and fails over', async () => {
    const broken = await nameserver((q) => q.socket.write(frame(Buffer.alloc(5))));
    const server = await nameserver();
    const started = Date.now();
    const answer = await firstValueFrom(resolver([broken.nameserver, server.nameserver], { timeoutMs: 5000 }).ask(query(1)));
    expect(firstA(answer)).toBe(addressOf('a.lab'));
    expect(Date.now() - started).toBeLessThan(2000);
    await vi.waitFor(() => expect(broken.closedByClient).toBe(1));
  });

  it('closes a connection idle for idleMs; the next query opens another', async () => {
    const server = await nameserver();
    const { ask } = resolver([server.nameserver], { idleMs: 100 });
    await firstValueFrom(ask(query(1)));
    await vi.waitFor(() => expect(server.closedByClient).toBe(1));
    await firstValueFrom(ask(query(2)));
    expect(server.connections).toBe(2);
  });

  it('close() fails the queries in flight and closes the connections', async () => {
    const silent = await nameserver(() => {});
    const dns = resolver([silent.nameserver], { timeoutMs: 5000 });
    const pending = failure(firstValueFrom(dns.ask(query(1))));
    await vi.waitFor(() => expect(silent.queries).toHaveLength(1));
    dns.close();
    expect(await pending).toMatchObject({ code: 'RXS_ERR_DNS_FAILED', message: 'DNS over TCP closed' });
    await vi.waitFor(() => expect(silent.closedByClient).toBe(1));
    expect(await failure(firstValueFrom(dns.ask(query(2))))).toMatchObject({ code: 'RXS_ERR_DNS_FAILED' });
  });

  it('unsubscribing abandons a query; its late answer is dropped', async () => {
    const held: Query[] = [];
    const server = await nameserver((q) => held.push(q));
    const { ask } = resolver([server.nameserver]);
    ask(query(1, 'gone.lab')).subscribe().unsubscribe();
    const next = firstValueFrom(ask(query(2, 'kept.lab')));
    await vi.waitFor(() => expect(held).toHaveLength(2));
    for (const q of held) q.reply(resolveA(q.packet));
    expect(firstA(await next)).toBe(addressOf('kept.lab'));
  });

  it(`holds at most ${MAX_IN_FLIGHT_PER_CONNECTION} queries in flight on a connection; one more fails that nameserver at once`, async () => {
    const silent = await nameserver(() => {});
    const { ask } = resolver([silent.nameserver], { timeoutMs: 5000 });
    const waiting = Array.from({ length: MAX_IN_FLIGHT_PER_CONNECTION }, (_, i) => ask(query(i)).subscribe({ error: () => {} }));
    const started = Date.now();
    expect(await failure(firstValueFrom(ask(query(999))))).toMatchObject({ code: 'RXS_ERR_DNS_FAILED', message: expect.stringContaining('EBUSY') });
    expect(Date.now() - started).toBeLessThan(1000);
    for (const subscription of waiting) subscription.unsubscribe();
  });

  it('carries a 4 KB TXT answer intact, arriving in pieces', async () => {
    const strings = Array.from({ length: 16 }, (_, i) => String.fromCharCode(97 + i).repeat(250));
    const server = await nameserver((q) => {
      const wire = frame(respond(q.packet, [{ type: 'TXT', name: 'big.lab', data: [...strings] }]));
      expect(wire.length).toBeGreaterThan(4000);
      // In pieces that cut the length prefix and the message.
      const cuts = [1, 700, 3000, wire.length];
      cuts.reduce((from, to, i) => {
        setTimeout(() => q.socket.write(wire.subarray(from, to)), i * 10);
        return to;
      }, 0);
    });
    const answer = await firstValueFrom(resolver([server.nameserver]).ask(query(3, 'big.lab', 'TXT')));
    const txt = decode(answer).answers?.[0] as { data: Buffer[] };
    expect(txt.data.map(String)).toEqual(strings);
  });

  it('rejects something that is not a DNS message', async () => {
    const server = await nameserver();
    expect(await failure(firstValueFrom(resolver([server.nameserver]).ask(Buffer.alloc(5))))).toMatchObject({ code: 'RXS_ERR_DNS_FAILED' });
    expect(server.connections).toBe(0);
  });

  it('emits one answer and completes', async () => {
    const server = await nameserver();
    expect(await lastValueFrom(resolver([server.nameserver]).ask(query(1)).pipe(toArray()))).toHaveLength(1);
  });
});

describe('dnsLookups', () => {
  /** A zone: PTR for 10.98.0.3 through an RFC 2317 CNAME, fd00::53; A/AAAA for db.lab via a CNAME chain. */
  const zone = (q: DecodedPacket): Buffer => {
    const { name = '', type } = q.questions?.[0] ?? {};
    const v4 = reverseName('10.98.0.3');
    if (type === 'PTR' && name === v4)
      return respond(q, [
        { type: 'CNAME', name: v4, data: '3.0-63.0.98.10.in-addr.arpa' },
        { type: 'PTR', name: '3.0-63.0.98.10.in-addr.arpa', data: 'db.lab' },
      ]);
    if (type === 'PTR' && name === reverseName('fd00::53')) return respond(q, [{ type: 'PTR', name, data: 'ns.lab.' }]);
    if (type === 'PTR' && name === reverseName('10.98.0.4')) return respond(q, []);
    if (name === 'db.lab' && (type === 'A' || type === 'AAAA'))
      return respond(q, [
        { type: 'CNAME', name: 'db.lab', data: 'db2.lab' },
        { type: 'CNAME', name: 'db2.lab', data: 'real.lab' },
        type === 'A' ? { type: 'A', name: 'real.lab', data: '10.98.0.3' } : { type: 'AAAA', name: 'real.lab', data: 'fd00::3' },
        { type: 'A', name: 'unrelated.lab', data: '10.98.0.99' },
      ]);
    if (name === 'v4only.lab' && type === 'A') return respond(q, [{ type: 'A', name, data: '10.98.0.5' }]);
    if (name === 'v4only.lab') return respond(q, []);
    return respond(q, [], 3);
  };

  it('reverse: PTR names (through a CNAME), both families; rejects when there are none', async () => {
    const server = await nameserver((q) => q.reply(zone(q.packet)));
    const lookups = dnsLookups(resolver([server.nameserver]).ask);
    expect(await lookups.reverse('10.98.0.3')).toEqual(['db.lab']);
    expect(await lookups.reverse('fd00::53')).toEqual(['ns.lab']);
    expect(await failure(lookups.reverse('10.98.0.9'))).toMatchObject({ code: 'ENOTFOUND' });
    expect(await failure(lookups.reverse('10.98.0.4'))).toMatchObject({ code: 'ENODATA' });
  });

  it('lookup: A and AAAA merged, through the CNAME chain; ENOTFOUND when there is nothing', async () => {
    const server = await nameserver((q) => q.reply(zone(q.packet)));
    const lookups = dnsLookups(resolver([server.nameserver]).ask);
    expect(await lookups.lookup('db.lab')).toEqual(['10.98.0.3', 'fd00::3']);
    expect(await lookups.lookup('v4only.lab')).toEqual(['10.98.0.5']);
    expect(await lookups.lookup('10.1.2.3')).toEqual(['10.1.2.3']);
    expect(await failure(lookups.lookup('nowhere.lab'))).toMatchObject({ code: 'ENOTFOUND', message: 'getaddrinfo ENOTFOUND nowhere.lab' });
  });

  it('lookup: a resolver failure is reported as such', async () => {
    const lookups = dnsLookups(resolver([await closedPort()]).ask);
    expect(await failure(lookups.lookup('db.lab'))).toMatchObject({ code: 'RXS_ERR_DNS_FAILED' });
  });
});
