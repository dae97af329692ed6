import { defineConfig } from "vitest/config"

/**
 * The files whose behaviour depends on the generation of sync_changes (SPEC §13): they run a second
 * time on the seed's generation (field_timestamps); every file runs on today's (field_meta).
 */
const BOTH_GENERATIONS = [
  "test/services/EventLogSchema.test.ts",
  "test/services/WriteBack.test.ts",
  "test/services/writtenRowTypes.test.ts",
  "test/services/MissionStore.test.ts",
  "test/services/MissionStoreBootstrap.test.ts",
  "test/services/MissionRunner.test.ts",
  "test/services/InputResolvers.test.ts",
  "test/actors/Supervisor.integration.test.ts",
  "test/sql/runnerRole.test.ts",
  "test/http/api.test.ts",
  "test/faults-fast/security.test.ts",
  "test/faults-fast/badInput.test.ts",
  "test/e2e/process.test.ts",
  "test/services/AgentDirectory.test.ts",
  "test/services/EncryptedInputs.test.ts",
]

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
          include: ["test/**/*.test.ts"],
          exclude: ["test/faults/**"],
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
