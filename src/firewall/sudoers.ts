/**
 * `rxshuttle --sudoers`: a sudoers rule that lets one user (or %group) start the firewall helper
 * in its restricted mode as root without a password, and nothing else. The rule names the exact
 * command the client runs through sudo (`helperCommand()`): this node binary, the helper's program
 * (dist/firewall-helper.cjs), `--restricted`, no other arguments. That mode captures only the
 * user's own traffic, never in router mode, and only to the user's own listener (restricted.ts):
 * the rule grants less than root. Absolute paths, so sudo's env_reset and secure_path do not
 * matter. `--sudoers-no-modify` prints it; `--sudoers` installs it in /etc/sudoers.d after
 * `visudo -c` has accepted it.
 *
 * Whoever can change the node binary, the helper's program or the koffi it loads could then run
 * code as root: `--sudoers` refuses to install the rule unless every one of them, and every
 * directory on the way to them, is root's and writable by nobody else (issue 17, finding 6). The
 * helper's program is one bundled file, so nothing else is looked up when it starts.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as os from 'node:os';
import * as path from 'node:path';
import { RxshuttleError, UsageError } from '../shared/errors.js';
import { findPrograms, PROGRAM_ENV, untrustedReason, untrustedTreeReason } from './programs.js';
import { HELPER_NODE_OPTIONS, helperScriptPath } from './protocol.js';
import { RESTRICTED_FLAG } from './restricted.js';

export const SUDOERS_DIR = '/etc/sudoers.d';
export const DEFAULT_SUDOERS_FILENAME = 'rxshuttle_auto';

export class SudoersError extends RxshuttleError {
  constructor(message: string) {
    super('RXS_ERR_SUDOERS', message);
  }
}

export interface SudoersRule {
  /** A user name, or `%group`. */
  readonly user: string;
  /** Absolute path of the node binary the client runs the helper with. */
  readonly nodePath: string;
  /** Absolute path of the helper's program (dist/firewall-helper.cjs). */
  readonly helperPath: string;
}

const NAME = /^[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?$/;
/** What sudoers reads as an alias (User_Alias), not a name: upper case, digits and _, ALL among them. */
const ALIAS = /^[A-Z][A-Z0-9_]*$/;
/** Characters a path may have in the rule: nothing sudoers would read as syntax or a wildcard. */
const SAFE_PATH = /^\/[A-Za-z0-9/._+@-]*$/;
/** sudo skips files in sudoers.d whose names contain a '.' or end in '~'. */
const SAFE_FILENAME = /^[A-Za-z0-9_-]{1,64}$/;

/** The user the rule is for when none is given: who ran `sudo rxshuttle --sudoers`, else who we are. */
export function defaultSudoersUser(env: NodeJS.ProcessEnv = process.env): string {
  const viaSudo = env.SUDO_USER;
  if (process.getuid?.() === 0 && viaSudo && viaSudo !== 'root') return viaSudo;
  return os.userInfo().username;
}

/**
 * The user (or %group) of the rule must be one user or one group, in words sudoers reads as such:
 * not empty, no character of its syntax (`, : = ! # + \ ( )`, spaces, quotes…), not `ALL` or
 * `%ALL` (in any case: ALL is sudoers' word for everybody), and no other all-capitals user name,
 * which sudoers takes for an alias that may stand for anybody. Otherwise a usage error (exit 2).
 */
export function checkSudoersUser(user: string): void {
  const group = user.startsWith('%');
  const name = group ? user.slice(1) : user;
  if (!NAME.test(name)) {
    throw new UsageError(`--sudoers-user ${JSON.stringify(user)}: expected a user name or %group (letters, digits, _ . -)`);
  }
  if (name.toUpperCase() === 'ALL' || (!group && ALIAS.test(name))) {
    const why = name.toUpperCase() === 'ALL' ? "ALL is sudoers' word for everybody" : 'sudoers reads an all-capitals name as an alias';
    throw new UsageError(`--sudoers-user ${JSON.stringify(user)}: ${why}; name the one user (or %group) the rule is for`);
  }
}

export function checkSudoersFilename(name: string): void {
  if (!SAFE_FILENAME.test(name)) {
    throw new SudoersError(`--sudoers-filename "${name}": use letters, digits, _ and - only (sudo ignores names with a dot)`);
  }
}

/** The rule file's text. Throws UsageError for a user, SudoersError for a path, that cannot be written safely. */
export function sudoersSnippet(rule: SudoersRule): string {
  checkSudoersUser(rule.user);
  for (const [what, p] of [
    ['node', rule.nodePath],
    ['helper', rule.helperPath],
  ] as const) {
    if (!SAFE_PATH.test(p)) {
      throw new SudoersError(
        `the ${what} path ${JSON.stringify(p)} has characters a sudoers rule cannot hold exactly (only letters, digits and / . _ + @ - are allowed)`,
      );
    }
  }
  return [
    `# Written by rxshuttle --sudoers: lets ${rule.user} start rxshuttle's firewall helper (the only part`,
    '# of rxshuttle that needs root) without a password, in its restricted mode: it redirects only',
    "# that user's own connections (and DNS) to that user's own rxshuttle, never other users' or",
    "# other machines' traffic. It allows exactly this command and no other.",
    '# Re-run rxshuttle --sudoers after node or rxshuttle moved or was upgraded elsewhere.',
    `${rule.user} ALL=(root) NOPASSWD: ${rule.nodePath} ${HELPER_NODE_OPTIONS.join(' ')} ${rule.helperPath} ${RESTRICTED_FLAG}`,
    '',
  ].join('\n');
}

/**
 * What makes the rule unsafe: each path it trusts (the node binary, the helper's program, the
 * koffi package that program loads, and every directory on the way to them, links resolved)
 * that is not root's or that others than root may write to, with the reason. Sticky directories
 * such as /tmp count as writable: a package under one can be shadowed by what another user puts
 * beside it. Empty when the rule is safe.
 */
export function unsafeSudoersPaths(rule: Pick<SudoersRule, 'nodePath' | 'helperPath'>): string[] {
  const problems = [untrustedReason(rule.nodePath, 'program'), untrustedReason(rule.helperPath, 'file')];
  const koffi = koffiDirectory(rule.helperPath);
  problems.push(koffi === null ? `koffi (which ${rule.helperPath} loads) is not installed beside it` : untrustedTreeReason(koffi));
  return problems.filter((p): p is string => p !== null);
}

/** The directory of the koffi package that the helper's program would load: the first in node's lookup from its directory. */
function koffiDirectory(helperPath: string): string | null {
  for (const dir of createRequire(helperPath).resolve.paths('koffi') ?? []) {
    const candidate = path.join(dir, 'koffi');
    if (fs.existsSync(candidate)) return candidate;
  }
  return null;
}

/** Runs `visudo -cf file` (found in the system directories only, run with a fixed environment); throws SudoersError with visudo's complaint when it refuses the file. */
export function checkWithVisudo(file: string): void {
  const visudo = findPrograms(['visudo']).get('visudo');
  if (visudo === undefined) throw new SudoersError('visudo not found: install sudo (apt-get install sudo)');
  if (visudo.refused !== undefined) throw new SudoersError(`refusing to run ${visudo.path} as root: ${visudo.refused}`);
  try {
    execFileSync(visudo.path, ['-c', '-q', '-f', file], { stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8', env: { ...PROGRAM_ENV }, cwd: '/' });
  } catch (err) {
    const e = err as { stderr?: string; stdout?: string; message: string };
    const said = `${e.stderr ?? ''}${e.stdout ?? ''}`.trim().split('\n').join(' / ') || e.message;
    throw new SudoersError(`visudo refused the sudoers rule: ${said}`);
  }
}

/**
 * Installs the rule as SUDOERS_DIR/filename (mode 0440, root), checked by visudo first: the file
 * is written under a name sudo ignores, checked, and renamed into place, so sudo never reads a
 * half-written or invalid rule. Must run as root. Returns the path written.
 */
export function installSudoers(content: string, filename: string = DEFAULT_SUDOERS_FILENAME, dir: string = SUDOERS_DIR): string {
  checkSudoersFilename(filename);
  if (process.getuid?.() !== 0) {
    throw new SudoersError(`writing ${dir} needs root: run rxshuttle --sudoers as root, or without root to be asked for sudo's password`);
  }
  if (!fs.existsSync(dir)) throw new SudoersError(`${dir} does not exist: is sudo installed?`);
  const target = path.join(dir, filename);
  const temp = path.join(dir, `.${filename}.${process.pid}.tmp`);
  try {
    fs.writeFileSync(temp, content, { mode: 0o440, flag: 'wx' });
    fs.chmodSync(temp, 0o440);
    checkWithVisudo(temp);
    fs.renameSync(temp, target);
  } catch (err) {
    fs.rmSync(temp, { force: true });
    if (err instanceof SudoersError) throw err;
    throw new SudoersError(`cannot write ${target}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  return target;
}

export interface SudoersCommand {
  /** true: write the rule to /etc/sudoers.d (`--sudoers`); false: print it (`--sudoers-no-modify`). */
  readonly install: boolean;
  readonly user?: string;
  readonly filename?: string;
  readonly nodePath: string;
  /** The CLI script (dist/cli.js): the helper's program is beside it. */
  readonly cliPath: string;
}

/**
 * The `--sudoers` and `--sudoers-no-modify` commands. Without root, `--sudoers` runs itself again
 * through sudo (which asks for the password once), with the same node, CLI and user, so the rule
 * names the node this user really runs. Returns the exit status; throws SudoersError (UsageError
 * for a user the rule cannot name, before anything is run or written).
 */
export function runSudoersCommand(
  command: SudoersCommand,
  out: { stdout: (text: string) => void; stderr: (text: string) => void } = {
    stdout: (text) => process.stdout.write(text),
    stderr: (text) => process.stderr.write(text),
  },
): number {
  const user = command.user ?? defaultSudoersUser();
  const filename = command.filename ?? DEFAULT_SUDOERS_FILENAME;
  checkSudoersFilename(filename);
  const rule = { user, nodePath: command.nodePath, helperPath: helperScriptPath(command.cliPath) };
  const content = sudoersSnippet(rule);
  if (!command.install) {
    out.stdout(content);
    for (const problem of unsafeSudoersPaths(rule)) {
      out.stderr(`rxshuttle: warning: ${problem}: whoever can change it could run code as root through this rule\n`);
    }
  } else if (process.getuid?.() !== 0) {
    const argv = [command.nodePath, command.cliPath, '--sudoers', '--sudoers-user', user, '--sudoers-filename', filename];
    const result = spawnSync('sudo', argv, { stdio: 'inherit' });
    if (result.error) {
      const code = (result.error as NodeJS.ErrnoException).code;
      throw new SudoersError(code === 'ENOENT' ? 'sudo not found: install sudo first' : `cannot run sudo: ${result.error.message}`);
    }
    return result.status ?? 1;
  } else {
    const problems = unsafeSudoersPaths(rule);
    if (problems.length > 0) {
      throw new SudoersError(
        `refusing to install the sudoers rule: ${problems[0]}${problems.length > 1 ? ` (and ${problems.length - 1} more)` : ''}; ` +
          'whoever can change it could run code as root through the rule: install rxshuttle and node where only root can write (npm install -g as root)',
      );
    }
    const written = installSudoers(content, filename);
    out.stderr(`rxshuttle: wrote ${written}: ${user} may now start the firewall helper for their own traffic without a password\n`);
  }
  return 0;
}
