import { mkdtempSync, rmSync } from 'node:fs';
import { type AddressInfo, createServer, connect as netConnect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { onTestFinished } from 'vitest';

export interface SocketPairOptions {
  /**
   * Loopback TCP (the default), or a Unix socket: the kernel then holds only ~200 KiB between the
   * ends (net.core.wmem_default) instead of loopback TCP's several MiB, so what backs up while one
   * end reads nothing is the code's doing, not the kernel's.
   */
  readonly over?: 'tcp' | 'unix';
  /** The accepted end starts paused (the listener's pauseOnConnect), as a redirected socket does; default false. */
  readonly pauseOnConnect?: boolean;
  /** Both ends may be half-open (one direction ended, the other still going); default true. */
  readonly allowHalfOpen?: boolean;
  /** Nagle's algorithm off on the accepted end; default false. */
  readonly noDelay?: boolean;
}

/**
 * The tests' one builder of a real connected pair of sockets: `client` is the end that connected,
 * `accepted` the listener's; both are connected when it resolves. Errors on either end are ignored
 * by a handler of ours (tests reset ends on purpose; the code under test adds its own handlers).
 * The listener is closed once it has accepted; both ends are destroyed when the test finishes
 * (onTestFinished: after the afterEach hooks), so it must be called within a test.
 */
export async function socketPair(options: SocketPairOptions = {}): Promise<{ client: Socket; accepted: Socket }> {
  const { over = 'tcp', pauseOnConnect = false, allowHalfOpen = true, noDelay = false } = options;
  const dir = over === 'unix' ? mkdtempSync(join(tmpdir(), 'rxs-pair-')) : undefined;
  const ends: Socket[] = [];
  onTestFinished(() => {
    for (const end of ends) end.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });
  const listener = createServer({ allowHalfOpen, pauseOnConnect, noDelay });
  try {
    const acceptedP = new Promise<Socket>((resolve) =>
      listener.once('connection', (accepted: Socket) => {
        ends.push(accepted);
        accepted.on('error', () => {});
        resolve(accepted);
      }),
    );
    await new Promise<void>((resolve, reject) => {
      listener.once('error', reject);
      if (dir) listener.listen(join(dir, 'pair.sock'), () => resolve());
      else listener.listen(0, '127.0.0.1', () => resolve());
    });
    const client = dir
      ? netConnect({ path: join(dir, 'pair.sock'), allowHalfOpen })
      : netConnect({ host: '127.0.0.1', port: (listener.address() as AddressInfo).port, allowHalfOpen });
    ends.push(client);
    client.on('error', () => {});
    const connected = new Promise<void>((resolve, reject) => {
      client.once('connect', () => resolve());
      client.once('error', reject);
    });
    const [accepted] = await Promise.all([acceptedP, connected]);
    return { client, accepted };
  } finally {
    listener.close();
  }
}
