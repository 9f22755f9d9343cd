import type { SubnetRule } from './firewall/types.js';
import type { CloseReason } from './streams/channel.js';
import type { Destination } from './streams/frame.js';

/** Everything a running tunnel reports. The CLI renders these; API users subscribe to them. */
export type TunnelEvent =
  | { readonly kind: 'listening'; readonly host: string; readonly port: number }
  | { readonly kind: 'starting'; readonly command: readonly string[] }
  | { readonly kind: 'remote-output'; readonly line: string }
  | { readonly kind: 'connected'; readonly remote: string; readonly window: number }
  | { readonly kind: 'firewall-ready'; readonly port: number; readonly rules: readonly SubnetRule[] }
  | { readonly kind: 'accept'; readonly id: number; readonly source: string; readonly destination: Destination }
  | {
      readonly kind: 'close';
      readonly id: number;
      readonly destination: Destination;
      readonly reason: CloseReason;
      readonly detail?: string;
      readonly bytesSent: number;
      readonly bytesReceived: number;
    }
  | { readonly kind: 'remote-exit'; readonly reason: string }
  | { readonly kind: 'warning'; readonly message: string };

export type TunnelEventKind = TunnelEvent['kind'];
