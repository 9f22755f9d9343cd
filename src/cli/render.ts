import { isIPv6 } from 'node:net';
import type { TunnelEvent } from '../shared/events.js';
import type { TunnelOptions } from '../shared/options.js';
import { printable } from '../shared/printable.js';
import { formatDestination } from '../streams/destination.js';
import { listenHosts } from '../tunnel/listener.js';

/**
 * How each event reads on the terminal, and from which -v level it shows (0: always). `text` gives
 * one line, or several as a list: a newline inside a field never starts a line of its own.
 */
type Renderer<K extends TunnelEvent['kind']> = {
  readonly level: number;
  readonly text: (event: Extract<TunnelEvent, { kind: K }>) => string | readonly string[];
};

const renderers: { readonly [K in TunnelEvent['kind']]: Renderer<K> } = {
  listening: { level: 1, text: (e) => `Listening on ${e.host}:${e.port}.` },
  starting: { level: 2, text: (e) => `starting server: ${e.command.slice(0, -1).join(' ')} …` },
  transport: {
    level: 1,
    text: (e) =>
      e.transport === 'ssh2' ? 'Transport: ssh2, in this process.' : `Transport: the ssh binary${e.why ? ` (${e.why})` : ''}.`,
  },
  'remote-output': { level: 2, text: (e) => `remote: ${e.line}` },
  mode: {
    level: 1,
    text: (e) => (e.mode === 'node' ? `Remote: the node server (${e.why}).` : `Remote: stock sshd, nothing run there (${e.why}).`),
  },
  connected: { level: 1, text: (e) => `Connected to ${e.remote}.` },
  reconnecting: {
    level: 0,
    text: (e) =>
      e.attempt === 1
        ? `${e.reason}; reconnecting (the rules stay; new connections wait).`
        : `reconnecting (attempt ${e.attempt}, in ${(e.delayMs / 1000).toFixed(1)} s): ${e.reason}`,
  },
  'firewall-ready': {
    level: 1,
    text: (e) =>
      `Firewall ready: ${e.method === 'nft' ? 'table inet' : 'chain'} rxshuttle-${e.port}, ${e.rules.filter((r) => !r.exclude).length} subnet(s) tunneled, ${e.rules.filter((r) => r.exclude).length} excluded${e.dns ? `; DNS to ${e.dns.nameservers.join(', ')} captured (port ${e.dns.port})` : ''}.`,
  },
  accept: { level: 1, text: (e) => `Accept: ${e.source} -> ${formatDestination(e.destination)}.` },
  close: {
    level: 1,
    text: (e) =>
      `closed ${e.via ?? ''}#${e.id} ${formatDestination(e.destination)}: ${e.reason}${e.detail ? ` (${e.detail})` : ''}, ${e.bytesSent} bytes sent, ${e.bytesReceived} received.`,
  },
  'remote-exit': { level: 0, text: (e) => `server stopped: ${e.reason}` },
  warning: { level: 0, text: (e) => `warning: ${e.message}` },
  notice: { level: 1, text: (e) => e.message },
  routes: {
    level: 1,
    text: (e) =>
      ['available routes:', ...e.routes.map((r) => `  ${r.address}/${r.prefix}`), `${e.tunneled} of them tunneled (-N).`],
  },
  dns: {
    level: 1,
    text: (e) => `DNS: ${e.source} asked ${e.question} (${e.transport}): ${e.outcome}, ${e.detail}, ${e.ms} ms.`,
  },
  host: { level: 1, text: (e) => `hostwatch: Found: ${e.name}: ${e.address}` },
  'udp-open': { level: 1, text: (e) => `UDP: ${formatDestination(e.source)} -> ${formatDestination(e.destination)}.` },
  'udp-drop': {
    level: 1,
    text: (e) => `UDP udp#${e.id} ${formatDestination(e.destination)}: dropping datagrams (${e.reason}; ${e.datagramsDropped} so far).`,
  },
  'udp-close': {
    level: 1,
    text: (e) =>
      `closed udp#${e.id} ${formatDestination(e.destination)}: ${e.reason}${e.detail ? ` (${e.detail})` : ''}, ${e.datagramsSent} datagrams (${e.bytesSent} bytes) sent, ${e.datagramsReceived} (${e.bytesReceived} bytes) received${e.datagramsDropped > 0 ? `, ${e.datagramsDropped} dropped` : ''}.`,
  },
  name: { level: 1, text: (e) => `${e.name} resolved to ${e.addresses.join(', ')} (asked again in ${e.ttlS} s).` },
};

/**
 * The line (or lines, joined by newlines) to print for an event at this verbosity, or null.
 * Whatever a field holds, each line comes out printable (printable.ts): remote output and an EXIT
 * reason are escaped where they come in, and every line is once more here, for remote text that
 * is not (a channel refusal's reason from sshd, in a close event's detail) and events made
 * elsewhere. Escaping twice changes nothing.
 */
export function render(event: TunnelEvent, verbosity: number): string | null {
  const renderer = renderers[event.kind] as Renderer<typeof event.kind>;
  if (verbosity < renderer.level) return null;
  const text = renderer.text(event as never);
  return (typeof text === 'string' ? [text] : text).map(printable).join('\n');
}

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`;

/**
 * The line that says the tunnel is up (its rules in place), at every verbosity, as sshuttle's
 * "Connected to server.": `Connected to bastion; tunneling 2 subnets on 127.0.0.1:12300.`
 * `where`: the ssh server's host, or "the local server".
 */
export function readyLine(
  event: Extract<TunnelEvent, { kind: 'firewall-ready' }>,
  where: string,
  options: Pick<TunnelOptions, 'listen' | 'subnets'>,
): string {
  // The addresses listener.ts listens on: those of -l, and ::1 when IPv6 subnets (or names' addresses) need it.
  const ipv6 = event.rules.some((rule) => rule.family === 6 && !rule.exclude);
  const on = listenHosts(options.listen, ipv6).map((host) => `${isIPv6(host) ? `[${host}]` : host}:${event.port}`);
  const subnets = plural(event.rules.filter((rule) => !rule.exclude).length, 'subnet');
  return printable(`Connected to ${where}; tunneling ${subnets}${event.dns ? ' and DNS' : ''} on ${on.join(', ')}.`);
}

/** The line that says the tunnel is stopping on a signal; -v names the signal. */
export const stopLine = (signal: NodeJS.Signals, verbosity: number): string =>
  verbosity > 0 ? `${signal}: shutting down.` : 'Stopping.';
