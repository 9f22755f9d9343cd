/**
 * sd_notify(3) for a unit of `Type=notify` (issue 14): READY=1 once the tunnel is up, STATUS=…
 * as it changes, STOPPING=1 when it stops. systemd passes the socket in NOTIFY_SOCKET: a path,
 * or `@name` for the abstract namespace. Node's dgram has no Unix datagram sockets, so libc's
 * socket and sendto come through koffi. Without NOTIFY_SOCKET (not run by systemd) nothing is
 * sent; a failure is only logged: notifying must never break the tunnel.
 */
import createDebug from 'debug';
import { libcFunction } from '../os/libc.js';

const debug = createDebug('rxshuttle:notify');

const AF_UNIX = 1;
const SOCK_DGRAM = 2;
const SOCK_CLOEXEC = 0o2000000;
const MSG_NOSIGNAL = 0x4000;
/** sizeof(struct sockaddr_un): a 2-byte family, then 108 bytes of path. */
const SOCKADDR_UN = 110;

export type Notify = (state: string) => void;

/** The address as struct sockaddr_un, or null when NOTIFY_SOCKET is unusable. */
export function notifyAddress(value: string): { address: Buffer; length: number } | null {
  if (value === '' || (!value.startsWith('/') && !value.startsWith('@'))) return null;
  const path = Buffer.from(value.startsWith('@') ? `\0${value.slice(1)}` : value, 'utf8');
  if (path.length >= SOCKADDR_UN - 2) return null;
  const address = Buffer.alloc(SOCKADDR_UN);
  address.writeUInt16LE(AF_UNIX, 0);
  path.copy(address, 2);
  // An abstract name is exactly its bytes; a path ends with its NUL.
  return { address, length: 2 + path.length + (value.startsWith('@') ? 0 : 1) };
}

/** A function that sends one notification ("READY=1", "STATUS=…"); a no-op without NOTIFY_SOCKET. */
export function sdNotifier(env: NodeJS.ProcessEnv = process.env): Notify {
  const target = env.NOTIFY_SOCKET === undefined ? null : notifyAddress(env.NOTIFY_SOCKET);
  if (target === null) return () => undefined;
  let fd = -1;
  return (state) => {
    try {
      if (fd < 0) fd = libcFunction<(domain: number, type: number, protocol: number) => number>('int socket(int, int, int)')(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
      if (fd < 0) return debug('socket() failed');
      const message = Buffer.from(state, 'utf8');
      const sendto = libcFunction<(fd: number, buffer: Buffer, length: number, flags: number, address: Buffer, addressLength: number) => number>(
        'intptr_t sendto(int fd, const uint8_t *buffer, uintptr_t length, int flags, const uint8_t *address, uint32_t address_length)',
      );
      if (sendto(fd, message, message.length, MSG_NOSIGNAL, target.address, target.length) < 0) debug('sendto failed: %s', state);
    } catch (e) {
      debug('sd_notify: %s', (e as Error).message);
    }
  };
}
