/**
 * Entry of the bundle uploaded to the remote host. The bootstrap stub (src/transport/stub.ts)
 * compiles this file and calls main() with whatever stdin bytes it read past the bundle.
 */
import { runServer } from './server.js';

export function main(rest?: Buffer): void {
  if (rest && rest.length > 0) process.stdin.unshift(rest);
  runServer();
}
