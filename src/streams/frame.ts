/**
 * Wire frames of protocol v1 (docs/protocol.md is the spec).
 * Header: u32 channel, u8 command, u24 payload length — 8 bytes, big-endian.
 */

export const HEADER_SIZE = 8;
export const MAX_PAYLOAD = 65536;

export const Command = {
  OPEN: 0x01,
  OPEN_OK: 0x02,
  OPEN_FAILED: 0x03,
  DATA: 0x04,
  EOF: 0x05,
  CLOSE: 0x06,
  CREDIT: 0x07,
  PING: 0x08,
  PONG: 0x09,
  EXIT: 0x0a,
  DNS_REQUEST: 0x0b,
  DNS_RESPONSE: 0x0c,
  DNS_FAILED: 0x0d,
  ROUTES_REQUEST: 0x0e,
  ROUTES: 0x0f,
  HOSTS_REQUEST: 0x10,
  HOST: 0x11,
  UDP_OPEN: 0x12,
  UDP_DATA: 0x13,
  UDP_CLOSE: 0x14,
} as const;
export type Command = (typeof Command)[keyof typeof Command];

const commandNames = new Map<number, string>(Object.entries(Command).map(([name, code]) => [code, name]));
export const isCommand = (code: number): code is Command => commandNames.has(code);
export const commandName = (code: number): string => commandNames.get(code) ?? `0x${code.toString(16)}`;

/** Channel 0 carries session control (ping, pong, exit, DNS, routes, hosts, UDP flows); TCP channels are numbered from 1. */
export const CONTROL_CHANNEL = 0;

export interface Frame {
  readonly channel: number;
  readonly command: Command;
  readonly payload: Buffer;
}

const EMPTY = Buffer.alloc(0);

export const frame = (channel: number, command: Command, payload: Buffer = EMPTY): Frame => ({
  channel,
  command,
  payload,
});

export function encodeHeader(f: Frame): Buffer {
  const header = Buffer.allocUnsafe(HEADER_SIZE);
  header.writeUInt32BE(f.channel, 0);
  header.writeUInt32BE(((f.command << 24) | f.payload.length) >>> 0, 4);
  return header;
}

/** Header and payload as one buffer; for tests and small control frames (the writer uses writev). */
export const encodeFrame = (f: Frame): Buffer => Buffer.concat([encodeHeader(f), f.payload]);

export interface Destination {
  readonly family: 4 | 6;
  readonly address: string;
  readonly port: number;
}
