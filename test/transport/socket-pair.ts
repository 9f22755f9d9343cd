import { type AddressInfo, createServer, connect as netConnect, type Socket } from 'node:net';
import { join } from 'node:path';

let unixSockets = 0;

/**
 * A real connected pair: `program` is the local program's end, `accepted` the listener's (ours),
 * paused as pauseOnConnect leaves it unless told otherwise. Over TCP, or a Unix socket in
 * `unixDir`: the kernel then holds only ~200 KiB between the ends (net.core.wmem_default)
 * instead of loopback TCP's several MiB, so what backs up while the program reads nothing is the
 * tunnel's doing, not the kernel's. Both ends are destroyed by a function pushed on `cleanups`.
 */
export async function socketPair(
  { cleanups, unixDir }: { cleanups: (() => void | Promise<void>)[]; unixDir: string },
  over: 'tcp' | 'unix' = 'tcp',
  pauseOnConnect = true,
): Promise<{ program: Socket; accepted: Socket }> {
  const listener = createServer({ allowHalfOpen: true, pauseOnConnect, noDelay: true });
  const acceptedP = new Promise<Socket>((resolve) => listener.once('connection', resolve));
  await new Promise<void>((resolve, reject) => {
    listener.once('error', reject);
    if (over === 'tcp') listener.listen(0, '127.0.0.1', () => resolve());
    else listener.listen(join(unixDir, `pair-${process.pid}-${++unixSockets}.sock`), () => resolve());
  });
  const program =
    over === 'tcp'
      ? netConnect({ host: '127.0.0.1', port: (listener.address() as AddressInfo).port, allowHalfOpen: true })
      : netConnect({ path: listener.address() as string, allowHalfOpen: true });
  program.on('error', () => {});
  const accepted = await acceptedP;
  accepted.on('error', () => {});
  listener.close();
  cleanups.push(() => {
    program.destroy();
    accepted.destroy();
  });
  return { program, accepted };
}
