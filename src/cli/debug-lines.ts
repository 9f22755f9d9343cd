/**
 * Debug lines (`-vvv`, DEBUG=rxshuttle:*) carry the remote host's text: ssh2's error messages,
 * the server's output, a refusal's reason. Each string given to `%s` comes out printable, so a
 * broken or hostile server cannot act on the terminal through them; other values are formatted
 * as Node's util.format would.
 */
import { format } from 'node:util';
import type createDebug from 'debug';
import { printable } from '../shared/printable.js';

export function printableDebugStrings(debug: typeof createDebug): void {
  debug.formatters.s = (value: unknown) => (typeof value === 'string' ? printable(value) : format('%s', value));
}
