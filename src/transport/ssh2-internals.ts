/**
 * Every place rxshuttle reaches into ssh2 beyond its public API, and the checks that find each
 * one on the real objects before it is used. ssh2 is pinned (package.json) at the version these
 * were written against: 1.17.0.
 *
 * Why: the fast path (reads and packets in reused memory, channel credit, one writev per turn)
 * needs ssh2's private fields and knows how ssh2 uses its socket. Another ssh2 may have moved
 * any of them; that must cost speed, never a connection.
 *
 * How: each connection is checked right after `client.connect()` (ssh2Hooks), each cipher after
 * the key exchange that made it (Ssh2Hooks.cipher), each channel as it opens (Ssh2Hooks.channel).
 * Whatever is not as expected is left to ssh2's public API (plain reads and writes, stream
 * backpressure, ssh2's own window and packets), which is slower but needs nothing of this file.
 * A connection says so once: a debug line (`rxshuttle:ssh2`), and at the start a notice (-v).
 *
 * RXSHUTTLE_SSH2_INTERNALS=off, read here only, runs every connection on the public API.
 */
import type { Socket } from 'node:net';
import createDebug from 'debug';
import type { Client, ClientChannel } from 'ssh2';

const debug = createDebug('rxshuttle:ssh2');

/** The environment variable that switches the fast path off (`off`); read by ssh2Hooks only. */
export const INTERNALS_VARIABLE = 'RXSHUTTLE_SSH2_INTERNALS';

type PayloadHandler = (payload: Buffer) => unknown;
type Fields = Record<string, unknown>;

const isObject = (value: unknown): value is Fields => typeof value === 'object' && value !== null;
const isFunction = (value: unknown): value is (...args: never[]) => unknown => typeof value === 'function';

/** The protocol fields a connection's hooks use, once checked. */
interface CheckedProtocol extends Fields {
  _onPayload: PayloadHandler;
  channelWindowAdjust: (remoteId: number, bytes: number) => void;
}

/**
 * Checks a connection's hooks, right after `client.connect({ sock: socket })` (nothing has been
 * read or written yet): the hooks for the fast path, or why the connection runs on ssh2's public
 * API (said once, here).
 */
export function ssh2Hooks(client: Client, socket: Socket): { readonly hooks: Ssh2Hooks } | { readonly publicApi: string } {
  if (process.env[INTERNALS_VARIABLE] === 'off') return publicApi(`${INTERNALS_VARIABLE}=off`);
  const fields = client as unknown as Fields;
  const protocol = fields['_protocol'];
  const channels = fields['_chanMgr'];
  const missing = [
    // Where every decrypted payload goes (ssh2 hands it to each new decipher at a key exchange).
    !isObject(protocol) || !isFunction(protocol['_onPayload']) ? 'client._protocol._onPayload' : '',
    !isObject(protocol) || !isFunction(protocol['channelWindowAdjust']) ? 'client._protocol.channelWindowAdjust' : '',
    // The cipher of the last key exchange (NullCipher until the first): its packets' layout.
    !isObject(protocol) || !isObject(protocol['_cipher']) || !isFunction(protocol['_cipher']['allocPacket']) ? 'client._protocol._cipher.allocPacket' : '',
    // Channels by our number: the recipient of each CHANNEL_DATA.
    !isObject(channels) || !isFunction(channels['get']) ? 'client._chanMgr.get' : '',
    // ssh2 reads and writes the socket it was given (its 'data' events and write()).
    fields['_sock'] !== socket ? 'client._sock' : '',
  ].filter(Boolean);
  if (missing.length > 0) return publicApi(`not as expected: ${missing.join(', ')}`);
  return { hooks: new Ssh2Hooks(protocol as CheckedProtocol, channels as { get(id: number): unknown }, socket) };
}

function publicApi(why: string): { readonly publicApi: string } {
  debug('ssh2 internals %s: this connection runs on ssh2\'s public API (slower)', why);
  return { publicApi: why };
}

/** How ssh2 lays a cipher's packets out: padding to `block` after `aad` bytes, then `trailer` bytes of tag or MAC. */
export interface PacketLayout {
  readonly block: number;
  readonly aad: number;
  readonly trailer: number;
}

/** The cipher of the last key exchange, checked. */
export interface Ssh2Cipher {
  /** ssh2's cipher object itself, to know it again. */
  readonly id: object;
  /** ssh2's class for it (its binding's, in place, or OpenSSL's through Node), for the log. */
  readonly implementation: string;
  readonly layout: PacketLayout;
  /**
   * Whether ssh2 encrypts each packet in place and writes that same packet to the socket (its
   * binding's ciphers, full-length MACs): only then may the packet come from reused memory.
   */
  readonly inPlace: boolean;
  /** ssh2's own packet allocation. */
  allocPacket(payloadLength: number): Buffer;
  /** Makes ssh2 take this cipher's packets from `allocate`. */
  replaceAllocPacket(allocate: (payloadLength: number) => Buffer): void;
}

/**
 * ssh2's ciphers by class (lib/protocol/crypto.js): how each lays out its packets, and whether it
 * encrypts in place. The generic ones read block, AAD and MAC lengths from their fields.
 */
function cipherLayout(cipher: Fields, name: string): { layout: PacketLayout; inPlace: boolean } | string {
  switch (name) {
    case 'AESGCMCipherBinding':
      return { layout: { block: 16, aad: 4, trailer: 16 }, inPlace: true };
    case 'ChaChaPolyCipherBinding':
      return { layout: { block: 8, aad: 4, trailer: 16 }, inPlace: true };
    case 'AESGCMCipherNative':
      return { layout: { block: 16, aad: 4, trailer: 0 }, inPlace: false };
    case 'ChaChaPolyCipherNative':
      return { layout: { block: 8, aad: 4, trailer: 0 }, inPlace: false };
    case 'GenericCipherBinding':
    case 'GenericCipherNative': {
      const { _encBlockLen: block, _aadLen: aad, _macLen: mac, _macActualLen: sent } = cipher;
      const binding = name === 'GenericCipherBinding';
      if (typeof block !== 'number' || typeof aad !== 'number' || (binding && (typeof mac !== 'number' || typeof sent !== 'number'))) {
        return `${name} without its block, AAD or MAC length`;
      }
      // A truncated MAC (hmac-*-96) is written as a shorter view of the packet: not the object
      // allocated, so its release would not match its hold.
      return { layout: { block, aad, trailer: binding ? (mac as number) : 0 }, inPlace: binding && sent === mac };
    }
    default:
      return `an unknown cipher class ${name || '(unnamed)'}`;
  }
}

/** ssh2's cipher object (`client._protocol._cipher`) checked: its hooks, or what is not as expected. */
export function ssh2Cipher(cipher: unknown): Ssh2Cipher | string {
  if (!isObject(cipher) || !isFunction(cipher['allocPacket'])) return 'client._protocol._cipher.allocPacket after a key exchange';
  const implementation = isFunction(cipher.constructor) ? cipher.constructor.name : '';
  const found = cipherLayout(cipher, implementation);
  if (typeof found === 'string') return found;
  const allocPacket = cipher['allocPacket'] as (payloadLength: number) => Buffer;
  return {
    id: cipher,
    implementation,
    ...found,
    allocPacket: allocPacket.bind(cipher),
    replaceAllocPacket(allocate) {
      cipher['allocPacket'] = allocate;
    },
  };
}

/** A connection's hooks into ssh2, found by ssh2Hooks. */
export class Ssh2Hooks {
  /** Packets ssh2 has written through routeWrites' write (checked before packets come from reused memory). */
  private packetsWritten = 0;
  private saidSo = false;
  private readonly channels = new WeakMap<ClientChannel, Ssh2ChannelHooks | null>();

  constructor(
    private readonly protocol: CheckedProtocol,
    channelTable: { get(id: number): unknown },
    private readonly socket: Socket,
  ) {
    this.channelById = channelTable.get.bind(channelTable);
  }

  /**
   * Passes every payload ssh2 decrypts from now on through `wrap(ssh2's handler)`. Call before
   * the first key exchange: ssh2 gives the handler to each decipher it makes.
   */
  wrapPayloadHandler(wrap: (handle: PayloadHandler) => PayloadHandler): void {
    this.protocol._onPayload = wrap(this.protocol._onPayload);
  }

  /** ssh2's channel with our number `id` (a CHANNEL_DATA's recipient): the ClientChannel, or something else. */
  readonly channelById: (id: number) => unknown;

  /**
   * Makes ssh2's packets go through `write` on their way to the socket. ssh2 writes each packet
   * with `socket.write(packet)`, alone; anything else it passes on goes to the socket untouched.
   */
  routeWrites(write: (packet: Buffer, written: (chunk: Buffer, done?: () => void) => boolean) => boolean): void {
    const socket = this.socket;
    const original = socket.write.bind(socket) as (chunk: unknown, encoding?: unknown, done?: unknown) => boolean;
    // Named parameters, not a rest array: this runs for every packet.
    socket.write = ((chunk: unknown, encoding?: unknown, done?: unknown) => {
      if (encoding !== undefined || done !== undefined || !Buffer.isBuffer(chunk)) return original(chunk, encoding, done);
      this.packetsWritten++;
      return write(chunk, original);
    }) as typeof socket.write;
  }

  /**
   * Whether ssh2 reads the socket through its 'data' events, so that feed() reaches it (ssh2
   * listens from the socket's connect on; ask at the first read).
   */
  readsDataEvents(): boolean {
    return this.socket.listenerCount('data') > 0;
  }

  /** Gives ssh2 bytes read from its socket, as the socket's 'data' event would. */
  feed(bytes: Buffer): void {
    this.socket.emit('data', bytes);
  }

  /**
   * The cipher of the key exchange that just ended, checked (call from 'handshake'): undefined,
   * and said once, if it or the way its packets leave is not as expected.
   */
  cipher(): Ssh2Cipher | undefined {
    // Its packets are released by routeWrites' write: they must all come through it.
    if (this.packetsWritten === 0) return this.fallBack('ssh2 wrote the handshake past socket.write');
    const cipher = ssh2Cipher(this.protocol['_cipher']);
    return typeof cipher === 'string' ? this.fallBack(cipher) : cipher;
  }

  /** A channel's hooks, checked once per channel: undefined, and said once, if not as expected. */
  channel(channel: ClientChannel): Ssh2ChannelHooks | undefined {
    let hooks = this.channels.get(channel);
    if (hooks === undefined) {
      const found = channelHooks(channel, this.protocol);
      hooks = typeof found === 'string' ? null : found;
      this.channels.set(channel, hooks);
      if (typeof found === 'string') this.fallBack(found);
    }
    return hooks ?? undefined;
  }

  /** Says once per connection what runs on ssh2's public API from now on, and why. */
  fallBack(why: string): undefined {
    if (!this.saidSo) debug("ssh2 internals not as expected (%s): that part runs on ssh2's public API (slower)", why);
    this.saidSo = true;
    return undefined;
  }
}

/** What a channel's hooks use, once checked. */
interface CheckedChannel {
  incoming: { window: number };
  outgoing: { id: number; state: string; window: number };
  _readableState: { ended: boolean; autoDestroy: boolean };
  _writableState: { autoDestroy: boolean };
}

function channelHooks(channel: ClientChannel, protocol: CheckedProtocol): Ssh2ChannelHooks | string {
  const { incoming, outgoing, _readableState: readable, _writableState: writable } = channel as unknown as Fields;
  const missing = [
    !isObject(incoming) || typeof incoming['window'] !== 'number' ? 'channel.incoming.window' : '',
    !isObject(outgoing) || typeof outgoing['id'] !== 'number' || typeof outgoing['window'] !== 'number' || typeof outgoing['state'] !== 'string'
      ? 'channel.outgoing'
      : '',
    !isObject(readable) || typeof readable['ended'] !== 'boolean' || typeof readable['autoDestroy'] !== 'boolean' ? 'channel._readableState' : '',
    !isObject(writable) || typeof writable['autoDestroy'] !== 'boolean' ? 'channel._writableState' : '',
    typeof channel.push !== 'function' ? 'channel.push' : '',
  ].filter(Boolean);
  if (missing.length > 0) return missing.join(', ');
  return new Ssh2ChannelHooks(channel, channel as unknown as CheckedChannel, protocol);
}

/** A channel's hooks into ssh2, found by Ssh2Hooks.channel. */
export class Ssh2ChannelHooks {
  constructor(
    /** The channel (its public side). */
    readonly channel: ClientChannel,
    private readonly fields: CheckedChannel,
    private readonly protocol: CheckedProtocol,
  ) {}

  /** What ssh2 counts as the server's window to send us: it tops it up itself when it runs low. */
  receiveWindow(): number {
    return this.fields.incoming.window;
  }

  /** Raises ssh2's count of the server's window without telling the server. */
  countReceiveWindow(bytes: number): void {
    this.fields.incoming.window += bytes;
  }

  /** Grants the server `bytes` more window (a WINDOW_ADJUST), counted in ssh2's window too. */
  grantReceiveWindow(bytes: number): void {
    this.fields.incoming.window += bytes;
    this.protocol.channelWindowAdjust(this.fields.outgoing.id, bytes);
  }

  /** Whether the server may still send on the channel as ssh2 sees it (neither side has closed it). */
  receiving(): boolean {
    const state = this.fields.outgoing.state;
    return state === 'open' || state === 'eof';
  }

  /**
   * Whether ssh2 will have copied `bytes` written now into packets by the time write() returns:
   * nothing queued before them, and window for all of them. Otherwise ssh2 keeps the chunk until
   * the server grants window (ssh2's Channel._write).
   */
  sendsAtOnce(bytes: number): boolean {
    const { channel } = this;
    const { state, window } = this.fields.outgoing;
    return channel.writableLength === 0 && !channel.writableCorked && state === 'open' && window >= bytes;
  }

  /** Whether the stream has taken its EOF (Node drops what is pushed after it). */
  pushEnded(): boolean {
    return this.fields._readableState.ended;
  }

  /** Passes each chunk ssh2 pushes into the channel through `intercept` first. */
  interceptPush(intercept: (chunk: Uint8Array) => Uint8Array): void {
    const { channel } = this;
    const push = channel.push;
    channel.push = (chunk: unknown, encoding?: BufferEncoding) => push.call(channel, chunk instanceof Uint8Array ? intercept(chunk) : chunk, encoding);
  }

  /**
   * Leaves ending the channel to ssh2, which emits its 'close' itself: the stream's own
   * auto-destroy would only call ssh2's destroy(), whose end() on an ended stream builds an error
   * (a stack trace per connection) that nobody sees.
   */
  leaveCloseToSsh2(): void {
    this.fields._readableState.autoDestroy = false;
    this.fields._writableState.autoDestroy = false;
  }
}
