// The bench's UDP load generator: datagrams to a UDP echo server, each echo
// checked. Node built-ins only; run by bench/run.mjs inside the lab's cli
// namespace. Every command is bounded in count and in time, and prints one JSON
// line on stdout.
//
//   node udp-probe.mjs rtt HOST PORT SIZE N SECONDS WAIT_MS
//       one datagram of SIZE bytes at a time: the next goes when the last came
//       back or WAIT_MS passed (then it is lost); N datagrams or SECONDS
//   node udp-probe.mjs window HOST PORT SIZE WINDOW N SECONDS WAIT_MS
//       WINDOW datagrams of SIZE bytes in flight: each echo (or loss after
//       WAIT_MS) lets the next go; N datagrams or SECONDS, then the last ones
//       in flight get their WAIT_MS
//
// One unconnected socket (one flow). Each datagram carries its sequence number
// and random bytes; its echo must be those bytes exactly and come from HOST:PORT.
// Nothing is retried and nothing is hidden: every datagram sent is counted once
// as echoed (back within WAIT_MS, intact) or lost; lost ones that came back
// after WAIT_MS are also counted as `late`; echoes with other bytes are `wrong`
// (and lost), datagrams from another address `from_elsewhere`.
//
// Output: {sent, echoed, lost, late, wrong, from_elsewhere, send_errors,
// loss_pct, dgram_per_s, p50_ms, p99_ms, max_ms, elapsed_s, …}. dgram_per_s:
// intact echoes received while sending ÷ the sending time (window) or all
// intact echoes ÷ the whole time (rtt).
import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import net from 'node:net';

const [mode, host, portS, sizeS, ...rest] = process.argv.slice(2);
const port = Number(portS);
const size = Number(sizeS);
const [windowS, nS, secondsS, waitS] = mode === 'window' ? rest : ['1', ...rest];
const window = Number(windowS);
const n = Number(nS);
const seconds = Number(secondsS);
const waitMs = Number(waitS);
if (!['rtt', 'window'].includes(mode) || !net.isIP(host) || !(port > 0) || !(size >= 8 && size <= 65507) || !(window >= 1) ||
  !(n > 0) || !(seconds > 0) || !(waitMs > 0)) {
  process.stderr.write('usage: node udp-probe.mjs rtt HOST PORT SIZE N SECONDS WAIT_MS\n' +
    '       node udp-probe.mjs window HOST PORT SIZE WINDOW N SECONDS WAIT_MS   (SIZE 8..65507)\n');
  process.exit(2);
}

const now = () => Number(process.hrtime.bigint()) / 1e6;
const POOL = randomBytes(65536 + size);
const RUN = randomBytes(4).readUInt32BE(0);

/** Datagram `seq`: the run id, the sequence number, then random bytes. */
function payload(seq) {
  const at = (seq * 7919) % 65536;
  const b = Buffer.from(POOL.subarray(at, at + size));
  b.writeUInt32BE(RUN, 0);
  b.writeUInt32BE(seq, 4);
  return b;
}

const socket = dgram.createSocket({ type: net.isIPv6(host) ? 'udp6' : 'udp4', recvBufferSize: 4 << 20, sendBufferSize: 4 << 20 });
const st = { sent: 0, echoed: 0, lost: 0, late: 0, wrong: 0, from_elsewhere: 0, send_errors: 0, duplicates: 0 };
const errors = {};
const rtts = [];
/** seq → { t, buf } of the datagrams in flight, oldest first. */
const inflight = new Map();
/** Sequence numbers given up on (lost), to tell a late echo from a stray one. */
const expired = new Set();
let t0 = 0;
let deadline = 0;
let sending = true;
let sendStop = 0;
let echoedWhileSending = 0;
let onSettled = () => {};

function lose(seq, why) {
  inflight.delete(seq);
  expired.add(seq);
  st.lost++;
  if (why) errors[why] = (errors[why] ?? 0) + 1;
}

socket.on('message', (msg, rinfo) => {
  const t = now();
  if (rinfo.address !== host || rinfo.port !== port) {
    st.from_elsewhere++;
    return;
  }
  if (msg.length < 8 || msg.readUInt32BE(0) !== RUN) {
    st.wrong++;
    return;
  }
  const seq = msg.readUInt32BE(4);
  const sent = inflight.get(seq);
  if (!sent) {
    if (expired.delete(seq)) st.late++;
    else st.duplicates++;
    return;
  }
  if (!msg.equals(sent.buf)) {
    st.wrong++;
    lose(seq, 'wrong bytes');
  } else {
    inflight.delete(seq);
    st.echoed++;
    if (sending) echoedWhileSending++;
    rtts.push(t - sent.t);
  }
  next();
});

function sendOne() {
  const seq = st.sent++;
  const buf = payload(seq);
  inflight.set(seq, { t: now(), buf });
  socket.send(buf, port, host, (e) => {
    if (!e) return;
    st.send_errors++;
    if (inflight.has(seq)) lose(seq, e.code ?? e.message);
    setImmediate(next);
  });
}

/** Gives up on datagrams older than WAIT_MS, then fills the window. */
function next() {
  const t = now();
  for (const [seq, { t: ts }] of inflight) {
    if (t - ts < waitMs) break; // oldest first
    lose(seq, 'timeout');
  }
  if (sending && (st.sent >= n || t >= deadline)) {
    sending = false;
    sendStop = t;
  }
  while (sending && inflight.size < window) sendOne();
  if (!sending && inflight.size === 0) onSettled();
}

function pct(sorted, p) {
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] : null;
}

try {
  await new Promise((resolve, reject) => {
    socket.once('error', reject);
    socket.bind(0, () => {
      socket.off('error', reject);
      resolve();
    });
  });
  socket.on('error', (e) => {
    errors[e.code ?? e.message] = (errors[e.code ?? e.message] ?? 0) + 1;
  });
  t0 = now();
  deadline = t0 + seconds * 1000;
  const settled = new Promise((resolve) => {
    onSettled = resolve;
  });
  // Timeouts are checked on every echo and every 2 ms (one at a time: the next goes at once).
  const timer = setInterval(next, 2);
  next();
  await settled;
  clearInterval(timer);
  const end = now();
  const sorted = rtts.sort((a, b) => a - b);
  const elapsed = (end - t0) / 1000;
  process.stdout.write(
    `${JSON.stringify({
      mode,
      size,
      window,
      wait_ms: waitMs,
      ...st,
      loss_pct: st.sent ? (100 * st.lost) / st.sent : null,
      dgram_per_s: mode === 'window' ? echoedWhileSending / ((sendStop - t0) / 1000) : st.echoed / elapsed,
      p50_ms: pct(sorted, 0.5),
      p99_ms: pct(sorted, 0.99),
      max_ms: sorted.length ? sorted[sorted.length - 1] : null,
      elapsed_s: elapsed,
      errors,
    })}\n`,
  );
  socket.close();
  process.exit(0);
} catch (e) {
  process.stdout.write(`${JSON.stringify({ error: e?.code ?? e?.message ?? String(e) })}\n`);
  process.exit(1);
}
