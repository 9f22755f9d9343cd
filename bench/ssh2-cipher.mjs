// What ssh2 (rxshuttle's default transport) negotiates with an sshd: one
// handshake with ssh2's default algorithm lists (rxshuttle changes only
// compression, to none, and the host key order), then it hangs up. Run by
// bench/run.mjs inside the lab's cli namespace against the lab's own sshd, so
// that `ssh -L (same cipher)` uses the cipher rxshuttle gets. Bounded: 15 s.
//
//   node ssh2-cipher.mjs HOST PORT USER KEYFILE
//
// Prints one JSON line: {cs: {cipher, mac, compress}, sc: {…}, kex, serverHostKey}.
import * as fs from 'node:fs';
import { createRequire } from 'node:module';

const require = createRequire(new URL('../package.json', import.meta.url));
const { Client } = require('ssh2');

const [host, portS, username, keyFile] = process.argv.slice(2);
const fail = (why) => {
  process.stdout.write(`${JSON.stringify({ error: why })}\n`);
  process.exit(1);
};
const timer = setTimeout(() => fail('no handshake in 15 s'), 15_000);
const client = new Client();
client.on('error', (e) => fail(e.message));
client.on('handshake', (negotiated) => {
  clearTimeout(timer);
  process.stdout.write(`${JSON.stringify(negotiated)}\n`);
  client.end();
  process.exit(0);
});
client.connect({
  host,
  port: Number(portS),
  username,
  privateKey: fs.readFileSync(keyFile),
  readyTimeout: 15_000,
  algorithms: { compress: ['none'] },
  // The bench lab's own sshd, just created: its host key is not checked here (nothing is sent).
  hostVerifier: () => true,
});
