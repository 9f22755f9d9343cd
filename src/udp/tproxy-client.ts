/**
 * The client's side of `--method tproxy` (the rules are the helper's: firewall/tproxy.ts): TCP
 * listeners made transparent, where a connection's own local address is where it was going, and
 * the UDP datagrams TPROXY diverts to us, with reply sockets that answer from the address the
 * program sent to. Side effects at the edge; the flows themselves are streams/udp-flows.ts.
 */
import type { AddressInfo, Server, Socket } from 'node:net';
import { isIPv4 } from 'node:net';
import createDebug from 'debug';
import { filter, map, merge, type Observable } from 'rxjs';
import { descriptorOf } from '../os/libc.js';
import type { Destination } from '../streams/frame.js';
import type { LocalDatagram, UdpFlowOutput } from '../streams/udp-flows.js';
import { ReplySocket } from './reply-socket.js';
import { transparentUdp$ } from './transparent-udp.js';
import { setTransparent } from './udp-libc.js';

const debug = createDebug('rxshuttle:udp');

/** Sets IP_TRANSPARENT on every listening socket: TPROXY hands connections only to transparent ones. */
export function makeListenersTransparent(servers: readonly Server[]): void {
  for (const server of servers) {
    const fd = descriptorOf(server);
    const address = server.address() as AddressInfo | null;
    if (fd === undefined || address === null) throw new Error('--method tproxy: a listener has no descriptor');
    setTransparent(fd, address.family === 'IPv6' ? 6 : 4, `the listener on ${address.address}:${address.port}`);
  }
}

/** Where a TPROXYed connection was going: the kernel gave the accepted socket that very address. */
export function localDestination(socket: Socket): Destination {
  const address = socket.localAddress;
  const port = socket.localPort;
  if (address === undefined || port === undefined) throw new Error('no local address');
  return { family: isIPv4(address) ? 4 : 6, address, port };
}

/**
 * The datagrams TPROXY diverts to `port` on 127.0.0.1 (and ::1 with `ipv6`). A datagram sent to
 * the listener's own address (someone aimed at the port itself) is no program's flow: dropped.
 */
export function capturedDatagrams$(port: number, ipv6: boolean): Observable<LocalDatagram> {
  const listen = (family: 4 | 6, address: string): Observable<LocalDatagram> =>
    transparentUdp$(family, port, { address }).pipe(
      filter((d) => !(d.destination.address === address && d.destination.port === port)),
      map((d) => ({ data: d.data, source: { family, ...d.source }, destination: { family, ...d.destination } })),
    );
  return ipv6 ? merge(listen(4, '127.0.0.1'), listen(6, '::1')) : listen(4, '127.0.0.1');
}

/**
 * One reply socket per flow, bound to the flow's original destination, opened with its first
 * reply and closed with the flow. At most as many as the flows (udp-flows.ts bounds them).
 */
export class ReplySockets {
  readonly #byFlow = new Map<number, ReplySocket>();

  /** Handles what the flows emit for the local side: replies to send, and flows that ended. */
  take(output: UdpFlowOutput): void {
    if (output.kind === 'reply') this.#send(output.flow, output.source, output.destination, output.data);
    else if (output.kind === 'udp-close') this.close(output.id);
  }

  close(flow: number): void {
    this.#byFlow.get(flow)?.close();
    this.#byFlow.delete(flow);
  }

  closeAll(): void {
    for (const socket of this.#byFlow.values()) socket.close();
    this.#byFlow.clear();
  }

  get size(): number {
    return this.#byFlow.size;
  }

  #send(flow: number, from: Destination, to: Destination, data: Buffer): void {
    try {
      let socket = this.#byFlow.get(flow);
      if (socket === undefined) {
        socket = ReplySocket.open(from.family, { address: from.address, port: from.port });
        this.#byFlow.set(flow, socket);
      }
      // false: the kernel had no room; the datagram is lost, as the network could have lost it.
      if (!socket.send(data, { address: to.address, port: to.port })) debug('reply of flow %d dropped: no room', flow);
    } catch (err) {
      debug('reply of flow %d not sent: %s', flow, err instanceof Error ? err.message : String(err));
    }
  }
}
