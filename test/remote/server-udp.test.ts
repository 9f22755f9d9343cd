// The remote server as it runs on the remote host (src/remote/main.ts bundled the way
// scripts/bundle.mjs does, node 16 syntax), spoken to over its stdin and stdout: UDP frames reach
// the relay and its answers come back as frames; a broken flow-id rule ends the session with EXIT.
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { createSocket, type Socket } from 'node:dgram';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { build } from 'esbuild';
import { filter, map, Subject } from 'rxjs';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { decodeFrames } from '../../src/streams/decode-frames.js';
import { Command, type Destination, encodeFrame, type Frame } from '../../src/streams/frame.js';
import { frameWriter } from '../../src/streams/frame-writer.js';
import { fromReadable } from '../../src/streams/from-readable.js';
import { encodeHello, HELLO_SIZE, PROTOCOL_VERSION } from '../../src/streams/handshake.js';
import { session } from '../../src/streams/session.js';
import { decodeUdpMessage, encodeUdpData, encodeUdpOpen, type UdpMessage } from '../../src/streams/udp.js';
import { type LocalDatagram, type UdpFlowOutput, udpFlows } from '../../src/streams/udp-flows.js';
import { pattern } from '../streams/marbles.js';
import { unexpectedError } from '../support/unexpected-error.js';
import { waitUntil } from '../support/wait-until.js';

let dir = '';
let bundle = '';
beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'rxs-server-udp-'));
  bundle = join(dir, 'server.cjs');
  await build({ entryPoints: ['src/remote/main.ts'], outfile: bundle, bundle: true, platform: 'node', format: 'cjs', target: 'node16', logLevel: 'warning' });
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const children: ChildProcessWithoutNullStreams[] = [];
const sockets: Socket[] = [];
afterEach(() => {
  for (const child of children.splice(0)) if (child.exitCode === null) child.kill();
  for (const socket of sockets.splice(0)) socket.close();
});

async function echoServer(): Promise<Destination> {
  const socket = createSocket('udp4');
  sockets.push(socket);
  socket.on('message', (datagram, from) => socket.send(datagram, from.port, from.address));
  socket.bind(0, '127.0.0.1');
  await once(socket, 'listening');
  return { family: 4, address: '127.0.0.1', port: (socket.address() as AddressInfo).port };
}

/** The bundled server in a child process; it may end before reading all we wrote (EPIPE is not a failure). */
function serverChild(): ChildProcessWithoutNullStreams {
  const child = spawn(process.execPath, ['-e', `require(${JSON.stringify(bundle)}).main()`], { stdio: 'pipe' });
  child.stdin.on('error', () => undefined);
  children.push(child);
  return child;
}

/** The server in a child process, past the hellos: send frames, wait for the ones it sends. */
async function startServer() {
  const child = serverChild();
  const frames: Frame[] = [];
  const bytes = new Subject<Buffer>();
  let skipped = 0;
  child.stdout.on('data', (chunk: Buffer) => {
    // The server's hello first (checked by the session tests); frames after it.
    const rest = chunk.subarray(Math.max(0, HELLO_SIZE - skipped));
    skipped += chunk.length - rest.length;
    if (rest.length > 0) bytes.next(rest);
  });
  bytes.pipe(decodeFrames()).subscribe({ next: (f) => frames.push(f), error: unexpectedError });
  child.stdin.write(encodeHello({ version: PROTOCOL_VERSION, window: 4 * 1024 * 1024, flags: 0 }));
  const until = (test: (all: readonly Frame[]) => boolean) =>
    waitUntil(() => test(frames), { what: () => `the frames (got ${frames.map((f) => f.command).join(',')})` });
  const udp = (): UdpMessage[] =>
    frames.filter((f) => f.command === Command.UDP_DATA || f.command === Command.UDP_CLOSE).map(decodeUdpMessage);
  return { child, send: (f: Frame) => child.stdin.write(encodeFrame(f)), frames, until, udp };
}

describe('the server with UDP', () => {
  it('relays datagrams of 1 B, 1 400 B and 65 000 B to a UDP server and back, each whole', async () => {
    const echo = await echoServer();
    const server = await startServer();
    const sizes = [1, 1400, 65_000];
    server.send(encodeUdpOpen(1, echo));
    for (const size of sizes) server.send(encodeUdpData(1, pattern(size, size)));
    await server.until(() => server.udp().length >= sizes.length);
    const replies = server.udp();
    expect(replies.map((m) => (m.kind === 'data' ? [m.flow, m.data.length] : m))).toEqual(sizes.map((size) => [1, size]));
    replies.forEach((m, i) => expect(m.kind === 'data' && m.data.equals(pattern(sizes[i] as number, sizes[i]))).toBe(true));
    server.child.stdin.end();
    const [code] = await once(server.child, 'exit');
    expect(code).toBe(0);
  });

  it('a UDP_DATA for a flow never opened ends the session: EXIT with the reason, status 1', async () => {
    const server = await startServer();
    server.send(encodeUdpData(9, Buffer.from('x')));
    const [code] = await once(server.child, 'exit');
    expect(code).toBe(1);
    const exit = server.frames.find((f) => f.command === Command.EXIT);
    expect(exit?.payload.toString()).toMatch(/UDP_DATA for flow 9, which was never opened/);
  });

  it('with a client session and udpFlows in front of it: a program\'s datagrams come back to it from their destination', async () => {
    const echo = await echoServer();
    const child = serverChild();
    // How the client wires it: UDP frames go out as control frames, 'udp' session events come
    // back to the flows, and the flows wait while the writer is full.
    const writer = frameWriter(child.stdin);
    const udpFrames = new Subject<Frame>();
    const fromServer = new Subject<UdpMessage>();
    const local = new Subject<LocalDatagram>();
    const outputs: UdpFlowOutput[] = [];
    let greet = () => {};
    const greeted = new Promise<void>((resolve) => {
      greet = resolve;
    });
    const sessionSubscription = session({
      role: 'client',
      recvWindow: 4 * 1024 * 1024,
      bytes$: fromReadable(child.stdout),
      sendRaw: (bytes) => child.stdin.write(bytes),
      writer,
      control$: udpFrames,
    })
      .pipe(filter((event) => event.kind === 'hello' || event.kind === 'udp'))
      .subscribe({
        next: (event) => (event.kind === 'udp' ? fromServer.next(event.message) : greet()),
        complete: () => fromServer.complete(), error: unexpectedError,
      });
    const flowsSubscription = local
      .pipe(udpFlows({ fromServer$: fromServer, writable$: writer.blocked$.pipe(map((blocked) => !blocked)) }))
      .subscribe({ next: (o) => {
        outputs.push(o);
        if (o.kind === 'frame') udpFrames.next(o.frame);
      }, error: unexpectedError });
    await greeted;
    const program = { family: 4, address: '10.0.0.5', port: 40_000 } as const;
    const sizes = [1, 1400, 65_000];
    for (const size of sizes) local.next({ source: program, destination: echo, data: pattern(size, size) });
    await waitUntil(() => outputs.filter((o) => o.kind === 'reply').length >= sizes.length, { what: `${sizes.length} replies` });
    const got = outputs.flatMap((o) => (o.kind === 'reply' ? [o] : []));
    expect(got.map((o) => [o.flow, o.source, o.destination, o.data.length])).toEqual(sizes.map((size) => [1, echo, program, size]));
    got.forEach((o, i) => expect(o.data.equals(pattern(sizes[i] as number, sizes[i]))).toBe(true));

    // The session ends when the server goes: the flow ends with it.
    child.stdin.end();
    await once(child, 'exit');
    await vi.waitFor(() => expect(outputs.at(-1)).toMatchObject({ kind: 'udp-close', id: 1, reason: 'ended', datagramsSent: 3, datagramsReceived: 3 }));
    flowsSubscription.unsubscribe();
    sessionSubscription.unsubscribe();
  });
});
