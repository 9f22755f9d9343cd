import { libcFunction } from '../os/libc.js';

const AF_UNIX = 1;
const SOCK_STREAM = 1;
const SOCK_CLOEXEC = 0o2000000;
const SOL_SOCKET = 1;
const SO_SNDBUF = 7;
const SO_RCVBUF = 8;
/** The kernel doubles it; 1 MiB socket buffers measured best for the ssh stdio path (DESIGN.md). */
const BUFFER_SIZE = 1024 * 1024;

interface Libc {
  socketpair: (domain: number, type: number, protocol: number, fds: number[]) => number;
  setsockopt: (fd: number, level: number, name: number, value: Buffer, length: number) => number;
  close: (fd: number) => number;
}
let libc: Libc | undefined;

function load(): Libc {
  if (!libc) {
    libc = {
      socketpair: libcFunction<Libc['socketpair']>('int socketpair(int domain, int type, int protocol, _Out_ int *sv)'),
      setsockopt: libcFunction<Libc['setsockopt']>('int setsockopt(int fd, int level, int name, const uint8_t *value, uint32_t len)'),
      close: libcFunction<Libc['close']>('int close(int fd)'),
    };
  }
  return libc;
}

/**
 * A Unix socket pair with 1 MiB buffers: one end becomes the child's stdin and stdout, the other
 * ours. Faster than two 64 KiB pipes, and our end can be read in large chunks. null when libc
 * cannot be reached (then plain pipes are used).
 */
export function socketPair(
  /** null: the kernel's default buffers (per-connection pairs, of which there may be thousands). */
  bufferSize: number | null = BUFFER_SIZE,
): { ours: number; theirs: number; closeTheirs: () => void; closeBoth: () => void } | null {
  try {
    const c = load();
    const fds = [0, 0];
    if (c.socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) !== 0) return null;
    const [ours = -1, theirs = -1] = fds;
    const size = Buffer.alloc(4);
    size.writeInt32LE(bufferSize ?? 0, 0);
    for (const fd of bufferSize === null ? [] : fds) {
      c.setsockopt(fd, SOL_SOCKET, SO_SNDBUF, size, 4);
      c.setsockopt(fd, SOL_SOCKET, SO_RCVBUF, size, 4);
    }
    return {
      ours,
      theirs,
      closeTheirs: () => c.close(theirs),
      closeBoth: () => {
        c.close(ours);
        c.close(theirs);
      },
    };
  } catch {
    return null;
  }
}
