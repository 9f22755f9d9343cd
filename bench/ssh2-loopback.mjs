// The ssh2 transport's own cost, without root or a lab: ssh2Connection$ and ssh2Forward$ (from
// dist/, so `npm run build` first) against an ssh2 server in a child process on loopback. One
// upload and one download of MIB MiB through a direct-tcpip channel, each after a warm-up run;
// prints one JSON line: MiB/s and this process's CPU ms per MiB (the server's CPU is not in it).
// RXSHUTTLE_SSH2_INTERNALS=off measures ssh2's public API path instead of the fast path.
//
//   node bench/ssh2-loopback.mjs [MIB]          # default 128
//
// Compare runs of two builds side by side, interleaved: on a shared machine single runs vary by
// 20 % or more.
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { createServer, connect as netConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const UPLOAD_PORT = 1;
const DOWNLOAD_PORT = 2;

if (process.argv[2] === '--server') serve(process.argv[3], Number(process.argv[4]));
else await measure(Number(process.argv[2] ?? 128));

/** The server: a sink for uploads (ends its side after our EOF) and a source of downloads. */
function serve(hostKeyFile, mib) {
  const { Server } = createRequire(new URL('../package.json', import.meta.url))('ssh2');
  const data = Buffer.alloc(mib * 1024 * 1024, 0x5a);
  const server = new Server({ hostKeys: [readFileSync(hostKeyFile)] }, (client) => {
    client.on('error', () => {});
    client.on('authentication', (ctx) => ctx.accept());
    client.on('ready', () =>
      client.on('tcpip', (accept, _reject, info) => {
        const channel = accept();
        channel.on('error', () => {});
        channel.on('data', () => {});
        if (info.destPort === UPLOAD_PORT) return void channel.on('end', () => channel.end());
        let at = 0;
        const pump = () => {
          while (at < data.length) {
            const chunk = data.subarray(at, at + 64 * 1024);
            at += chunk.length;
            if (!channel.write(chunk)) return void channel.once('drain', pump);
          }
          channel.end();
        };
        pump();
      }),
    );
  });
  server.listen(0, '127.0.0.1', () => process.stdout.write(`${server.address().port}\n`));
}

async function measure(mib) {
  const { ssh2Connection$ } = await import('../dist/transport/ssh2.js');
  const { ssh2Forward$ } = await import('../dist/transport/ssh2-forward.js');
  const dir = mkdtempSync(join(tmpdir(), 'rxshuttle-ssh2-loopback-'));
  for (const name of ['host', 'client']) execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', '', '-f', join(dir, name)]);
  const child = spawn(process.execPath, [new URL(import.meta.url).pathname, '--server', join(dir, 'host'), String(mib)], { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise((resolve) => child.stdout.once('data', (line) => resolve(Number(String(line).trim()))));
  const config = {
    hostname: '127.0.0.1',
    port,
    user: 'bench',
    identityFiles: [join(dir, 'client')],
    identitiesOnly: true,
    identityAgent: null,
    userKnownHostsFiles: ['/dev/null'],
    globalKnownHostsFiles: [],
    strictHostKeyChecking: 'no',
    hashKnownHosts: false,
    hostKeyAlias: undefined,
    proxyJump: undefined,
    proxyCommand: undefined,
    connectTimeoutMs: undefined,
    batchMode: false,
  };
  const connection = await new Promise((resolve, reject) => ssh2Connection$(config, 'loopback').subscribe({ next: resolve, error: reject }));
  const data = Buffer.alloc(mib * 1024 * 1024, 0x5a);

  /** A local program's connection, as the firewall would hand it over: `program` and our `accepted`. */
  const socketPair = async () => {
    const listener = createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true });
    await new Promise((resolve) => listener.listen(0, '127.0.0.1', resolve));
    const accepted = new Promise((resolve) => listener.once('connection', resolve));
    const program = netConnect({ host: '127.0.0.1', port: listener.address().port, allowHalfOpen: true });
    const pair = { program, accepted: await accepted };
    listener.close();
    return pair;
  };

  const once = async (direction) => {
    const { program, accepted } = await socketPair();
    let received = 0;
    program.on('data', (chunk) => (received += chunk.length));
    const ended = new Promise((resolve) => program.once('end', () => resolve(program.end())));
    const destination = { family: 4, address: '10.0.0.1', port: direction === 'up' ? UPLOAD_PORT : DOWNLOAD_PORT };
    const forward = ssh2Forward$(connection, accepted, destination).subscribe({ error: () => {} });
    const started = process.hrtime.bigint();
    const cpu = process.cpuUsage();
    if (direction === 'up') program.end(data);
    await ended;
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    const { user, system } = process.cpuUsage(cpu);
    forward.unsubscribe();
    program.destroy();
    if (direction === 'down' && received !== data.length) throw new Error(`download: ${received} of ${data.length} bytes`);
    return { mibPerS: Math.round(mib / seconds), cpuMsPerMiB: Number(((user + system) / 1000 / mib).toFixed(2)) };
  };

  const result = { mib, publicApi: connection.publicApi ?? null };
  for (const direction of ['up', 'down']) {
    await once(direction);
    result[direction] = await once(direction);
  }
  process.stdout.write(`${JSON.stringify(result)}\n`);
  child.kill();
  rmSync(dir, { recursive: true, force: true });
  process.exit(0);
}
