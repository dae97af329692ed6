/**
 * What a run pays on a connection the pool has just opened (a fresh Postgres backend: connect,
 * start-up, empty catalog caches) against one it has used before. The pool (pg-pool under
 * @effect/sql-pg) hands out its most recently released connection and closes one idle for 10 s
 * (its default `idleTimeoutMillis`), so at a low, uneven rate of runs the connections beyond the
 * usual few are closed and opened again at the next burst.
 *
 *   bun bench/tools/coldConnection.ts --pairs=100
 *
 * Runs missions one at a time (LLM stand-in at 0 ms, tools mode), alternating: a warm run, then a
 * run after the runner role's backends were ended from the owner's connection (the pool drops its
 * idle client on the error and opens a new one for the run). Prints each kind's wall time per run.
 */
import { BunRuntime } from "@effect/platform-bun"
import { Context, Effect, Either, Layer, Logger, LogLevel } from "effect"
import { MissionRunner } from "../../src/services/MissionRunner.js"
import { MissionStore } from "../../src/services/MissionStore.js"
import { servicesLayer } from "../support/app.js"
import { DEFAULT_OWNER_URL, makeBenchDatabase } from "../support/benchDatabase.js"
import { startLlmStandIn } from "../support/llmStandIn.js"
import { makeRecorder } from "../support/probes.js"
import { seedDueMissions } from "../support/seed.js"
import { nowMs, round, summarize } from "../support/stats.js"

const pairs = Number(process.argv.find((a) => a.startsWith("--pairs="))?.slice(8) ?? 100)

const main = Effect.scoped(
  Effect.gen(function* () {
    const standIn = yield* startLlmStandIn(0)
    const db = yield* makeBenchDatabase(process.env.BENCH_OWNER_URL ?? DEFAULT_OWNER_URL)
    yield* seedDueMissions(db, { users: Math.ceil((2 * pairs + 20) / 5), missionsPerUser: 5, firstDueAt: Date.now() - 60_000, spreadMs: 0, withGoal: true })
    const ctx = yield* Layer.build(servicesLayer(db, {}, standIn.url, makeRecorder()))
    const store = Context.get(ctx, MissionStore)
    const runner = Context.get(ctx, MissionRunner)
    yield* store.refresh
    const all = (yield* store.due(new Date())).flatMap((s) => (Either.isRight(s.decoded) ? [{ userId: s.userId, mission: s.decoded.right }] : []))
    const role = db.runnerRole
    const endBackends = db.ownerQuery(
      "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'mana-ai'",
    )
    const timed = (i: number) =>
      Effect.suspend(() => {
        const t0 = nowMs()
        return Effect.map(runner.run(all[i]!), () => nowMs() - t0)
      }).pipe(Effect.orDie)
    for (let i = 0; i < 10; i++) yield* timed(i)
    const warm: Array<number> = []
    const cold: Array<number> = []
    for (let p = 0; p < pairs; p++) {
      warm.push(yield* timed(10 + 2 * p))
      yield* endBackends
      yield* Effect.sleep("50 millis")
      cold.push(yield* timed(11 + 2 * p))
    }
    const show = (xs: Array<number>) => {
      const s = summarize(xs)
      return `p50 ${round(s.p50, 1)} p90 ${round(s.p90, 1)} p99 ${round(s.p99, 1)} max ${round(s.max, 1)} mean ${round(s.mean, 1)} ms`
    }
    yield* Effect.logWarning(`role ${role}: warm runs ${show(warm)}`)
    yield* Effect.logWarning(`role ${role}: runs on a new connection ${show(cold)}`)
  }),
)

main.pipe(Logger.withMinimumLogLevel(LogLevel.Warning), Effect.withTracerEnabled(false), BunRuntime.runMain)
