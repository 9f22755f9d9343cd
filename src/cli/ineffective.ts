/**
 * Options that were given but change nothing, as the rest of the command line stands: each is
 * named once in a warning, so that a user does not believe it took effect.
 */

export interface GivenFlags {
  readonly daemon?: boolean;
  readonly pidfile?: string;
  readonly sudoers?: boolean;
  readonly sudoersNoModify?: boolean;
  readonly sudoersUser?: string;
  readonly sudoersFilename?: string;
}

/** The warnings to print (without "warning: "), in the order of the options in --help. */
export function withoutEffect(flags: GivenFlags): string[] {
  const warnings: string[] = [];
  if (flags.pidfile !== undefined && !flags.daemon) warnings.push('--pidfile has no effect without -D/--daemon');
  if (!flags.sudoers && !flags.sudoersNoModify) {
    for (const [name, value] of [
      ['--sudoers-user', flags.sudoersUser],
      ['--sudoers-filename', flags.sudoersFilename],
    ] as const) {
      if (value !== undefined) warnings.push(`${name} has no effect without --sudoers or --sudoers-no-modify`);
    }
  }
  return warnings;
}
