import { createSocket, type Socket } from 'node:dgram';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { createServer, type Server } from 'node:net';
import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  type Nameserver,
  parseResolvConf,
  type ResolvConf,
  resolveDns,
  tcpExchange,
  udpExchange,
} from '../../src/remote/dns-server.js';

const query = (id: number) => Buffer.from([id >> 8, id & 0xff, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0x61, 0, 0, 1, 0, 1]);
const answer = (id: number, flags3 = 0x80, tc = false, extra = 0) =>
  Buffer.concat([Buffer.from([id >> 8, id & 0xff, 0x81 | (tc ? 0x02 : 0), flags3, 0, 1, 0, 0, 0, 0, 0, 0]), Buffer.alloc(extra, 0x61)]);
const ns = (address: string, port = 53): Nameserver => ({ address, port, family: address.includes(':') ? 6 : 4 });

describe('parseResolvConf', () => {
  it('reads nameservers (at most three), timeout and attempts; ignores comments and junk', () => {
    const conf = parseResolvConf(
      [
        '# generated',
        'search lab',
        'nameserver 10.98.0.9',
        'nameserver fd00::53 # v6',
        'nameserver not-an-address',
        'nameserver fe80::1%eth0',
        'nameserver 10.98.0.3',
        'options timeout:2 attempts:1 rotate',
      ].join('\n'),
    );
    expect(conf).toEqual({
      nameservers: [ns('10.98.0.9'), ns('fd00::53'), { address: 'fe80::1%eth0', port: 53, family: 6 }],
      timeoutMs: 2000,
      attempts: 1,
    });
  });

  it("glibc's defaults: 127.0.0.1, 5 s, 2 attempts; out-of-range options are clamped", () => {
    expect(parseResolvConf('')).toEqual({ nameservers: [ns('127.0.0.1')], timeoutMs: 5000, attempts: 2 });
    expect(parseResolvConf('options timeout:0 attempts:99')).toMatchObject({ timeoutMs: 1000, attempts: 5 });
  });
});

describe('resolveDns (fake exchanges)', () => {
  const conf: ResolvConf = { nameservers: [ns('10.0.0.1'), ns('10.0.0.2')], timeoutMs: 1000, attempts: 1 };
  const timedOut = () => Promise.reject(new Error('ETIMEDOUT from somewhere'));

  it('answers from the first nameserver that answers, in order', async () => {
    const asked: string[] = [];
    const udp = async (q: Buffer, server: Nameserver, timeoutMs: number) => {
      asked.push(`${server.address}/${timeoutMs}`);
      return server.address === '10.0.0.1' ? timedOut() : answer(q.readUInt16BE(0));
    };
    expect(await resolveDns(query(7), { conf, udp })).toEqual(answer(7));
    expect(asked).toEqual(['10.0.0.1/1000', '10.0.0.2/1000']);
  });

  it('goes round the list `attempts` times, then fails with the last error', async () => {
    const asked: string[] = [];
    const udp = async (_q: Buffer, server: Nameserver) => {
      asked.push(server.address);
      throw new Error(`ECONNREFUSED from ${server.address}:53`);
    };
    await expect(resolveDns(query(1), { conf: { ...conf, attempts: 2 }, udp })).rejects.toThrow('ECONNREFUSED from 10.0.0.2:53');
    expect(asked).toEqual(['10.0.0.1', '10.0.0.2', '10.0.0.1', '10.0.0.2']);
  });

  it('--to-ns: only the target is asked', async () => {
    const asked: string[] = [];
    const udp = async (q: Buffer, server: Nameserver) => {
      asked.push(`${server.address}:${server.port}`);
      return answer(q.readUInt16BE(0));
    };
    await resolveDns(query(1), { conf, udp, target: { family: 6, address: 'fd00::53', port: 5353 } });
    expect(asked).toEqual(['fd00::53:5353']);
  });

  it('a truncated UDP answer is asked again over TCP; if TCP fails, the truncated one is returned', async () => {
    const cut = answer(3, 0x80, true);
    const full = answer(3, 0x80, false, 3000);
    expect(await resolveDns(query(3), { conf, udp: async () => cut, tcp: async () => full })).toEqual(full);
    expect(await resolveDns(query(3), { conf, udp: async () => cut, tcp: timedOut })).toEqual(cut);
  });

  it('gives up when the overall budget is spent', async () => {
    const asked: string[] = [];
    const udp = async (_q: Buffer, server: Nameserver, timeoutMs: number) => {
      asked.push(server.address);
      await new Promise((r) => setTimeout(r, timeoutMs));
      throw new Error('ETIMEDOUT');
    };
    // Virtual time: on a loaded machine real timers fire late, and fewer nameservers get their turn.
    vi.useFakeTimers();
    try {
      const t0 = Date.now();
      const result = resolveDns(query(1), { conf: { ...conf, timeoutMs: 100, attempts: 5 }, udp, budgetMs: 250 });
      const settled = expect(result).rejects.toThrow('ETIMEDOUT');
      await vi.advanceTimersByTimeAsync(1000);
      await settled;
      expect(asked.length).toBe(3);
      expect(Date.now() - t0).toBeLessThanOrEqual(1000);
    } finally {
      vi.useRealTimers();
    }
  });
});

describe('exchanges with real sockets on 127.0.0.1', () => {
  const closers: Array<() => void> = [];
  afterEach(() => {
    for (const close of closers.splice(0)) close();
  });

  async function udpServer(onQuery: (q: Buffer, reply: (b: Buffer) => void) => void): Promise<number> {
    const socket: Socket = createSocket('udp4');
    socket.on('message', (msg, rinfo) => onQuery(msg, (b) => socket.send(b, rinfo.port, rinfo.address)));
    socket.bind(0, '127.0.0.1');
    await once(socket, 'listening');
    closers.push(() => socket.close());
    return socket.address().port;
  }

  it('udp: ignores datagrams that are not the answer (wrong id, not a response), takes the right one', async () => {
    const port = await udpServer((q, reply) => {
      const id = q.readUInt16BE(0);
      reply(answer(id + 1)); // wrong id
      reply(q); // a query, not a response
      setTimeout(() => reply(answer(id)), 20);
    });
    expect(await udpExchange(query(0x4242), ns('127.0.0.1', port), 1000)).toEqual(answer(0x4242));
  });

  it('udp: a closed port fails at once (ECONNREFUSED), a silent one after the timeout', async () => {
    const closed = await udpServer(() => {});
    closers.pop()?.(); // close it again: the port is now closed
    const t0 = Date.now();
    await expect(udpExchange(query(1), ns('127.0.0.1', closed), 3000)).rejects.toThrow(/ECONNREFUSED from 127\.0\.0\.1:\d+/);
    expect(Date.now() - t0).toBeLessThan(1000);
    const silent = await udpServer(() => {});
    await expect(udpExchange(query(1), ns('127.0.0.1', silent), 200)).rejects.toThrow(/ETIMEDOUT from 127\.0\.0\.1/);
  });

  it('tcp: two-byte length framing, answer split over several segments', async () => {
    const server: Server = createServer((socket) => {
      socket.once('data', (data: Buffer) => {
        const q = data.subarray(2);
        const a = answer(q.readUInt16BE(0), 0x80, false, 5000);
        const framed = Buffer.concat([Buffer.from([a.length >> 8, a.length & 0xff]), a]);
        socket.write(framed.subarray(0, 1));
        setTimeout(() => socket.write(framed.subarray(1, 100)), 10);
        setTimeout(() => socket.end(framed.subarray(100)), 20);
      });
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    closers.push(() => server.close());
    const port = (server.address() as AddressInfo).port;
    expect(await tcpExchange(query(9), ns('127.0.0.1', port), 1000)).toEqual(answer(9, 0x80, false, 5000));
  });
});
