/**
 * The client's side of --dns. The firewall REDIRECTs DNS to the captured nameservers (UDP and
 * TCP port 53) to one port of ours; here UDP and TCP sockets on that port take each query, ask
 * the tunnel (one Observable per query), and answer the program. The program sees the answer
 * coming from the nameserver it asked: conntrack undoes the REDIRECT on the reply.
 *
 * UDP answers are cut to what the asker takes (512 bytes, or its EDNS size) with TC set, so it
 * asks again over TCP, which arrives here too and gets the whole answer. When the server
 * reports that no nameserver answered, the program gets SERVFAIL; when the tunnel gives no
 * reply in time, it gets nothing (its own timeout and retry apply, as with a dead nameserver).
 * Answers are checked first (checkAnswer): one with another id or question gets the program
 * SERVFAIL, and records about names the question does not lead to are dropped.
 */
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { createServer, isIPv4, isIPv6, type Server, type Socket } from 'node:net';
import createDebug from 'debug';
import { finalize, Observable, Subscription } from 'rxjs';
import { DnsError, errorMessage, ListenError } from '../shared/errors.js';
import type { TunnelEvent } from '../shared/events.js';
import { parseSubnet } from '../shared/options.js';
import { formatPeer } from '../streams/destination.js';
import { MAX_DNS_QUERY } from '../streams/dns.js';
import { resource$ } from '../streams/resource.js';
import { checkAnswer, fitForUdp, inspectQuery, rcodeName, rcodeOf, servfail } from './dns-message.js';

const debug = createDebug('rxshuttle:dns');

/** Asks the tunnel for the answer to one DNS message. */
export type AskDns = (message: Buffer) => Observable<Buffer>;

export interface DnsSockets {
  readonly port: number;
  readonly udp: readonly UdpSocket[];
  readonly tcp: readonly Server[];
}

/** Queries answered at once; beyond this the asker gets SERVFAIL at once. */
export const MAX_DNS_IN_FLIGHT = 1024;
/** A DNS-over-TCP connection with nothing to do for this long is closed. */
const TCP_IDLE_MS = 30_000;
const PORT_SEARCH = 100;

/** The nameservers of a resolv.conf, canonical; zoned (link-local) ones cannot be captured and are left out. */
export function resolvConfNameservers(text: string): string[] {
  const out: string[] = [];
  for (const line of text.split('\n')) {
    const [word, address] = line.replace(/[#;].*/, '').trim().split(/\s+/);
    if (word !== 'nameserver' || address === undefined || address.includes('%') || !(isIPv4(address) || isIPv6(address))) continue;
    const canonical = parseSubnet(address).address;
    if (!out.includes(canonical)) out.push(canonical);
  }
  return out;
}

const UDP_RECEIVE_BUFFER = 1024 * 1024;

function bindUdp(host: string, port: number): Promise<UdpSocket> {
  return new Promise((resolve, reject) => {
    const socket = createSocket({ type: isIPv4(host) ? 'udp4' : 'udp6', ipv6Only: !isIPv4(host) });
    socket.once('error', reject);
    socket.bind({ address: host, port, exclusive: true }, () => {
      socket.off('error', reject);
      // A burst of queries (a browser opening a page) must not overflow the default buffer:
      // a dropped UDP query costs its asker a retry timeout. The kernel caps it at rmem_max.
      try {
        socket.setRecvBufferSize(UDP_RECEIVE_BUFFER);
      } catch (err) {
        debug('cannot grow the DNS socket buffer: %s', errorMessage(err));
      }
      resolve(socket);
    });
  });
}

function listenTcp(host: string, port: number): Promise<Server> {
  return new Promise((resolve, reject) => {
    const server = createServer({ noDelay: true, allowHalfOpen: true });
    server.once('error', reject);
    server.listen({ host, port, ipv6Only: !isIPv4(host) }, () => {
      server.off('error', reject);
      resolve(server);
    });
  });
}

/**
 * UDP and TCP sockets on one port at each of `hosts`: the first port from `firstPort` upwards
 * (skipping `avoid`) that is free for both protocols on every host.
 */
export async function bindDnsSockets(hosts: readonly string[], firstPort: number, avoid: number): Promise<DnsSockets> {
  let lastError: unknown;
  for (let port = firstPort; port < firstPort + PORT_SEARCH && port <= 65535; port++) {
    if (port === avoid) continue;
    const udp: UdpSocket[] = [];
    const tcp: Server[] = [];
    try {
      for (const host of hosts) {
        udp.push(await bindUdp(host, port));
        tcp.push(await listenTcp(host, port));
      }
      for (const socket of udp) socket.on('error', (err) => debug('udp socket: %s', errorMessage(err)));
      for (const server of tcp) server.on('error', (err) => debug('tcp listener: %s', errorMessage(err)));
      return { port, udp, tcp };
    } catch (err) {
      closeDnsSockets({ port, udp, tcp });
      lastError = err;
      if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE') break;
    }
  }
  throw new ListenError(`cannot listen for DNS on ${hosts.join(', ')} (ports ${firstPort}+): ${errorMessage(lastError)}`);
}

function closeDnsSockets(sockets: DnsSockets): void {
  for (const socket of sockets.udp) {
    try {
      socket.close();
    } catch {
      // closed already
    }
  }
  for (const server of sockets.tcp) server.close();
}

/** The DNS sockets as a resource: emitted once bound; unsubscribing closes them. */
export function dnsSockets$(hosts: readonly string[], firstPort: number, avoid: number): Observable<DnsSockets> {
  return resource$(() => bindDnsSockets(hosts, firstPort, avoid), closeDnsSockets);
}

type DnsEvent = Extract<TunnelEvent, { kind: 'dns' }>;

/**
 * Serves captured queries on `sockets` for as long as it is subscribed; reports each query's
 * outcome. Unsubscribing drops the queries in flight and closes the TCP connections.
 */
export function dnsCapture$(sockets: DnsSockets, ask: AskDns, maxInFlight = MAX_DNS_IN_FLIGHT): Observable<TunnelEvent> {
  return new Observable<TunnelEvent>((out) => {
    const inFlight = new Set<Subscription>();
    const connections = new Set<Socket>();

    /** Answers one query through `reply` (at most once); `done` runs when it is over, answered or not. */
    const handle = (
      message: Buffer,
      source: string,
      transport: 'udp' | 'tcp',
      reply: (answer: Buffer) => void,
      done: () => void = () => {},
    ) => {
      const info = inspectQuery(message);
      if (info === null || message.length > MAX_DNS_QUERY) {
        debug('dropping %d bytes from %s over %s: not a DNS query we forward', message.length, source, transport);
        return done();
      }
      const started = Date.now();
      const report = (outcome: DnsEvent['outcome'], detail: string) =>
        out.next({ kind: 'dns', source, question: info.question, transport, outcome, detail, ms: Date.now() - started });
      if (inFlight.size >= maxInFlight) {
        reply(servfail(message));
        report('failed', `${maxInFlight} queries in flight already`);
        return done();
      }
      const holder = new Subscription();
      inFlight.add(holder);
      holder.add(
        ask(message)
          .pipe(
            finalize(() => {
              inFlight.delete(holder);
              done();
            }),
          )
          .subscribe({
            next: (raw) => {
              // The remote is not trusted: an answer to another query is refused, records about
              // names the question does not lead to are taken out (dns-message checkAnswer).
              const checked = checkAnswer(message, raw);
              if (checked.kind === 'rejected') {
                debug('refusing an answer to %s from the tunnel: %s', info.question, checked.reason);
                reply(servfail(message));
                report('failed', checked.reason);
                return;
              }
              const { answer, dropped } = checked;
              const sent = transport === 'udp' ? fitForUdp(answer, info.udpLimit) : answer;
              reply(sent);
              const filtered = dropped === 0 ? '' : `, ${dropped} record${dropped === 1 ? '' : 's'} dropped`;
              const cut = sent === answer ? '' : `, cut to ${sent.length} for UDP (TC)`;
              report('answered', `${rcodeName(rcodeOf(answer))}, ${answer.length} bytes${filtered}${cut}`);
            },
            error: (err: unknown) => {
              if (err instanceof DnsError && err.code === 'RXS_ERR_DNS_FAILED') {
                reply(servfail(message));
                report('failed', err.message);
              } else {
                report('timeout', errorMessage(err));
              }
            },
          }),
      );
    };

    const onDatagram = (socket: UdpSocket) => (message: Buffer, from: { address: string; port: number }) =>
      handle(message, formatPeer(from.address, from.port), 'udp', (answer) =>
        socket.send(answer, from.port, from.address, (err) => err && debug('answer to %s: %s', from.address, err.message)),
      );
    const udpHandlers = sockets.udp.map((socket) => {
      const handler = onDatagram(socket);
      socket.on('message', handler);
      return () => socket.off('message', handler);
    });

    const onConnection = (socket: Socket) => {
      socket.on('error', (err) => debug('dns tcp connection: %s', err.message));
      connections.add(socket);
      socket.once('close', () => connections.delete(socket));
      socket.setTimeout(TCP_IDLE_MS, () => socket.destroy());
      const source = formatPeer(socket.remoteAddress, socket.remotePort);
      let buffered: Buffer = Buffer.alloc(0);
      let pending = 0;
      let peerEnded = false;
      // The asker may half-close after its last query: answer everything first, then end.
      const endIfDone = () => {
        if (peerEnded && pending === 0 && !socket.writableEnded) socket.end();
      };
      socket.on('data', (chunk: Buffer) => {
        buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
        while (buffered.length >= 2) {
          const length = buffered.readUInt16BE(0);
          if (buffered.length < 2 + length) break;
          const message = Buffer.from(buffered.subarray(2, 2 + length));
          buffered = buffered.subarray(2 + length);
          pending++;
          const write = (answer: Buffer) => {
            if (socket.destroyed || socket.writableEnded) return;
            const prefix = Buffer.allocUnsafe(2);
            prefix.writeUInt16BE(answer.length, 0);
            socket.write(Buffer.concat([prefix, answer]));
          };
          handle(message, source, 'tcp', write, () => {
            pending--;
            endIfDone();
          });
        }
      });
      socket.on('end', () => {
        peerEnded = true;
        endIfDone();
      });
    };
    for (const server of sockets.tcp) server.on('connection', onConnection);

    return () => {
      for (const off of udpHandlers) off();
      for (const server of sockets.tcp) server.off('connection', onConnection);
      for (const subscription of [...inFlight]) subscription.unsubscribe();
      for (const socket of connections) socket.destroy();
    };
  });
}
