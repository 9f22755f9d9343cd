/**
 * Entry of the bundle uploaded to the remote host. The bootstrap stub (src/transport/stub.ts)
 * compiles this file and calls main() once it has read exactly the bundle from fd 0.
 */
import { runServer } from './server.js';

export function main(): void {
  runServer();
}
