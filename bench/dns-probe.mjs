// The bench's DNS load generator: A queries over UDP to one nameserver, a fixed
// number in flight, each answer checked. Node built-ins only; run by
// bench/run.mjs inside the lab's cli namespace. Bounded in count and in time;
// prints one JSON line on stdout.
//
//   node dns-probe.mjs SERVER PORT N CONC SECONDS TIMEOUT_MS NAMES [fresh|worker]
//       N queries in all (or until SECONDS have passed), CONC in flight, each
//       given TIMEOUT_MS for its answer (no retry: a timeout is a failure);
//       NAMES = name=address,… (asked in turn; the answer must hold an A record
//       with that address, rcode NOERROR).
//       fresh (default): every query from a fresh connected UDP socket, closed
//       after its answer, as glibc's resolver does for each getaddrinfo() (a new
//       source port, so a new conntrack entry and a new pass through the nat
//       table each time); worker: each of the CONC workers keeps one socket.
//
// Output: {ok, failed, qps, p50_ms, p99_ms, max_ms, elapsed_s, errors, …};
// qps counts answered and correct queries only.
import dgram from 'node:dgram';
import { randomInt } from 'node:crypto';

const [server, portS, nS, concS, secondsS, timeoutS, namesS, modeS = 'fresh'] = process.argv.slice(2);
const port = Number(portS);
const n = Number(nS);
const conc = Number(concS);
const seconds = Number(secondsS);
const timeoutMs = Number(timeoutS);
const names = (namesS ?? '')
  .split(',')
  .filter(Boolean)
  .map((kv) => {
    const [name, address] = kv.split('=');
    return { name, address };
  });
if (!server || !Number.isInteger(port) || !(n > 0) || !(conc > 0) || !(seconds > 0) || !(timeoutMs > 0) ||
  names.length === 0 || names.some((x) => !x.name || !x.address) || !['fresh', 'worker'].includes(modeS)) {
  process.stderr.write('usage: node dns-probe.mjs SERVER PORT N CONC SECONDS TIMEOUT_MS name=addr,… [fresh|worker]\n');
  process.exit(2);
}

const now = () => Number(process.hrtime.bigint()) / 1e6;

/** A standard query (RD set, no EDNS, as glibc sends by default) for `name` IN A. */
function encodeQuery(id, name) {
  const labels = name.split('.').filter(Boolean);
  const qname = Buffer.concat([...labels.map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l, 'ascii')])), Buffer.from([0])]);
  const header = Buffer.alloc(12);
  header.writeUInt16BE(id, 0);
  header.writeUInt16BE(0x0100, 2); // RD
  header.writeUInt16BE(1, 4); // QDCOUNT
  const tail = Buffer.alloc(4);
  tail.writeUInt16BE(1, 0); // A
  tail.writeUInt16BE(1, 2); // IN
  return Buffer.concat([header, qname, tail]);
}

/** Offset just past the (possibly compressed) name at `at`, or -1 when cut. */
function skipName(msg, at) {
  for (;;) {
    const len = msg[at];
    if (len === undefined) return -1;
    if (len >= 0xc0) return at + 2 <= msg.length ? at + 2 : -1;
    if (len > 63) return -1;
    at += 1 + len;
    if (len === 0) return at;
  }
}

/** undefined when `msg` answers query `id` for `name` with `address`, else why not. */
function check(msg, id, address) {
  if (msg.length < 12) return 'short answer';
  if (msg.readUInt16BE(0) !== id) return 'wrong id';
  const flags = msg.readUInt16BE(2);
  if ((flags & 0x8000) === 0) return 'not a response';
  if ((flags & 0x0200) !== 0) return 'truncated';
  const rcode = flags & 0xf;
  if (rcode !== 0) return `rcode ${rcode}`;
  let at = 12;
  for (let q = msg.readUInt16BE(4); q > 0; q--) {
    at = skipName(msg, at);
    if (at < 0) return 'bad question';
    at += 4;
  }
  const found = [];
  for (let a = msg.readUInt16BE(6); a > 0; a--) {
    at = skipName(msg, at);
    if (at < 0 || at + 10 > msg.length) return 'bad answer';
    const type = msg.readUInt16BE(at);
    const klass = msg.readUInt16BE(at + 2);
    const rdlen = msg.readUInt16BE(at + 8);
    at += 10;
    if (at + rdlen > msg.length) return 'bad answer';
    if (type === 1 && klass === 1 && rdlen === 4) found.push([...msg.subarray(at, at + 4)].join('.'));
    at += rdlen;
  }
  return found.includes(address) ? undefined : `A ${found.join(' ') || 'none'}`;
}

/** A connected UDP socket that hands each datagram to its current waiter. */
function openSocket() {
  const s = dgram.createSocket('udp4');
  const st = { s, waiter: undefined, failure: undefined };
  let connected;
  st.ready = new Promise((resolve) => {
    connected = resolve;
  });
  s.on('error', (e) => {
    st.failure = e;
    connected(); // a failed connect() reports here, not to its callback
    st.waiter?.(null, e);
  });
  s.on('message', (msg) => st.waiter?.(msg));
  s.connect(port, server, () => connected());
  return st;
}

/** One query on socket `st`; resolves with undefined (good) or a reason. */
async function ask(st, name, address) {
  await st.ready;
  if (st.failure) return st.failure.code ?? st.failure.message;
  const id = randomInt(0x10000);
  return new Promise((resolve) => {
    const timer = setTimeout(() => finish('timeout'), timeoutMs);
    function finish(reason) {
      clearTimeout(timer);
      st.waiter = undefined;
      resolve(reason);
    }
    st.waiter = (msg, err) => {
      if (err) return finish(err.code ?? err.message);
      const why = check(msg, id, address);
      if (why === 'wrong id') return; // a late answer to an earlier query of this socket
      finish(why);
    };
    st.s.send(encodeQuery(id, name), (e) => {
      if (e) finish(e.code ?? e.message);
    });
  });
}

const ts = [];
const errors = {};
let started = 0;
let failed = 0;
const t0 = now();
const deadline = t0 + seconds * 1000;

async function worker() {
  let st = modeS === 'worker' ? openSocket() : undefined;
  try {
    while (started < n && now() < deadline) {
      const i = started++;
      const { name, address } = names[i % names.length];
      const t = now();
      const own = st ?? openSocket();
      let why;
      try {
        why = await ask(own, name, address);
      } finally {
        if (!st) own.s.close();
      }
      if (why === undefined) ts.push(now() - t);
      else {
        failed++;
        errors[why] = (errors[why] ?? 0) + 1;
        // A worker socket that failed hard is replaced.
        if (st?.failure) {
          st.s.close();
          st = openSocket();
        }
      }
    }
  } finally {
    st?.s.close();
  }
}

try {
  await Promise.all(Array.from({ length: conc }, worker));
  const elapsed = (now() - t0) / 1000;
  const sorted = [...ts].sort((a, b) => a - b);
  const pct = (p) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] : null);
  process.stdout.write(
    `${JSON.stringify({
      ok: ts.length,
      failed,
      qps: ts.length / elapsed,
      p50_ms: pct(0.5),
      p99_ms: pct(0.99),
      max_ms: sorted.length ? sorted[sorted.length - 1] : null,
      elapsed_s: elapsed,
      in_flight: conc,
      sockets: modeS,
      timeout_ms: timeoutMs,
      errors,
    })}\n`,
  );
  process.exit(0);
} catch (e) {
  process.stdout.write(`${JSON.stringify({ error: e?.code ?? e?.message ?? String(e) })}\n`);
  process.exit(1);
}
