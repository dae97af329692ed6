/**
 * The files whose behaviour depends on the generation of sync_changes (SPEC §13): they run a second
 * time on the seed's generation (field_timestamps); every file runs on today's (field_meta). Shared by
 * vitest.config.ts (npm test) and vitest.faults.config.ts (the fault suite, which runs test/faults-fast).
 */
export const BOTH_GENERATIONS = [
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
