import { defineConfig } from 'vitest/config';

// Unit, marble and e2e tests all live under test/. e2e files each build their
// own network-namespace lab (test/e2e/lab.ts) with unique names, so files run
// in parallel — but at most 2 at a time: the machines have 2 cores and every
// lab runs sshd, node servers and the tunnel's processes.
export default defineConfig({
  test: {
    environment: 'node',
    include: ['test/**/*.test.ts'],
    pool: 'forks',
    fileParallelism: true,
    maxWorkers: 2,
    testTimeout: 120_000,
    hookTimeout: 120_000,
    teardownTimeout: 30_000,
  },
});
