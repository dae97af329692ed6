/**
 * The resident process, composed once for every mode (SPEC §8, §9). Build order is start-up order:
 * HTTP first (so /health answers and /ready says 503 at once), then the database and migrations,
 * then the services and the supervisor, and last the lifecycle that opens /internal and sets /ready.
 * Release runs the other way: /ready turns 503 ("draining"), the supervisor drains its runs within
 * SHUTDOWN_GRACE_MS, the pool closes, and only then the HTTP server stops.
 */
import type * as FileSystem from "@effect/platform/FileSystem"
import type * as HttpClient from "@effect/platform/HttpClient"
import type * as HttpServer from "@effect/platform/HttpServer"
import * as SqlClient from "@effect/sql/SqlClient"
import type * as PgClient from "@effect/sql-pg/PgClient"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import type * as Redacted from "effect/Redacted"
import { ClusterConfig } from "../cluster/ClusterConfig.js"
import { Ownership } from "../actors/Ownership.js"
import { Supervisor, SupervisorLive } from "../actors/Supervisor.js"
import { ApiLive } from "../http/Api.js"
import { FailureCaptureLive } from "../http/OperatorPage.js"
import { type ApiBackend, BackendError, type BreakerView, ServerState } from "../http/ServerState.js"
import {
  GrantConfig,
  LlmBreakerConfig,
  LlmConfig,
  RunnerConfig,
  TokenBudgetConfig,
} from "../services/AppConfig.js"
import { AgentDirectory } from "../services/AgentDirectory.js"
import { AgentPermits } from "../services/AgentPermits.js"
import { readAudit } from "../services/decryptAudit.js"
import { GrantKeyring } from "../services/GrantKeyring.js"
import { InputResolvers } from "../services/InputResolvers.js"
import { EventLogSchema } from "../services/EventLogSchema.js"
import { GlobalLlmPermits } from "../services/GlobalLlmPermits.js"
import { LlmBreaker } from "../services/LlmBreaker.js"
import { LlmClient } from "../services/LlmClient.js"
import { MigrationsLive } from "../services/Migrations.js"
import * as metrics from "../services/metrics.js"
import { MissionRunner } from "../services/MissionRunner.js"
import { MissionStore } from "../services/MissionStore.js"
import { PlannerLive, PlannerOffline } from "../services/PlannerLive.js"
import { ToolCatalog } from "../services/ToolCatalog.js"
import { TokenLedger, TokenUsagePruneLive } from "../services/TokenLedger.js"
import { readUserMissions } from "../services/userMissions.js"
import { WriteBack } from "../services/WriteBack.js"
import { memoryTrimLayer } from "./memoryTrim.js"
import type { StartupConfig } from "./startupConfig.js"

export type PlannerKind = "llm" | "offline"

export interface ProcessOptions {
  readonly config: StartupConfig
  readonly serviceKey: Redacted.Redacted<string>
  readonly version: string
  readonly planner: PlannerKind
  /** The runner's pool (SqlClient + PgClient as the runner role). Built after the HTTP server. */
  readonly database: Layer.Layer<SqlClient.SqlClient | PgClient.PgClient, unknown>
  /** Cluster mode (issue 19): which users this runner owns; built after the migrations, released after the drain. */
  readonly ownership?: Layer.Layer<Ownership, unknown, SqlClient.SqlClient>
  /** Who holds this process's run claims (cluster mode: known to the ownership layer too); default: a fresh id. */
  readonly instanceId?: string
  /** Runs once the migrations ran, before the supervisor starts (the embedded demo seed). */
  readonly afterMigrations?: Layer.Layer<never, unknown, SqlClient.SqlClient | EventLogSchema>
}

/** The loaded configuration as the services' config tags. */
const configLayer = (config: StartupConfig) =>
  Layer.mergeAll(
    // Cluster mode (issue 19): the store stamps snapshots with their shard, a claim takes the user's lease.
    Option.isSome(config.cluster) ? Layer.succeed(ClusterConfig, config.cluster.value) : Layer.empty,
    Layer.succeed(RunnerConfig, config.runner),
    Layer.succeed(LlmConfig, config.llm),
    Layer.succeed(GrantConfig, config.grant),
    Layer.succeed(TokenBudgetConfig, config.tokenBudget),
    Layer.succeed(LlmBreakerConfig, config.llmBreaker),
  )

/** Everything a run needs, on a SqlClient; the planner is the LLM one or the deterministic offline one. */
export const runnerServicesLayer = (planner: PlannerKind, instanceId?: string) => {
  const permits = GlobalLlmPermits.Default
  // SPEC §14: one breaker, one ledger and one set of agent permits per process, shared by every run.
  // AgentDirectory: the supervisor's discovery passes each user's agent changes to its actor.
  const agentServices = Layer.mergeAll(LlmBreaker.Default, TokenLedger.Default, AgentPermits.Default, AgentDirectory.Default)
  const plannerLayer =
    planner === "llm"
      ? PlannerLive.pipe(Layer.provide(LlmClient.Default), Layer.provide(permits), Layer.provide(agentServices))
      : PlannerOffline
  return (instanceId === undefined ? MissionRunner.Default : MissionRunner.withOptions({ instanceId })).pipe(
    Layer.provideMerge(Layer.mergeAll(MissionStore.Default, WriteBack.Default, InputResolvers.Default, plannerLayer, permits)),
    Layer.provideMerge(agentServices),
    Layer.provideMerge(ToolCatalog.Default),
  )
}

export const backendFor = (
  supervisor: Supervisor["Type"],
  sql: SqlClient.SqlClient,
  eventLog: EventLogSchema,
  /** DEFAULT_TIMEZONE: /internal/missions judges a mission without its own zone in it, as discovery does. */
  defaultTimezone: string,
  permits?: GlobalLlmPermits,
  breaker?: LlmBreaker,
  ledger?: TokenLedger,
  /** LLM_DAILY_TOKEN_BUDGET, shown beside the process's spend on the operator page. */
  processBudget: number | null = null,
  ownership?: Ownership["Type"],
): ApiBackend => ({
  ...(ownership === undefined ? {} : { cluster: ownership.view }),
  ...(permits === undefined ? {} : { llmRequestsInFlight: permits.inUse }),
  ...(breaker === undefined ? {} : { llmBreaker: breaker.state, breaker: Effect.map(breaker.state, (b): BreakerView => ({ ...b })) }),
  ...(ledger === undefined
    ? {}
    : {
        spentInWindow: (userId: string) =>
          ledger.spentInWindow({ _tag: "User", userId }).pipe(
            Effect.mapError(() => new BackendError({ reason: "the database did not answer; see the runner's log" })),
            Effect.tapErrorCause((cause) => Effect.logError("reading a user's token spend failed", cause)),
          ),
        // The page shows n/a rather than failing its whole poll when the sum cannot be read.
        tokensInWindow: ledger.spentInWindow({ _tag: "Process" }).pipe(
          Effect.map((spent) => ({ spent, budget: processBudget, windowHours: 24 })),
          Effect.orElseSucceed(() => null),
        ),
      }),
  tick: supervisor.tick,
  actors: supervisor.status,
  actorsUnordered: supervisor.statusUnordered,
  actorCensus: supervisor.census,
  restart: supervisor.restart,
  tickRunning: supervisor.tickRunning,
  missions: (userId) =>
    readUserMissions(userId, defaultTimezone).pipe(
      Effect.provideService(SqlClient.SqlClient, sql),
      Effect.provideService(EventLogSchema, eventLog),
      Effect.mapError(() => new BackendError({ reason: "the database did not answer; see the runner's log" })),
      Effect.tapErrorCause((cause) => Effect.logError("GET /internal/missions failed", cause)),
    ),
  audit: (userId, query) =>
    readAudit(userId, query).pipe(
      Effect.provideService(SqlClient.SqlClient, sql),
      Effect.mapError(() => new BackendError({ reason: "the database did not answer; see the runner's log" })),
      Effect.tapErrorCause((cause) => Effect.logError("GET /internal/audit failed", cause)),
    ),
})

/**
 * Every untagged series shows in /metrics from the start (at 0), so a scrape before the first run
 * already lists them and rate() has a starting point. Tagged families appear with their first tag.
 */
const MetricsRegistered = Layer.effectDiscard(
  Effect.all(
    [
      Metric.value(metrics.ticksTotal),
      Metric.value(metrics.tickOverlapsTotal),
      Metric.value(metrics.tickDuration),
      Metric.value(metrics.discoveryRowsRead),
      Metric.value(metrics.discoveryDuration),
      Metric.value(metrics.plansProducedTotal),
      Metric.value(metrics.plansWrittenBackTotal),
      Metric.value(metrics.parseFailuresTotal),
      Metric.value(metrics.llmRequestDuration),
      Metric.value(metrics.missionRunDuration),
      Metric.value(metrics.actorsGauge),
      Metric.value(metrics.quarantinedGauge),
      Metric.value(metrics.runsInFlightGauge),
      Metric.value(metrics.actorRestartsTotal),
      Metric.value(metrics.tokensUsedTotal),
      Metric.value(metrics.llmBreakerOpenGauge),
    ],
    { discard: true },
  ),
)

/** Built last: opens /internal, turns /ready to 200; released first: /ready turns 503 before the drain. */
const LifecycleLive = Layer.scopedDiscard(
  Effect.gen(function* () {
    const state = yield* ServerState
    const permits = Option.getOrUndefined(yield* Effect.serviceOption(GlobalLlmPermits))
    yield* state.provideBackend(
      backendFor(
        yield* Supervisor,
        yield* SqlClient.SqlClient,
        yield* EventLogSchema,
        (yield* RunnerConfig).defaultTimezone,
        permits,
        yield* LlmBreaker,
        yield* TokenLedger,
        Option.getOrNull((yield* TokenBudgetConfig).llmDailyTokens),
        Option.getOrUndefined(yield* Effect.serviceOption(Ownership)),
      ),
    )
    yield* state.setPhase("ready")
    yield* Effect.logInfo("mana-ai is ready")
    yield* Effect.addFinalizer(() =>
      state.setPhase("draining").pipe(Effect.zipRight(Effect.logInfo("shutting down: no new runs, draining runs in flight"))),
    )
  }),
)

/**
 * The whole process on a given HTTP server and platform (Bun in main, Node in tests): the server
 * layer must provide HttpServer, FileSystem (TOOLS_FILE) and an HttpClient (the LLM client).
 */
export const processLayer = <E, R>(
  options: ProcessOptions,
  platform: Layer.Layer<HttpServer.HttpServer | FileSystem.FileSystem | HttpClient.HttpClient, E, R>,
) => {
  // provideMerge builds its argument first: the seed runs after the migrations.
  const migrated =
    options.afterMigrations === undefined ? MigrationsLive : options.afterMigrations.pipe(Layer.provideMerge(MigrationsLive))
  return LifecycleLive.pipe(
    Layer.provideMerge(SupervisorLive),
    // Cluster mode: the shards are released only after the supervisor drained (issue 19).
    Layer.provideMerge(options.ownership ?? Layer.empty),
    // Token usage older than 48 h is pruned at start and periodically (SPEC §14).
    Layer.provideMerge(TokenUsagePruneLive),
    Layer.provideMerge(runnerServicesLayer(options.planner, options.instanceId)),
    // The input resolvers open Mission Grants with it (SPEC §15); it says once whether grants are on.
    Layer.provideMerge(GrantKeyring.Default),
    Layer.provideMerge(migrated),
    // Before anything touches sync_changes: which generation it is (a start without one stops here).
    Layer.provideMerge(EventLogSchema.Default),
    Layer.provideMerge(options.database),
    Layer.provideMerge(configLayer(options.config)),
    Layer.provideMerge(ApiLive),
    // The operator page's recent failures: from here on every failure logged is also kept in memory.
    Layer.provideMerge(FailureCaptureLive),
    Layer.provideMerge(
      ServerState.layer({
        serviceKey: options.serviceKey,
        tickEnabled: options.config.runner.tickEnabled,
        version: options.version,
      }),
    ),
    Layer.provideMerge(platform),
    // Built first, released last: the line that says the drain and every close are done.
    Layer.provideMerge(Layer.scopedDiscard(Effect.addFinalizer(() => Effect.logInfo("mana-ai stopped")))),
    Layer.provideMerge(MetricsRegistered),
    // Garbage of finished runs, and their compiled code unless MEMORY_TRIM_CODE=false, goes back to the
    // OS once the process is quiet, instead of waiting for JSC's next full collection.
    Layer.provideMerge(memoryTrimLayer({ dropCode: options.config.runner.memoryTrimCode })),
  )
}
