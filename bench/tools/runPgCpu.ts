/**
 * CPU per run of the runner and of its Postgres backends, with and without prepared statements
 * (`DB_PREPARED_STATEMENTS`), in alternating rounds in one process so the machine's changing speed
 * falls on both alike: `bun bench/tools/runPgCpu.ts --rounds=6 --runs=400 [--concurrency=16] [--mode=json]`.
 * Two copies of the services (each its own pool, one prepared, one not) on one database; each round runs
 * `--runs` due missions (MissionRunner.run called directly, LLM 0 ms) through one of them, 16 at a
 * time, and reads this process's CPU and the runner role's backends' CPU over the round.
 */
import { BunRuntime } from "@effect/platform-bun"
import { SqlClient } from "@effect/sql/SqlClient"
import { Context, Effect, Either, Layer, Logger, LogLevel, Redacted } from "effect"
import type { PlannerMode } from "../../src/services/AppConfig.js"
import { MissionRunner } from "../../src/services/MissionRunner.js"
import { MissionStore } from "../../src/services/MissionStore.js"
import { servicesLayer } from "../support/app.js"
import { DEFAULT_OWNER_URL, makeBenchDatabase } from "../support/benchDatabase.js"
import { startRoleBackendsCpu } from "../support/cpu.js"
import { startLlmStandIn } from "../support/llmStandIn.js"
import { makeRecorder } from "../support/probes.js"
import { seedDueMissions } from "../support/seed.js"

const option = (name: string, fallback: string) => process.argv.find((a) => a.startsWith(`--${name}=`))?.split("=")[1] ?? fallback
const rounds = Number(option("rounds", "6"))
const runs = Number(option("runs", "400"))
const concurrency = Number(option("concurrency", "16"))
const mode = option("mode", "json") as PlannerMode
const WARM = 300

/** Builds the services with DB_PREPARED_STATEMENTS as given (bench/support/app.ts reads it at layer build). */
const servicesWith = (prepared: boolean, db: Parameters<typeof servicesLayer>[0], url: string) =>
  Effect.suspend(() => {
    process.env.DB_PREPARED_STATEMENTS = String(prepared)
    return Layer.build(servicesLayer(db, { globalConcurrency: concurrency }, url, makeRecorder(), mode))
  })

const main = Effect.scoped(
  Effect.gen(function* () {
    const standIn = yield* startLlmStandIn(0)
    const db = yield* makeBenchDatabase(process.env.BENCH_OWNER_URL ?? DEFAULT_OWNER_URL)
    const total = 2 * WARM + rounds * runs
    yield* seedDueMissions(db, { users: Math.ceil(total / 5), missionsPerUser: 5, firstDueAt: Date.now() - 60_000, spreadMs: 0, withGoal: true })
    const ways = [
      { name: "prepared", ctx: yield* servicesWith(true, db, standIn.url) },
      { name: "unprepared", ctx: yield* servicesWith(false, db, standIn.url) },
    ]
    const store = Context.get(ways[0]!.ctx, MissionStore)
    yield* store.refresh
    const due = (yield* store.due(new Date())).flatMap((s) => (Either.isRight(s.decoded) ? [{ userId: s.userId, mission: s.decoded.right }] : []))
    let next = 0
    const take = (n: number) => {
      const batch = due.slice(next, next + n)
      next += n
      return batch
    }
    const runAll = (ctx: Context.Context<MissionRunner>, batch: ReturnType<typeof take>) =>
      Effect.forEach(batch, (d) => Context.get(ctx, MissionRunner).run(d), { concurrency }).pipe(Effect.orDie)
    for (const way of ways) yield* runAll(way.ctx as Context.Context<MissionRunner>, take(WARM))
    const sums = new Map<string, { runs: number; own: number; pg: number; written: number }>()
    for (let r = 0; r < rounds; r++) {
      const way = ways[r % 2 === 0 ? (Math.floor(r / 2) % 2) : 1 - (Math.floor(r / 2) % 2)]!
      const batch = take(runs)
      const stopPg = yield* Effect.promise(() => startRoleBackendsCpu(Redacted.value(db.runnerUrl)))
      const cpu0 = process.cpuUsage()
      const outcomes = yield* runAll(way.ctx as Context.Context<MissionRunner>, batch)
      const cpu = process.cpuUsage(cpu0)
      const pg = yield* Effect.promise(stopPg)
      const written = outcomes.filter((o) => o._tag === "Written").length
      const own = (cpu.user + cpu.system) / 1000
      const s = sums.get(way.name) ?? { runs: 0, own: 0, pg: 0, written: 0 }
      sums.set(way.name, { runs: s.runs + batch.length, own: s.own + own, pg: s.pg + pg * 1000, written: s.written + written })
      console.log(
        `round ${r + 1} ${way.name.padEnd(10)} ${written}/${batch.length} written; runner ${(own / batch.length).toFixed(3)} ms, postgres ${((pg * 1000) / batch.length).toFixed(3)} ms CPU per run`,
      )
    }
    // How Postgres planned the prepared statements on one of the prepared pool's connections.
    const sql = Context.get(ways[0]!.ctx as Context.Context<SqlClient>, SqlClient)
    const statements = yield* sql<{ generic: number; custom: number; statement: string }>`
      SELECT generic_plans::int AS generic, custom_plans::int AS custom, statement FROM pg_prepared_statements
      WHERE name LIKE 'mana_ai_%' ORDER BY name`.pipe(Effect.orDie)
    for (const p of statements) console.log(`  generic ${p.generic}, custom ${p.custom}: ${p.statement.replace(/\s+/g, " ").trim().slice(0, 100)}`)
    for (const [name, s] of sums) {
      console.log(`${name.padEnd(10)} runner ${(s.own / s.runs).toFixed(3)} ms, postgres ${(s.pg / s.runs).toFixed(3)} ms CPU per run (${s.written}/${s.runs} written)`)
    }
  }),
)

main.pipe(Logger.withMinimumLogLevel(LogLevel.Warning), Effect.withTracerEnabled(false), BunRuntime.runMain)
