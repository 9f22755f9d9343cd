import type { Server, Socket } from 'node:net';
import { constants } from 'node:os';
import koffi from 'koffi';

/**
 * libc through koffi, loaded once, for the few calls Node has no binding for (getsockopt,
 * sendmsg, socketpair, rlimits, flock, setsid…). Each function is declared once and cached, so
 * modules share the same declaration instead of repeating it.
 */
let lib: ReturnType<typeof koffi.load> | undefined;
const functions = new Map<string, unknown>();

export function libcFunction<T>(signature: string): T {
  let fn = functions.get(signature);
  if (fn === undefined) {
    lib ??= koffi.load('libc.so.6');
    fn = lib.func(signature);
    functions.set(signature, fn);
  }
  return fn as T;
}

/** A Node socket's or server's file descriptor (Node keeps it on its private handle); undefined once closed. */
export function descriptorOf(socket: Socket | Server): number | undefined {
  const fd: unknown = (socket as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
  return typeof fd === 'number' && Number.isInteger(fd) && fd >= 0 ? fd : undefined;
}

export const getsockopt = () =>
  libcFunction<(fd: number, level: number, name: number, value: Buffer, length: number[]) => number>(
    'int getsockopt(int fd, int level, int name, _Out_ uint8_t *value, _Inout_ uint32_t *length)',
  );

export const getrlimit = () =>
  libcFunction<(resource: number, limits: bigint[]) => number>('int getrlimit(int resource, _Out_ uint64_t *rlim)');

export const recv = () =>
  libcFunction<(fd: number, buffer: Buffer, length: number, flags: number) => number>(
    'intptr_t recv(int fd, _Out_ uint8_t *buffer, uintptr_t length, int flags)',
  );

/** errno as its name (ECONNRESET…), for messages and Node-style errors. */
export function errnoName(errno: number): string {
  for (const [name, value] of Object.entries(constants.errno)) if (value === errno) return name;
  return `errno ${errno}`;
}
