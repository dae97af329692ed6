import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    // Adds up the fault suite's figures (test/support/FaultLedger.ts) and prints them at the end.
    globalSetup: ["test/support/faultLedgerSetup.ts"],
    // The whole fault suite, so one summary covers it: the slow files plus the ones npm test also runs.
    include: ["test/faults/**/*.test.ts", "test/faults-fast/**/*.test.ts"],
    testTimeout: 300_000,
    hookTimeout: 120_000,
    maxWorkers: 1,
    minWorkers: 1,
  },
})
