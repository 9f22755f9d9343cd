// Sends `count` DNS queries at once, each from its own UDP socket (so each is its own
// conntrack entry, as separate programs would be), and prints one JSON summary line.
// argv[2]: JSON { server, port?, expect: { name: address }, count, timeoutMs? }
import dgram from 'node:dgram';
import dnsPacket from 'dns-packet';

const cfg = JSON.parse(process.argv[2] ?? '{}');
const names = Object.keys(cfg.expect);
const count = cfg.count ?? 200;
const timeoutMs = cfg.timeoutMs ?? 10_000;
const t0 = Date.now();

function ask(i) {
  const name = names[i % names.length];
  return new Promise((resolve) => {
    const socket = dgram.createSocket('udp4');
    const done = (result) => {
      clearTimeout(timer);
      socket.close();
      resolve({ i, name, ...result, ms: Date.now() - t0 });
    };
    const timer = setTimeout(() => done({ ok: false, reason: 'timeout' }), timeoutMs);
    socket.on('error', (e) => done({ ok: false, reason: e.code ?? e.message }));
    socket.on('message', (msg) => {
      let answer;
      try {
        answer = dnsPacket.decode(msg);
      } catch {
        return done({ ok: false, reason: 'undecodable answer' });
      }
      if (answer.id !== i) return; // not ours
      const a = (answer.answers ?? []).find((r) => r.type === 'A');
      if (a?.data === cfg.expect[name]) done({ ok: true });
      else done({ ok: false, reason: `rcode ${answer.rcode}, A ${a?.data}` });
    });
    const query = dnsPacket.encode({ type: 'query', id: i, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type: 'A', name }] });
    socket.send(query, cfg.port ?? 53, cfg.server);
  });
}

const results = await Promise.all(Array.from({ length: count }, (_, i) => ask(i)));
const failed = results.filter((r) => !r.ok);
console.log(
  JSON.stringify({
    count,
    ok: results.length - failed.length,
    failed: failed.length,
    elapsedMs: Date.now() - t0,
    firstFailures: failed.slice(0, 5),
  }),
);
