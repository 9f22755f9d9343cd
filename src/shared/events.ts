import type { FirewallMethod, SubnetRule } from '../firewall/types.js';
import type { CloseReason } from '../streams/channel.js';
import type { Route } from '../streams/discovery.js';
import type { Destination } from '../streams/frame.js';
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
  | {
      readonly kind: 'close';
      readonly id: number;
      readonly destination: Destination;
      readonly reason: CloseReason;
      readonly detail?: string;
      readonly bytesSent: number;
      readonly bytesReceived: number;
      readonly via?: 'ssh';
    }
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
