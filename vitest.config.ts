import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    // Adds up the fault suite's figures (test/support/FaultLedger.ts) and prints them at the end.
    globalSetup: ["test/support/faultLedgerSetup.ts"],
    include: ["test/**/*.test.ts"],
    exclude: ["test/faults/**"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // 2 cores: each integration file owns a database; a few files at once keeps the server busy but not thrashing.
    maxWorkers: 2,
    minWorkers: 1,
  },
})
