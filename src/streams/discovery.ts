/**
 * Routes (-N) and host names (-H) over the mux (docs/protocol.md, "Routes and hosts"):
 *
 *   ROUTES_REQUEST  client → server, empty: send me your routes
 *   ROUTES          server → client: entries of u8 family (4/6), u8 prefix, 4/16 address bytes
 *   HOSTS_REQUEST   client → server: seed host names, UTF-8, comma-separated (may be empty)
 *   HOST            server → client: u8 family, 4/16 address bytes, host name (UTF-8)
 */
import { isIP } from 'node:net';
import { ProtocolError } from '../shared/errors.js';
import { networkOf } from '../shared/ip.js';
import { addressBytes, formatAddress } from './destination.js';
import { CONTROL_CHANNEL, Command, type Frame, frame, MAX_PAYLOAD } from './frame.js';

/** A network the server routes to. `address` has no bits set after `prefix`. */
export interface Route {
  readonly family: 4 | 6;
  readonly address: string;
  readonly prefix: number;
}

/** A host name the server found, and its address. */
export interface HostEntry {
  readonly family: 4 | 6;
  readonly address: string;
  readonly name: string;
}

const LABEL = /^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$/;
export const MAX_HOST_NAME = 253;

/**
 * A name that may go into a hosts file: dot-separated labels of letters, digits, '-' and '_'
 * (1–63 characters, no '-' at either end), at most 253 characters, and not an address.
 */
export function isValidHostName(name: string): boolean {
  if (name.length === 0 || name.length > MAX_HOST_NAME || isIP(name) !== 0) return false;
  if (/^[\d.]+$/.test(name)) return false;
  return name.split('.').every((label) => LABEL.test(label));
}

const addressLength = (family: number): number => (family === 4 ? 4 : family === 6 ? 16 : -1);

/** ROUTES; as many routes as fit in one frame (the rest are left out). */
export function encodeRoutes(routes: readonly Route[]): Frame {
  const parts: Buffer[] = [];
  let size = 0;
  for (const route of routes) {
    const bytes = addressBytes(route.family, route.address);
    if (size + 2 + bytes.length > MAX_PAYLOAD) break;
    parts.push(Buffer.from([route.family, route.prefix]), bytes);
    size += 2 + bytes.length;
  }
  return frame(CONTROL_CHANNEL, Command.ROUTES, Buffer.concat(parts, size));
}

export function decodeRoutes(payload: Buffer): Route[] {
  const routes: Route[] = [];
  let at = 0;
  while (at < payload.length) {
    const family = payload.readUInt8(at);
    const length = addressLength(family);
    if (length < 0 || at + 2 + length > payload.length) throw new ProtocolError(`malformed ROUTES: entry at byte ${at}`);
    const prefix = payload.readUInt8(at + 1);
    if (prefix > length * 8) throw new ProtocolError(`malformed ROUTES: prefix /${prefix} for IPv${family}`);
    const address = formatAddress(networkOf(payload.subarray(at + 2, at + 2 + length), prefix));
    routes.push({ family: family as 4 | 6, address, prefix });
    at += 2 + length;
  }
  return routes;
}

export const encodeHostsRequest = (seeds: readonly string[]): Frame =>
  frame(CONTROL_CHANNEL, Command.HOSTS_REQUEST, Buffer.from(seeds.join(','), 'utf8'));

export function decodeHostsRequest(payload: Buffer): string[] {
  return payload
    .toString('utf8')
    .split(',')
    .map((seed) => seed.trim())
    .filter((seed) => seed.length > 0);
}

export function encodeHost(host: HostEntry): Frame {
  if (!isValidHostName(host.name)) throw new TypeError(`not a valid host name: ${JSON.stringify(host.name)}`);
  const name = Buffer.from(host.name, 'utf8');
  return frame(CONTROL_CHANNEL, Command.HOST, Buffer.concat([Buffer.from([host.family]), addressBytes(host.family, host.address), name]));
}

export function decodeHost(payload: Buffer): HostEntry {
  const family = payload.length > 0 ? payload.readUInt8(0) : 0;
  const length = addressLength(family);
  if (length < 0 || payload.length < 1 + length + 1) throw new ProtocolError(`malformed HOST: family ${family}, ${payload.length} bytes`);
  const name = payload.subarray(1 + length).toString('utf8');
  if (!isValidHostName(name)) throw new ProtocolError('malformed HOST: not a valid host name');
  return { family: family as 4 | 6, address: formatAddress(payload.subarray(1, 1 + length)), name };
}
