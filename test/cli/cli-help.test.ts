// --help, the man page and the bash and zsh completion are made from one CliSpec
// (src/cli/definitions.ts): every visible option shows in all of them, and an option added to the
// spec (here to a copy, the real definitions untouched) shows in all of them too. The completion
// scripts are run in bash (and checked by zsh where it is installed); the man page through groff.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { bashCompletion, completionScript, zshCompletion } from '../../src/cli/completion.js';
import { DAEMON_CHILD_FLAG } from '../../src/cli/daemon.js';
import { CLI_SPEC, type CliSpec, flagParts, GROUP_TITLES, GROUPS, type OptionDef, visibleOptions } from '../../src/cli/definitions.js';
import { manPage, roff } from '../../src/cli/man.js';
import { buildProgram, helpText } from '../../src/cli/program.js';
import { packageVersion } from '../../src/cli/version.js';
import { skipBecause } from '../support/skip.js';

const dir = mkdtempSync(join(tmpdir(), 'rxs-cli-help-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const has = (program: string) => spawnSync('sh', ['-c', `command -v ${program}`]).status === 0;

/** Everything the three are made from, for one spec. */
function generated(spec: CliSpec) {
  return {
    help: helpText(spec, '9.9.9'),
    man: manPage(spec, { version: '9.9.9' }),
    bash: bashCompletion(spec),
    zsh: zshCompletion(spec),
  };
}

/** An option name as the man page writes it (minus signs escaped). */
const inMan = (name: string) => roff(name);

describe('one set of definitions', () => {
  const out = generated(CLI_SPEC);

  it('every visible option is in --help, the man page, and both completions; hidden ones in none', () => {
    for (const def of visibleOptions(CLI_SPEC)) {
      for (const name of flagParts(def.flags).names) {
        expect(out.help, name).toMatch(new RegExp(`(^|[ ,])${name}([ ,=]|$)`, 'm'));
        expect(out.man, name).toContain(`\\fB${inMan(name)}\\fR`);
        expect(out.bash, name).toMatch(new RegExp(`[' ]${name}[ ')|]`));
        expect(out.zsh, name).toMatch(new RegExp(`[')*]${name}[=[]`));
      }
    }
    // Hidden ones are no option of their own anywhere (the text may still name them: "sshuttle's --python").
    for (const def of CLI_SPEC.options.filter((d) => d.hidden)) {
      const [name] = flagParts(def.flags).names as [string];
      expect(out.help, name).not.toMatch(new RegExp(`^ +${name}[ ,]`, 'm'));
      expect(out.man, name).not.toContain(`\fB${inMan(name)}\fR`);
      expect(out.bash, name).not.toContain(name);
      expect(out.zsh, name).not.toContain(name);
    }
  });

  it('an option added to the definitions appears in all three, in its group, and parses', () => {
    const frob: OptionDef = {
      flags: '-F, --frobnicate <level>',
      help: 'frobnicate the tunnel at this level',
      man: 'Frobnicate the tunnel at this level; higher is louder.',
      group: 'names',
      value: 'choice',
      choices: ['low', 'high'],
    };
    const spec: CliSpec = { ...CLI_SPEC, options: [...CLI_SPEC.options, frob] };
    const before = generated(CLI_SPEC);
    const after = generated(spec);
    for (const text of Object.values(before)) expect(text).not.toMatch(/frobnicate/);

    // --help: under "Names and routes:", before the next group
    const names = after.help.slice(after.help.indexOf('Names and routes:'), after.help.indexOf('\nssh:'));
    expect(names).toMatch(/-F, --frobnicate <level>\s+frobnicate the tunnel at this level/);
    // the man page: in its .SS section, with its longer text and choices
    const section = after.man.slice(after.man.indexOf('.SS Names and routes'), after.man.indexOf('.SS ssh'));
    expect(section).toContain('.TP\n\\fB\\-F\\fR, \\fB\\-\\-frobnicate\\fR \\fIlevel\\fR\nFrobnicate the tunnel at this level; higher is louder. One of: low, high.');
    // bash: among the options, and its value completed from the choices
    expect(after.bash).toMatch(/-F --frobnicate/);
    expect(after.bash).toContain(`    -F|--frobnicate) COMPREPLY=($(compgen -W 'low high' -- "$cur")); return ;;`);
    // zsh: both spellings, with their choices
    expect(after.zsh).toContain(`'(-F --frobnicate)-F[frobnicate the tunnel at this level]:level:(low high)'`);
    expect(after.zsh).toContain(`'(-F --frobnicate)--frobnicate=[frobnicate the tunnel at this level]:level:(low high)'`);
    // and the program made from the same spec takes it
    const program = buildProgram(spec, '9.9.9').exitOverride();
    program.parse(['--frobnicate', 'high', '10/8'], { from: 'user' });
    expect(program.opts()['frobnicate']).toBe('high');
  });

  it('--help: the groups in order, examples at the end', () => {
    const headings = out.help.split('\n').filter((line) => /^[A-Z][\w ]*:$|^ssh:$/.test(line));
    expect(headings).toEqual(['Arguments:', ...GROUPS.map((g) => `${GROUP_TITLES[g]}:`), 'Commands:', 'Arguments also come from:', 'Examples:']);
    const examples = out.help.slice(out.help.indexOf('Examples:'));
    for (const example of CLI_SPEC.examples) expect(examples).toContain(`  ${example.command}\n      ${example.comment}`);
    expect(out.help).toMatch(/@FILE +the arguments in FILE, one per line/);
    expect(out.help).toMatch(/RXSHUTTLE_ARGS +words put in front of the command line \(if unset: SSHUTTLE_ARGS\)/);
  });

  it('the man page: sections, every group, no line roff would take for a request', () => {
    for (const section of ['NAME', 'SYNOPSIS', 'DESCRIPTION', 'ARGUMENTS', 'OPTIONS', 'COMMANDS', 'ARGUMENT FILES AND ENVIRONMENT', 'EXIT STATUS', 'EXAMPLES', 'SEE ALSO']) {
      expect(out.man).toContain(`\n.SH ${section}\n`);
    }
    for (const group of GROUPS) expect(out.man).toContain(`\n.SS ${roff(GROUP_TITLES[group])}\n`);
    expect(out.man).toMatch(/^\.TH RXSHUTTLE 1 "" "rxshuttle 9\.9\.9" "User Commands"$/m);
    expect(manPage(CLI_SPEC, { version: '1', date: '2026-12-03' })).toMatch(/^\.TH RXSHUTTLE 1 "2026-12-03" "rxshuttle 1"/m);
    for (const line of out.man.split('\n')) if (/^['.]/.test(line)) expect(line).toMatch(/^\.(\\"|TH|SH|SS|TP|PP|B|br)( |$)/);
    expect(roff(".hidden\n'quote\na-b\\c")).toBe("\\&.hidden\n\\&'quote\na\\-b\\ec");
  });

  // In CI (which installs groff and zsh) a missing one fails the test rather than skipping it.
  it('the man page renders through groff without a warning', skipBecause(!has('groff') && 'groff is not installed'), () => {
    const page = join(dir, 'rxshuttle.1');
    writeFileSync(page, out.man);
    const r = spawnSync('groff', ['-man', '-Tutf8', '-ww', page], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    // grotty emboldens by overstriking: drop "x\bx" to read the text
    expect(r.stdout.replace(/.\x08/g, '')).toMatch(/-X, --exclude-from file/);
  });

  it('the daemon child flag the spec hides is the one daemon.ts passes', () => {
    expect(CLI_SPEC.options.some((d) => d.flags === DAEMON_CHILD_FLAG && d.hidden)).toBe(true);
  });
});

describe('bash completion, run in bash', () => {
  const script = join(dir, 'rxshuttle.bash');
  writeFileSync(script, completionScript(CLI_SPEC, 'bash'));
  writeFileSync(join(dir, 'office.conf'), '-N\n');

  /** COMPREPLY for a command line whose last word is being completed. */
  function complete(...words: string[]): string[] {
    const shellWords = words.map((w) => `'${w.replace(/'/g, `'\\''`)}'`).join(' ');
    const out = execFileSync(
      'bash',
      ['-c', `source ${script}; COMP_WORDS=(${shellWords}); COMP_CWORD=$((\${#COMP_WORDS[@]} - 1)); _rxshuttle; printf '%s\\n' "\${COMPREPLY[@]}"`],
      { encoding: 'utf8', cwd: dir },
    );
    return out.split('\n').filter((l) => l !== '').sort();
  }

  it('passes bash -n and registers itself', () => {
    expect(spawnSync('bash', ['-n', script]).status).toBe(0);
    expect(execFileSync('bash', ['-c', `source ${script}; complete -p rxshuttle`], { encoding: 'utf8' })).toBe('complete -F _rxshuttle rxshuttle\n');
  });

  it('options, values by kind, the completion command and @FILE', () => {
    expect(complete('rxshuttle', '--exclude')).toEqual(['--exclude', '--exclude-from']);
    expect(complete('rxshuttle', '-')).toContain('-X');
    expect(complete('rxshuttle', '--transport', '')).toEqual(['auto', 'ssh', 'ssh2']);
    expect(complete('rxshuttle', '--transport', '=', 's')).toEqual(['ssh', 'ssh2']);
    expect(complete('rxshuttle', '-X', 'off')).toEqual(['office.conf']);
    expect(complete('rxshuttle', '@off')).toEqual(['@office.conf']);
    expect(complete('rxshuttle', '-x', '')).toEqual([]);
    expect(complete('rxshuttle', 'comp')).toEqual(['completion']);
    expect(complete('rxshuttle', 'completion', '')).toEqual(['bash', 'zsh']);
    expect(complete('rxshuttle', '--sudoers-user', 'roo')).toEqual(['root']);
  });
});

describe('zsh completion', () => {
  const script = zshCompletion(CLI_SPEC);

  it('one _arguments spec per option spelling; descriptions escaped for _arguments', () => {
    expect(script.startsWith('#compdef rxshuttle\n')).toBe(true);
    expect(script).toContain(`'(-l --listen)--listen=[proxy address(es), comma-separated (default 127.0.0.1, a free port from 12300)]:\\[ip\\:\\]port\\[,...\\]: '`);
    expect(script).toContain(`'*-x[never tunnel this subnet (repeatable; the longest prefix wins)]:subnet: '`);
    expect(script).toContain(`'*-v[`);
    expect(script).toContain(`'--transport=[`);
    expect(script).toContain(":auto|ssh|ssh2:(auto ssh ssh2)'");
    expect(script).toContain(`'*-s[tunnel the subnets listed in a file, one per line (# comments)]:file:_files'`);
    expect(script).toContain("_values 'print the bash or zsh completion script' 'bash' 'zsh'");
  });

  it('passes zsh -n and loads with compinit', skipBecause(!has('zsh') && 'zsh is not installed'), () => {
    const file = join(dir, '_rxshuttle');
    writeFileSync(file, script);
    expect(spawnSync('zsh', ['-n', file]).status).toBe(0);
    const loaded = execFileSync('zsh', ['-fc', `autoload -U compinit; compinit -u -d ${dir}/zcd; source ${file}; print -r -- $_comps[rxshuttle]`], {
      encoding: 'utf8',
    });
    expect(loaded).toBe('_rxshuttle\n');
  });
});

describe('the package', () => {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as Record<string, unknown>;

  it('the version comes from package.json; man page, LICENSE and os are declared', () => {
    expect(packageVersion()).toBe(pkg['version']);
    // An array: npm links only an array's pages into share/man for a global install.
    expect(pkg['man']).toEqual(['./dist/rxshuttle.1']);
    expect(pkg['os']).toEqual(['linux']);
    expect(pkg['license']).toBe('MIT');
    expect(pkg['files']).toEqual(expect.arrayContaining(['dist', 'LICENSE', '!dist/**/*.map']));
    expect(readFileSync(new URL('../../LICENSE', import.meta.url), 'utf8')).toMatch(/^MIT License\n\nCopyright \(c\) \d{4} rxshuttle contributors\n/);
    expect(String((pkg['scripts'] as Record<string, string>)['build'])).toMatch(/node scripts\/man\.mjs/);
  });

  it('npm run build wrote dist/rxshuttle.1 from the definitions', () => {
    const built = new URL('../../dist/rxshuttle.1', import.meta.url);
    if (!existsSync(built)) throw new Error('dist/rxshuttle.1 not found: run `npm run build` first');
    const text = readFileSync(built, 'utf8').replace(/^(\.TH \S+ 1 )"[^"]*"/m, '$1""');
    expect(text).toBe(manPage(CLI_SPEC, { version: packageVersion() }));
  });
});
