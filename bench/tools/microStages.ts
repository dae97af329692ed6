/**
 * CPU per call of the pieces a run's transactions are made of (many at once, 64 in flight), to
 * tell the round trips from the work around them: `bun bench/tools/microStages.ts --calls=2000`.
 * `scope*` are transactions through @effect/sql's withTransaction (a round trip per statement, BEGIN
 * and COMMIT); `pipelined*` the same statements as a run sends them (pipelinedTransaction: 2 round trips).
 */
import { SqlClient } from "@effect/sql"
import { BunRuntime } from "@effect/platform-bun"
import { Context, Effect, Either, Layer, Logger, LogLevel } from "effect"
import { readCurrentMissionWithAgent, runReadQuery } from "../../src/services/currentMission.js"
import { EventLogSchema } from "../../src/services/EventLogSchema.js"
import { MissionStore } from "../../src/services/MissionStore.js"
import { pipelinedTransaction } from "../../src/services/pipelinedTransaction.js"
import { scopeStatement, withUserScope, withUserScopeFirst } from "../../src/services/withUserScope.js"
import { servicesLayer } from "../support/app.js"
import { DEFAULT_OWNER_URL, makeBenchDatabase } from "../support/benchDatabase.js"
import { startLlmStandIn } from "../support/llmStandIn.js"
import { makeRecorder } from "../support/probes.js"
import { seedDueMissions } from "../support/seed.js"

const calls = Number(process.argv.find((a) => a.startsWith("--calls="))?.slice(8) ?? 2000)
const CONCURRENCY = 64

const main = Effect.scoped(
  Effect.gen(function* () {
    const standIn = yield* startLlmStandIn(0)
    const db = yield* makeBenchDatabase(process.env.BENCH_OWNER_URL ?? DEFAULT_OWNER_URL)
    yield* seedDueMissions(db, { users: Math.ceil(calls / 5), missionsPerUser: 5, firstDueAt: Date.now() - 60_000, spreadMs: 0, withGoal: true })
    const ctx = yield* Layer.build(servicesLayer(db, { globalConcurrency: CONCURRENCY }, standIn.url, makeRecorder()))
    const store = Context.get(ctx, MissionStore)
    const sql = Context.get(ctx, SqlClient.SqlClient)
    const eventLog = Context.get(ctx, EventLogSchema)
    yield* store.refresh
    const due = (yield* store.due(new Date())).flatMap((s) => (Either.isRight(s.decoded) ? [{ userId: s.userId, mission: s.decoded.right }] : []))
    const perCall = <A, E>(f: (d: (typeof due)[number]) => Effect.Effect<A, E, SqlClient.SqlClient | EventLogSchema>) =>
      Effect.suspend(() => {
        const c0 = process.cpuUsage()
        return Effect.forEach(due, f, { concurrency: CONCURRENCY, discard: true }).pipe(
          Effect.provideService(SqlClient.SqlClient, sql),
          Effect.provideService(EventLogSchema, eventLog),
          Effect.orDie,
          Effect.map(() => {
            const c = process.cpuUsage(c0)
            return Math.round(((c.user + c.system) / 1000 / due.length) * 1000) / 1000
          }),
        )
      })
    const pieces: Record<string, Effect.Effect<number>> = {
      select1: perCall(() => sql`SELECT 1`),
      txSelect1: perCall(() => sql.withTransaction(sql`SELECT 1`)),
      scopeOnly: perCall((d) => withUserScopeFirst(d.userId, {}, () => Effect.void)),
      scopeSelect1: perCall((d) => withUserScope(d.userId, (s) => s`SELECT 1`)),
      scopeMissionQuery: perCall((d) =>
        withUserScope(d.userId, (s) => s`SELECT id::text AS id, app_id, table_name, record_id, user_id, op, data, field_meta AS field_timestamps, created_at FROM sync_changes WHERE user_id = ${d.userId} AND app_id = 'ai' AND table_name = 'aiMissions' AND record_id = ${d.mission.id} ORDER BY created_at, id`),
      ),
      scopeMissionRead: perCall((d) => withUserScope(d.userId, (s) => readCurrentMissionWithAgent(s, d.userId, d.mission.id, "x", "UTC"))),
      // The same two transactions as a run sends them (issue 16): BEGIN + statements in one round trip, then COMMIT.
      pipelinedScopeSelect1: perCall((d) => pipelinedTransaction(sql, [scopeStatement(sql, d.userId), sql`SELECT 1`])),
      pipelinedScopeMissionRead: perCall((d) =>
        pipelinedTransaction(sql, [scopeStatement(sql, d.userId), runReadQuery(sql, eventLog.timeColumn, d.userId, d.mission.id, [])]),
      ),
    }
    const out: Record<string, number> = {}
    for (const round of [0, 1]) {
      for (const [name, piece] of Object.entries(pieces)) {
        const v = yield* piece
        if (round === 1) out[name] = v
      }
    }
    yield* Effect.logWarning(`micro (ms CPU per call, ${due.length} calls): ${JSON.stringify(out)}`)
  }),
)

main.pipe(Logger.withMinimumLogLevel(LogLevel.Warning), Effect.withTracerEnabled(false), BunRuntime.runMain)
