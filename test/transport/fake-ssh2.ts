import type { Client } from 'ssh2';

const CHANNEL_DATA = 94;

/**
 * Just enough of ssh2's Client for Ssh2Inbound's hook: a payload handler that, as ssh2's
 * CHANNEL_DATA handler does, pushes the data (a view of the decrypted read) into channel 0, and
 * the channel table. `channel.push` is looked up at each payload, so a test may replace it.
 */
export function fakeSsh2Client(channel: { push(chunk: Buffer): unknown }) {
  const onPayload = (payload: Buffer) => {
    if (payload[0] === CHANNEL_DATA) channel.push(payload.subarray(9, 9 + payload.readUInt32BE(5)));
  };
  const client = {
    _protocol: { _onPayload: onPayload },
    _chanMgr: { get: (id: number) => (id === 0 ? channel : undefined) },
  };
  /** The payload handler installed now: once hooked, Ssh2Inbound's, which calls ours. */
  const payloadHandler = () => client._protocol._onPayload;
  return { client: client as unknown as Client, payloadHandler };
}
