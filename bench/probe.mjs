// The bench's load generator: small TCP probes against an echo server. Node
// built-ins only; run by bench/run.mjs inside the lab's cli namespace. Every
// command is bounded in count and in time, and prints one JSON line on stdout.
//
//   node probe.mjs rate HOST PORT N CONC SECONDS
//       connect + 32-byte echo + close, N in all, CONC at a time, stops at SECONDS
//   node probe.mjs rtt HOST PORT N SECONDS
//       32-byte round trips on one connection, N or SECONDS, whichever first
//   node probe.mjs hold HOST PORT N HOLD_SECONDS OPEN_SECONDS
//       opens N connections (100 at a time, each echoed once), for at most
//       OPEN_SECONDS; holds them HOLD_SECONDS; echoes once more on each to
//       count the ones still alive; closes them all
import net from 'node:net';

const [cmd, host, portS, ...rest] = process.argv.slice(2);
const port = Number(portS);
const OP_TIMEOUT_MS = 10_000;
const now = () => Number(process.hrtime.bigint()) / 1e6;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function pct(sorted, p) {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
}

function summary(ts) {
  const s = [...ts].sort((a, b) => a - b);
  return { n: s.length, p50_ms: pct(s, 0.5), p99_ms: pct(s, 0.99), max_ms: s.length ? s[s.length - 1] : null };
}

function errKey(e) {
  return (e && (e.code || e.message)) || String(e);
}

function bump(map, e) {
  const k = errKey(e);
  map[k] = (map[k] ?? 0) + 1;
}

function withTimeout(p, ms, what) {
  let t;
  const timeout = new Promise((_, rej) => {
    t = setTimeout(() => rej(Object.assign(new Error(`${what} timeout`), { code: `${what.toUpperCase()}_TIMEOUT` })), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(t));
}

/** A connected socket with a permanent error handler and a small echo helper. */
function open(timeoutMs = OP_TIMEOUT_MS) {
  const s = net.connect({ host, port });
  s.setNoDelay(true);
  let failure;
  let waiter; // { need, got, resolve, reject }
  s.on('error', (e) => {
    failure = e;
    if (waiter) waiter.reject(e);
  });
  s.on('close', () => {
    failure ??= Object.assign(new Error('closed by peer'), { code: 'CLOSED' });
    if (waiter) waiter.reject(failure);
  });
  s.on('data', (d) => {
    if (!waiter) return;
    waiter.got += d.length;
    if (waiter.got >= waiter.need) waiter.resolve();
  });
  const payload = Buffer.alloc(32, 120);
  const conn = {
    socket: s,
    /** Writes n bytes and waits until n bytes came back. */
    echo(n = 32, ms = OP_TIMEOUT_MS) {
      if (failure) return Promise.reject(failure);
      const p = new Promise((resolve, reject) => {
        waiter = { need: n, got: 0, resolve, reject };
      }).finally(() => {
        waiter = undefined;
      });
      s.write(n === 32 ? payload : Buffer.alloc(n, 120));
      return withTimeout(p, ms, 'echo');
    },
    destroy() {
      s.destroy();
    },
  };
  const connected = new Promise((resolve, reject) => {
    s.once('connect', () => resolve(conn));
    s.once('error', reject);
    s.once('close', () => reject(failure));
  });
  return withTimeout(connected, timeoutMs, 'connect').catch((e) => {
    s.destroy();
    throw e;
  });
}

async function rate([nS, concS, secondsS]) {
  const n = Number(nS);
  const conc = Number(concS);
  const deadline = now() + Number(secondsS) * 1000;
  let started = 0;
  let ok = 0;
  let fail = 0;
  const errors = {};
  const ts = [];
  const t0 = now();
  async function worker() {
    while (started < n && now() < deadline) {
      started++;
      const t = now();
      let c;
      try {
        c = await open(5_000);
        await c.echo(32, 5_000);
        ok++;
        ts.push(now() - t);
      } catch (e) {
        fail++;
        bump(errors, e);
      } finally {
        c?.destroy();
      }
    }
  }
  await Promise.all(Array.from({ length: conc }, worker));
  const elapsed = (now() - t0) / 1000;
  return { ok, fail, elapsed_s: elapsed, conn_per_s: ok / elapsed, latency: summary(ts), errors };
}

async function rtt([nS, secondsS]) {
  const n = Number(nS);
  const deadline = now() + Number(secondsS) * 1000;
  const c = await open();
  const ts = [];
  try {
    while (ts.length < n && now() < deadline) {
      const t = now();
      await c.echo(32);
      ts.push(now() - t);
    }
  } finally {
    c.destroy();
  }
  return summary(ts);
}

async function hold([nS, holdS, openS]) {
  const n = Number(nS);
  const openDeadline = now() + Number(openS) * 1000;
  const BATCH = 100;
  const conns = [];
  const errors = {};
  let attempted = 0;
  let failedOpen = 0;
  let emptyBatches = 0;
  let stoppedBy = 'done';
  const t0 = now();
  while (attempted < n) {
    if (now() >= openDeadline) {
      stoppedBy = 'open deadline';
      break;
    }
    const size = Math.min(BATCH, n - attempted);
    attempted += size;
    const batch = await Promise.allSettled(
      Array.from({ length: size }, async () => {
        const c = await open();
        try {
          await c.echo(32);
        } catch (e) {
          c.destroy();
          throw e;
        }
        return c;
      }),
    );
    let good = 0;
    for (const r of batch) {
      if (r.status === 'fulfilled') {
        conns.push(r.value);
        good++;
      } else {
        failedOpen++;
        bump(errors, r.reason);
      }
    }
    emptyBatches = good === 0 ? emptyBatches + 1 : 0;
    if (emptyBatches >= 3) {
      stoppedBy = 'three batches in a row failed';
      break;
    }
  }
  const openSeconds = (now() - t0) / 1000;
  process.stderr.write(`hold: ${conns.length} open of ${attempted} attempted in ${openSeconds.toFixed(1)} s\n`);
  await sleep(Number(holdS) * 1000);
  let alive = 0;
  const lateErrors = {};
  await Promise.all(
    conns.map(async (c) => {
      try {
        await c.echo(32);
        alive++;
      } catch (e) {
        bump(lateErrors, e);
      }
    }),
  );
  for (const c of conns) c.destroy();
  return {
    requested: n,
    attempted,
    opened: conns.length,
    failed_open: failedOpen,
    alive,
    open_s: openSeconds,
    stopped_by: stoppedBy,
    errors,
    late_errors: lateErrors,
  };
}

const commands = { rate, rtt, hold };
const fn = commands[cmd];
if (!fn || !host || !Number.isInteger(port)) {
  process.stderr.write('usage: node probe.mjs rate|rtt|hold HOST PORT ...\n');
  process.exit(2);
}
try {
  const result = await fn(rest);
  process.stdout.write(`${JSON.stringify(result)}\n`);
  process.exit(0);
} catch (e) {
  process.stdout.write(`${JSON.stringify({ error: errKey(e) })}\n`);
  process.exit(1);
}
