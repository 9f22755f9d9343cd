/**
 * Fuzzing runs every property twice: with a fixed seed (the same cases in every CI run) and with
 * a fresh random one (new cases each run). The seed is in the test's name and in fast-check's
 * failure report; `FUZZ_SEED=<n> npx vitest run test/fuzz` replays a failure, `FUZZ_RUNS=<n>`
 * runs more cases.
 */
export const FIXED_SEED = 0x5eed_1e55;
const fromEnv = process.env['FUZZ_SEED'];
export const RANDOM_SEED = fromEnv !== undefined && fromEnv !== '' ? Number(fromEnv) : Math.floor(Math.random() * 0x7fffffff);
export const RUNS = Number(process.env['FUZZ_RUNS'] ?? 2000);

/** [test-name suffix, seed] for `describe.each` / loops. */
export const SEEDS: ReadonlyArray<readonly [string, number]> = [
  [`fixed seed ${FIXED_SEED}`, FIXED_SEED],
  [`random seed ${RANDOM_SEED} (replay with FUZZ_SEED=${RANDOM_SEED})`, RANDOM_SEED],
];
