// Target services of the e2e lab, run with the system node inside the `tgt`
// namespace by test/e2e/lab.ts. Plain JavaScript, Node built-ins only.
//
//   node target-server.mjs '<json config>'
//   config: { http: ["10.98.0.3:80", "[fd00:98::3]:80"],
//             echo: ["10.98.0.3:7", ...],   // TCP echo (half-close kept)
//             udpEcho: ["10.98.0.3:7", ...] }
//
// Prints one line `ready` on stdout once every listener is bound; any bind
// error is printed on stderr and the process exits 1. SIGTERM/SIGINT exit 0.
//
// HTTP endpoints:
//   GET  /                 the known page (contains PAGE_MARKER)
//   GET  /bytes/<n>[?seed=s]  n deterministic pseudo-random bytes: AES-128-CTR,
//                          key = sha256("rxshuttle-lab-bytes:" + seed)[0..16],
//                          iv = 16 zero bytes, over zero plaintext (seed "0")
//   POST /sha256           answers the lowercase hex sha256 of the body
//                          (no newline); header x-body-bytes = body length
//   GET  /whoami           JSON {remoteAddress, remotePort, localAddress, localPort}
//   GET  /delay/<ms>       answers "ok" after ms milliseconds (max 60000)
import http from 'node:http';
import net from 'node:net';
import dgram from 'node:dgram';
import crypto from 'node:crypto';

export const PAGE_MARKER = 'rxshuttle-lab-target-ok';
export const PAGE = `<!doctype html>\n<html><head><title>rxshuttle lab</title></head>\n<body><p>${PAGE_MARKER}</p></body></html>\n`;
const CHUNK = 64 * 1024;
const ZEROS = Buffer.alloc(CHUNK);

function bytesCipher(seed) {
  const key = crypto.createHash('sha256').update(`rxshuttle-lab-bytes:${seed}`).digest().subarray(0, 16);
  return crypto.createCipheriv('aes-128-ctr', key, Buffer.alloc(16));
}

function parseHostPort(s) {
  const m = /^\[(.+)\]:(\d+)$/.exec(s) ?? /^([^:]+):(\d+)$/.exec(s);
  if (!m) throw new Error(`bad listen address ${s}`);
  return { host: m[1], port: Number(m[2]) };
}

function streamBytes(res, n, seed) {
  const cipher = bytesCipher(seed);
  let left = n;
  res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(n) });
  const pump = () => {
    while (left > 0) {
      const len = Math.min(CHUNK, left);
      left -= len;
      const ok = res.write(cipher.update(len === CHUNK ? ZEROS : ZEROS.subarray(0, len)));
      if (!ok && left > 0) { res.once('drain', pump); return; }
    }
    res.end();
  };
  pump();
}

function handle(req, res) {
  req.on('error', () => {});
  res.on('error', () => {});
  const url = new URL(req.url ?? '/', 'http://x');
  let m;
  if (req.method === 'GET' && url.pathname === '/') {
    res.writeHead(200, { 'content-type': 'text/html', 'content-length': String(Buffer.byteLength(PAGE)) });
    res.end(PAGE);
  } else if (req.method === 'GET' && (m = /^\/bytes\/(\d+)$/.exec(url.pathname))) {
    streamBytes(res, Number(m[1]), url.searchParams.get('seed') ?? '0');
  } else if (req.method === 'POST' && url.pathname === '/sha256') {
    const h = crypto.createHash('sha256');
    let n = 0;
    req.on('data', (d) => { n += d.length; h.update(d); });
    req.on('end', () => {
      const hex = h.digest('hex');
      res.writeHead(200, { 'content-type': 'text/plain', 'x-body-bytes': String(n), 'content-length': String(hex.length) });
      res.end(hex);
    });
  } else if (req.method === 'GET' && url.pathname === '/whoami') {
    const s = req.socket;
    const body = JSON.stringify({ remoteAddress: s.remoteAddress, remotePort: s.remotePort, localAddress: s.localAddress, localPort: s.localPort });
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) });
    res.end(body);
  } else if (req.method === 'GET' && (m = /^\/delay\/(\d+)$/.exec(url.pathname))) {
    const t = setTimeout(() => res.end('ok'), Math.min(Number(m[1]), 60000));
    res.on('close', () => clearTimeout(t));
  } else {
    res.writeHead(404, { 'content-type': 'text/plain' });
    res.end('not found\n');
  }
}

function listen(server, addr) {
  const { host, port } = parseHostPort(addr);
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port, backlog: 4096 }, () => { server.off('error', reject); resolve(); });
  });
}

function bindUdp(addr) {
  const { host, port } = parseHostPort(addr);
  const sock = dgram.createSocket({ type: net.isIPv6(host) ? 'udp6' : 'udp4' });
  sock.on('message', (msg, rinfo) => sock.send(msg, rinfo.port, rinfo.address));
  return new Promise((resolve, reject) => {
    sock.once('error', reject);
    sock.bind({ address: host, port }, () => { sock.off('error', reject); sock.on('error', () => {}); resolve(); });
  });
}

async function main() {
  const cfg = JSON.parse(process.argv[2] ?? '{}');
  const waits = [];
  for (const a of cfg.http ?? []) {
    const srv = http.createServer(handle);
    srv.keepAliveTimeout = 5000;
    srv.on('clientError', (_e, s) => s.destroy());
    waits.push(listen(srv, a));
  }
  for (const a of cfg.echo ?? []) {
    const srv = net.createServer({ allowHalfOpen: true }, (s) => { s.on('error', () => {}); s.pipe(s); });
    waits.push(listen(srv, a));
  }
  for (const a of cfg.udpEcho ?? []) waits.push(bindUdp(a));
  await Promise.all(waits);
  process.stdout.write('ready\n');
}

for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP']) process.on(sig, () => process.exit(0));
main().catch((e) => { process.stderr.write(`target-server: ${e?.stack ?? e}\n`); process.exit(1); });
