import { describe, expect, it } from 'vitest';
import { CONTROL_CHANNEL, Command, frame, MAX_PAYLOAD } from '../../src/streams/frame.js';
import {
  DEFAULT_UDP_LIMITS,
  decodeUdpMessage,
  encodeUdpClose,
  encodeUdpData,
  encodeUdpOpen,
  FLOW_ID_SIZE,
  MAX_UDP_DATAGRAM,
  QUEUED_DATAGRAM_OVERHEAD,
  udpLimits,
} from '../../src/streams/udp.js';
import { pattern, protocolError } from './marbles.js';

const V4 = { family: 4, address: '10.98.0.7', port: 5353 } as const;
const V6 = { family: 6, address: 'fd00::7', port: 443 } as const;

describe('UDP frames', () => {
  it('UDP_OPEN round-trips for IPv4 and IPv6, on the control channel', () => {
    const v4 = encodeUdpOpen(1, V4);
    expect(v4.channel).toBe(CONTROL_CHANNEL);
    expect(v4.command).toBe(Command.UDP_OPEN);
    expect(v4.payload).toEqual(Buffer.from([0, 0, 0, 1, 4, 0x14, 0xe9, 10, 98, 0, 7]));
    expect(decodeUdpMessage(v4)).toEqual({ kind: 'open', flow: 1, destination: V4 });
    expect(decodeUdpMessage(encodeUdpOpen(0xffffffff, V6))).toEqual({ kind: 'open', flow: 0xffffffff, destination: V6 });
  });

  it('UDP_DATA keeps a datagram whole, from empty to the largest UDP allows, in one frame', () => {
    for (const size of [0, 1, 1400, 65_000, MAX_UDP_DATAGRAM]) {
      const data = pattern(size, size);
      const f = encodeUdpData(7, data);
      expect(f.payload.length).toBe(FLOW_ID_SIZE + size);
      expect(f.payload.length).toBeLessThanOrEqual(MAX_PAYLOAD);
      const decoded = decodeUdpMessage(f);
      expect(decoded).toMatchObject({ kind: 'data', flow: 7 });
      expect(decoded.kind === 'data' && decoded.data.equals(data)).toBe(true);
    }
  });

  it('a datagram larger than UDP allows is refused before sending', () => {
    expect(() => encodeUdpData(1, Buffer.alloc(MAX_UDP_DATAGRAM + 1))).toThrow(RangeError);
  });

  it('UDP_CLOSE round-trips with a reason, and with none', () => {
    expect(decodeUdpMessage(encodeUdpClose(3, 'ECONNREFUSED'))).toEqual({ kind: 'close', flow: 3, reason: 'ECONNREFUSED' });
    expect(decodeUdpMessage(encodeUdpClose(3, ''))).toEqual({ kind: 'close', flow: 3, reason: '' });
    expect(encodeUdpClose(3, 'x'.repeat(10_000)).payload.length).toBeLessThan(1000);
  });

  it('refuses malformed payloads with a ProtocolError', () => {
    const udp = (command: number, bytes: number[] | Buffer) => frame(CONTROL_CHANNEL, command as never, Buffer.from(bytes));
    const refused = (command: number, bytes: number[] | Buffer, why: RegExp) =>
      expect(() => decodeUdpMessage(udp(command, bytes))).toThrow(protocolError(why) as never);
    // No room for the flow id.
    refused(Command.UDP_OPEN, [0, 0, 1], /malformed UDP_OPEN: 3 bytes/);
    refused(Command.UDP_DATA, [], /malformed UDP_DATA: 0 bytes/);
    refused(Command.UDP_CLOSE, [0, 0, 0], /malformed UDP_CLOSE: 3 bytes/);
    // Destinations: unknown family, wrong length for the family, missing, or trailing bytes.
    refused(Command.UDP_OPEN, [0, 0, 0, 1, 5, 0, 53, 1, 2, 3, 4], /family 5/);
    refused(Command.UDP_OPEN, [0, 0, 0, 1, 6, 0, 53, 1, 2, 3, 4], /family 6, 7 bytes/);
    refused(Command.UDP_OPEN, [0, 0, 0, 1], /family 0, 0 bytes/);
    refused(Command.UDP_OPEN, [0, 0, 0, 1, 4, 0, 53, 1, 2, 3, 4, 9], /family 4, 8 bytes/);
    // More than any UDP datagram (the frame itself could carry it).
    refused(Command.UDP_DATA, Buffer.alloc(FLOW_ID_SIZE + MAX_UDP_DATAGRAM + 1), /a datagram of 65528 bytes/);
  });
});

describe('UDP limits', () => {
  it('defaults: 30 s idle, 10 s for DNS, 4096 flows, 128 KiB per flow, 1 MiB in all', () => {
    expect(udpLimits()).toEqual(DEFAULT_UDP_LIMITS);
    expect(DEFAULT_UDP_LIMITS).toEqual({
      idleMs: 30_000,
      dnsIdleMs: 10_000,
      maxFlows: 4096,
      maxFlowQueuedBytes: 2 * (MAX_UDP_DATAGRAM + QUEUED_DATAGRAM_OVERHEAD),
      maxQueuedBytes: 1024 * 1024,
    });
  });

  it('refuses bounds that could never hold the largest datagram, and non-positive ones', () => {
    expect(() => udpLimits({ maxFlowQueuedBytes: MAX_UDP_DATAGRAM })).toThrow(RangeError);
    expect(() => udpLimits({ maxQueuedBytes: 1000 })).toThrow(RangeError);
    expect(() => udpLimits({ maxFlows: 0 })).toThrow(RangeError);
    expect(() => udpLimits({ idleMs: 0 })).toThrow(RangeError);
  });
});
