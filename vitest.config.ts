import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    exclude: ["test/faults/**"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // 2 cores: each integration file owns a database; a few files at once keeps the server busy but not thrashing.
    maxWorkers: 2,
    minWorkers: 1,
  },
})
