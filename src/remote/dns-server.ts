/**
 * The server's side of --dns: answers one captured query with the remote host's resolver, the
 * way its libc would: the nameservers of its /etc/resolv.conf in order (or the one --to-ns
 * names), each with the timeout that file sets, the next one when a nameserver times out or
 * refuses, and TCP to the same nameserver when a UDP answer comes back truncated.
 * Runs on the remote host: Node built-ins only.
 */
import { createSocket } from 'node:dgram';
import { readFileSync, statSync } from 'node:fs';
import { isIP, connect as netConnect } from 'node:net';
import type { Destination } from '../streams/frame.js';

export interface Nameserver {
  /** Address as written (an IPv6 link-local one may carry its %zone). */
  readonly address: string;
  readonly port: number;
  readonly family: 4 | 6;
}

export interface ResolvConf {
  readonly nameservers: readonly Nameserver[];
  /** Per nameserver and attempt (resolv.conf `options timeout:N`, seconds; default 5). */
  readonly timeoutMs: number;
  /** Rounds through the list (`options attempts:N`; default 2). */
  readonly attempts: number;
}

/** glibc reads at most three nameservers and defaults to the local one. */
const MAX_NAMESERVERS = 3;
const DEFAULT_NAMESERVER: Nameserver = { address: '127.0.0.1', port: 53, family: 4 };
/** However the file is set up, a query gives up after this long, before the client does (15 s). */
export const DNS_BUDGET_MS = 12_000;
const clamp = (value: number, low: number, high: number) => Math.min(high, Math.max(low, value));

/** resolv.conf as glibc reads it: `nameserver` lines, `options timeout:N attempts:N`. */
export function parseResolvConf(text: string): ResolvConf {
  const nameservers: Nameserver[] = [];
  let timeoutS = 5;
  let attempts = 2;
  for (const raw of text.split('\n')) {
    const words = raw.replace(/[#;].*/, '').trim().split(/\s+/);
    if (words[0] === 'nameserver' && words[1] !== undefined) {
      const family = isIP(words[1].replace(/%.*/, ''));
      if (family !== 0 && nameservers.length < MAX_NAMESERVERS) nameservers.push({ address: words[1], port: 53, family: family as 4 | 6 });
    } else if (words[0] === 'options') {
      for (const option of words.slice(1)) {
        const [name, value] = option.split(':');
        const n = Number(value);
        if (!Number.isInteger(n)) continue;
        if (name === 'timeout') timeoutS = clamp(n, 1, 30);
        if (name === 'attempts') attempts = clamp(n, 1, 5);
      }
    }
  }
  return { nameservers: nameservers.length > 0 ? nameservers : [DEFAULT_NAMESERVER], timeoutMs: timeoutS * 1000, attempts };
}

let cached: { at: number; mtimeMs: number; conf: ResolvConf } | undefined;

/** The remote host's /etc/resolv.conf, re-read when it changes (checked at most once a second). */
export function systemResolvConf(path = '/etc/resolv.conf'): ResolvConf {
  const now = Date.now();
  if (cached && now - cached.at < 1000) return cached.conf;
  let mtimeMs = -1;
  try {
    mtimeMs = statSync(path).mtimeMs;
  } catch {
    // no file: glibc's defaults
  }
  if (cached && cached.mtimeMs === mtimeMs) {
    cached.at = now;
    return cached.conf;
  }
  let text = '';
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    // as above
  }
  cached = { at: now, mtimeMs, conf: parseResolvConf(text) };
  return cached.conf;
}

/** An error that says which nameserver failed and how (ETIMEDOUT, ECONNREFUSED, …). */
class NameserverError extends Error {
  constructor(
    readonly code: string,
    server: Nameserver,
  ) {
    super(`${code} from ${server.family === 6 ? `[${server.address}]` : server.address}:${server.port}`);
  }
}

const sameId = (query: Buffer, answer: Buffer) => answer.length >= 12 && answer.readUInt16BE(0) === query.readUInt16BE(0);
const isResponse = (answer: Buffer) => ((answer[2] ?? 0) & 0x80) !== 0;
/** The TC bit: the answer did not fit and was cut. */
export const isTruncated = (answer: Buffer): boolean => ((answer[2] ?? 0) & 0x02) !== 0;

/** One query over UDP to one nameserver; ignores datagrams that are not the answer to it. */
export function udpExchange(query: Buffer, server: Nameserver, timeoutMs: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const socket = createSocket(server.family === 6 ? 'udp6' : 'udp4');
    let done = false;
    const finish = (error: Error | null, answer?: Buffer) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.close();
      if (error) reject(error);
      else resolve(answer as Buffer);
    };
    const timer = setTimeout(() => finish(new NameserverError('ETIMEDOUT', server)), timeoutMs);
    socket.on('error', (err: NodeJS.ErrnoException) => finish(new NameserverError(err.code ?? 'EIO', server)));
    socket.on('message', (answer) => {
      if (sameId(query, answer) && isResponse(answer)) finish(null, answer);
    });
    // Connected: only the nameserver's datagrams arrive, and an ICMP "port unreachable" shows
    // up as ECONNREFUSED at once instead of a timeout.
    socket.connect(server.port, server.address, (err?: unknown) => {
      if (err) finish(new NameserverError((err as NodeJS.ErrnoException).code ?? 'EIO', server));
      else socket.send(query);
    });
  });
}

/** One query over TCP (two-byte length before each message). */
export function tcpExchange(query: Buffer, server: Nameserver, timeoutMs: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const socket = netConnect({ host: server.address, port: server.port, family: server.family });
    const chunks: Buffer[] = [];
    let received = 0;
    let done = false;
    const finish = (error: Error | null, answer?: Buffer) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      if (error) reject(error);
      else resolve(answer as Buffer);
    };
    const timer = setTimeout(() => finish(new NameserverError('ETIMEDOUT', server)), timeoutMs);
    socket.on('error', (err: NodeJS.ErrnoException) => finish(new NameserverError(err.code ?? 'EIO', server)));
    socket.on('end', () => finish(new NameserverError('ECONNRESET', server)));
    socket.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      received += chunk.length;
      if (received < 2) return;
      const all = chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, received);
      chunks.splice(0, chunks.length, all);
      const length = all.readUInt16BE(0);
      if (received < 2 + length) return;
      const answer = all.subarray(2, 2 + length);
      if (sameId(query, answer)) finish(null, answer);
      else finish(new NameserverError('EBADMSG', server));
    });
    const length = Buffer.allocUnsafe(2);
    length.writeUInt16BE(query.length, 0);
    socket.write(Buffer.concat([length, query]));
  });
}

export interface ResolveOptions {
  /** --to-ns: ask only this nameserver (with the timeouts of resolv.conf). */
  readonly target?: Destination;
  readonly conf?: ResolvConf;
  readonly budgetMs?: number;
  /** Injectable for tests. */
  readonly udp?: typeof udpExchange;
  readonly tcp?: typeof tcpExchange;
}

/**
 * The answer to `query` from the first nameserver that gives one. Rejects with the last
 * nameserver's error when none does within the attempts and the overall budget.
 */
export async function resolveDns(query: Buffer, options: ResolveOptions = {}): Promise<Buffer> {
  const conf = options.conf ?? systemResolvConf();
  const udp = options.udp ?? udpExchange;
  const tcp = options.tcp ?? tcpExchange;
  const servers: readonly Nameserver[] = options.target
    ? [{ address: options.target.address, port: options.target.port, family: options.target.family }]
    : conf.nameservers;
  const deadline = Date.now() + (options.budgetMs ?? DNS_BUDGET_MS);
  let lastError: Error = new Error('no nameserver to ask');
  for (let attempt = 0; attempt < conf.attempts; attempt++) {
    for (const server of servers) {
      const left = deadline - Date.now();
      if (left <= 0) throw lastError;
      try {
        const answer = await udp(query, server, Math.min(conf.timeoutMs, left));
        if (!isTruncated(answer)) return answer;
        // Too big for UDP: the same nameserver over TCP; the cut answer if that fails too.
        return await tcp(query, server, Math.max(1, Math.min(conf.timeoutMs, deadline - Date.now()))).catch(() => answer);
      } catch (err) {
        lastError = err as Error;
      }
    }
  }
  throw lastError;
}
