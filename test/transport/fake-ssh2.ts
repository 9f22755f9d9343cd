import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import type { Client, ClientChannel } from 'ssh2';
import { type Ssh2Hooks, ssh2Hooks } from '../../src/transport/ssh2-internals.js';

const CHANNEL_DATA = 94;

/**
 * The private fields of an ssh2 channel that Ssh2Hooks.channel checks, added to `stream` (a
 * real Readable, or a plain object standing in for a channel): the server's id, its window and
 * state, and the stream states ssh2's channels have.
 */
export function withChannelFields<T extends object>(stream: T, remoteId = 7, window = 2 * 1024 * 1024): T & ChannelFields {
  const fields = stream as T & Partial<ChannelFields> & { push?: unknown };
  fields.incoming = { id: 0, window, packetSize: 32 * 1024, state: 'open' };
  fields.outgoing = { id: remoteId, window, packetSize: 32 * 1024, state: 'open' };
  fields._readableState ??= { ended: false, autoDestroy: true };
  fields._writableState ??= { autoDestroy: true };
  if (typeof fields.push !== 'function') fields.push = () => true;
  return fields as T & ChannelFields;
}

interface ChannelFields {
  incoming: { id: number; window: number; packetSize: number; state: string };
  outgoing: { id: number; window: number; packetSize: number; state: string };
  _readableState: { ended: boolean; autoDestroy: boolean };
  _writableState: { autoDestroy: boolean };
}

/**
 * Just enough of ssh2's Client for its hooks (ssh2-internals.ts), found by the real check: a
 * payload handler that, as ssh2's CHANNEL_DATA handler does, pushes the data (a view of the
 * decrypted read) into channel 0, the channel table, the protocol's window adjust (sent ones are
 * in `adjusts`, how each was called in `adjustCalls`) and the socket. `channel.push` is looked up at each payload, so a test may
 * replace it.
 */
export function fakeSsh2Client(channel: { push(chunk: Buffer): unknown }) {
  /** The bytes of each window adjust sent, and how each was called. */
  const adjusts: number[] = [];
  const adjustCalls: { readonly self: unknown; readonly remoteId: number }[] = [];
  const onPayload = (payload: Buffer) => {
    if (payload[0] === CHANNEL_DATA) channel.push(payload.subarray(9, 9 + payload.readUInt32BE(5)));
  };
  const socket = new EventEmitter() as unknown as Socket;
  const protocol = {
    _onPayload: onPayload,
    _cipher: { allocPacket: (payloadLength: number) => Buffer.alloc(payloadLength + 9) },
    channelWindowAdjust(this: unknown, remoteId: number, bytes: number) {
      adjusts.push(bytes);
      adjustCalls.push({ self: this, remoteId });
    },
  };
  const client = { _protocol: protocol, _chanMgr: { get: (id: number) => (id === 0 ? channel : undefined) }, _sock: socket };
  const checked = ssh2Hooks(client as unknown as Client, socket);
  if (!('hooks' in checked)) throw new Error(`the fake client does not pass the check: ${checked.publicApi}`);
  const hooks: Ssh2Hooks = checked.hooks;
  /** The payload handler installed now: once hooked, Ssh2Inbound's, which calls ours. */
  const payloadHandler = () => client._protocol._onPayload;
  /** `stream`'s hooks, as ssh2Forward$ gets them for a channel. */
  const channelHooks = (stream: object) => {
    const found = hooks.channel(stream as ClientChannel);
    if (!found) throw new Error('the fake channel does not pass the check');
    return found;
  };
  return { client: client as unknown as Client, hooks, protocol, adjusts, adjustCalls, payloadHandler, channelHooks };
}
