/**
 * Builds a TypeScript entry point into one CommonJS file that plain `node` can run inside a
 * namespace (Node 20 cannot run .ts itself). koffi stays external: it loads a native module
 * relative to its own directory, so it is resolved from the project's node_modules.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { build } from 'esbuild';

export const PROJECT_NODE_MODULES = resolve(import.meta.dirname, '../../../node_modules');

export interface Bundle {
  file: string;
  /** argv that runs it with this Node. */
  argv: string[];
  /** Environment the bundle needs (NODE_PATH to find koffi). */
  env: NodeJS.ProcessEnv;
  remove(): void;
}

export async function bundleFixture(name: 'helper-main' | 'probe-main' | 'tproxy-probe-main'): Promise<Bundle> {
  const dir = mkdtempSync(join(tmpdir(), 'rxs-fwtest-'));
  const file = join(dir, `${name}.cjs`);
  await build({
    entryPoints: [resolve(import.meta.dirname, `../fixtures/${name}.ts`)],
    outfile: file,
    bundle: true,
    platform: 'node',
    format: 'cjs',
    target: 'node20',
    external: ['koffi'],
    logLevel: 'silent',
  });
  return {
    file,
    argv: [process.execPath, file],
    env: { NODE_PATH: PROJECT_NODE_MODULES },
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}
