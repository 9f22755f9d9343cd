import type { Client, ClientChannel } from 'ssh2';
import { ReadSlabs } from './slabs.js';

/** SSH message numbers (RFC 4253, 4254). */
const MSG_KEXINIT = 20;
const MSG_CHANNEL_DATA = 94;
/**
 * Messages whose ssh2 client handlers read only integers and keep nothing of the payload:
 * REQUEST_FAILURE, CHANNEL_OPEN_CONFIRMATION (its extra data is dropped), WINDOW_ADJUST, EOF,
 * CLOSE, CHANNEL_SUCCESS, CHANNEL_FAILURE. Every connection brings some; tainting for them would
 * cost a slab per few connections.
 */
const KEEPS_NOTHING = new Set([82, 91, 93, 96, 97, 99, 100]);

/** The parts of ssh2 this module reaches into (not in its typings; checked before use). */
interface Ssh2Internals {
  _protocol?: { _onPayload?: (payload: Buffer) => unknown };
  _chanMgr?: { get(id: number): unknown };
}

/**
 * The ssh socket's reads, in reused slabs (see slabs.ts), and what ssh2 does with them.
 *
 * ssh2 decrypts in place and hands payloads on as views of what it read. This follows every
 * decrypted message on its way in: CHANNEL_DATA for a channel whose chunks are kept (a
 * direct-tcpip forward, whose chunks go to a local socket) holds the slab until the caller
 * releases the chunk; for a channel whose chunks are copied (the server's session) it is copied
 * before the channel sees it; messages ssh2 keeps nothing of (EOF, CLOSE, window adjusts…) leave
 * the slab alone; every other message, and everything read during a key exchange, taints its
 * slab so it is never reused. If ssh2's internals are not as expected every slab is tainted,
 * which is plain allocation per read again: slower, never wrong.
 */
export class Ssh2Inbound {
  private readonly slabs = new ReadSlabs();
  /** True until the first key exchange ends, and again during each re-key. */
  private keyExchange = true;
  private hooked = false;
  private channels: Ssh2Internals['_chanMgr'];
  private readonly kept = new WeakSet<object>();

  /** The buffer for the next read (Node's `onread.buffer`). */
  readonly nextBuffer = (): Buffer => this.slabs.nextBuffer();

  /** Tells whether slabs are being reused (false: ssh2's internals were not as expected). */
  get reusing(): boolean {
    return this.hooked;
  }

  get stats() {
    return this.slabs.stats;
  }

  /** Chunks of kept channels not yet released. */
  get heldChunks(): number {
    return this.slabs.heldViews;
  }

  /** Call right after `client.connect()`, before anything is read. */
  hook(client: Client): void {
    const internals = client as unknown as Ssh2Internals;
    const protocol = internals._protocol;
    const onPayload = protocol?._onPayload;
    const channels = internals._chanMgr;
    if (!protocol || typeof onPayload !== 'function' || typeof channels?.get !== 'function') return;
    this.channels = channels;
    // Every decipher after the first key exchange is made with the protocol's _onPayload.
    protocol._onPayload = (payload: Buffer) => {
      const type = payload[0] ?? -1;
      if (type === MSG_KEXINIT) this.keyExchange = true;
      if (type === MSG_CHANNEL_DATA ? !this.keptRecipient(payload) : !KEEPS_NOTHING.has(type)) this.slabs.taintViewOf(payload);
      return onPayload(payload);
    };
    this.hooked = true;
  }

  /** A key exchange ended (ssh2's 'handshake' event). */
  keyExchangeDone(): void {
    this.keyExchange = false;
  }

  /** Records a read of `bytes` into the last buffer and gives ssh2 the view of it. */
  read(bytes: number, deliver: (view: Buffer) => void): void {
    const view = this.slabs.filled(bytes);
    if (!this.hooked || this.keyExchange) this.slabs.taintViewOf(view);
    deliver(view);
    // A KEXINIT in this read: what follows it here (ssh2 routes kex messages past our hook).
    if (this.keyExchange) this.slabs.taintViewOf(view);
  }

  /**
   * Keeps `channel`'s incoming chunks intact until each is passed to `release`. A chunk never
   * released keeps its slab allocated and unused for the ssh connection's life (`heldChunks`
   * counts them; ssh2Forward$ releases every chunk, also when a program resets).
   */
  keepChunks(channel: ClientChannel): void {
    const state = (channel as unknown as { _readableState?: { ended?: boolean } })._readableState;
    this.interceptPush(channel, (chunk) => {
      // Held only if the stream keeps it: Node drops empty chunks and any after EOF, destroy or
      // an error (ssh2 pushes what a server sends after its EOF), and nobody would release them.
      if (chunk.length > 0 && !state?.ended && !channel.destroyed && !channel.errored) this.slabs.hold(chunk);
      return chunk;
    });
  }

  /**
   * Copies `channel`'s incoming chunks before they reach it (for channels whose chunks go to a
   * parser that may keep them, such as the server's session): its data then taints no slab.
   */
  copyChunks(channel: ClientChannel): void {
    this.interceptPush(channel, (chunk) => Buffer.from(chunk));
  }

  /** Lets go of a chunk of a kept channel (after the local socket wrote it, or dropped it). */
  readonly release = (chunk: Uint8Array): void => this.slabs.release(chunk);

  /**
   * Passes each chunk ssh2 pushes into `channel` through `intercept` first, and lets the
   * channel's CHANNEL_DATA leave its slab untainted (the interceptor answers for it).
   */
  private interceptPush(channel: ClientChannel, intercept: (chunk: Uint8Array) => Uint8Array): void {
    if (!this.hooked) return;
    const push = channel.push;
    channel.push = (chunk: unknown, encoding?: BufferEncoding) =>
      push.call(channel, chunk instanceof Uint8Array ? intercept(chunk) : chunk, encoding);
    this.kept.add(channel);
  }

  private keptRecipient(payload: Buffer): boolean {
    if (payload.length < 5) return false;
    const channel = this.channels?.get(payload.readUInt32BE(1));
    return typeof channel === 'object' && channel !== null && this.kept.has(channel);
  }
}
