// Bundles the server (src/remote/) into one CommonJS file that the remote node compiles:
// no native modules, syntax old enough for node 16.
import { build } from 'esbuild';

await build({
  entryPoints: ['src/remote/main.ts'],
  outfile: 'dist/remote-bundle.cjs',
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node16',
  minify: true,
  legalComments: 'none',
  logLevel: 'warning',
});
