// One datagram at a time to UDP echo servers, run with the system node inside a lab namespace.
//
//   node udp-echo.mjs '<json config>'
//   config: {
//     targets: ["10.98.0.3:7", "[fd00:98::3]:7"],  // one socket (one flow) each; datagram i goes to targets[i % length]
//     count: 500,                                   // datagrams, one at a time: the next after the echo of the last
//     minBytes: 1, maxBytes: 65000,                 // sizes spread evenly over the range (both ends included)
//     waitMs: 3000                                  // per datagram; then it counts as lost and the next goes
//   }
//
// Each datagram carries its index and random bytes; its echo must be exactly those bytes and come
// from the address and port it was sent to (recvfrom's address: the reply came from the original
// destination). Prints one JSON line: { count, ok, lost, wrong, fromElsewhere, elapsedMs, firstProblems }
// and exits 0 when every datagram came back right.
import crypto from 'node:crypto';
import dgram from 'node:dgram';
import net from 'node:net';

const cfg = { targets: ['10.98.0.3:7'], count: 500, minBytes: 1, maxBytes: 65000, waitMs: 3000, ...JSON.parse(process.argv[2] ?? '{}') };

const parse = (target) => {
  const m = /^\[(.+)\]:(\d+)$/.exec(target) ?? /^([^:]+):(\d+)$/.exec(target);
  if (!m) throw new Error(`bad target ${target}`);
  return { host: m[1], port: Number(m[2]) };
};

const sockets = cfg.targets.map((t) => {
  const { host, port } = parse(t);
  const socket = dgram.createSocket({ type: net.isIPv6(host) ? 'udp6' : 'udp4', recvBufferSize: 1 << 20, sendBufferSize: 1 << 20 });
  return { host, port, socket };
});
await Promise.all(sockets.map(({ socket }) => new Promise((resolve) => socket.bind(0, resolve))));

const result = { count: cfg.count, ok: 0, lost: 0, wrong: 0, fromElsewhere: 0, elapsedMs: 0, firstProblems: [] };
const problem = (text) => {
  if (result.firstProblems.length < 10) result.firstProblems.push(text);
};
const t0 = Date.now();
for (let i = 0; i < cfg.count; i++) {
  const target = sockets[i % sockets.length];
  const size = cfg.count === 1 ? cfg.minBytes : Math.round(cfg.minBytes + ((cfg.maxBytes - cfg.minBytes) * i) / (cfg.count - 1));
  const payload = crypto.randomBytes(size);
  if (size >= 4) payload.writeUInt32BE(i, 0);
  const echoed = await new Promise((resolve) => {
    const timer = setTimeout(() => {
      target.socket.off('message', onMessage);
      resolve(null);
    }, cfg.waitMs);
    const onMessage = (msg, rinfo) => {
      if (rinfo.address !== target.host || rinfo.port !== target.port) {
        result.fromElsewhere++;
        problem(`#${i}: a datagram from ${rinfo.address}:${rinfo.port}`);
        return;
      }
      if (size >= 4 && msg.length >= 4 && msg.readUInt32BE(0) !== i) return; // a late echo of an earlier one
      clearTimeout(timer);
      target.socket.off('message', onMessage);
      resolve(msg);
    };
    target.socket.on('message', onMessage);
    target.socket.send(payload, target.port, target.host);
  });
  if (echoed === null) {
    result.lost++;
    problem(`#${i}: ${size} B to ${target.host}:${target.port} lost`);
  } else if (!echoed.equals(payload)) {
    result.wrong++;
    problem(`#${i}: ${size} B came back as ${echoed.length} B, not the same bytes`);
  } else {
    result.ok++;
  }
}
result.elapsedMs = Date.now() - t0;
for (const { socket } of sockets) socket.close();
process.stdout.write(`${JSON.stringify(result)}\n`);
process.exit(result.ok === result.count ? 0 : 1);
