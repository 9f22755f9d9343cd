/**
 * bash and zsh completion scripts (`rxshuttle completion bash|zsh`), made from a CliSpec: every
 * visible option, what its value is (files, ssh hosts, commands, users, choices), the commands,
 * and `@FILE` arguments completed as files.
 */
import { type CliSpec, flagParts, type OptionDef, type ValueKind, visibleOptions } from './definitions.js';

export const SHELLS = ['bash', 'zsh'] as const;
export type Shell = (typeof SHELLS)[number];

export function completionScript(spec: CliSpec, shell: Shell): string {
  return shell === 'bash' ? bashCompletion(spec) : zshCompletion(spec);
}

/** Single-quoted for a shell. */
const quote = (text: string) => `'${text.replace(/'/g, `'\\''`)}'`;

const takesValue = (def: OptionDef) => flagParts(def.flags).value !== undefined;

const BASH_ACTIONS: { readonly [K in ValueKind]: string } = {
  file: 'compopt -o filenames 2>/dev/null; COMPREPLY=($(compgen -f -- "$cur"))',
  host: 'COMPREPLY=($(compgen -A hostname -- "$cur"))',
  command: 'COMPREPLY=($(compgen -c -- "$cur"))',
  user: 'COMPREPLY=($(compgen -u -- "$cur"))',
  group: 'COMPREPLY=($(compgen -g -- "$cur"))',
  choice: '', // per option, below
  text: 'COMPREPLY=()',
};

export function bashCompletion(spec: CliSpec): string {
  const fn = `_${spec.name.replace(/\W/g, '_')}`;
  const options = visibleOptions(spec);
  const words = options.flatMap((def) => flagParts(def.flags).names);
  const cases = options.filter(takesValue).map((def) => {
    const names = flagParts(def.flags).names.join('|');
    const action = def.choices ? `COMPREPLY=($(compgen -W ${quote(def.choices.join(' '))} -- "$cur"))` : BASH_ACTIONS[def.value ?? 'text'];
    return `    ${names}) ${action}; return ;;`;
  });
  const commands = spec.commands.map(
    (c) =>
      `  if [[ \${COMP_WORDS[1]} == ${c.name} ]]; then\n    [[ $COMP_CWORD -eq 2 ]] && COMPREPLY=($(compgen -W ${quote([...(c.choices ?? []), ...(c.options ?? []).flatMap((o) => o.flags.split(/,\s*/))].join(' '))} -- "$cur"))\n    return\n  fi`,
  );
  return `# bash completion for ${spec.name}; generated from its option definitions (${spec.name} completion bash).
# Load it with:  source <(${spec.name} completion bash)
${fn}() {
  local cur prev
  cur="\${COMP_WORDS[COMP_CWORD]}"
  prev="\${COMP_WORDS[COMP_CWORD-1]}"
  # --option=value: bash splits at the =
  if [[ $prev == = && $COMP_CWORD -ge 2 ]]; then prev="\${COMP_WORDS[COMP_CWORD-2]}"; fi
  if [[ $cur == = ]]; then cur=''; fi
${commands.join('\n')}
  case "$prev" in
${cases.join('\n')}
  esac
  if [[ $cur == @* ]]; then
    compopt -o filenames 2>/dev/null
    COMPREPLY=($(compgen -f -P @ -- "\${cur#@}"))
    return
  fi
  if [[ $cur == -* ]]; then
    COMPREPLY=($(compgen -W ${quote(words.join(' '))} -- "$cur"))
    return
  fi
  if [[ $COMP_CWORD -eq 1 ]]; then
    COMPREPLY=($(compgen -W ${quote(spec.commands.map((c) => c.name).join(' '))} -- "$cur"))
  fi
}
complete -F ${fn} ${spec.name}
`;
}

/** Text inside a zsh `_arguments` spec's [description] or :message: */
const zshText = (text: string) => text.replace(/\\/g, '\\\\').replace(/([[\]:])/g, '\\$1');

const ZSH_ACTIONS: { readonly [K in ValueKind]: string } = {
  file: '_files',
  host: '_hosts',
  command: '_command_names -e',
  user: '_users',
  group: '_groups',
  choice: '',
  text: ' ',
};

function zshSpec(def: OptionDef): string[] {
  const { names, value } = flagParts(def.flags);
  // Given once, an option excludes its other spelling; repeatable ones may come again.
  const exclusion = def.repeatable || def.counter ? '*' : names.length > 1 ? `(${names.join(' ')})` : '';
  const description = `[${zshText(def.help)}]`;
  const argument =
    value === undefined ? '' : `:${zshText(value)}:${def.choices ? `(${def.choices.join(' ')})` : ZSH_ACTIONS[def.value ?? 'text']}`;
  return names.map((name) => quote(`${exclusion}${name}${value !== undefined && name.startsWith('--') ? '=' : ''}${description}${argument}`));
}

export function zshCompletion(spec: CliSpec): string {
  const fn = `_${spec.name.replace(/\W/g, '_')}`;
  const specs = visibleOptions(spec).flatMap(zshSpec);
  const commands = spec.commands.map(
    (c) =>
      `  if [[ \${words[2]} == ${c.name} ]]; then\n    (( CURRENT == 3 )) && _values ${quote(c.help)} ${[...(c.choices ?? []), ...(c.options ?? []).flatMap((o) => o.flags.split(/,\s*/))].map(quote).join(' ')}\n    return\n  fi`,
  );
  return `#compdef ${spec.name}
# zsh completion for ${spec.name}; generated from its option definitions (${spec.name} completion zsh).
# Load it with:  source <(${spec.name} completion zsh)   or save it as _${spec.name} in a directory of $fpath.
${fn}() {
${commands.join('\n')}
  if [[ $PREFIX == @* ]]; then
    compset -P @
    _files
    return
  fi
  _arguments -s -S \\
${specs.map((s) => `    ${s} \\`).join('\n')}
    ${quote(`*:${zshText('subnet')}:_guard "^-*" subnet`)}
}
if [[ $zsh_eval_context[-1] == loadautofunc ]]; then
  ${fn} "$@"
else
  compdef ${fn} ${spec.name}
fi
`;
}
