/**
 * A small syslog(3) client: one RFC 3164 message per line, as glibc writes them
 * (`<PRI>Mmm dd hh:mm:ss TAG[PID]: MESSAGE`), sent to the local syslog socket, /dev/log.
 *
 * /dev/log is a Unix *datagram* socket (rsyslog, syslog-ng, journald), which Node cannot open
 * (`net` speaks stream sockets only, `dgram` no Unix addresses), so the socket is made with libc
 * through koffi. A stream socket at that path (some syslog-ng setups) is handled too, as glibc
 * does: the message then ends with a NUL byte. Sends never block (MSG_DONTWAIT): when the
 * syslog daemon is gone or its queue is full, a message is dropped rather than the tunnel
 * stalled. A restarted syslog daemon is found again on the next message.
 */
import { constants, endianness } from 'node:os';
import koffi from 'koffi';
import { errnoName, libcFunction } from '../os/libc.js';

export const DEV_LOG = '/dev/log';
/** syslog facilities (RFC 5424 §6.2.1) rxshuttle may log under. */
export const Facility = { user: 1, daemon: 3 } as const;
const SEVERITY = { err: 3, warning: 4, notice: 5, info: 6, debug: 7 } as const;
export type Severity = keyof typeof SEVERITY;

/** Longer messages are cut: rsyslog's default limit is 8 KiB, journald's larger. */
const MAX_MESSAGE_BYTES = 4096;
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

const AF_UNIX = 1;
const SOCK_STREAM = 1;
const SOCK_DGRAM = 2;
const SOCK_CLOEXEC = 0o2000000;
const MSG_DONTWAIT = 0x40;
const MSG_NOSIGNAL = 0x4000;
/** sizeof(sockaddr_un.sun_path) on Linux. */
const SUN_PATH = 108;

interface Libc {
  socket(domain: number, type: number, protocol: number): number;
  connect(fd: number, addr: Buffer, length: number): number;
  send(fd: number, buf: Buffer, length: number, flags: number): number;
  close(fd: number): number;
}
let libc: Libc | undefined;

function load(): Libc {
  if (!libc) {
    libc = {
      socket: libcFunction<Libc['socket']>('int socket(int domain, int type, int protocol)'),
      connect: libcFunction<Libc['connect']>('int connect(int fd, const uint8_t *addr, uint32_t len)'),
      send: libcFunction<Libc['send']>('long send(int fd, const uint8_t *buf, size_t len, int flags)'),
      close: libcFunction<Libc['close']>('int close(int fd)'),
    };
  }
  return libc;
}

/** struct sockaddr_un for `path` (family in host byte order). */
export function sockaddrUn(path: string): Buffer {
  const bytes = Buffer.from(path, 'utf8');
  if (bytes.length >= SUN_PATH || bytes.includes(0)) throw new Error(`syslog socket path too long or malformed: ${path}`);
  const addr = Buffer.alloc(2 + bytes.length + 1);
  if (endianness() === 'LE') addr.writeUInt16LE(AF_UNIX, 0);
  else addr.writeUInt16BE(AF_UNIX, 0);
  bytes.copy(addr, 2);
  return addr;
}

/** `<PRI>Mmm dd hh:mm:ss TAG[PID]: MESSAGE` (RFC 3164 as glibc writes it to /dev/log; local time). */
export function formatMessage(
  facility: number,
  severity: Severity,
  tag: string,
  pid: number,
  message: string,
  date: Date = new Date(),
): string {
  const two = (n: number) => String(n).padStart(2, '0');
  const stamp = `${MONTHS[date.getMonth()]} ${String(date.getDate()).padStart(2, ' ')} ${two(date.getHours())}:${two(date.getMinutes())}:${two(date.getSeconds())}`;
  // One message is one line: control characters (a newline would start a forged entry) become spaces.
  // biome-ignore lint/suspicious/noControlCharactersInRegex: removing them is the point
  const text = message.replace(/[\u0000-\u001f\u007f]+/g, ' ');
  return `<${facility * 8 + SEVERITY[severity]}>${stamp} ${tag}[${pid}]: ${text}`;
}

export interface SyslogOptions {
  /** The program name in each message (`rxshuttle`). */
  readonly tag: string;
  /** Default: this process's pid (read at each message, so it stays right in a re-spawned daemon). */
  readonly pid?: number;
  /** Default: daemon. */
  readonly facility?: number;
  /** Default: /dev/log. */
  readonly path?: string;
}

export interface Syslog {
  /** Sends one message; false when it could not be delivered (no syslog daemon, queue full). */
  log(severity: Severity, message: string): boolean;
  /** Why the last message could not be sent, e.g. `ENOENT` (no syslog at the path); null when it was. */
  readonly lastError: string | null;
  close(): void;
}

/**
 * Opens the syslog socket. Never throws for a missing syslog daemon: `log()` then returns false
 * and `lastError` says why (the caller decides whether to warn). Throws only when libc cannot be
 * reached at all.
 */
export function openSyslog(options: SyslogOptions): Syslog {
  const c = load();
  const path = options.path ?? DEV_LOG;
  const facility = options.facility ?? Facility.daemon;
  const addr = sockaddrUn(path);
  let fd = -1;
  let stream = false;
  let lastError: string | null = null;

  const disconnect = () => {
    if (fd >= 0) c.close(fd);
    fd = -1;
  };
  /** Connects a datagram socket, or a stream one when the path is a stream socket (EPROTOTYPE). */
  const connect = (): boolean => {
    for (const type of [SOCK_DGRAM, SOCK_STREAM]) {
      const s = c.socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
      if (s < 0) {
        lastError = errnoName(koffi.errno());
        return false;
      }
      if (c.connect(s, addr, addr.length) === 0) {
        fd = s;
        stream = type === SOCK_STREAM;
        return true;
      }
      const errno = koffi.errno();
      c.close(s);
      lastError = errnoName(errno);
      if (errno !== constants.errno.EPROTOTYPE) return false;
    }
    return false;
  };
  /** `text` is called once connected: a stream socket needs the NUL terminator. */
  const sendOnce = (text: () => Buffer): boolean => {
    if (fd < 0 && !connect()) return false;
    const bytes = text();
    const sent = c.send(fd, bytes, bytes.length, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (sent >= 0) {
      lastError = null;
      return true;
    }
    lastError = errnoName(koffi.errno());
    return false;
  };

  return {
    log(severity, message) {
      let text = Buffer.from(formatMessage(facility, severity, options.tag, options.pid ?? process.pid, message), 'utf8');
      if (text.length > MAX_MESSAGE_BYTES) text = text.subarray(0, MAX_MESSAGE_BYTES);
      const bytes = () => (stream ? Buffer.concat([text, Buffer.alloc(1)]) : text);
      if (sendOnce(bytes)) return true;
      // A full queue: drop this one. Anything else (syslog restarted, socket gone): reconnect once.
      if (lastError === 'EAGAIN' || lastError === 'EWOULDBLOCK' || lastError === 'ENOBUFS') return false;
      disconnect();
      return sendOnce(bytes);
    },
    get lastError() {
      return lastError;
    },
    close: disconnect,
  };
}
