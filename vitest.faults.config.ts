import { defineConfig } from "vitest/config"
import { BOTH_GENERATIONS } from "./vitest.generations.js"

export default defineConfig({
  test: {
    testTimeout: 300_000,
    hookTimeout: 120_000,
    maxWorkers: 1,
    minWorkers: 1,
    projects: [
      {
        extends: true,
        test: {
          name: "field_meta",
          // Adds up the fault suite's figures (test/support/FaultLedger.ts) and prints them at the end.
          globalSetup: ["test/support/faultLedgerSetup.ts"],
          // The whole fault suite, so one summary covers it: the slow files plus test/faults-fast, which
          // CI runs here only (npm test in .ci/run leaves it out).
          include: ["test/faults/**/*.test.ts", "test/faults-fast/**/*.test.ts"],
          env: { TEST_SYNC_GENERATION: "field_meta" },
        },
      },
      {
        extends: true,
        test: {
          name: "field_timestamps",
          include: BOTH_GENERATIONS.filter((f) => f.startsWith("test/faults")),
          env: { TEST_SYNC_GENERATION: "field_timestamps" },
        },
      },
    ],
  },
})
