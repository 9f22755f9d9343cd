import fc from 'fast-check';
import { from, lastValueFrom, Subject, toArray } from 'rxjs';
import { describe, expect, it } from 'vitest';
import { ProtocolError } from '../../src/shared/errors.js';
import { decodeFrames } from '../../src/streams/decode-frames.js';
import {
  Command,
  commandName,
  encodeFrame,
  encodeHeader,
  type Frame,
  frame,
  HEADER_SIZE,
  isCommand,
  MAX_PAYLOAD,
} from '../../src/streams/frame.js';
import { b, f, pattern, protocolError, testScheduler } from './marbles.js';

/** Decodes a list of chunks synchronously; returns the frames and the error, if any. */
function decodeAll(chunks: Buffer[], maxPayload?: number): { frames: Frame[]; error?: unknown } {
  const frames: Frame[] = [];
  let error: unknown;
  from(chunks)
    .pipe(decodeFrames(maxPayload))
    .subscribe({ next: (fr) => frames.push(fr), error: (e: unknown) => (error = e) });
  return error === undefined ? { frames } : { frames, error };
}

/** A raw header with any command byte and length (the encoder would refuse some of these). */
function rawHeader(channel: number, command: number, length: number): Buffer {
  const header = Buffer.alloc(HEADER_SIZE);
  header.writeUInt32BE(channel, 0);
  header.writeUInt32BE(((command << 24) | length) >>> 0, 4);
  return header;
}

const commands = Object.values(Command);

describe('frame codec', () => {
  it('encodes the 8-byte header: u32 channel, u8 command, u24 length, big-endian', () => {
    const fr = f.data(0x01020304, 'hello');
    expect(encodeHeader(fr)).toEqual(Buffer.from([1, 2, 3, 4, Command.DATA, 0, 0, 5]));
    expect(encodeFrame(fr)).toEqual(Buffer.concat([Buffer.from([1, 2, 3, 4, 4, 0, 0, 5]), b('hello')]));
    expect(encodeHeader(frame(0xffffffff, Command.EXIT, pattern(MAX_PAYLOAD)))).toEqual(
      Buffer.from([0xff, 0xff, 0xff, 0xff, Command.EXIT, 0x01, 0x00, 0x00]),
    );
  });

  it('names commands, and unknown ones by their hex code', () => {
    expect(commandName(Command.OPEN_FAILED)).toBe('OPEN_FAILED');
    expect(commandName(0x7f)).toBe('0x7f');
    expect(isCommand(Command.CREDIT)).toBe(true);
    expect(isCommand(0)).toBe(false);
    expect(isCommand(Command.HOST)).toBe(true);
    expect(isCommand(Command.UDP_CLOSE)).toBe(true);
    expect(isCommand(0x15)).toBe(false);
  });
});

describe('decodeFrames', () => {
  it('decodes frames given whole, several per chunk, and split across chunks', () => {
    const frames = [f.open(1), f.data(1, 'hello'), f.eof(1), f.credit(1, 5), f.ping()];
    const bytes = Buffer.concat(frames.map(encodeFrame));
    expect(decodeAll([bytes]).frames).toEqual(frames);
    expect(decodeAll(frames.map(encodeFrame)).frames).toEqual(frames);
    // One byte at a time: every header and payload is reassembled.
    expect(decodeAll([...bytes].map((byte) => Buffer.from([byte]))).frames).toEqual(frames);
  });

  it('decodes a payload of exactly MAX_PAYLOAD and an empty payload', () => {
    const big = f.data(3, pattern(MAX_PAYLOAD));
    const bytes = Buffer.concat([encodeFrame(big), encodeFrame(f.eof(3))]);
    const result = decodeAll([bytes.subarray(0, 5), bytes.subarray(5, 40_000), bytes.subarray(40_000)]);
    expect(result.error).toBeUndefined();
    expect(result.frames).toHaveLength(2);
    expect(result.frames[0]?.payload.equals(big.payload)).toBe(true);
    expect(result.frames[1]).toEqual(f.eof(3));
  });

  it('slices a payload that lies inside one chunk instead of copying it', () => {
    const bytes = encodeFrame(f.data(1, 'view'));
    const [decoded] = decodeAll([bytes]).frames;
    expect(decoded?.payload.buffer).toBe(bytes.buffer);
  });

  it('ignores empty chunks', () => {
    const bytes = encodeFrame(f.data(2, 'ab'));
    expect(decodeAll([Buffer.alloc(0), bytes.subarray(0, 3), Buffer.alloc(0), bytes.subarray(3)]).frames).toEqual([f.data(2, 'ab')]);
  });

  it('round-trips random frames cut at random points (property, fixed seed)', () => {
    const frameArb = fc.record({
      channel: fc.nat({ max: 0xffffffff }),
      command: fc.constantFrom(...commands),
      payload: fc.oneof(
        { weight: 4, arbitrary: fc.uint8Array({ maxLength: 64 }) },
        { weight: 1, arbitrary: fc.uint8Array({ minLength: 1000, maxLength: 70_000 }) },
      ),
    });
    fc.assert(
      fc.property(
        fc.array(frameArb, { maxLength: 12 }),
        fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { maxLength: 20 }),
        (specs, cutFractions) => {
          const frames = specs.map((s) => frame(s.channel, s.command, Buffer.from(s.payload.subarray(0, MAX_PAYLOAD))));
          const bytes = Buffer.concat(frames.map(encodeFrame));
          const cuts = [...new Set(cutFractions.map((x) => Math.floor(x * bytes.length)))].sort((x, y) => x - y);
          const chunks: Buffer[] = [];
          let at = 0;
          for (const cut of [...cuts, bytes.length]) {
            chunks.push(bytes.subarray(at, cut));
            at = cut;
          }
          const result = decodeAll(chunks);
          expect(result.error).toBeUndefined();
          expect(result.frames.length).toBe(frames.length);
          result.frames.forEach((decoded, i) => {
            const original = frames[i] as Frame;
            expect(decoded.channel).toBe(original.channel);
            expect(decoded.command).toBe(original.command);
            expect(decoded.payload.equals(original.payload)).toBe(true);
          });
        },
      ),
      { seed: 42, numRuns: 300 },
    );
  });

  describe('malformed input ends the stream with a ProtocolError', () => {
    it('a header announcing more than 65536 bytes errors at once, without waiting for the payload', () => {
      testScheduler().run(({ cold, expectObservable }) => {
        const input = cold('-a-b', { a: encodeFrame(f.ping('x')), b: rawHeader(1, Command.DATA, MAX_PAYLOAD + 1) });
        expectObservable(input.pipe(decodeFrames())).toBe(
          '-p-#',
          { p: f.ping('x') },
          protocolError(/malformed frame: DATA payload of 65537 bytes exceeds 65536/),
        );
      });
    });

    it('the largest u24 length is refused too, and a smaller limit can be set', () => {
      expect(decodeAll([rawHeader(1, Command.DATA, 0xffffff)]).error).toEqual(protocolError(/16777215 bytes/));
      const limited = decodeAll([encodeFrame(f.data(1, '12345'))], 4);
      expect(limited.error).toEqual(protocolError(/exceeds 4/));
      expect(limited.frames).toEqual([]);
    });

    it('an unknown command byte', () => {
      testScheduler().run(({ cold, expectObservable }) => {
        const input = cold('-a', { a: rawHeader(5, 0x7f, 0) });
        expectObservable(input.pipe(decodeFrames())).toBe('-#', {}, protocolError(/unknown command 0x7f on channel 5/));
      });
      expect(decodeAll([rawHeader(5, 0, 0)]).error).toEqual(protocolError(/unknown command 0x0/));
    });

    it('the stream ending inside a header or a payload', () => {
      testScheduler().run(({ cold, expectObservable }) => {
        const bytes = encodeFrame(f.data(1, 'hello'));
        const inHeader = cold('-a|', { a: bytes.subarray(0, 5) });
        expectObservable(inHeader.pipe(decodeFrames())).toBe('--#', {}, protocolError(/stream ended inside a frame \(5 bytes left over\)/));
        const inPayload = cold('-a-b|', { a: encodeFrame(f.eof(1)), b: bytes.subarray(0, 10) });
        expectObservable(inPayload.pipe(decodeFrames())).toBe('-e--#', { e: f.eof(1) }, protocolError(/10 bytes left over/));
      });
    });

    it('a clean end between frames completes', () => {
      testScheduler().run(({ cold, expectObservable }) => {
        const input = cold('-a|', { a: encodeFrame(f.eof(1)) });
        expectObservable(input.pipe(decodeFrames())).toBe('-e|', { e: f.eof(1) });
      });
    });

    it('stops emitting at the first malformed frame of a chunk and unsubscribes from the bytes', () => {
      const bytes$ = new Subject<Buffer>();
      const frames: Frame[] = [];
      let error: unknown;
      bytes$.pipe(decodeFrames()).subscribe({ next: (fr) => frames.push(fr), error: (e: unknown) => (error = e) });
      bytes$.next(Buffer.concat([encodeFrame(f.eof(1)), rawHeader(1, 0x55, 0), encodeFrame(f.eof(2))]));
      expect(frames).toEqual([f.eof(1)]);
      expect(error).toBeInstanceOf(ProtocolError);
      expect(bytes$.observed).toBe(false);
    });

    it('passes an upstream error on', async () => {
      const boom = new Error('read failed');
      const bytes$ = new Subject<Buffer>();
      const done = lastValueFrom(bytes$.pipe(decodeFrames(), toArray()));
      bytes$.error(boom);
      await expect(done).rejects.toBe(boom);
    });
  });
});
