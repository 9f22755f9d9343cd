import { readFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { TransportError } from '../shared/errors.js';

let upload: Buffer | null = null;

/** The server bundle as the stub expects it: u32 length, then gzipped CommonJS. Built by `npm run build`. */
export function serverUpload(): Buffer {
  if (upload) return upload;
  const path = new URL('../remote-bundle.cjs', import.meta.url);
  let source: Buffer;
  try {
    source = readFileSync(path);
  } catch {
    throw new TransportError('RXS_ERR_REMOTE_EXIT', `server bundle missing at ${path.pathname}: run npm run build`);
  }
  const packed = gzipSync(source, { level: 9 });
  const length = Buffer.allocUnsafe(4);
  length.writeUInt32BE(packed.length, 0);
  upload = Buffer.concat([length, packed]);
  return upload;
}
