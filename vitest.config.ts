import { defineConfig } from "vitest/config"
import { BOTH_GENERATIONS } from "./vitest.generations.js"

export default defineConfig({
  test: {
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // 2 cores: each integration file owns a database; a few files at once keeps the server busy but not thrashing.
    maxWorkers: 2,
    minWorkers: 1,
    projects: [
      {
        extends: true,
        test: {
          name: "field_meta",
          // Adds up the fault suite's figures (test/support/FaultLedger.ts) and prints them at the end.
          globalSetup: ["test/support/faultLedgerSetup.ts"],
          // Every file but the slow fault suite (test/faults: npm run test:faults). No project-level
          // exclude, so a command-line --exclude (as in .ci/run) still applies.
          include: ["test/{actors,ci,cluster,domain,e2e,faults-fast,http,layers,primitives,services,sql}/**/*.test.ts"],
          env: { TEST_SYNC_GENERATION: "field_meta" },
        },
      },
      {
        extends: true,
        test: {
          name: "field_timestamps",
          include: BOTH_GENERATIONS,
          env: { TEST_SYNC_GENERATION: "field_timestamps" },
        },
      },
    ],
  },
})
