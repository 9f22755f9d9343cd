/**
 * Waiting in tests for what no event announces: a file, another process, the kernel, a count.
 *
 * `waitUntil` is the tests' one polling helper (test/e2e's lab and tunnel helpers use it too). It
 * is plain Node with no vitest import: scripts/lab.sh runs test/e2e/lab.ts outside vitest, where
 * `vi.waitFor` does not work. Inside a test, where the condition reads as an expectation,
 * `vi.waitFor(() => expect(…))` says more when it fails (expected against received): use that;
 * use this where the condition is a predicate, needs its own description, or runs outside vitest.
 */

type Falsy = false | 0 | 0n | '' | null | undefined;

export interface WaitOptions {
  /** How long before it fails; default 5 000 ms (a loaded machine is slow; a condition met sooner costs nothing). */
  readonly timeoutMs?: number;
  /** Time between checks; default 10 ms. */
  readonly intervalMs?: number;
  /** What is waited for, for the failure message; a function is called when it fails, to show the state then. */
  readonly what?: string | (() => string);
}

/**
 * Runs `check` now, and again every `intervalMs`, until it returns a truthy value; resolves with
 * that value. A check that throws counts as "not yet" (the last error is quoted). Once `timeoutMs`
 * has passed (after one last check), it rejects with `timed out after N ms waiting for <what>`.
 */
export async function waitUntil<T>(check: () => T | Promise<T>, options: WaitOptions = {}): Promise<Exclude<T, Falsy>> {
  const { timeoutMs = 5_000, intervalMs = 10, what = 'the condition' } = options;
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  let threw = false;
  for (;;) {
    try {
      const value = await check();
      if (value) return value as Exclude<T, Falsy>;
    } catch (err) {
      lastError = err;
      threw = true;
    }
    if (Date.now() >= deadline) {
      const described = typeof what === 'function' ? what() : what;
      const error = threw ? `; a check threw: ${lastError instanceof Error ? lastError.message : String(lastError)}` : '';
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${described}${error}`, threw ? { cause: lastError } : undefined);
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

/**
 * A fixed wait before asserting that something did NOT happen: an absence cannot be polled for,
 * only given time to show. The one kind of fixed sleep the unit tests keep, and never before
 * asserting that something did happen (waitUntil or vi.waitFor for that).
 */
export const sleepForAbsence = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
