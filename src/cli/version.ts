import { readFileSync } from 'node:fs';

/**
 * The version in package.json, which ships with the package: from dist/cli/ (and src/cli/ in
 * tests) it is two directories up. One place to change it, `npm version`.
 */
export function packageVersion(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version?: unknown };
  if (typeof pkg.version !== 'string') throw new Error('package.json has no version');
  return pkg.version;
}
