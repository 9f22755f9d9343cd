/**
 * Issue 17, finding 6: what runs as root must load nothing a lookup could find in another user's
 * directory. The helper's program (dist/firewall-helper.cjs, built by `npm run build`) is one file
 * that requires Node's built-ins and koffi only: no client, ssh2, cpu-features or supports-color.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

const HELPER = resolve(import.meta.dirname, '../../dist/firewall-helper.cjs');
const dir = mkdtempSync(join(tmpdir(), 'rxs-bundle-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('dist/firewall-helper.cjs', () => {
  it('requires only node built-ins and koffi', () => {
    const text = readFileSync(HELPER, 'utf8');
    const required = new Set([...text.matchAll(/require\(\s*["']([^"']+)["']\s*\)/g)].map((m) => m[1] as string));
    const builtin = (name: string) => name.startsWith('node:') || builtinModules.includes(name);
    expect([...required].filter((name) => !builtin(name))).toEqual(['koffi']);
    expect(text).not.toMatch(/cpu-features|require\(["']ssh2["']\)|supports-color["']\)/);
  });

  it('loads nothing planted on NODE_PATH beside koffi: a usage error, and the planted modules never ran', () => {
    const planted = join(dir, 'node_modules');
    const marker = join(dir, 'ran');
    for (const name of ['supports-color', 'cpu-features', 'ssh2', 'debug', 'rxjs']) {
      mkdirSync(join(planted, name), { recursive: true });
      writeFileSync(join(planted, name, 'index.js'), `require('fs').appendFileSync(${JSON.stringify(marker)}, ${JSON.stringify(`${name}\n`)});`);
    }
    const run = spawnSync(process.execPath, [HELPER, '--no-such-mode'], {
      env: { ...process.env, NODE_PATH: planted, DEBUG: 'rxshuttle:*', FORCE_COLOR: '1' },
      encoding: 'utf8',
      timeout: 10_000,
    });
    expect(run.status, run.stderr).toBe(2);
    expect(run.stderr).toMatch(/usage: firewall-helper \[--restricted\]/);
    expect(() => readFileSync(marker, 'utf8')).toThrow();
  });
});
