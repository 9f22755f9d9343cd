/**
 * The transparent UDP sockets without TPROXY, on loopback in the test's own namespace: what the
 * stream does on its own (errors, unsubscribing from inside next, pausing) and the sockaddr
 * codec. IP_TRANSPARENT needs CAP_NET_ADMIN, so the socket tests need root; the TPROXY path
 * itself is in transparent.netns.test.ts.
 */
import { createSocket, type Socket } from 'node:dgram';
import fc from 'fast-check';
import { BehaviorSubject, firstValueFrom, take, toArray } from 'rxjs';
import { describe, expect, it } from 'vitest';
import { formatIp } from '../../src/shared/ip.js';
import { UdpSocketError } from '../../src/udp/errors.js';
import { ReplySocket } from '../../src/udp/reply-socket.js';
import { decodeSockaddr, encodeSockaddr } from '../../src/udp/sockaddr.js';
import { type TransparentDatagram, transparentUdp$ } from '../../src/udp/transparent-udp.js';
import { skipBecause } from '../support/skip.js';

const isRoot = process.getuid?.() === 0;
// CI runs as root: there, a missing privilege is a failure, never a quiet skip.
if (!isRoot && process.env.CI === 'true') throw new Error('transparent UDP tests need root (IP_TRANSPARENT needs CAP_NET_ADMIN)');
if (!isRoot && process.env.CI === 'true') throw new Error('transparent UDP socket tests need root (CAP_NET_ADMIN)');

/** A port nobody uses right now on loopback (the listener has no "any port" mode). */
async function freePort(type: 'udp4' | 'udp6'): Promise<number> {
  const probe = createSocket(type);
  await new Promise<void>((resolve) => probe.bind(0, type === 'udp4' ? '127.0.0.1' : '::1', resolve));
  const { port } = probe.address();
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  return port;
}

async function boundSocket(type: 'udp4' | 'udp6'): Promise<Socket> {
  const socket = createSocket(type);
  await new Promise<void>((resolve) => socket.bind(0, type === 'udp4' ? '127.0.0.1' : '::1', resolve));
  return socket;
}

const sendTo = (socket: Socket, data: Buffer, port: number, address: string) =>
  new Promise<void>((resolve, reject) => socket.send(data, port, address, (error) => (error ? reject(error) : resolve())));
const closeSocket = (socket: Socket) => new Promise<void>((resolve) => socket.close(() => resolve()));

describe('sockaddr codec', () => {
  it('decodes what it encodes, for every IPv4 and IPv6 address and port', () => {
    fc.assert(
      fc.property(fc.oneof(fc.ipV4(), fc.ipV6()), fc.integer({ min: 0, max: 0xffff }), (address, port) => {
        const family = address.includes(':') ? 6 : 4;
        const sockaddr = encodeSockaddr(family, { address, port });
        const decoded = decodeSockaddr(sockaddr, 0, sockaddr.length);
        expect(decoded?.family).toBe(family);
        expect(decoded?.port).toBe(port);
        // fast-check spells IPv6 its own way: compare the canonical forms.
        const canonical = family === 4 ? address : formatIp(sockaddr.subarray(8, 24));
        expect(decoded?.address).toBe(canonical);
      }),
    );
  });

  it('refuses an address of the other family and ports out of range; decodes nothing from a short or unknown sockaddr', () => {
    expect(() => encodeSockaddr(4, { address: '::1', port: 1 })).toThrow(RangeError);
    expect(() => encodeSockaddr(6, { address: '127.0.0.1', port: 1 })).toThrow(RangeError);
    expect(() => encodeSockaddr(4, { address: '127.0.0.1', port: 65_536 })).toThrow(RangeError);
    expect(decodeSockaddr(Buffer.alloc(8), 0, 8)).toBeNull();
    expect(decodeSockaddr(Buffer.alloc(16), 0, 16)).toBeNull(); // family 0
  });
});

describe('transparent UDP listener and reply socket on loopback', skipBecause(!isRoot && 'needs root (IP_TRANSPARENT needs CAP_NET_ADMIN)'), () => {
  for (const family of [4, 6] as const) {
    const type = family === 4 ? 'udp4' : 'udp6';
    const loopback = family === 4 ? '127.0.0.1' : '::1';

    it(`IPv${family}: a datagram sent straight to the listener has the listener's own address as destination`, async () => {
      const port = await freePort(type);
      const first = firstValueFrom(transparentUdp$(family, port));
      const sender = await boundSocket(type);
      await sendTo(sender, Buffer.from('hello'), port, loopback);
      const datagram = await first;
      expect(datagram).toEqual<TransparentDatagram>({
        data: Buffer.from('hello'),
        source: { address: loopback, port: sender.address().port },
        destination: { address: loopback, port },
        dropped: 0,
      });
      await closeSocket(sender);
    });

    it(`IPv${family}: a second listener on the same port fails with EADDRINUSE; the port is free again once the first unsubscribes`, async () => {
      const port = await freePort(type);
      let firstError: unknown;
      const first = transparentUdp$(family, port).subscribe({ error: (e: unknown) => (firstError = e) });
      const error = await firstValueFrom(transparentUdp$(family, port)).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(UdpSocketError);
      expect(error).toMatchObject({ code: 'RXS_ERR_LISTEN', syscall: 'bind', errnoCode: 'EADDRINUSE' });
      expect(firstError).toBeUndefined();
      first.unsubscribe();
      const again = transparentUdp$(family, port).subscribe({ error: (e: unknown) => expect.fail(String(e)) });
      again.unsubscribe();
    });

    it(`IPv${family}: unsubscribing from inside next stops reading at once, with datagrams still waiting`, async () => {
      const port = await freePort(type);
      const sender = await boundSocket(type);
      const paused$ = new BehaviorSubject(true);
      const firstTwo = firstValueFrom(transparentUdp$(family, port, { paused$ }).pipe(take(2), toArray()));
      for (let i = 0; i < 5; i++) await sendTo(sender, Buffer.from([i]), port, loopback);
      paused$.next(false);
      const datagrams = await firstTwo;
      expect(datagrams.map((d) => d.data[0])).toEqual([0, 1]);
      // Closed: the port can be bound again by a plain socket.
      const reuse = createSocket(type);
      await new Promise<void>((resolve, reject) => {
        reuse.once('error', reject);
        reuse.bind(port, loopback, resolve);
      });
      await closeSocket(reuse);
      await closeSocket(sender);
    });

    it(`IPv${family}: a reply socket sends from the address it is bound to, refuses port 0, and throws once closed`, async () => {
      const receiver = await boundSocket(type);
      const from = { address: loopback, port: await freePort(type) };
      const reply = ReplySocket.open(family, from);
      const got = new Promise<{ data: Buffer; from: { address: string; port: number } }>((resolve) =>
        receiver.once('message', (data, info) => resolve({ data, from: { address: info.address, port: info.port } })),
      );
      expect(reply.send(Buffer.from('answer'), { address: loopback, port: receiver.address().port })).toBe(true);
      expect(await got).toEqual({ data: Buffer.from('answer'), from });
      // Two flows answering from the same original destination (two programs asking one DNS
      // server) each have their own reply socket.
      const second = ReplySocket.open(family, from);
      second.close();
      reply.close();
      expect(reply.closed).toBe(true);
      expect(() => reply.send(Buffer.from('late'), { address: loopback, port: receiver.address().port })).toThrow(/closed/);
      expect(() => ReplySocket.open(family, { address: loopback, port: 0 })).toThrow(UdpSocketError);
      await closeSocket(receiver);
    });
  }

  it('an open failure is the stream error, not an exception at subscribe', async () => {
    const error = await firstValueFrom(transparentUdp$(4, 1, { address: '::1' })).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(RangeError);
  });
});
