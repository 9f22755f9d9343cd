import type { FirewallMethod, SubnetRule } from '../firewall/types.js';
import type { Route } from '../streams/discovery.js';
import type { Destination } from '../streams/frame.js';
import type { MuxEvent } from '../streams/mux.js';
import type { UdpFlowEvent } from '../streams/udp-flows.js';

/** Everything a running tunnel reports. The CLI renders these; API users subscribe to them. */
export type TunnelEvent =
  /** --method tproxy: a UDP flow (a program's source and destination) opened, dropped datagrams, or ended. */
  | UdpFlowEvent
  | { readonly kind: 'listening'; readonly host: string; readonly port: number }
  | { readonly kind: 'starting'; readonly command: readonly string[] }
  /**
   * Which ssh carries the session: `ssh2` in this process, or the `ssh` binary (`why`: what made
   * --transport auto choose it).
   */
  | { readonly kind: 'transport'; readonly transport: 'ssh' | 'ssh2'; readonly why?: string }
  | { readonly kind: 'remote-output'; readonly line: string }
  /**
   * What runs on the remote host: the uploaded `node` server, or nothing (`stock`: sshd alone
   * carries TCP in its own channels, DNS over TCP, discovery by plain commands); `why` in words.
   */
  | { readonly kind: 'mode'; readonly mode: 'node' | 'stock'; readonly why: string }
  /**
   * The session was lost after it had been up; the rules stay, new connections wait, and it is
   * started again after `delayMs` (attempt 1 at once). `reason`: why it was lost, in words.
   */
  | { readonly kind: 'reconnecting'; readonly attempt: number; readonly delayMs: number; readonly reason: string }
  /** The session is up. `window`: the mux's credit window (0 in stock-sshd mode, which has no mux). */
  | { readonly kind: 'connected'; readonly remote: string; readonly window: number }
  | {
      readonly kind: 'firewall-ready';
      /** How connections are captured: a chain in iptables' nat table, or an nftables table (firewall/methods.ts). */
      readonly method: FirewallMethod;
      readonly port: number;
      readonly rules: readonly SubnetRule[];
      /** --dns: the nameservers whose queries are captured, and the port they go to. */
      readonly dns?: { readonly port: number; readonly nameservers: readonly string[] };
    }
  | {
      readonly kind: 'accept';
      readonly id: number;
      readonly source: string;
      readonly destination: Destination;
      /** 'ssh': handed to the ssh ControlMaster, which carries it in a channel of its own. */
      readonly via?: 'ssh';
    }
  /** A mux channel's close (streams/mux.ts), whichever path carried the connection. */
  | (Extract<MuxEvent, { kind: 'close' }> & { readonly via?: 'ssh' })
  | { readonly kind: 'remote-exit'; readonly reason: string }
  | { readonly kind: 'warning'; readonly message: string }
  /** Something worth knowing that needs no action (what a remote OS cannot tell, for one): shown with -v. */
  | { readonly kind: 'notice'; readonly message: string }
  /** -N: the routes the server named ("available routes"), and how many of them are tunneled. */
  | { readonly kind: 'routes'; readonly routes: readonly Route[]; readonly tunneled: number }
  /** --dns: one captured query and what became of it. */
  | {
      readonly kind: 'dns';
      readonly source: string;
      /** `name TYPE` of its first question. */
      readonly question: string;
      readonly transport: 'udp' | 'tcp';
      readonly outcome: 'answered' | 'failed' | 'timeout';
      readonly detail: string;
      readonly ms: number;
    }
  /** A host name given as a subnet, and what the remote resolved it to (at the start and whenever it changes). */
  | { readonly kind: 'name'; readonly name: string; readonly addresses: readonly string[]; readonly ttlS: number }
  /** -H: a host name the server found (it goes into /etc/hosts). */
  | { readonly kind: 'host'; readonly name: string; readonly address: string };

export type TunnelEventKind = TunnelEvent['kind'];

/**
 * Numbers what a tunnel reports by id: its TCP connections ('accept' and 'close', whichever path
 * carries them: ssh's own channels, the mux, stock-sshd's channels) and its UDP flows ('udp-open',
 * 'udp-drop', 'udp-close'). One counter per tunnel (tunnel/tunnel.ts makes it and hands it to every
 * path and session), so no two of them ever carry the same id, live or not: the mux's channel ids
 * and the flows' ids are the wire protocol's, counted from 1 in each session, and ssh's hand-offs
 * had a counter of their own, so `#1` could be two connections at once.
 */
export class ConnectionIds {
  #next = 1;

  /** A new id. */
  next(): number {
    return this.#next++;
  }

  /** For a path that numbers its own (a session's channels or flows): its ids to the tunnel's, from open to close. */
  renumbering(): Renumbering {
    const ids = new Map<number, number>();
    const opened = (own: number) => {
      const id = this.next();
      ids.set(own, id);
      return id;
    };
    const of = (own: number) => ids.get(own) ?? opened(own);
    const closed = (own: number) => {
      const id = of(own);
      ids.delete(own);
      return id;
    };
    return { opened, of, closed };
  }
}

export interface Renumbering {
  /** One of the path's opened: its id in the tunnel. */
  opened(own: number): number;
  /** The tunnel's id of one that is open (one never seen open gets a new one). */
  of(own: number): number;
  /** One of the path's ended: its id in the tunnel, forgotten here. */
  closed(own: number): number;
}

/** A session's mux 'open' or 'close' (channel ids) as the tunnel's 'accept' or 'close'. */
export function channelEvent(event: Extract<MuxEvent, { kind: 'open' | 'close' }>, channels: Renumbering): TunnelEvent {
  if (event.kind === 'open') {
    return { kind: 'accept', id: channels.opened(event.id), source: event.source ?? '?', destination: event.destination };
  }
  return { ...event, kind: 'close', id: channels.closed(event.id) };
}

/** A session's UDP flow event (the flows' ids) with the tunnel's id. */
export function flowEvent(event: UdpFlowEvent, flows: Renumbering): UdpFlowEvent {
  switch (event.kind) {
    case 'udp-open':
      return { ...event, id: flows.opened(event.id) };
    case 'udp-drop':
      return { ...event, id: flows.of(event.id) };
    case 'udp-close':
      return { ...event, id: flows.closed(event.id) };
  }
}
