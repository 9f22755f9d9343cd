// Writes the n deterministic bytes of GET /bytes/<n>?seed=<seed> (the same
// generator as target-server.mjs and labBytes() in lab.ts) to stdout, with
// backpressure, so an upload of any size needs no file and no memory.
//
//   node gen-bytes.mjs <n> [seed]
//
// Plain JavaScript, Node built-ins only: run with the system node in a lab
// namespace (e.g. `node gen-bytes.mjs 100000000 up | curl -T - …`).
import crypto from 'node:crypto';

const n = Number(process.argv[2]);
const seed = process.argv[3] ?? '0';
if (!Number.isSafeInteger(n) || n < 0) {
  process.stderr.write('usage: gen-bytes.mjs <n> [seed]\n');
  process.exit(2);
}

const key = crypto.createHash('sha256').update(`rxshuttle-lab-bytes:${seed}`).digest().subarray(0, 16);
const cipher = crypto.createCipheriv('aes-128-ctr', key, Buffer.alloc(16));
const CHUNK = 256 * 1024;
const ZEROS = Buffer.alloc(CHUNK);
let left = n;

process.stdout.on('error', (e) => {
  process.stderr.write(`gen-bytes: ${e.message}\n`);
  process.exit(1);
});

function pump() {
  while (left > 0) {
    const len = Math.min(CHUNK, left);
    left -= len;
    const ok = process.stdout.write(cipher.update(len === CHUNK ? ZEROS : ZEROS.subarray(0, len)));
    if (!ok && left > 0) {
      process.stdout.once('drain', pump);
      return;
    }
  }
  process.stdout.end();
}
pump();
