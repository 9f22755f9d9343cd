import { connect as netConnect } from 'node:net';
import type { Observable } from 'rxjs';
import { BULK_QUEUE, DEFAULT_WINDOW, FLAG_NO_LATENCY_CONTROL } from '../streams/defaults.js';
import { Command, CONTROL_CHANNEL, type Destination, frame } from '../streams/frame.js';
import { frameWriter } from '../streams/frame-writer.js';
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
 * The server: one session on stdin/stdout, a real TCP connection per channel. Exits 0 when the
 * client goes away (stdin ends), 1 on a protocol error after telling the client why (EXIT frame).
 */
export function runServer(): void {
  const writer = frameWriter(process.stdout);
  session({
    role: 'server',
    recvWindow: DEFAULT_WINDOW,
    bytes$: fromReadable(process.stdin),
    sendRaw: (bytes) => process.stdout.write(bytes),
    writer,
    dial: (destination) => dialTcp(destination, writer.blocked$),
  }).subscribe({
    next: (event) => {
      if (event.kind === 'hello' && event.hello.flags & FLAG_NO_LATENCY_CONTROL) writer.setMaxQueued(BULK_QUEUE);
    },
    error: (err: unknown) => {
      const reason = err instanceof Error ? err.message : String(err);
      log(reason);
      writer.write(frame(CONTROL_CHANNEL, Command.EXIT, Buffer.from(reason, 'utf8')));
      process.stdout.end(() => process.exit(1));
      setTimeout(() => process.exit(1), 2000).unref();
    },
    complete: () => process.exit(0),
  });
}
