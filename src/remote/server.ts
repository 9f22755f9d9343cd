import { connect as netConnect } from 'node:net';
import { map, type Observable, Subject, type Subscription } from 'rxjs';
import { DEFAULT_WINDOW } from '../streams/defaults.js';
import { encodeHost, encodeRoutes } from '../streams/discovery.js';
import { type DnsRequest, encodeDnsFailed, encodeDnsResponse, MAX_DNS_ANSWER } from '../streams/dns.js';
import { fdSocket } from '../streams/fd-socket.js';
import { CONTROL_CHANNEL, Command, type Destination, type Frame, frame } from '../streams/frame.js';
import { frameWriter } from '../streams/frame-writer.js';
import { fromReadable } from '../streams/from-readable.js';
import { type SessionEvent, session } from '../streams/session.js';
import { socketEnd } from '../streams/socket-end.js';
import type { UdpMessage } from '../streams/udp.js';
import { resolveDns } from './dns-server.js';
import { hostwatch$ } from './hostwatch.js';
import { listRoutes } from './routes.js';
import { udpRelay } from './udp.js';

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

/** DNS queries resolved at once; more are refused (DNS_FAILED) rather than queued without bound. */
const MAX_DNS_IN_FLIGHT = 1024;

/**
 * What the client asks for on the control channel besides the mux's own business: DNS queries
 * (--dns), the routing table (-N), host discovery (-H). Answers go out as control frames.
 */
function controlRequests(control: Subject<Frame>) {
  let dnsInFlight = 0;
  const seen = new Subject<string>();
  let hostwatch: Subscription | undefined;

  const answerDns = ({ id, target, message }: DnsRequest) => {
    if (dnsInFlight >= MAX_DNS_IN_FLIGHT) {
      control.next(encodeDnsFailed(id, `server busy: ${MAX_DNS_IN_FLIGHT} DNS queries in flight`));
      return;
    }
    dnsInFlight++;
    resolveDns(message, target ? { target } : {})
      .then(
        (answer) =>
          control.next(
            answer.length <= MAX_DNS_ANSWER ? encodeDnsResponse(id, answer) : encodeDnsFailed(id, `answer of ${answer.length} bytes is too large`),
          ),
        (err: unknown) => control.next(encodeDnsFailed(id, err instanceof Error ? err.message : String(err))),
      )
      .finally(() => dnsInFlight--);
  };

  return {
    handle(event: SessionEvent): void {
      try {
        handleEvent(event);
      } catch (err) {
        // Never let one request take the server down; a client waiting for routes gets none.
        log(`${event.kind}: ${err instanceof Error ? err.message : String(err)}`);
        if (event.kind === 'routes-request') control.next(encodeRoutes([]));
      }
    },
    stop(): void {
      hostwatch?.unsubscribe();
    },
  };

  function handleEvent(event: SessionEvent): void {
    switch (event.kind) {
      case 'dns-request':
        return answerDns(event.request);
      case 'routes-request':
        return control.next(encodeRoutes(listRoutes()));
      case 'hosts-request':
        // Host discovery failing ends -H's finds, not the server.
        hostwatch ??= hostwatch$({ seeds: event.seeds, seen$: seen, log }).subscribe({
          next: (host) => control.next(encodeHost(host)),
          error: (err: unknown) => log(`hostwatch: ${err instanceof Error ? err.message : String(err)}`),
        });
        return;
      case 'open':
        // Where the tunnel goes is worth a reverse lookup for -H.
        if (hostwatch) seen.next(event.destination.address);
        return;
    }
  }
}

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
 * The server: one session on stdin/stdout, a real TCP connection per channel, a UDP socket per
 * flow. Exits 0 when the client goes away (stdin ends), 1 on a protocol error after telling the
 * client why (EXIT frame).
 */
export function runServer(): void {
  const { bytes$, output } = stdio();
  const writer = frameWriter(output);
  const control = new Subject<Frame>();
  const requests = controlRequests(control);
  const udpMessages = new Subject<UdpMessage>();
  // Replies wait in the relay's bounded queues, not in the output, while the client is not reading.
  const udp = udpRelay({ messages$: udpMessages, writable$: writer.blocked$.pipe(map((blocked) => !blocked)) }).subscribe({
    next: (f) => control.next(f),
    error: (err: unknown) => fail(err),
  });
  const stop = () => {
    requests.stop();
    udp.unsubscribe();
  };
  const fail = (err: unknown) => {
    stop();
    const reason = err instanceof Error ? err.message : String(err);
    log(reason);
    writer.write(frame(CONTROL_CHANNEL, Command.EXIT, Buffer.from(reason, 'utf8')));
    output.end(() => process.exit(1));
    setTimeout(() => process.exit(1), 2000).unref();
  };
  session({
    role: 'server',
    recvWindow: DEFAULT_WINDOW,
    bytes$,
    sendRaw: (bytes) => output.write(bytes),
    writer,
    dial: dialTcp,
    control$: control,
  }).subscribe({
    next: (event) => (event.kind === 'udp' ? udpMessages.next(event.message) : requests.handle(event)),
    error: fail,
    complete: () => {
      stop();
      process.exit(0);
    },
  });
}
