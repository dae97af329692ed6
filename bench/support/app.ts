/**
 * The runner's real services on the bench database, connected as the runner role, composed the way
 * the process composes them: the pool (Database.ts), the migrations, the store, resolvers,
 * write-back, the LLM client on FetchHttpClient pointed at the stand-in, the planner, the mission
 * runner and the supervisor. The runner and the LLM client are wrapped in the bench's stopwatches.
 */
import { FetchHttpClient } from "@effect/platform"
import { BunContext } from "@effect/platform-bun"
import { Duration, Layer, Option } from "effect"
import { Supervisor, SupervisorLive } from "../../src/actors/Supervisor.js"
import { LlmConfig, type PlannerMode, type RunnerConfigShape, RunnerConfig } from "../../src/services/AppConfig.js"
import { databaseLayerFromUrl } from "../../src/services/Database.js"
import { EventLogSchema } from "../../src/services/EventLogSchema.js"
import { GlobalLlmPermits } from "../../src/services/GlobalLlmPermits.js"
import { InputResolvers } from "../../src/services/InputResolvers.js"
import { LlmClient } from "../../src/services/LlmClient.js"
import { MigrationsLive } from "../../src/services/Migrations.js"
import { MissionRunner } from "../../src/services/MissionRunner.js"
import { MissionStore } from "../../src/services/MissionStore.js"
import { PlannerLive } from "../../src/services/PlannerLive.js"
import { ToolCatalog } from "../../src/services/ToolCatalog.js"
import { WriteBack } from "../../src/services/WriteBack.js"
import type { BenchDatabase } from "./benchDatabase.js"

/** What the runner needs of the database: its own URL. */
export type RunnerDatabase = Pick<BenchDatabase, "runnerUrl">
import { type Recorder, timedLlm, timedRunner, timedStore } from "./probes.js"

/** DB_POOL_MAX's default: the bench measures the service as an operator would run it. */
export const POOL_MAX = 10

/** Pool + config, with the migrations applied before anything is handed out. */
export const baseLayer = (db: RunnerDatabase, config: Partial<RunnerConfigShape> = {}, poolMax = POOL_MAX) =>
  Layer.provideMerge(
    Layer.merge(MigrationsLive, EventLogSchema.Default),
    Layer.merge(
      // DB_PREPARED_STATEMENTS as the process reads it (AppConfig), so a bench run can compare both ways.
      databaseLayerFromUrl(db.runnerUrl, poolMax, { preparedStatements: process.env.DB_PREPARED_STATEMENTS !== "false" }),
      RunnerConfig.test(config),
    ),
  ).pipe(
    Layer.orDie,
  )

export const storeLayer = (db: RunnerDatabase, config: Partial<RunnerConfigShape> = {}) =>
  Layer.provideMerge(MissionStore.Default, baseLayer(db, config))

const llmConfigLayer = (url: string, plannerMode: PlannerMode = "tools") =>
  Layer.succeed(LlmConfig, {
    url: Option.some(url),
    apiKey: Option.none(),
    model: "bench-model",
    temperature: 0.3,
    requestTimeout: Duration.seconds(60),
    repairAttempts: 1,
    toolsFile: Option.none(),
    plannerMode,
    maxRounds: 3,
  })

/**
 * Everything but the supervisor (so a measurement can start it when it chooses). With a recorder, the
 * store, the LLM client and the runner are wrapped in its stopwatches (probes.ts); without one
 * (`undefined`: a measurement of the services' own CPU that reads no record) they are the services as
 * the process builds them.
 */
export const servicesLayer = (
  db: RunnerDatabase,
  config: Partial<RunnerConfigShape>,
  llmUrl: string,
  recorder: Recorder | undefined,
  plannerMode: PlannerMode = "tools",
) => {
  const platform = Layer.mergeAll(llmConfigLayer(llmUrl, plannerMode), FetchHttpClient.layer, BunContext.layer, baseLayer(db, config))
  const own = Layer.provideMerge(
    Layer.mergeAll(
      recorder === undefined ? MissionStore.Default : timedStore(recorder).pipe(Layer.provide(MissionStore.Default)),
      InputResolvers.Default,
      WriteBack.Default,
      GlobalLlmPermits.Default,
      ToolCatalog.Default,
    ),
    platform,
  )
  const llm = Layer.provideMerge(recorder === undefined ? LlmClient.Default : timedLlm.pipe(Layer.provide(LlmClient.Default)), own)
  const planner = Layer.provideMerge(PlannerLive, llm)
  const runner = recorder === undefined ? MissionRunner.Default : timedRunner(recorder).pipe(Layer.provide(MissionRunner.Default))
  return Layer.provideMerge(runner, planner).pipe(Layer.orDie)
}

/** The whole runner: discovery starts at once when tickEnabled. */
export const appLayer = (
  db: RunnerDatabase,
  config: Partial<RunnerConfigShape>,
  llmUrl: string,
  recorder: Recorder,
  plannerMode: PlannerMode = "tools",
) => Layer.provideMerge(SupervisorLive, servicesLayer(db, config, llmUrl, recorder, plannerMode))

export { Supervisor, SupervisorLive }
