// Issue 16, finding 4: the ids of 'accept'/'close' (and of UDP flows) are the tunnel's, one
// counter for every path and session. Before, ssh's hand-offs (tunnel/route-connections.ts) counted from 1 on their
// own, and the mux's channel ids (per session, from 1) went out as they were: with --ssh-forward
// beyond its hand-off limit, or with ssh2 and a destination sshd refused, `#1` was two live
// connections at once, and each reconnect began at `#1` again.
import type { Socket } from 'node:net';
import { concat, NEVER, type Observable, of, Subject } from 'rxjs';
import { describe, expect, it } from 'vitest';
import { ConnectionIds, channelEvent, flowEvent, type TunnelEvent } from '../../src/shared/events.js';
import { initialStatus, reduceStatus } from '../../src/status/snapshot.js';
import type { Destination } from '../../src/streams/frame.js';
import { type AcceptedConnection, type MuxOutput, runMux } from '../../src/streams/mux.js';
import type { UdpMessage } from '../../src/streams/udp.js';
import { type LocalDatagram, type UdpFlowOutput, udpFlows } from '../../src/streams/udp-flows.js';
import type { HandOff } from '../../src/transport/control-master.js';
import type { Redirected } from '../../src/tunnel/listener.js';
import type { Carrier } from '../../src/tunnel/route-connections.js';
import { routeRedirected } from '../../src/tunnel/route-connections.js';
import { unexpectedError } from '../support/unexpected-error.js';

const DST: Destination = { family: 4, address: '10.98.0.3', port: 80 };

/** A redirected connection without a real socket (nothing here reads or writes it). */
const redirected = (source: string): Redirected => {
  const socket = { destroyed: false, writableEnded: false, destroy() {}, resetAndDestroy() {} } as unknown as Socket;
  return { socket, destination: DST, source };
};

/** A session's mux, as the client runs it: accepted connections become channels 1, 2, … */
function muxSession(accepted$: Observable<AcceptedConnection>): MuxOutput[] {
  const out: MuxOutput[] = [];
  runMux({ role: 'client', inbound$: NEVER, accepted$, sendWindow: 100, recvWindow: 100 }).subscribe({ next: (o) => out.push(o), error: unexpectedError });
  return out;
}

const asAccepted = (r: Redirected): AcceptedConnection => ({ events$: NEVER, perform: () => {}, destination: r.destination, source: r.source });

describe('connection ids: one counter per tunnel (issue 16, finding 4)', () => {
  it("ssh's channels and the mux: two live connections never share an id, nor do two sessions' channels", () => {
    const ids = new ConnectionIds();
    // ssh carries one at a time (maxHandOffs 1): the second goes to the mux.
    const carrier: Carrier = { carry: () => concat(of<HandOff>({ kind: 'opened' }), NEVER), close: () => {} };
    const incoming = new Subject<Redirected>();
    const toMux = new Subject<AcceptedConnection>();
    const events: TunnelEvent[] = [];
    const routed = routeRedirected(incoming, () => carrier, (r) => toMux.next(asAccepted(r)), 1, ids).subscribe({ next: (e) => events.push(e), error: unexpectedError });
    const session1 = muxSession(toMux);
    const channels1 = ids.renumbering();

    incoming.next(redirected('127.0.0.1:1001'));
    incoming.next(redirected('127.0.0.1:1002'));
    const muxOpen = session1.find((o) => o.kind === 'open');
    expect(muxOpen).toMatchObject({ kind: 'open', id: 1 }); // the mux's own channel id
    if (muxOpen?.kind !== 'open') throw new Error('no open');
    events.push(channelEvent(muxOpen, channels1));

    const accepts = events.filter((e) => e.kind === 'accept');
    expect(accepts.map((e) => e.kind === 'accept' && [e.id, e.via ?? 'mux', e.source])).toEqual([
      [1, 'ssh', '127.0.0.1:1001'],
      [2, 'mux', '127.0.0.1:1002'],
    ]);

    // The channel closes: its close carries the id its accept had.
    const close = channelEvent({ kind: 'close', id: 1, destination: DST, reason: 'done', bytesSent: 3, bytesReceived: 4 }, channels1);
    expect(close).toEqual({ kind: 'close', id: 2, destination: DST, reason: 'done', bytesSent: 3, bytesReceived: 4 });

    // A reconnect: the next session's mux starts at channel 1 again; the tunnel's ids go on.
    const channels2 = ids.renumbering();
    expect(channelEvent({ kind: 'open', id: 1, destination: DST, source: '127.0.0.1:1003' }, channels2)).toMatchObject({ kind: 'accept', id: 3 });
    routed.unsubscribe();
  });

  it('UDP flows take their ids from the same counter', () => {
    const ids = new ConnectionIds();
    const tcp = ids.renumbering();
    expect(channelEvent({ kind: 'open', id: 1, destination: DST, source: 'a' }, tcp)).toMatchObject({ id: 1 });
    const flows = ids.renumbering();
    const local = new Subject<LocalDatagram>();
    const out: UdpFlowOutput[] = [];
    local.pipe(udpFlows({ fromServer$: new Subject<UdpMessage>(), writable$: of(true) })).subscribe({ next: (o) => out.push(o), error: unexpectedError });
    local.next({ source: { family: 4, address: '127.0.0.1', port: 5000 }, destination: { family: 4, address: '10.98.0.7', port: 7 }, data: Buffer.from('x') });
    const open = out.find((o) => o.kind === 'udp-open');
    expect(open).toMatchObject({ kind: 'udp-open', id: 1 }); // the flow's own id, on the wire
    if (open?.kind !== 'udp-open') throw new Error('no flow');
    expect(flowEvent(open, flows)).toMatchObject({ kind: 'udp-open', id: 2 });
    expect(flowEvent({ ...open, kind: 'udp-drop', reason: 'too-large', datagramsDropped: 1 }, flows)).toMatchObject({ id: 2 });
    local.complete();
  });

  it('status: both connections are listed apart, and each close takes its own', () => {
    const ids = new ConnectionIds();
    const channels = ids.renumbering();
    const viaSsh: TunnelEvent = { kind: 'accept', id: ids.next(), source: 'a', destination: DST, via: 'ssh' };
    const viaMux = channelEvent({ kind: 'open', id: 1, destination: DST, source: 'b' }, channels);
    let status = initialStatus({ pid: 1 }, 0);
    for (const e of [viaSsh, viaMux]) status = reduceStatus(status, e, 0);
    expect(status.openConnections.map((c) => c.source)).toEqual(['a', 'b']);
    status = reduceStatus(status, channelEvent({ kind: 'close', id: 1, destination: DST, reason: 'done', bytesSent: 0, bytesReceived: 0 }, channels), 0);
    expect(status.openConnections.map((c) => c.source)).toEqual(['a']);
  });
});
