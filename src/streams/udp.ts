/**
 * UDP flows over the mux (docs/protocol.md, "UDP"): every frame is on the control channel and
 * starts with the u32 id of its flow, which the client chose.
 *
 *   UDP_OPEN   client → server: u32 flow id, destination (u8 family, u16 port, 4/16 address bytes)
 *   UDP_DATA   both ways: u32 flow id, one whole datagram (0 to MAX_UDP_DATAGRAM bytes)
 *   UDP_CLOSE  both ways: u32 flow id, reason (UTF-8: `idle`, an errno name such as `ECONNREFUSED`, …)
 *
 * One UDP_DATA is one datagram: the largest a UDP datagram can be fits in one frame with its id,
 * so a datagram is never split and its boundaries are the frame's.
 */
import { ProtocolError } from '../shared/errors.js';
import { decodeDestination, encodeDestination } from './destination.js';
import { CONTROL_CHANNEL, Command, type Destination, type Frame, frame } from './frame.js';

/**
 * The largest UDP payload there is: 65 535 minus the 8-byte UDP header, over IPv6 without
 * jumbograms (IPv4's own header leaves 65 507). With the flow id it fits a frame: 4 + 65 527 ≤ 65 536.
 */
export const MAX_UDP_DATAGRAM = 65_527;
/** Bytes of a UDP frame's payload before the datagram or the destination. */
export const FLOW_ID_SIZE = 4;
/** UDP_CLOSE reasons are cut to this many characters; they are for people, not for parsing. */
const MAX_REASON_CHARS = 200;

/** A UDP frame as the side it is meant for sees it. */
export type UdpMessage =
  | { readonly kind: 'open'; readonly flow: number; readonly destination: Destination }
  | { readonly kind: 'data'; readonly flow: number; readonly data: Buffer }
  | { readonly kind: 'close'; readonly flow: number; readonly reason: string };

const withFlowId = (flow: number, rest: Buffer): Buffer => {
  const out = Buffer.allocUnsafe(FLOW_ID_SIZE + rest.length);
  out.writeUInt32BE(flow >>> 0, 0);
  rest.copy(out, FLOW_ID_SIZE);
  return out;
};

export const encodeUdpOpen = (flow: number, destination: Destination): Frame =>
  frame(CONTROL_CHANNEL, Command.UDP_OPEN, withFlowId(flow, encodeDestination(destination)));

/** Throws a RangeError for a datagram no UDP socket could have sent or could send. */
export function encodeUdpData(flow: number, data: Buffer): Frame {
  if (data.length > MAX_UDP_DATAGRAM) throw new RangeError(`a UDP datagram of ${data.length} bytes is larger than UDP allows`);
  return frame(CONTROL_CHANNEL, Command.UDP_DATA, withFlowId(flow, data));
}

export const encodeUdpClose = (flow: number, reason: string): Frame =>
  frame(CONTROL_CHANNEL, Command.UDP_CLOSE, withFlowId(flow, Buffer.from(reason.slice(0, MAX_REASON_CHARS), 'utf8')));

/**
 * The flow id and the rest of a UDP frame's payload; the direction rules are the mux's, the
 * flow-id rules (known, finished, never existed) belong to whoever keeps the flows.
 */
export function decodeUdpMessage(f: Frame): UdpMessage {
  const name = f.command === Command.UDP_OPEN ? 'UDP_OPEN' : f.command === Command.UDP_DATA ? 'UDP_DATA' : 'UDP_CLOSE';
  if (f.payload.length < FLOW_ID_SIZE) throw new ProtocolError(`malformed ${name}: ${f.payload.length} bytes`);
  const flow = f.payload.readUInt32BE(0);
  const rest = f.payload.subarray(FLOW_ID_SIZE);
  switch (f.command) {
    case Command.UDP_OPEN: {
      const family = rest.length > 0 ? rest.readUInt8(0) : 0;
      if (!((family === 4 && rest.length === 7) || (family === 6 && rest.length === 19))) {
        throw new ProtocolError(`malformed UDP_OPEN: family ${family}, ${rest.length} bytes of destination`);
      }
      return { kind: 'open', flow, destination: decodeDestination(rest) };
    }
    case Command.UDP_DATA:
      if (rest.length > MAX_UDP_DATAGRAM) throw new ProtocolError(`malformed UDP_DATA: a datagram of ${rest.length} bytes`);
      return { kind: 'data', flow, data: rest };
    case Command.UDP_CLOSE:
      return { kind: 'close', flow, reason: rest.toString('utf8') };
    default:
      throw new TypeError(`not a UDP command: ${f.command}`);
  }
}

export const isUdpCommand = (command: number): boolean =>
  command === Command.UDP_OPEN || command === Command.UDP_DATA || command === Command.UDP_CLOSE;

/** Port 53: a DNS exchange is one question and one answer, so its flow may expire sooner. */
export const DNS_PORT = 53;

/** How long a flow lives without a datagram either way, and how much may wait for the tunnel. */
export interface UdpLimits {
  /** A flow without a datagram in either direction for this long is closed. */
  readonly idleMs: number;
  /** The same for flows to port 53. */
  readonly dnsIdleMs: number;
  /** Flows open at once. */
  readonly maxFlows: number;
  /** Bytes one flow may have waiting (each datagram counts QUEUED_DATAGRAM_OVERHEAD more). */
  readonly maxFlowQueuedBytes: number;
  /** Bytes all flows together may have waiting. */
  readonly maxQueuedBytes: number;
}

/**
 * What a waiting datagram costs besides its bytes (frame header, flow id, the Buffer object and
 * its queue slot), so a flood of empty datagrams is bounded too.
 */
export const QUEUED_DATAGRAM_OVERHEAD = 64;

export const DEFAULT_UDP_LIMITS: UdpLimits = {
  idleMs: 30_000,
  dnsIdleMs: 10_000,
  maxFlows: 4096,
  // Two of the largest datagrams: a burst of full-size ones is absorbed, a steady flood is not.
  maxFlowQueuedBytes: 2 * (MAX_UDP_DATAGRAM + QUEUED_DATAGRAM_OVERHEAD),
  maxQueuedBytes: 1024 * 1024,
};

/** Defaults filled in; throws a RangeError for bounds that could never hold the largest datagram. */
export function udpLimits(given: Partial<UdpLimits> = {}): UdpLimits {
  const limits = { ...DEFAULT_UDP_LIMITS, ...given };
  const smallest = MAX_UDP_DATAGRAM + QUEUED_DATAGRAM_OVERHEAD;
  if (limits.maxFlowQueuedBytes < smallest || limits.maxQueuedBytes < smallest) {
    throw new RangeError(`UDP queue bounds must hold at least one datagram of ${MAX_UDP_DATAGRAM} bytes (${smallest})`);
  }
  if (!(limits.maxFlows >= 1 && limits.idleMs > 0 && limits.dnsIdleMs > 0)) throw new RangeError('UDP limits must be positive');
  return limits;
}
