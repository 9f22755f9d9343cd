import { connect as netConnect } from 'node:net';
import type { Observable } from 'rxjs';
import { DEFAULT_WINDOW } from '../streams/defaults.js';
import { Command, CONTROL_CHANNEL, type Destination, frame } from '../streams/frame.js';
import { frameWriter } from '../streams/frame-writer.js';
import { fdSocket } from '../streams/fd-socket.js';
import { fromReadable } from '../streams/from-readable.js';
import { session } from '../streams/session.js';
import { socketEnd } from '../streams/socket-end.js';

/** Opens the real connection for a channel; the socket reports 'connected' or the errno. */
function dialTcp(destination: Destination, blocked$: Observable<boolean>) {
  const socket = netConnect({
    host: destination.address,
    port: destination.port,
    family: destination.family,
    allowHalfOpen: true,
  });
  return socketEnd(socket, blocked$);
}

const log = (message: string) => process.stderr.write(`rxshuttle server: ${message}\n`);

/**
 * fds 0 and 1 as sockets of our own: large reads, and asynchronous writes (process.stdout writes
 * to a pipe synchronously on Linux, which would stall the whole server while ssh is busy).
 * Falls back to process.stdin/stdout where fd 0 is not a pipe or socket (a terminal).
 */
function stdio() {
  try {
    const input = fdSocket(0, { readable: true, writable: false });
    const output = fdSocket(1, { readable: false, writable: true }).socket;
    return { bytes$: input.bytes$, output };
  } catch {
    return { bytes$: fromReadable(process.stdin), output: process.stdout };
  }
}

/**
 * The server: one session on stdin/stdout, a real TCP connection per channel. Exits 0 when the
 * client goes away (stdin ends), 1 on a protocol error after telling the client why (EXIT frame).
 */
export function runServer(): void {
  const { bytes$, output } = stdio();
  const writer = frameWriter(output);
  session({
    role: 'server',
    recvWindow: DEFAULT_WINDOW,
    bytes$,
    sendRaw: (bytes) => output.write(bytes),
    writer,
    dial: dialTcp,
  }).subscribe({
    error: (err: unknown) => {
      const reason = err instanceof Error ? err.message : String(err);
      log(reason);
      writer.write(frame(CONTROL_CHANNEL, Command.EXIT, Buffer.from(reason, 'utf8')));
      output.end(() => process.exit(1));
      setTimeout(() => process.exit(1), 2000).unref();
    },
    complete: () => process.exit(0),
  });
}
