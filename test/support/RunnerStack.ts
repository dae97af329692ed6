/**
 * The run pipeline as the process composes it (src/layers/process.ts runnerServicesLayer), on the
 * test database as the runner role, with the LLM planner talking HTTP to the stand-in: real
 * MissionStore, InputResolvers, Planner, LlmClient, WriteBack and MissionRunner, nothing doubled.
 *
 *   const Stack = runnerStack({ missionTimeout: "4 seconds", llmTimeout: "1 second" })
 *   it.layer(Stack)("…", (it) => { … yield* runDue(user, missionId) … })
 */
import { FetchHttpClient } from "@effect/platform"
import type { SqlClient } from "@effect/sql"
import type { PgClient } from "@effect/sql-pg"
import { NodeContext } from "@effect/platform-node"
import { Duration, Effect, Either, Layer, LogLevel, Logger } from "effect"
import type { Mission } from "../../src/domain/mission.js"
import { runnerServicesLayer } from "../../src/layers/process.js"
import {
  LlmBreakerConfig,
  type PlannerMode,
  RunnerConfig,
  type RunnerConfigShape,
  TokenBudgetConfig,
  type TokenBudgetConfigShape,
} from "../../src/services/AppConfig.js"
import { EventLogSchema } from "../../src/services/EventLogSchema.js"
import { MigrationsLive } from "../../src/services/Migrations.js"
import { MissionRunner, type RunOutcome } from "../../src/services/MissionRunner.js"
import { MissionStore, type MissionSnapshot } from "../../src/services/MissionStore.js"
import { LlmStandIn, llmConfigFor } from "./LlmStandIn.js"
import { RunnerSqlLive, TestDatabase, TestDatabaseLive } from "./TestDatabase.js"

export interface StackOptions<R = TestDatabase> {
  readonly missionTimeout?: Duration.DurationInput
  readonly llmTimeout?: Duration.DurationInput
  readonly repairAttempts?: number
  /** Default tools (the product's default); json for tests that script fenced answers. */
  readonly plannerMode?: PlannerMode
  readonly poolSize?: number
  readonly runner?: Partial<RunnerConfigShape>
  /** The runner's pool; default RunnerSqlLive(poolSize) straight to the test database. */
  readonly sql?: Layer.Layer<SqlClient.SqlClient | PgClient.PgClient, unknown, R>
  /** USER_DAILY_TOKEN_BUDGET / LLM_DAILY_TOKEN_BUDGET; default none. */
  readonly tokenBudget?: Partial<TokenBudgetConfigShape>
  /** LLM_BREAKER_FAILURES; default 10. */
  readonly breakerFailures?: number
  /** Default Warning: the pipeline's info lines would drown the test output. */
  readonly logLevel?: LogLevel.LogLevel
}

/** The runner's services over a pool; needs TestDatabase and LlmStandIn. */
export const runnerServices = <R = TestDatabase>(options: StackOptions<R> = {}) => {
  const runnerConfig = RunnerConfig.test({
    missionTimeout: Duration.decode(options.missionTimeout ?? "5 seconds"),
    ...options.runner,
  })
  const llmConfig = Layer.unwrapEffect(
    Effect.map(LlmStandIn, (standIn) =>
      llmConfigFor(standIn, {
        requestTimeout: Duration.decode(options.llmTimeout ?? "2 seconds"),
        repairAttempts: options.repairAttempts ?? 1,
        plannerMode: options.plannerMode ?? "tools",
      }),
    ),
  )
  const sql: Layer.Layer<SqlClient.SqlClient | PgClient.PgClient, unknown, R | TestDatabase> =
    options.sql ?? RunnerSqlLive(options.poolSize ?? 6)
  return runnerServicesLayer("llm").pipe(
    Layer.provideMerge(MigrationsLive),
    // The generation of sync_changes, detected on the pool as the process does at start.
    Layer.provideMerge(
      Layer.mergeAll(
        EventLogSchema.Default.pipe(Layer.provideMerge(sql)),
        runnerConfig,
        llmConfig,
        FetchHttpClient.layer,
        NodeContext.layer,
        Layer.succeed(TokenBudgetConfig, { ...TokenBudgetConfig.none, ...options.tokenBudget }),
        Layer.succeed(LlmBreakerConfig, { failures: options.breakerFailures ?? 10 }),
      ),
    ),
    Layer.provide(Logger.minimumLogLevel(options.logLevel ?? LogLevel.Warning)),
  )
}

/** Database + stand-in + the runner's services, for it.layer. */
export const runnerStack = (options: StackOptions = {}) =>
  runnerServices(options).pipe(Layer.provideMerge(Layer.merge(TestDatabaseLive, LlmStandIn.layer)))

/** Refreshes discovery and returns the snapshot of one mission (dies when it is not there). */
export const snapshotOf = (userId: string, missionId: string) =>
  Effect.gen(function* () {
    const store = yield* MissionStore
    yield* store.refresh
    const snapshots = yield* store.forUser(userId)
    const s = snapshots.find((x) => x.missionId === missionId)
    if (s === undefined) return yield* Effect.dieMessage(`mission ${missionId} of ${userId} not discovered`)
    return s
  })

export const missionOf = (snapshot: MissionSnapshot): Mission =>
  Either.getOrElse(snapshot.decoded, (reason) => {
    throw new Error(`mission ${snapshot.missionId} does not decode: ${reason}`)
  })

/** Discovers one mission and runs it once through the real MissionRunner; the outcome or the error as Either. */
export const runOnce = (userId: string, missionId: string) =>
  Effect.gen(function* () {
    const snapshot = yield* snapshotOf(userId, missionId)
    const runner = yield* MissionRunner
    return yield* Effect.either(runner.run({ userId, mission: missionOf(snapshot) }))
  })

export type RunResult = Either.Either<RunOutcome, { readonly _tag: string }>

/** The owner's view: sync_changes rows the runner wrote for one mission. */
export const runnerRowCount = (userId: string, missionId: string) =>
  Effect.flatMap(TestDatabase, (db) =>
    Effect.promise(async () => {
      const rows = await db.ownerQuery(
        `SELECT count(*)::int AS n FROM sync_changes
         WHERE user_id = $1 AND app_id = 'ai' AND table_name = 'aiMissions' AND record_id = $2 AND client_id = 'mana-ai-runner'`,
        [userId, missionId],
      )
      return Number(rows[0]?.n ?? 0)
    }),
  )

