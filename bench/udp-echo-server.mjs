// The bench's UDP echo server, run by bench/run.mjs inside the lab's tgt
// namespace: every datagram goes back, unchanged, to the address and port it
// came from. Node built-ins only.
//
//   node udp-echo-server.mjs HOST PORT     prints `ready` once bound
//
// It counts what it received and echoed (SIGUSR2 prints them); what the kernel
// dropped before it read (a full receive buffer) is in tgt's /proc/net/snmp
// (Udp RcvbufErrors), which the bench reads around each UDP measurement.
import dgram from 'node:dgram';
import net from 'node:net';

const [host, portS] = process.argv.slice(2);
let received = 0;
let echoed = 0;
let sendErrors = 0;
const socket = dgram.createSocket({ type: net.isIPv6(host) ? 'udp6' : 'udp4', recvBufferSize: 4 << 20, sendBufferSize: 4 << 20 });
socket.on('error', (e) => {
  process.stderr.write(`udp-echo-server: ${e.message}\n`);
  process.exit(1);
});
socket.on('message', (msg, rinfo) => {
  received++;
  socket.send(msg, rinfo.port, rinfo.address, (e) => {
    if (e) sendErrors++;
    else echoed++;
  });
});
socket.bind(Number(portS), host, () => process.stdout.write('ready\n'));
process.on('SIGUSR2', () => process.stderr.write(`udp-echo-server: received=${received} echoed=${echoed} send errors=${sendErrors}\n`));
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
