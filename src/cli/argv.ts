/**
 * Where the command line's arguments come from besides argv, as sshuttle has them:
 *
 * - `RXSHUTTLE_ARGS` (or, when that is not set, `SSHUTTLE_ARGS`): words split as a shell would,
 *   without any expansion, put in front of argv; so the command line, coming later, wins.
 * - `@FILE`: replaced in place by the arguments in FILE, one per line (argparse's
 *   fromfile_prefix_chars, with sshuttle's reading of a line): lines starting with `#` and blank
 *   lines are skipped, the line is trimmed, and quotes around the whole line are dropped (a line
 *   copied from a shell command). An `@FILE` inside is read too. After `--` nothing is expanded.
 */
import { readFileSync } from 'node:fs';
import { errnoWords } from '../os/errno.js';
import { UsageError } from '../shared/errors.js';
import { splitShellWords } from '../shared/options.js';
import { ARGS_ENV, SSHUTTLE_ARGS_ENV } from './definitions.js';

/** Argument files inside argument files: deeper than this is a loop. */
const MAX_DEPTH = 8;

export interface ExpandedArgs {
  readonly args: string[];
  /** The variable the leading words came from, and they, when one was used (for error lines). */
  readonly fromEnv?: { readonly name: string; readonly words: readonly string[] };
}

/** argv without node and the script, completed from the environment and argument files. */
export function expandArgs(
  argv: readonly string[],
  env: NodeJS.ProcessEnv,
  readFile: (path: string) => string = (path) => readFileSync(path, 'utf8'),
): ExpandedArgs {
  const name = env[ARGS_ENV] !== undefined ? ARGS_ENV : env[SSHUTTLE_ARGS_ENV] !== undefined ? SSHUTTLE_ARGS_ENV : undefined;
  const words = name === undefined ? [] : envWords(name, env[name] ?? '');
  const args = expandFiles([...words, ...argv], readFile, 0);
  return { args, ...(name !== undefined && words.length > 0 ? { fromEnv: { name, words } } : {}) };
}

function envWords(name: string, text: string): string[] {
  const words = splitShellWords(text);
  if (words === null) throw new UsageError(`${name}: unbalanced quote or trailing backslash in "${text}"`);
  return words;
}

function expandFiles(args: readonly string[], readFile: (path: string) => string, depth: number): string[] {
  const out: string[] = [];
  for (const [index, arg] of args.entries()) {
    if (arg === '--') {
      out.push(...args.slice(index));
      break;
    }
    if (!arg.startsWith('@') || arg.length === 1) {
      out.push(arg);
      continue;
    }
    const path = arg.slice(1);
    if (depth >= MAX_DEPTH) throw new UsageError(`${arg}: argument files nested more than ${MAX_DEPTH} deep (does one name itself?)`);
    let text: string;
    try {
      text = readFile(path);
    } catch (err) {
      throw new UsageError(`${arg}: cannot read the argument file: ${errnoWords(err)}`);
    }
    out.push(...expandFiles(argumentLines(arg, text), readFile, depth + 1));
  }
  return out;
}

/** One argument per line (see the top of this file). */
export function argumentLines(arg: string, text: string): string[] {
  const out: string[] = [];
  for (const [index, raw] of text.split('\n').entries()) {
    let line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    if (line.length >= 2 && (line[0] === '"' || line[0] === "'") && line.endsWith(line[0])) line = line.slice(1, -1);
    // sshuttle (argparse) reads `--remote me@host` on one line as one argument, which no option
    // takes: say how to write it rather than "unknown option".
    const option = /^(-[^\s=]*)\s+\S/.exec(line);
    if (option) {
      const flag = option[1] as string;
      const inline = flag.startsWith('--') ? `, or write ${flag}=VALUE` : '';
      throw new UsageError(`${arg}, line ${index + 1}: one argument per line: put "${flag}" and its value on lines of their own${inline}`);
    }
    out.push(line);
  }
  return out;
}
