import type { Client, ClientChannel } from 'ssh2';

/**
 * The receive window a direct-tcpip channel keeps with latency control on. What the server may
 * send us and what we hold unwritten for the local program together stay under it, so a bulk
 * download queues at most this much in sshd ahead of another connection's reply. Measured on the
 * bench's lab: 512 KiB halves the round-trip p99 under a bulk download against ssh2's 2 MiB
 * (0.6× `ssh -L` instead of ~1.0×) while one download still moves ~1.4× what `ssh -L` does.
 */
export const LATENCY_CONTROL_WINDOW = 512 * 1024;
/**
 * Added to ssh2's own count of the window, so that it never tops the window up itself (it does
 * at 1 MiB left, back to 2 MiB); the credit is ours from then on.
 */
const HEADROOM = 2 ** 30;

/** The ssh2 internals this module needs (not in its typings; checked before use). */
interface ChannelInternals {
  incoming?: { window?: unknown };
  outgoing?: { id?: unknown; state?: unknown };
}
interface ClientInternals {
  _protocol?: { channelWindowAdjust?: (id: number, amount: number) => void };
}

export interface ChannelCredit {
  /** `bytes` of the channel's data were written to the local program (or dropped): room again. */
  consumed(bytes: number): void;
}

/**
 * Takes the channel's receive window over from ssh2: credit goes back to the server only as the
 * local program's socket takes the data (backpressure, not ssh2's top-up on arrival), and what is
 * in flight plus unwritten stays under `window`. The 2 MiB ssh2 granted when it opened the
 * channel is used up first. Undefined if ssh2's internals are not as expected: ssh2's own
 * window then applies.
 */
export function creditChannel(client: Client, channel: ClientChannel, window: number): ChannelCredit | undefined {
  const { incoming, outgoing } = channel as unknown as ChannelInternals;
  const protocol = (client as unknown as ClientInternals)._protocol;
  const adjust = protocol?.channelWindowAdjust;
  if (typeof incoming?.window !== 'number' || typeof outgoing?.id !== 'number' || typeof adjust !== 'function') return undefined;
  const state = incoming as { window: number };
  const remoteId = outgoing.id;
  /** Everything the server was ever allowed to send. */
  let granted = state.window;
  let written = 0;
  state.window += HEADROOM;
  return {
    consumed(bytes) {
      written += bytes;
      if (outgoing.state !== 'open' && outgoing.state !== 'eof') return;
      const credit = state.window - HEADROOM;
      const unwritten = granted - credit - written;
      const room = window - credit - unwritten;
      // In halves of the window: an adjust per packet would cost the server a wake-up each.
      if (room < window / 2) return;
      granted += room;
      state.window += room;
      adjust.call(protocol, remoteId, room);
    },
  };
}
