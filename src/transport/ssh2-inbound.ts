import type { ClientChannel } from 'ssh2';
import { ReadSlabs } from './slabs.js';
import type { Ssh2ChannelHooks, Ssh2Hooks } from './ssh2-internals.js';

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

/**
 * The ssh socket's reads, in reused slabs (see slabs.ts), and what ssh2 does with them.
 *
 * ssh2 decrypts in place and hands payloads on as views of what it read. This follows every
 * decrypted message on its way in: CHANNEL_DATA for a channel whose chunks are kept (a
 * direct-tcpip forward, whose chunks go to a local socket) holds the slab until the caller
 * releases the chunk; for a channel whose chunks are copied (the server's session) it is copied
 * before the channel sees it; messages ssh2 keeps nothing of (EOF, CLOSE, window adjusts…) leave
 * the slab alone; every other message, and everything read during a key exchange, taints its
 * slab so it is never reused. ssh2's internals (ssh2-internals.ts) are checked first: without
 * them the connection reads with readCopy, a copy per read, as plain reads would allocate.
 */
export class Ssh2Inbound {
  private readonly slabs = new ReadSlabs();
  /** True until the first key exchange ends, and again during each re-key. */
  private keyExchange = true;
  private hooks: Ssh2Hooks | undefined;
  private readonly kept = new WeakSet<object>();

  /** The buffer for the next read (Node's `onread.buffer`). */
  readonly nextBuffer = (): Buffer => this.slabs.nextBuffer();

  /** Tells whether ssh2's payloads are followed (hook), so that slabs passed to it can be reused. */
  get reusing(): boolean {
    return this.hooks !== undefined;
  }

  get stats() {
    return this.slabs.stats;
  }

  /** Chunks of kept channels not yet released. */
  get heldChunks(): number {
    return this.slabs.heldViews;
  }

  /** Call right after `client.connect()`, before anything is read. */
  hook(hooks: Ssh2Hooks): void {
    this.hooks = hooks;
    const channelById = hooks.channelById;
    // Every decipher after the first key exchange is made with this handler.
    hooks.wrapPayloadHandler((handle) => (payload) => {
      const type = payload[0] ?? -1;
      if (type === MSG_KEXINIT) this.keyExchange = true;
      if (type === MSG_CHANNEL_DATA ? !this.keptRecipient(channelById, payload) : !KEEPS_NOTHING.has(type)) this.slabs.taintViewOf(payload);
      return handle(payload);
    });
  }

  /** A key exchange ended (ssh2's 'handshake' event). */
  keyExchangeDone(): void {
    this.keyExchange = false;
  }

  /** Records a read of `bytes` into the last buffer and gives ssh2 the view of it. */
  read(bytes: number, deliver: (view: Buffer) => void): void {
    const view = this.slabs.filled(bytes);
    if (!this.hooks || this.keyExchange) this.slabs.taintViewOf(view);
    deliver(view);
    // A KEXINIT in this read: what follows it here (ssh2 routes kex messages past our hook).
    if (this.keyExchange) this.slabs.taintViewOf(view);
  }

  /**
   * Records a read of `bytes` into the last buffer and returns a copy of them, leaving the slab
   * free to be used again: for ssh2's public API, which may keep what it is given anywhere.
   */
  readCopy(bytes: number): Buffer {
    return Buffer.from(this.slabs.filled(bytes));
  }

  /**
   * Keeps `channel`'s incoming chunks intact until each is passed to `release`. A chunk never
   * released keeps its slab allocated and unused for the ssh connection's life (`heldChunks`
   * counts them; ssh2Forward$ releases every chunk, also when a program resets).
   */
  keepChunks(channel: ClientChannel): void {
    const hooks = this.interceptedChannel(channel);
    hooks?.interceptPush((chunk) => {
      // Held only if the stream keeps it: Node drops empty chunks and any after EOF, destroy or
      // an error (ssh2 pushes what a server sends after its EOF), and nobody would release them.
      if (chunk.length > 0 && !hooks.pushEnded() && !channel.destroyed && !channel.errored) this.slabs.hold(chunk);
      return chunk;
    });
  }

  /**
   * Copies `channel`'s incoming chunks before they reach it (for channels whose chunks go to a
   * parser that may keep them, such as the server's session): its data then taints no slab.
   */
  copyChunks(channel: ClientChannel): void {
    this.interceptedChannel(channel)?.interceptPush((chunk) => Buffer.from(chunk));
  }

  /** Lets go of a chunk of a kept channel (after the local socket wrote it, or dropped it). */
  readonly release = (chunk: Uint8Array): void => this.slabs.release(chunk);

  /**
   * The hooks to intercept what ssh2 pushes into `channel`, whose CHANNEL_DATA then leaves its
   * slab untainted (the interceptor answers for it). Undefined for a channel whose internals are
   * not as expected, which is left alone: its data taints its slabs.
   */
  private interceptedChannel(channel: ClientChannel): Ssh2ChannelHooks | undefined {
    const hooks = this.hooks?.channel(channel);
    if (hooks) this.kept.add(channel);
    return hooks;
  }

  private keptRecipient(channelById: (id: number) => unknown, payload: Buffer): boolean {
    if (payload.length < 5) return false;
    const channel = channelById(payload.readUInt32BE(1));
    return typeof channel === 'object' && channel !== null && this.kept.has(channel);
  }
}
