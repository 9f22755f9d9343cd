/**
 * The status socket (issue 14) with real Unix sockets in a temporary directory: the server as a
 * resource of its subscription, its permissions, listInstances with stale sockets, hung or
 * confused instances, and directories that are not ours.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { createConnection, createServer, type Server } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Subscription } from 'rxjs';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { initialStatus, type StatusSnapshot, statusTracker } from '../../src/status/snapshot.js';
import { listInstances, parseSnapshot, ROOT_STATUS_DIR, StatusError, socketName, statusDirs, statusServer$ } from '../../src/status/socket.js';
import { sleepForAbsence } from '../support/wait-until.js';

let tmp: string;
let dir: string;
const subscriptions: Subscription[] = [];
const servers: Server[] = [];
beforeEach(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'rxs-status-'));
  dir = path.join(tmp, 'rxshuttle');
});
afterEach(() => {
  for (const s of subscriptions.splice(0)) s.unsubscribe();
  for (const s of servers.splice(0)) s.close();
  fs.rmSync(tmp, { recursive: true, force: true });
});

const mode = (p: string) => fs.lstatSync(p).mode & 0o777;

/** Subscribes to the status server; resolves with the socket's path once it listens. */
function serve(snapshot: () => StatusSnapshot, options: Parameters<typeof statusServer$>[1] = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    subscriptions.push(statusServer$(snapshot, { dir, ...options }).subscribe({ next: resolve, error: reject }));
  });
}

/** What one connection to a socket gets. */
function read(socketPath: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    createConnection(socketPath)
      .on('data', (c: Buffer) => chunks.push(c))
      .on('end', () => resolve(Buffer.concat(chunks).toString('utf8')))
      .on('error', reject);
  });
}

/**
 * A socket nobody listens on any more, as a killed instance leaves: a child listens at
 * `dir/rxshuttle-<its pid>.sock` and SIGKILLs itself. Returns the (now dead) pid and the path.
 */
async function staleSocket(inDir: string): Promise<{ pid: number; socketPath: string }> {
  const child = spawn(process.execPath, [
    '-e',
    `require('net').createServer().listen(require('path').join(${JSON.stringify(inDir)}, 'rxshuttle-' + process.pid + '.sock'), () => process.kill(process.pid, 'SIGKILL'))`,
  ]);
  await new Promise((r) => child.once('exit', r));
  const pid = child.pid as number;
  const socketPath = path.join(inDir, socketName(pid));
  expect(fs.lstatSync(socketPath).isSocket()).toBe(true);
  return { pid, socketPath };
}

describe('statusDirs', () => {
  const none = () => false;
  const all = () => true;
  it('a user: $XDG_RUNTIME_DIR/rxshuttle, /run/user/<uid>/rxshuttle if there, then /tmp/rxshuttle-status-<uid>', () => {
    expect(statusDirs({ XDG_RUNTIME_DIR: '/run/user/1000' }, 1000, all)).toEqual(['/run/user/1000/rxshuttle', '/tmp/rxshuttle-status-1000']);
    expect(statusDirs({ XDG_RUNTIME_DIR: '/xdg' }, 1000, all)).toEqual(['/xdg/rxshuttle', '/run/user/1000/rxshuttle', '/tmp/rxshuttle-status-1000']);
    expect(statusDirs({}, 1000, all)).toEqual(['/run/user/1000/rxshuttle', '/tmp/rxshuttle-status-1000']);
    expect(statusDirs({}, 1000, none)).toEqual(['/tmp/rxshuttle-status-1000']);
    // a relative XDG_RUNTIME_DIR is invalid (the XDG spec): ignored
    expect(statusDirs({ XDG_RUNTIME_DIR: 'run' }, 1000, none)).toEqual(['/tmp/rxshuttle-status-1000']);
  });
  it('root: /run/rxshuttle-status whatever its environment says', () => {
    expect(statusDirs({ XDG_RUNTIME_DIR: '/run/user/0' }, 0, all)).toEqual([ROOT_STATUS_DIR, '/tmp/rxshuttle-status-0']);
    expect(ROOT_STATUS_DIR).toBe('/run/rxshuttle-status');
  });
});

describe('statusServer$', () => {
  it('makes <dir>/rxshuttle-<pid>.sock (dir 0700, socket 0600) serving the current snapshot as one JSON document', async () => {
    const tracker = statusTracker({ pid: 4242, remote: 'lab' });
    const socketPath = await serve(() => tracker.current, { pid: 4242 });
    expect(socketPath).toBe(path.join(dir, 'rxshuttle-4242.sock'));
    expect(fs.lstatSync(dir).isDirectory()).toBe(true);
    expect(mode(dir)).toBe(0o700);
    expect(fs.lstatSync(socketPath).isSocket()).toBe(true);
    expect(mode(socketPath)).toBe(0o600);
    const first = await read(socketPath);
    expect(first.endsWith('\n')).toBe(true);
    expect(JSON.parse(first)).toEqual(tracker.current);
    tracker.record({ kind: 'connected', remote: 'lab', window: 0 });
    expect(JSON.parse(await read(socketPath))).toMatchObject({ pid: 4242, state: 'connected' });
  });

  it('unsubscribing closes the socket and removes it', async () => {
    const socketPath = await serve(() => initialStatus({ pid: 1 }), { pid: 4243 });
    subscriptions.pop()?.unsubscribe();
    expect(fs.existsSync(socketPath)).toBe(false);
    await expect(read(socketPath)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('unsubscribing before it listens leaves nothing behind', async () => {
    const subscription = statusServer$(() => initialStatus(), { dir, pid: 4244 }).subscribe();
    subscription.unsubscribe();
    await sleepForAbsence(50); // nothing may appear later either
    expect(fs.readdirSync(dir)).toEqual([]);
  });

  it('makes a directory of ours 0700 if it is not', async () => {
    fs.mkdirSync(dir, { mode: 0o755 });
    fs.chmodSync(dir, 0o755);
    await serve(() => initialStatus(), { pid: 4245 });
    expect(mode(dir)).toBe(0o700);
  });

  it('replaces a socket left at its own name (an earlier process with the same pid)', async () => {
    fs.mkdirSync(dir, { mode: 0o700 });
    const { pid, socketPath } = await staleSocket(dir);
    await serve(() => initialStatus({ pid }), { pid });
    expect(JSON.parse(await read(socketPath))).toMatchObject({ pid });
  });

  it('refuses a symbolic link to a directory', async () => {
    const real = path.join(tmp, 'real');
    fs.mkdirSync(real, { mode: 0o700 });
    fs.symlinkSync(real, dir);
    await expect(serve(() => initialStatus(), { pid: 4246 })).rejects.toThrow(StatusError);
    await expect(serve(() => initialStatus(), { pid: 4246 })).rejects.toThrow(/symbolic link/);
    expect(fs.readdirSync(real)).toEqual([]);
  });

  it('refuses a directory of another user', async () => {
    fs.mkdirSync(dir, { mode: 0o700 });
    const other = (process.geteuid?.() ?? 0) + 12345;
    await expect(serve(() => initialStatus(), { pid: 4247, uid: other })).rejects.toThrow(/belongs to uid/);
    expect(fs.readdirSync(dir)).toEqual([]);
  });

  it('refuses a file where the directory should be, and a file at the socket name', async () => {
    fs.writeFileSync(dir, '');
    await expect(serve(() => initialStatus(), { pid: 4248 })).rejects.toThrow(/not a directory/);
    fs.rmSync(dir);
    fs.mkdirSync(dir, { mode: 0o700 });
    fs.writeFileSync(path.join(dir, socketName(4248)), 'mine');
    await expect(serve(() => initialStatus(), { pid: 4248 })).rejects.toThrow(/not a socket/);
    expect(fs.readFileSync(path.join(dir, socketName(4248)), 'utf8')).toBe('mine');
  });

  it('refuses a socket path longer than a Unix socket takes (Node would cut it short)', async () => {
    const long = path.join(tmp, 'd'.repeat(100));
    await expect(serve(() => initialStatus(), { pid: 4249, dir: long })).rejects.toThrow(/too long/);
  });
});

describe('listInstances', () => {
  it('asks every instance in the directory and returns their snapshots by pid', async () => {
    await serve(() => ({ ...initialStatus({ pid: process.pid, remote: 'b' }), state: 'connected' }), { pid: process.pid });
    // pid 1 runs (init): a live instance as far as the pid goes
    await serve(() => initialStatus({ pid: 1, remote: 'a' }), { pid: 1 });
    fs.writeFileSync(path.join(dir, 'unrelated.txt'), '');
    const list = await listInstances({ dirs: [dir] });
    expect(list.warnings).toEqual([]);
    expect(list.instances.map((s) => [s.pid, s.remote, s.state])).toEqual([
      [1, 'a', 'connecting'],
      [process.pid, 'b', 'connected'],
    ]);
  });

  it('no directory, no instances', async () => {
    expect(await listInstances({ dirs: [dir] })).toEqual({ instances: [], warnings: [] });
  });

  it('removes the socket of an instance that is gone, and keeps the others', async () => {
    await serve(() => initialStatus({ pid: 1 }), { pid: 1 });
    const { socketPath } = await staleSocket(dir);
    const list = await listInstances({ dirs: [dir] });
    expect(list.instances.map((s) => s.pid)).toEqual([1]);
    expect(list.warnings).toEqual([]);
    expect(fs.existsSync(socketPath)).toBe(false);
    expect(fs.readdirSync(dir)).toEqual([socketName(1)]);
  });

  it('a dead socket whose pid runs again (reused): removed once it is old, left while it could be one starting up', async () => {
    fs.mkdirSync(dir, { mode: 0o700 });
    const { socketPath } = await staleSocket(dir);
    const reused = path.join(dir, socketName(1));
    fs.renameSync(socketPath, reused);
    await listInstances({ dirs: [dir] });
    expect(fs.existsSync(reused)).toBe(true);
    const old = new Date(Date.now() - 60_000);
    fs.utimesSync(reused, old, old);
    expect(await listInstances({ dirs: [dir] })).toEqual({ instances: [], warnings: [] });
    expect(fs.existsSync(reused)).toBe(false);
  });

  it('an instance that does not answer in time, or answers nonsense, is a warning (its socket stays)', async () => {
    fs.mkdirSync(dir, { mode: 0o700 });
    const hung = createServer(() => undefined);
    const confused = createServer((c) => c.end('{"pid": "x"}\n'));
    servers.push(hung, confused);
    const hungPath = path.join(dir, socketName(1));
    const confusedPath = path.join(dir, socketName(process.pid));
    await new Promise<void>((r) => hung.listen(hungPath, r));
    await new Promise<void>((r) => confused.listen(confusedPath, r));
    const started = Date.now();
    const list = await listInstances({ dirs: [dir], timeoutMs: 200 });
    expect(Date.now() - started).toBeLessThan(2_000);
    expect(list.instances).toEqual([]);
    expect(list.warnings.sort()).toEqual([
      `rxshuttle 1 (${hungPath}): no answer within 200 ms`,
      `rxshuttle ${process.pid} (${confusedPath}): not a status snapshot`,
    ]);
    expect(fs.existsSync(hungPath)).toBe(true);
    expect(fs.existsSync(confusedPath)).toBe(true);
  });

  it('does not look into a symbolic link or a directory of another user, nor remove anything there', async () => {
    const real = path.join(tmp, 'real');
    fs.mkdirSync(real, { mode: 0o700 });
    const { socketPath } = await staleSocket(real);
    fs.symlinkSync(real, dir);
    const viaLink = await listInstances({ dirs: [dir] });
    expect(viaLink.instances).toEqual([]);
    expect(viaLink.warnings).toEqual([expect.stringMatching(/symbolic link/)]);
    const other = (process.geteuid?.() ?? 0) + 12345;
    const notOurs = await listInstances({ dirs: [real], uid: other });
    expect(notOurs.warnings).toEqual([expect.stringMatching(/belongs to uid/)]);
    expect(fs.existsSync(socketPath)).toBe(true);
  });

  it('looks in every directory given', async () => {
    const second = path.join(tmp, 'second');
    await serve(() => initialStatus({ pid: 1 }), { pid: 1 });
    await serve(() => initialStatus({ pid: 2 }), { pid: 2, dir: second });
    const list = await listInstances({ dirs: [dir, second, path.join(tmp, 'missing')] });
    expect(list.instances.map((s) => s.pid)).toEqual([1, 2]);
  });

  it('serves and lists a snapshot as large as the bound allows', async () => {
    const tracker = statusTracker({ pid: 1 });
    for (let id = 1; id <= 1_500; id++) {
      tracker.record({ kind: 'accept', id, source: `[fd00::1234:5678]:${id}`, destination: { family: 6, address: 'fd00::abcd:ef01', port: 443 } });
    }
    await serve(() => tracker.current, { pid: 1 });
    const [only] = (await listInstances({ dirs: [dir] })).instances;
    expect(only?.openConnections).toHaveLength(1_000);
    expect(only?.openConnectionsUnlisted).toBe(500);
    expect(only).toEqual(tracker.current);
  });
});

describe('parseSnapshot', () => {
  it('takes exactly the snapshot fields, and refuses what is not one', () => {
    const s = initialStatus({ pid: 9 }, 0);
    expect(parseSnapshot(JSON.stringify({ ...s, extra: 1 }))).toEqual(s);
    expect(parseSnapshot('not json')).toBeNull();
    expect(parseSnapshot('[]')).toBeNull();
    expect(parseSnapshot(JSON.stringify({ ...s, state: 'asleep' }))).toBeNull();
    expect(parseSnapshot(JSON.stringify({ ...s, bytesSent: -1 }))).toBeNull();
    expect(parseSnapshot(JSON.stringify({ ...s, openConnections: [{ id: 1 }] }))).toBeNull();
  });
});

describe('listInstances with many sockets', () => {
  it('asks them a few at a time and removes every stale one', async () => {
    fs.mkdirSync(dir, { mode: 0o700 });
    const { socketPath } = await staleSocket(dir);
    // 100 stale sockets of pids that do not run (above pid_max's largest possible value)
    for (let i = 0; i < 100; i++) fs.linkSync(socketPath, path.join(dir, socketName(4_194_400 + i)));
    await serve(() => initialStatus({ pid: 1 }), { pid: 1 });
    const list = await listInstances({ dirs: [dir] });
    expect(list).toEqual({ instances: [expect.objectContaining({ pid: 1 })], warnings: [] });
    expect(fs.readdirSync(dir)).toEqual([socketName(1)]);
  });
});
