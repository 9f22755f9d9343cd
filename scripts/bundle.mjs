// The two programs that run somewhere the package's node_modules must not be searched:
//
// - dist/remote-bundle.cjs: the server (src/remote/) as one CommonJS file that the remote node
//   compiles: no native modules, syntax old enough for node 16.
// - dist/firewall-helper.cjs: the firewall helper (src/firewall/main.ts), the part that runs as
//   root. One file, so that nothing it loads is looked up through directories other users may
//   write to; only koffi (a native module, loaded from its own directory) stays outside, and
//   debug's optional supports-color is left out.
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

const noOptionalModules = {
  name: 'no-optional-modules',
  setup(b) {
    b.onResolve({ filter: /^supports-color$/ }, () => ({ path: 'supports-color', namespace: 'absent' }));
    b.onLoad({ filter: /.*/, namespace: 'absent' }, () => ({ contents: 'throw new Error("not loaded as root")', loader: 'js' }));
  },
};

await build({
  entryPoints: ['src/firewall/main.ts'],
  outfile: 'dist/firewall-helper.cjs',
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  external: ['koffi'],
  plugins: [noOptionalModules],
  legalComments: 'none',
  logLevel: 'warning',
});
