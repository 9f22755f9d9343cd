/**
 * Shared vocabulary for the stream-core tests: a TestScheduler whose equality is vitest's
 * `toEqual`, short builders for frames, channel inputs/outputs and mux outputs, and an asymmetric
 * matcher for ProtocolError (marble error notifications carry the error object).
 */
import { TestScheduler } from 'rxjs/testing';
import { expect } from 'vitest';
import { ProtocolError } from '../../src/shared/errors.js';
import type {
  ChannelInput,
  ChannelOutput,
  CloseReason,
  LocalAction,
  LocalEvent,
} from '../../src/streams/channel.js';
import { encodeDestination } from '../../src/streams/destination.js';
import { CONTROL_CHANNEL, Command, type Destination, type Frame, frame } from '../../src/streams/frame.js';
import type { MuxOutput } from '../../src/streams/mux.js';

export const testScheduler = (): TestScheduler =>
  new TestScheduler((actual, expected) => {
    expect(actual).toEqual(expected);
  });

/** Bytes from text (latin1: one byte per character, so lengths are obvious). */
export const b = (text: string): Buffer => Buffer.from(text, 'latin1');

const u32 = (n: number): Buffer => {
  const out = Buffer.alloc(4);
  out.writeUInt32BE(n, 0);
  return out;
};
const bytes = (data: string | Buffer): Buffer => (typeof data === 'string' ? b(data) : data);

export const DST: Destination = { family: 4, address: '10.0.0.1', port: 80 };
export const DST6: Destination = { family: 6, address: 'fd00::2', port: 443 };

/** Frame builders, one per command. */
export const f = {
  open: (id: number, dst: Destination = DST): Frame => frame(id, Command.OPEN, encodeDestination(dst)),
  openOk: (id: number): Frame => frame(id, Command.OPEN_OK),
  openFailed: (id: number, errno: string): Frame => frame(id, Command.OPEN_FAILED, b(errno)),
  data: (id: number, data: string | Buffer): Frame => frame(id, Command.DATA, bytes(data)),
  eof: (id: number): Frame => frame(id, Command.EOF),
  close: (id: number, why = ''): Frame => frame(id, Command.CLOSE, b(why)),
  credit: (id: number, n: number): Frame => frame(id, Command.CREDIT, u32(n)),
  ping: (payload = ''): Frame => frame(CONTROL_CHANNEL, Command.PING, b(payload)),
  pong: (payload = ''): Frame => frame(CONTROL_CHANNEL, Command.PONG, b(payload)),
  exit: (reason = ''): Frame => frame(CONTROL_CHANNEL, Command.EXIT, b(reason)),
};

/** Local socket events. */
export const ev = {
  connected: { kind: 'connected' } as LocalEvent,
  data: (data: string | Buffer): LocalEvent => ({ kind: 'data', chunk: bytes(data) }),
  eof: { kind: 'eof' } as LocalEvent,
  written: (n: number): LocalEvent => ({ kind: 'written', bytes: n }),
  error: (code: string): LocalEvent => ({ kind: 'error', code }),
};

/** Local socket actions. */
export const act = {
  write: (data: string | Buffer): LocalAction => ({ kind: 'write', chunk: bytes(data) }),
  end: { kind: 'end' } as LocalAction,
  reset: { kind: 'reset' } as LocalAction,
  pause: { kind: 'pause' } as LocalAction,
  resume: { kind: 'resume' } as LocalAction,
};

/** Channel machine inputs. */
export const local = (event: LocalEvent): ChannelInput => ({ from: 'local', event });
export const peer = (fr: Frame): ChannelInput => ({ from: 'peer', frame: fr });

/** Channel machine outputs. */
export const toPeer = (fr: Frame): ChannelOutput => ({ to: 'peer', frame: fr });
export const toLocal = (action: LocalAction): ChannelOutput => ({ to: 'local', action });
export const closed = (reason: CloseReason, detail?: string): ChannelOutput =>
  detail === undefined ? { to: 'closed', reason } : { to: 'closed', reason, detail };

/** Mux outputs. */
export const out = (fr: Frame): MuxOutput => ({ kind: 'frame', frame: fr });

/** Matches a ProtocolError whose message matches `pattern` (and, optionally, whose code is `code`). */
export function protocolError(pattern: RegExp, code = 'RXS_ERR_PROTOCOL') {
  return {
    asymmetricMatch: (actual: unknown): boolean =>
      actual instanceof ProtocolError && actual.code === code && pattern.test(actual.message),
    toString: () => `ProtocolError(${code}, ${String(pattern)})`,
    toAsymmetricMatcher: () => `ProtocolError(${code}, ${String(pattern)})`,
  };
}

/** A buffer of n bytes whose content shows where it was cut: byte i is (seed + i) mod 251. */
export function pattern(n: number, seed = 0): Buffer {
  const out = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) out[i] = (seed + i) % 251;
  return out;
}
