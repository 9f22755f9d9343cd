// Concurrent TCP echo check, run with the system node inside a lab namespace.
//
//   node echo-load.mjs '<json config>'
//   config: {
//     targets: ["10.98.0.3:7", ...],  // connection i goes to targets[i % length]
//     count: 1000,                    // connections, all opened at once
//     minBytes: 1024, maxBytes: 65536,// payload size range (differs per connection)
//     timeoutMs: 60000,               // whole run; then it reports and exits by itself
//     connectTimeoutMs: 20000,        // per connection
//     barrier: true                   // write only once every connection is up
//   }
//
// Each connection sends its own payload (an 8-byte index + random bytes, so no
// two are alike) and must read back exactly those bytes — not fewer, not more,
// not another connection's. With `barrier`, nothing is written until all
// connections are established, and every socket stays open until all are
// done, so `count` connections are really open at the same time.
//
// Prints one JSON line on stdout:
//   { count, ok, failed, timedOut, connected, peakOpen, bytes, elapsedMs,
//     errors: { <reason>: n }, firstFailures: [ {i, target, reason} ] }
// and exits 0 when every connection echoed correctly, 1 otherwise.
import crypto from 'node:crypto';
import net from 'node:net';

const cfg = {
  targets: ['10.98.0.3:7'],
  count: 1000,
  minBytes: 1024,
  maxBytes: 64 * 1024,
  timeoutMs: 60_000,
  connectTimeoutMs: 20_000,
  barrier: true,
  ...JSON.parse(process.argv[2] ?? '{}'),
};

const t0 = Date.now();
const conns = [];
const errors = {};
const firstFailures = [];
let settled = 0;
let ok = 0;
let connected = 0;
let open = 0;
let peakOpen = 0;
let bytes = 0;
let finished = false;

function parseTarget(s) {
  const m = /^\[(.+)\]:(\d+)$/.exec(s) ?? /^([^:]+):(\d+)$/.exec(s);
  if (!m) throw new Error(`bad target ${s}`);
  return { host: m[1], port: Number(m[2]) };
}

function payloadFor(i) {
  const span = cfg.maxBytes - cfg.minBytes + 1;
  // a different size for neighbouring connections (Knuth's multiplicative hash)
  const size = cfg.minBytes + Number((BigInt(i) * 2654435761n) % BigInt(span));
  const buf = crypto.randomBytes(Math.max(size, 8));
  buf.writeUInt32BE(0x52585331, 0); // "RXS1"
  buf.writeUInt32BE(i, 4);
  return buf;
}

function finish(timedOut) {
  if (finished) return;
  finished = true;
  clearTimeout(overall);
  for (const c of conns) c.sock.destroy();
  const summary = {
    count: cfg.count,
    ok,
    failed: cfg.count - ok,
    timedOut,
    connected,
    peakOpen,
    bytes,
    elapsedMs: Date.now() - t0,
    errors,
    firstFailures,
  };
  process.stdout.write(`${JSON.stringify(summary)}\n`, () => process.exit(ok === cfg.count ? 0 : 1));
}

function settle(c, reason) {
  if (c.done) return;
  c.done = true;
  clearTimeout(c.connectTimer);
  settled++;
  if (reason === null) {
    ok++;
    bytes += c.payload.length;
  } else {
    errors[reason] = (errors[reason] ?? 0) + 1;
    if (firstFailures.length < 10) firstFailures.push({ i: c.i, target: c.target, reason });
    c.sock.destroy();
  }
  if (!cfg.barrier && reason === null) c.sock.end();
  if (settled === cfg.count) finish(false);
}

function startWriting() {
  for (const c of conns) if (!c.done && c.connected) c.sock.write(c.payload);
}

const overall = setTimeout(() => {
  for (const c of conns) if (!c.done) settle(c, c.connected ? `timeout after ${c.received} of ${c.payload.length} bytes` : 'connect timeout');
  finish(true);
}, cfg.timeoutMs);

for (let i = 0; i < cfg.count; i++) {
  const target = cfg.targets[i % cfg.targets.length];
  const { host, port } = parseTarget(target);
  const payload = payloadFor(i);
  const sock = net.connect({ host, port });
  const c = { i, target, payload, sock, chunks: [], received: 0, connected: false, done: false, connectTimer: undefined };
  conns.push(c);
  c.connectTimer = setTimeout(() => settle(c, 'connect timeout'), cfg.connectTimeoutMs);
  sock.on('connect', () => {
    clearTimeout(c.connectTimer);
    c.connected = true;
    connected++;
    open++;
    peakOpen = Math.max(peakOpen, open);
    if (!cfg.barrier) sock.write(payload);
    else if (connected + (settled - ok) === cfg.count) startWriting();
  });
  sock.on('data', (d) => {
    if (c.done) return;
    c.chunks.push(d);
    c.received += d.length;
    if (c.received > payload.length) return settle(c, 'too many bytes');
    if (c.received === payload.length) {
      const got = Buffer.concat(c.chunks);
      c.chunks = [];
      settle(c, got.equals(payload) ? null : 'wrong bytes');
    }
  });
  sock.on('error', (e) => settle(c, `error ${e.code ?? e.message}`));
  sock.on('close', () => {
    if (c.connected) open--;
    settle(c, `closed after ${c.received} of ${payload.length} bytes`);
    // a failed connect counts towards the barrier too
    if (cfg.barrier && !c.connected && connected + (settled - ok) === cfg.count) startWriting();
  });
}
