// Writes the man page, dist/rxshuttle.1, from the option definitions that --help and the shell
// completion are made from (src/cli/definitions.ts, compiled to dist/ by tsc first). The page's
// date is SOURCE_DATE_EPOCH's when set, else none: a build gives the same file every time.
import { readFileSync, writeFileSync } from 'node:fs';
import { CLI_SPEC } from '../dist/cli/definitions.js';
import { manPage } from '../dist/cli/man.js';

const { version } = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
const epoch = process.env.SOURCE_DATE_EPOCH;
const date = epoch === undefined ? undefined : new Date(Number(epoch) * 1000).toISOString().slice(0, 10);
writeFileSync(new URL('../dist/rxshuttle.1', import.meta.url), manPage(CLI_SPEC, { version, ...(date ? { date } : {}) }));
