import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Every response of every server a test starts is checked against openapi.yaml.
    setupFiles: ['test/setup-contract.ts'],
    // Tests start real servers and worker pools on a 2-core machine; running files one at a time
    // keeps timing-sensitive checks (timeouts, RSS deltas) meaningful.
    fileParallelism: false,
    testTimeout: 30_000,
    hookTimeout: 60_000,
  },
});
