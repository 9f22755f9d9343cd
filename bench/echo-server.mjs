// The bench's TCP echo server, run by bench/run.mjs inside the lab's tgt
// namespace. Node built-ins only; sized for 10 000+ concurrent connections
// (node raises its soft open-file limit to the hard one at start).
//
//   node echo-server.mjs HOST PORT     prints `ready` once listening
import net from 'node:net';

const [host, portS] = process.argv.slice(2);
let open = 0;
let peak = 0;
const server = net.createServer({ noDelay: true }, (s) => {
  open++;
  if (open > peak) peak = open;
  s.on('error', () => {});
  s.on('close', () => {
    open--;
  });
  s.pipe(s);
});
server.on('error', (e) => {
  process.stderr.write(`echo-server: ${e.message}\n`);
  process.exit(1);
});
server.listen({ host, port: Number(portS), backlog: 8192 }, () => process.stdout.write('ready\n'));
// `peak` on SIGUSR2 (debugging aid); SIGTERM/SIGINT end it.
process.on('SIGUSR2', () => process.stderr.write(`echo-server: open=${open} peak=${peak}\n`));
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
