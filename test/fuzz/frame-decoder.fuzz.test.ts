// Hostile bytes into the frame decoder: whatever arrives, however it is cut into chunks, the
// stream ends in frames and a clean completion or a ProtocolError — never another exception,
// never a hang (it is synchronous), never more than one frame's worth of bytes held back.
import fc from 'fast-check';
import { Subject } from 'rxjs';
import { describe, expect, it } from 'vitest';
import { ProtocolError } from '../../src/shared/errors.js';
import { decodeFrames } from '../../src/streams/decode-frames.js';
import { Command, encodeFrame, type Frame, frame, HEADER_SIZE, isCommand, MAX_PAYLOAD } from '../../src/streams/frame.js';
import { RUNS, SEEDS } from './seeds.js';

interface Outcome {
  frames: Frame[];
  end: 'complete' | 'error' | 'open';
  error?: unknown;
  /** Bytes fed minus bytes of decoded frames, after each chunk (while the stream was open). */
  heldBack: number[];
}

/** Feeds chunks one by one, then ends the input; the decoder works synchronously. */
function decode(chunks: readonly Uint8Array[]): Outcome {
  const input = new Subject<Buffer>();
  const out: Outcome = { frames: [], end: 'open', heldBack: [] };
  let consumed = 0;
  input.pipe(decodeFrames()).subscribe({
    next: (f) => {
      out.frames.push(f);
      consumed += HEADER_SIZE + f.payload.length;
    },
    error: (e: unknown) => {
      out.end = 'error';
      out.error = e;
    },
    complete: () => (out.end = 'complete'),
  });
  let fed = 0;
  for (const chunk of chunks) {
    if (out.end !== 'open') break;
    input.next(Buffer.from(chunk));
    fed += chunk.length;
    if (out.end === 'open') out.heldBack.push(fed - consumed);
  }
  input.complete();
  return out;
}

/** Splits bytes at the given fractions. */
function cut(bytes: Uint8Array, points: readonly number[]): Uint8Array[] {
  const offsets = [...new Set(points.map((p) => Math.floor(p * bytes.length)))].sort((a, b) => a - b);
  const chunks: Uint8Array[] = [];
  let start = 0;
  for (const offset of [...offsets, bytes.length]) {
    if (offset > start) chunks.push(bytes.subarray(start, offset));
    start = Math.max(start, offset);
  }
  return chunks;
}

/** Everything a well-behaved decoder must guarantee for any input. */
function checkOutcome(input: Uint8Array, out: Outcome): void {
  expect(out.end).not.toBe('open');
  if (out.end === 'error') {
    expect(out.error).toBeInstanceOf(ProtocolError);
    expect((out.error as ProtocolError).message).not.toMatch(/\n/);
  }
  for (const f of out.frames) {
    expect(isCommand(f.command)).toBe(true);
    expect(f.payload.length).toBeLessThanOrEqual(MAX_PAYLOAD);
  }
  // The frames are exactly a prefix of the input (the whole of it on a clean end).
  const decoded = Buffer.concat(out.frames.map(encodeFrame));
  expect(decoded.equals(Buffer.from(input.subarray(0, decoded.length)))).toBe(true);
  if (out.end === 'complete') expect(decoded.length).toBe(input.length);
  // Bounded memory: never more than one header and one maximal payload held back.
  for (const held of out.heldBack) expect(held).toBeLessThan(HEADER_SIZE + MAX_PAYLOAD);
}

const commands = Object.values(Command);
const frameArb = fc.record({
  channel: fc.oneof(fc.constantFrom(0, 1, 2, 0xffffffff), fc.nat({ max: 0xffffffff })),
  command: fc.constantFrom(...commands),
  payload: fc.oneof(
    { weight: 8, arbitrary: fc.uint8Array({ maxLength: 40 }) },
    // Large payloads are cheap to make: a length and one byte value.
    { weight: 1, arbitrary: fc.tuple(fc.integer({ min: 60_000, max: MAX_PAYLOAD }), fc.integer({ min: 0, max: 255 })).map(([n, v]) => new Uint8Array(n).fill(v)) },
  ),
});
const validStream = fc.array(frameArb, { maxLength: 8 }).map((frames) =>
  new Uint8Array(Buffer.concat(frames.map((f) => encodeFrame(frame(f.channel, f.command, Buffer.from(f.payload)))))),
);
/** A valid stream with a few bytes overwritten, dropped or inserted: mostly plausible, subtly broken. */
const mutatedStream = fc
  .tuple(
    validStream,
    fc.array(
      fc.record({ at: fc.double({ min: 0, max: 1, noNaN: true }), op: fc.constantFrom('set', 'drop', 'insert'), byte: fc.integer({ min: 0, max: 255 }) }),
      { minLength: 1, maxLength: 4 },
    ),
  )
  .map(([bytes, mutations]) => {
    let out = Buffer.from(bytes);
    for (const m of mutations) {
      const i = Math.min(out.length, Math.floor(m.at * out.length));
      if (m.op === 'set' && i < out.length) out[i] = m.byte;
      else if (m.op === 'drop') out = Buffer.concat([out.subarray(0, i), out.subarray(i + 1)]);
      else out = Buffer.concat([out.subarray(0, i), Buffer.from([m.byte]), out.subarray(i)]);
    }
    return new Uint8Array(out);
  });
const cutPoints = fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { maxLength: 12 });

describe.each(SEEDS)('frame decoder fuzzing, %s', (_name, seed) => {
  it('random bytes in random chunks end cleanly', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 512 }), cutPoints, (bytes, points) => {
        checkOutcome(bytes, decode(cut(bytes, points)));
      }),
      { seed, numRuns: RUNS },
    );
  });

  it('valid streams decode completely, whatever the chunking', () => {
    fc.assert(
      fc.property(validStream, cutPoints, (bytes, points) => {
        const out = decode(cut(bytes, points));
        checkOutcome(bytes, out);
        expect(out.end).toBe('complete');
      }),
      { seed, numRuns: Math.ceil(RUNS / 4) },
    );
  });

  it('mutated streams end in frames and a clean end or a ProtocolError', () => {
    fc.assert(
      fc.property(mutatedStream, cutPoints, (bytes, points) => {
        checkOutcome(bytes, decode(cut(bytes, points)));
      }),
      { seed, numRuns: Math.ceil(RUNS / 4) },
    );
  });

  it('headers announcing any length never make it buffer more than a frame', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.nat({ max: 0xffffffff }), fc.integer({ min: 0, max: 0xff }), fc.integer({ min: 0, max: 0xffffff })), { minLength: 1, maxLength: 4 }),
        fc.integer({ min: 1, max: 200_000 }),
        (headers, filler) => {
          const parts = headers.map(([channel, command, length]) => {
            const h = Buffer.alloc(HEADER_SIZE);
            h.writeUInt32BE(channel, 0);
            h.writeUInt32BE(((command << 24) | length) >>> 0, 4);
            return h;
          });
          const bytes = new Uint8Array(Buffer.concat([...parts, Buffer.alloc(filler, 0x41)]));
          checkOutcome(bytes, decode(cut(bytes, [0.1, 0.3, 0.5, 0.7, 0.9])));
        },
      ),
      { seed, numRuns: Math.ceil(RUNS / 10) },
    );
  });
});
