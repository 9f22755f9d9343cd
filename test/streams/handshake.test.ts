import { filter, from, Subject } from 'rxjs';
import { describe, expect, it } from 'vitest';
import { awaitHello, encodeHello, type HandshakeItem, HELLO_SIZE, MAGIC, PROTOCOL_VERSION } from '../../src/streams/handshake.js';
import { b, protocolError, testScheduler } from './marbles.js';

const HELLO = { version: PROTOCOL_VERSION, window: 4 * 1024 * 1024, flags: 0 };
const helloBytes = encodeHello(HELLO);

function run(chunks: Buffer[], maxNoise?: number): { items: HandshakeItem[]; error?: unknown; completed: boolean } {
  const items: HandshakeItem[] = [];
  let error: unknown;
  let completed = false;
  from(chunks)
    .pipe(awaitHello(maxNoise))
    .subscribe({ next: (i) => items.push(i), error: (e: unknown) => (error = e), complete: () => (completed = true) });
  return error === undefined ? { items, completed } : { items, error, completed };
}

/** The noise text, the hello and the bytes after it, however the items were chunked. */
function summarise(items: HandshakeItem[]) {
  const noise = items.flatMap((i) => (i.kind === 'noise' ? [i.text] : [])).join('');
  const hellos = items.flatMap((i) => (i.kind === 'hello' ? [i.hello] : []));
  const data = Buffer.concat(items.flatMap((i) => (i.kind === 'data' ? [i.chunk] : [])));
  const helloAt = items.findIndex((i) => i.kind === 'hello');
  const firstData = items.findIndex((i) => i.kind === 'data');
  const lastNoise = items.map((i) => i.kind).lastIndexOf('noise');
  return { noise, hellos, data, orderOk: (firstData < 0 || firstData > helloAt) && lastNoise < helloAt };
}

describe('encodeHello', () => {
  it('is magic, u8 version, u32 window, u32 flags', () => {
    const bytes = encodeHello({ version: 1, window: 0x01020304, flags: 0x0a0b0c0d });
    expect(bytes.length).toBe(HELLO_SIZE);
    expect(bytes.subarray(0, MAGIC.length).toString('latin1')).toBe('RXSHUTL');
    expect([...bytes.subarray(MAGIC.length)]).toEqual([1, 1, 2, 3, 4, 0x0a, 0x0b, 0x0c, 0x0d]);
  });
});

describe('awaitHello', () => {
  it('finds a hello at the very start and passes the rest of the chunk through as data', () => {
    const result = run([Buffer.concat([helloBytes, b('frames')]), b('more')]);
    expect(result.items).toEqual([
      { kind: 'hello', hello: HELLO },
      { kind: 'data', chunk: b('frames') },
      { kind: 'data', chunk: b('more') },
    ]);
    expect(result.completed).toBe(true);
  });

  it('reports a login banner before the hello as noise', () => {
    const banner = 'Welcome to Ubuntu\nLast login: yesterday\n';
    const result = run([Buffer.concat([b(banner), helloBytes, b('x')])], 1024);
    expect(result.items).toEqual([
      { kind: 'noise', text: banner },
      { kind: 'hello', hello: HELLO },
      { kind: 'data', chunk: b('x') },
    ]);
  });

  it('finds a hello split across chunks at every possible point, with noise before it', () => {
    const stream = Buffer.concat([b('motd: hi\n'), helloBytes, b('after')]);
    for (let cut = 1; cut < stream.length; cut++) {
      for (const cut2 of [cut + 1, cut + 3, stream.length]) {
        if (cut2 > stream.length || cut2 <= cut) continue;
        const chunks = [stream.subarray(0, cut), stream.subarray(cut, cut2), stream.subarray(cut2)];
        const result = run(chunks, 1024);
        expect(result.error, `cuts ${cut}/${cut2}`).toBeUndefined();
        const s = summarise(result.items);
        expect(s.noise).toBe('motd: hi\n');
        expect(s.hellos).toEqual([HELLO]);
        expect(s.data).toEqual(b('after'));
        expect(s.orderOk).toBe(true);
      }
    }
  });

  it('a hello delivered one byte at a time', () => {
    const s = summarise(run([...Buffer.concat([b('banner'), helloBytes])].map((x) => Buffer.from([x])), 100).items);
    expect(s.noise).toBe('banner');
    expect(s.hellos).toEqual([HELLO]);
  });

  it('noise that looks like the start of the magic is still noise', () => {
    const s = summarise(run([b('RXSH and RXSHUT are not it\n'), helloBytes], 100).items);
    expect(s.noise).toBe('RXSH and RXSHUT are not it\n');
    expect(s.hellos).toEqual([HELLO]);
  });

  it('bytes after the hello are passed through untouched, even if they contain the magic', () => {
    const result = run([helloBytes, helloBytes]);
    expect(result.items).toEqual([
      { kind: 'hello', hello: HELLO },
      { kind: 'data', chunk: helloBytes },
    ]);
  });

  it('a version mismatch is a clear error with its own code, not a hang', () => {
    testScheduler().run(({ cold, expectObservable }) => {
      const other = encodeHello({ version: 2, window: 100, flags: 0 });
      expectObservable(cold('-a', { a: other }).pipe(awaitHello())).toBe(
        '-#',
        {},
        protocolError(/protocol version mismatch: this side speaks 1, the peer 2/, 'RXS_ERR_PROTOCOL_VERSION'),
      );
    });
  });

  it('unknown flag bits are passed on, not refused', () => {
    const result = run([encodeHello({ version: PROTOCOL_VERSION, window: 5, flags: 0xffffffff })]);
    expect(result.items).toEqual([{ kind: 'hello', hello: { version: PROTOCOL_VERSION, window: 5, flags: 0xffffffff } }]);
  });

  it('a hello announcing a zero window is an error', () => {
    expect(run([encodeHello({ version: PROTOCOL_VERSION, window: 0, flags: 0 })]).error).toEqual(protocolError(/window of 0/));
  });

  it('the stream ending before the hello is an error', () => {
    testScheduler().run(({ cold, expectObservable }) => {
      // (Whether the unfinished hello is also reported as noise is not the point here.)
      const withoutNoise = filter((i: HandshakeItem) => i.kind !== 'noise');
      expectObservable(cold('-a-|', { a: helloBytes.subarray(0, 10) }).pipe(awaitHello(), withoutNoise)).toBe(
        '---#',
        {},
        protocolError(/stream ended before the peer said hello/),
      );
      expectObservable(cold<Buffer>('|').pipe(awaitHello())).toBe('#', {}, protocolError(/before the peer said hello/));
    });
  });

  it('the stream ending before the hello still reports all the noise, including a tail held back as a possible magic', () => {
    const result = run([b('bash: node: command not found\n')], 1024);
    expect(result.error).toEqual(protocolError(/before the peer said hello/));
    expect(summarise(result.items).noise).toBe('bash: node: command not found\n');
  });

  it('more noise than allowed is an error', () => {
    const result = run([b('x'.repeat(40)), b('y'.repeat(40)), helloBytes], 64);
    expect(result.error).toEqual(protocolError(/no rxshuttle greeting within 64 bytes/));
    expect(result.items.every((i) => i.kind === 'noise')).toBe(true);
  });

  it('with maxNoise 0 any foreign byte before the hello is an error', () => {
    expect(run([Buffer.concat([b('!'), helloBytes])], 0).error).toEqual(protocolError(/within 0 bytes/));
    expect(run([helloBytes], 0).items).toEqual([{ kind: 'hello', hello: HELLO }]);
  });

  it('passes an upstream error on, before and after the hello', () => {
    const boom = new Error('pipe broke');
    for (const before of [[], [helloBytes]]) {
      const bytes$ = new Subject<Buffer>();
      let error: unknown;
      bytes$.pipe(awaitHello()).subscribe({ error: (e: unknown) => (error = e) });
      for (const chunk of before) bytes$.next(chunk);
      bytes$.error(boom);
      expect(error).toBe(boom);
    }
  });
});
