/**
 * The commander program, made from a CliSpec (definitions.ts): options in their help groups,
 * the `completion` command, and examples after the options.
 */
import { Argument, Command, Option } from 'commander';
import { type CliSpec, GROUP_TITLES, type OptionDef } from './definitions.js';

export interface ProgramActions {
  /** The tunnel (or --server, --sudoers, --hostwatch): the subnets given; the flags are in opts(). */
  readonly main: (subnets: string[]) => void;
  /** `<name> <command> [<argument>] [options]`, e.g. `rxshuttle completion bash`, `rxshuttle status --json`. */
  readonly command: (name: string, argument: string | undefined, options: Record<string, unknown>) => void;
}

const NO_ACTIONS: ProgramActions = { main: () => {}, command: () => {} };

export function buildProgram(spec: CliSpec, version: string, actions: ProgramActions = NO_ACTIONS): Command {
  const program = new Command(spec.name)
    .usage(spec.usage)
    .description(`${spec.summary[0]?.toUpperCase()}${spec.summary.slice(1)}: tunnels TCP to <subnets> through one ssh session.`)
    .argument(spec.argument.name, spec.argument.help)
    .helpCommand(false)
    .showHelpAfterError(false)
    // Each help line says its default where it has one; commander's "(default: [])" would repeat it.
    .configureHelp({ optionDescription: (option) => option.description })
    .exitOverride();
  for (const def of spec.options) addOption(program, def, version);
  for (const command of spec.commands) {
    const sub = program.command(command.name).description(command.help).helpCommand(false);
    if (command.argument) sub.addArgument(new Argument(command.argument).choices(command.choices ?? []));
    for (const option of command.options ?? []) sub.option(option.flags, option.help);
    sub.action((...args: unknown[]) =>
      command.argument
        ? actions.command(command.name, args[0] as string, args[1] as Record<string, unknown>)
        : actions.command(command.name, undefined, args[0] as Record<string, unknown>),
    );
  }
  program.action((subnets: string[]) => actions.main(subnets));
  program.addHelpText('after', `\n${epilogue(spec)}`);
  return program;
}

function addOption(program: Command, def: OptionDef, version: string): void {
  const group = `${GROUP_TITLES[def.group]}:`;
  if (def.builtin === 'version') {
    program.version(version, def.flags, def.help);
    program.options.find((option) => option.flags === def.flags)?.helpGroup(group);
    return;
  }
  if (def.builtin === 'help') {
    program.addHelpOption(new Option(def.flags, def.help).helpGroup(group));
    return;
  }
  const option = new Option(def.flags, def.help).helpGroup(group);
  if (def.choices) option.choices(def.choices);
  if (def.counter) option.argParser((_: unknown, count: number) => count + 1).default(0);
  else if (def.repeatable) option.argParser((value: string, all: string[]) => [...all, value]).default([]);
  else if (def.default !== undefined) option.default(def.default);
  if (def.hidden) option.hideHelp();
  program.addOption(option);
}

/** After the options: where else arguments come from, and examples. */
function epilogue(spec: CliSpec): string {
  const termWidth = Math.max(...spec.sources.map((s) => s.term.length));
  return [
    'Arguments also come from:',
    ...spec.sources.map((s) => `  ${s.term.padEnd(termWidth)}  ${s.help}`),
    '',
    'Examples:',
    ...spec.examples.flatMap((e) => [`  ${e.command}`, `      ${e.comment}`]),
    '',
  ].join('\n');
}

/** The whole --help text, as `rxshuttle --help` prints it. */
export function helpText(spec: CliSpec, version: string): string {
  let text = '';
  const program = buildProgram(spec, version).configureOutput({ writeOut: (s) => (text += s) });
  program.outputHelp();
  return text;
}
