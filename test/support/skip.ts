import type { TestOptions } from 'vitest';

declare module 'vitest' {
  interface TaskMeta {
    /** Why the test was skipped here: scripts/ci-summary.mjs prints it with the test's name. */
    skipReason?: string;
  }
}

/**
 * Options for `describe` or `it` that skip the suite or test when `reason` is a string, and say
 * why: the reason goes into the tests' meta, which vitest's JSON report carries and the CI summary
 * prints (`skipped: <file> > <name> (<reason>)`). Without a reason nothing is skipped. Under
 * CI=true nothing is skipped either: a reason there is an error.
 *
 *   it('passes visudo -c', skipBecause(!haveVisudo && 'visudo is not installed'), () => …)
 */
export function skipBecause(reason: string | false | null | undefined): TestOptions {
  if (typeof reason !== 'string') return {};
  // CI installs every prerequisite and runs as root: one missing there fails the file, with why.
  if (process.env['CI'] === 'true') throw new Error(`a prerequisite is missing in CI: ${reason}`);
  return { skip: true, meta: { skipReason: reason } };
}
