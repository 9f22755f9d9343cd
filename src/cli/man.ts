/**
 * The man page, rxshuttle(1), in roff (man macros), made from a CliSpec: the same options, groups
 * and examples as --help, each option with its longer text. scripts/man.mjs writes it at build.
 */
import { type CliSpec, flagParts, GROUP_TITLES, GROUPS, type OptionDef, visibleOptions } from './definitions.js';

/** Text as roff reads it literally: backslashes and minus signs escaped, no line taken for a request. */
export function roff(text: string): string {
  return text
    .replace(/\\/g, '\\e')
    .replace(/-/g, '\\-')
    .split('\n')
    .map((line) => (/^[.']/.test(line) ? `\\&${line}` : line))
    .join('\n');
}

const bold = (text: string) => `\\fB${roff(text)}\\fR`;
const italic = (text: string) => `\\fI${roff(text)}\\fR`;

function optionTerm(def: OptionDef): string {
  const { names, value } = flagParts(def.flags);
  return `${names.map(bold).join(', ')}${value === undefined ? '' : ` ${italic(value)}`}`;
}

export interface ManOptions {
  readonly version: string;
  /** The page's date (YYYY-MM-DD); absent: none, so that a build gives the same page every time. */
  readonly date?: string;
}

export function manPage(spec: CliSpec, { version, date = '' }: ManOptions): string {
  const name = spec.name;
  const out: string[] = [
    `.\\" Generated from src/cli/definitions.ts by scripts/man.mjs; edit those, not this file.`,
    `.TH ${name.toUpperCase()} 1 "${date}" "${name} ${version}" "User Commands"`,
    '.SH NAME',
    `${name} \\- ${roff(spec.summary)}`,
    '.SH SYNOPSIS',
    `.B ${name}`,
    roff(spec.usage),
    ...spec.commands.flatMap((command) => [
      '.br',
      `.B ${name} ${command.name}`,
      roff([command.choices?.join('|'), ...(command.options ?? []).map((o) => `[${o.flags.split(/,\s*/).at(-1)}]`)].filter(Boolean).join(' ')),
    ]),
    '.SH DESCRIPTION',
    ...spec.description.flatMap((paragraph, i) => [...(i > 0 ? ['.PP'] : []), roff(paragraph)]),
    '.SH ARGUMENTS',
    '.TP',
    italic(spec.argument.name.replace(/^\[|\]$/g, '')),
    roff(spec.argument.man),
    '.SH OPTIONS',
  ];
  const options = visibleOptions(spec);
  for (const group of GROUPS) {
    const inGroup = options.filter((def) => def.group === group);
    if (inGroup.length === 0) continue;
    out.push(`.SS ${roff(GROUP_TITLES[group])}`);
    for (const def of inGroup) {
      const choices = def.choices ? ` One of: ${def.choices.join(', ')}.` : '';
      out.push('.TP', optionTerm(def), roff(`${def.man ?? `${def.help[0]?.toUpperCase()}${def.help.slice(1)}.`}${choices}`));
    }
  }
  out.push('.SH COMMANDS');
  for (const command of spec.commands) {
    out.push('.TP', `${bold(command.name)}${command.argument ? ` ${italic(command.argument.replace(/^<|>$/g, ''))}` : ''}`);
    const choices = command.choices ? ` (${command.choices.join(', ')})` : '';
    const options = (command.options ?? []).map((o) => ` ${o.flags}: ${o.help}.`).join('');
    out.push(roff(`${command.help[0]?.toUpperCase()}${command.help.slice(1)}${choices}.${options}`));
  }
  out.push('.SH ARGUMENT FILES AND ENVIRONMENT');
  for (const source of spec.sources) out.push('.TP', bold(source.term), roff(source.text));
  out.push('.SH EXIT STATUS');
  for (const status of spec.exitStatus) out.push('.TP', bold(String(status.code)), roff(status.text));
  out.push('.SH EXAMPLES');
  for (const example of spec.examples) out.push('.TP', bold(example.command), roff(`${example.comment[0]?.toUpperCase()}${example.comment.slice(1)}.`));
  out.push('.SH SEE ALSO', spec.seeAlso.map((page) => roff(page).replace(/^([^(]+)\(/, '\\fB$1\\fR(')).join(',\n'));
  return `${out.join('\n')}\n`;
}
