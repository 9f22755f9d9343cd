/**
 * The error handler of a test's subscription to a stream that must not fail: the error is thrown
 * again, which RxJS reports as unhandled and vitest counts as a failure of the run.
 */
export const unexpectedError = (err: unknown): never => {
  throw err;
};
