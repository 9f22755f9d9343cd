// The capability check of ssh2's internals (ssh2-internals.ts) against the real ssh2 objects of a
// connection to an in-process ssh2 server: every hook found as ssh2 1.17.0 has them, and each one
// missing named, with no hooks for what lacks it.
import type { Socket } from 'node:net';
import type { ClientChannel } from 'ssh2';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { Ssh2Connection } from '../../src/transport/ssh2.js';
import { INTERNALS_VARIABLE, ssh2Cipher, ssh2Hooks } from '../../src/transport/ssh2-internals.js';
import { captureDebug } from './debug-lines.js';
import { fakeSsh2Client } from './fake-ssh2.js';
import { clientRekey, useSsh2Lab } from './ssh2-lab.js';
import { without } from './without-field.js';

const lab = useSsh2Lab();

afterEach(() => {
  vi.unstubAllEnvs();
});

/** A connection to a server that accepts direct-tcpip channels (and does nothing with them). */
async function connected(): Promise<Ssh2Connection> {
  const { port } = await lab.startServer({ onTcpip: (accept) => accept().on('error', () => {}) });
  return lab.connect(lab.configFor(port));
}

/** The socket ssh2 was given (its private `_sock`, read here to check against). */
const socketOf = (connection: Ssh2Connection) => (connection.client as unknown as { _sock: Socket })._sock;

function openChannel(connection: Ssh2Connection): Promise<ClientChannel> {
  return new Promise((resolve, reject) =>
    connection.client.forwardOut('127.0.0.1', 0, '10.1.2.3', 80, (err, channel) => {
      if (err) return reject(err);
      channel.on('error', () => {});
      lab.cleanups.push(() => void channel.close());
      resolve(channel);
    }),
  );
}

/** ssh2's cipher classes (lib/protocol/crypto.js) after a key exchange. */
const CIPHER_CLASS = /^(AESGCM|ChaChaPoly|Generic)Cipher(Binding|Native)$/;

describe("ssh2Hooks with ssh2's real objects", () => {
  it('finds every hook: the connection, its cipher after each key exchange, its channels', async () => {
    const debug = captureDebug('rxshuttle:ssh2');
    try {
      const connection = await connected();
      expect(connection.publicApi).toBeUndefined();
      const hooks = connection.hooks;
      if (!hooks) return expect.fail('no hooks');
      // Checked again on the live connection: nothing missing.
      expect('hooks' in ssh2Hooks(connection.client, socketOf(connection))).toBe(true);
      expect(hooks.readsDataEvents()).toBe(true);
      const first = hooks.cipher();
      expect(first?.implementation).toMatch(CIPHER_CLASS);
      expect(first?.layout.block).toBeGreaterThanOrEqual(8);
      const rekeyed = new Promise<void>((resolve) => connection.client.once('handshake', () => resolve()));
      clientRekey(connection);
      await rekeyed;
      const second = hooks.cipher();
      expect(second?.implementation).toMatch(CIPHER_CLASS);
      expect(second?.id).not.toBe(first?.id);
      const channel = await openChannel(connection);
      const channelHooks = hooks.channel(channel);
      if (!channelHooks) return expect.fail('no channel hooks');
      expect(channelHooks.receiving()).toBe(true);
      expect(channelHooks.sendsAtOnce(1)).toBe(true);
      // ssh2's initial grant (the forward did not take it over: this channel is ours alone).
      expect(channelHooks.receiveWindow()).toBe(2 * 1024 * 1024);
      expect(channelHooks.pushEnded()).toBe(false);
      expect(debug.lines.filter((line) => /public API/.test(line))).toEqual([]);
    } finally {
      debug.stop();
    }
  }, 10_000);

  it.each([
    [['_protocol'], 'client._protocol._onPayload, client._protocol.channelWindowAdjust, client._protocol._cipher.allocPacket'],
    [['_protocol', '_onPayload'], 'client._protocol._onPayload'],
    [['_protocol', 'channelWindowAdjust'], 'client._protocol.channelWindowAdjust'],
    [['_protocol', '_cipher'], 'client._protocol._cipher.allocPacket'],
    [['_protocol', '_cipher', 'allocPacket'], 'client._protocol._cipher.allocPacket'],
    [['_chanMgr'], 'client._chanMgr.get'],
    [['_chanMgr', 'get'], 'client._chanMgr.get'],
    [['_sock'], 'client._sock'],
  ])('without client.%s: no hooks, and why (%s)', async (path, named) => {
    const connection = await connected();
    const checked = ssh2Hooks(without(connection.client, path) as typeof connection.client, socketOf(connection));
    expect(checked).toEqual({ publicApi: `not as expected: ${named}` });
  }, 10_000);

  it(`${INTERNALS_VARIABLE}=off: no hooks, whatever ssh2 has`, async () => {
    const connection = await connected();
    vi.stubEnv(INTERNALS_VARIABLE, 'off');
    expect(ssh2Hooks(connection.client, socketOf(connection))).toEqual({ publicApi: `${INTERNALS_VARIABLE}=off` });
  }, 10_000);

  it.each([
    [['incoming'], 'channel.incoming.window'],
    [['incoming', 'window'], 'channel.incoming.window'],
    [['outgoing'], 'channel.outgoing'],
    [['outgoing', 'id'], 'channel.outgoing'],
    [['outgoing', 'state'], 'channel.outgoing'],
    [['outgoing', 'window'], 'channel.outgoing'],
    [['_readableState'], 'channel._readableState'],
    [['_readableState', 'ended'], 'channel._readableState'],
    [['_writableState'], 'channel._writableState'],
    [['push'], 'channel.push'],
  ])('a channel without %s: no hooks for it, said once per connection (%s)', async (path, named) => {
    const debug = captureDebug('rxshuttle:ssh2');
    try {
      const connection = await connected();
      const channel = await openChannel(connection);
      const other = await openChannel(connection);
      expect(connection.hooks?.channel(without(channel, path) as ClientChannel)).toBeUndefined();
      expect(connection.hooks?.channel(without(other, path) as ClientChannel)).toBeUndefined();
      // The real channels are as expected.
      expect(connection.hooks?.channel(channel)).toBeDefined();
      const said = debug.lines.filter((line) => /not as expected/.test(line));
      expect(said).toHaveLength(1);
      expect(said[0]).toContain(named);
    } finally {
      debug.stop();
    }
  }, 10_000);
});

describe('Ssh2Hooks.cipher', () => {
  it('finds no cipher while ssh2 has written nothing through socket.write (its packets would never be released)', () => {
    const { hooks } = fakeSsh2Client({ push: () => true });
    expect(hooks.cipher()).toBeUndefined();
  });

  it('knows ssh2 cipher classes only', () => {
    class SomeNewCipher {
      allocPacket = (payloadLength: number) => Buffer.alloc(payloadLength + 9);
    }
    expect(ssh2Cipher(new SomeNewCipher())).toBe('an unknown cipher class SomeNewCipher');
    expect(ssh2Cipher({ allocPacket: () => Buffer.alloc(0) })).toBe('an unknown cipher class Object');
  });
});
