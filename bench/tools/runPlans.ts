/**
 * What each statement of a run costs Postgres, planning against execution: `bun bench/tools/runPlans.ts
 * --runs=50 [--repeat=20]`. Runs whole runs (MissionRunner.run, tools mode, LLM 0 ms) as
 * runStatements.ts does and keeps the statements and parameters of the last run's pipelined
 * transactions; then replays each transaction `--repeat` times as the runner role, every statement
 * under `EXPLAIN (ANALYZE, SUMMARY)` (in order, so the scope and locks the first statement sets hold for
 * the next), and rolls it back. Prints each statement's median planning and execution time (server-side,
 * ms) and the plan of its last replay with `--plans`.
 */
import { BunRuntime } from "@effect/platform-bun"
import { Context, Effect, Either, Layer, Logger, LogLevel, Redacted } from "effect"
import Pg from "pg"
import { MissionRunner } from "../../src/services/MissionRunner.js"
import { MissionStore } from "../../src/services/MissionStore.js"
import { servicesLayer } from "../support/app.js"
import { DEFAULT_OWNER_URL, makeBenchDatabase } from "../support/benchDatabase.js"
import { startLlmStandIn } from "../support/llmStandIn.js"
import { makeRecorder } from "../support/probes.js"
import { seedDueMissions } from "../support/seed.js"

const option = (name: string, fallback: number) => Number(process.argv.find((a) => a.startsWith(`--${name}=`))?.split("=")[1] ?? fallback)
const runs = option("runs", 50)
const repeat = option("repeat", 20)
const showPlans = process.argv.includes("--plans")
/** Each statement prepared (SQL PREPARE) and explained as EXECUTE under `plan_cache_mode = force_generic_plan`. */
const generic = process.argv.includes("--generic")

type Statements = ReadonlyArray<readonly [string, ReadonlyArray<unknown>]>
let capturing = false
const captured: Array<Statements> = []
const query = Pg.Client.prototype.query
Pg.Client.prototype.query = function (this: Pg.Client, config: unknown, ...rest: Array<unknown>) {
  const statements = (config as { statements?: Statements } | null)?.statements
  if (capturing && Array.isArray(statements)) captured.push(statements)
  return (query as (...a: Array<unknown>) => unknown).call(this, config, ...rest)
} as typeof query

const median = (xs: ReadonlyArray<number>) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? Number.NaN

const main = Effect.scoped(
  Effect.gen(function* () {
    const standIn = yield* startLlmStandIn(0)
    const db = yield* makeBenchDatabase(process.env.BENCH_OWNER_URL ?? DEFAULT_OWNER_URL)
    yield* seedDueMissions(db, { users: Math.ceil((runs + 10) / 5), missionsPerUser: 5, firstDueAt: Date.now() - 60_000, spreadMs: 0, withGoal: true })
    yield* db.ownerQuery("ANALYZE")
    const ctx = yield* Layer.build(servicesLayer(db, { globalConcurrency: 1 }, standIn.url, makeRecorder()))
    const store = Context.get(ctx, MissionStore)
    const runner = Context.get(ctx, MissionRunner)
    yield* store.refresh
    const all = (yield* store.due(new Date())).flatMap((s) => (Either.isRight(s.decoded) ? [{ userId: s.userId, mission: s.decoded.right }] : []))
    yield* Effect.forEach(all.slice(0, runs - 1), (d) => runner.run(d), { discard: true }).pipe(Effect.orDie)
    capturing = true
    const last = all[runs - 1]
    if (last !== undefined) yield* runner.run(last).pipe(Effect.orDie)
    capturing = false
    const client = new Pg.Client({ connectionString: Redacted.value(db.runnerUrl) })
    client.on("error", () => {})
    yield* Effect.promise(() => client.connect())
    for (const [t, sequence] of captured.entries()) {
      const byStatement = new Map<number, { plan: Array<number>; exec: Array<number>; text: string; last: string }>()
      for (let r = 0; r < repeat; r++) {
        yield* Effect.promise(() => client.query("BEGIN"))
        for (const [i, [text, values]] of sequence.entries()) {
          if (/^\s*BEGIN\s*$/i.test(text)) continue
          if (/^\s*SET LOCAL/i.test(text)) {
            yield* Effect.promise(() => client.query(text, values as Array<unknown>))
            continue
          }
          if (generic && r === 0) {
            yield* Effect.promise(() => client.query(`PREPARE p${t}_${i} AS ${text}`))
          }
          if (generic) yield* Effect.promise(() => client.query("SET LOCAL plan_cache_mode = force_generic_plan"))
          const explainedText = generic
            ? `EXPLAIN (ANALYZE, SUMMARY, FORMAT JSON) EXECUTE p${t}_${i}(${values.map((v) => (v === null ? "NULL" : client.escapeLiteral(typeof v === "object" ? JSON.stringify(v) : String(v)))).join(", ")})`
            : `EXPLAIN (ANALYZE, SUMMARY, FORMAT JSON) ${text}`
          const result = yield* Effect.promise(() => client.query(explainedText, generic ? [] : (values as Array<unknown>)))
          const explained = (result.rows[0] as { "QUERY PLAN": Array<{ "Planning Time": number; "Execution Time": number; Plan: unknown }> })["QUERY PLAN"][0]!
          const e = byStatement.get(i) ?? { plan: [], exec: [], text: text.replace(/\s+/g, " ").trim().slice(0, 110), last: "" }
          e.plan.push(explained["Planning Time"])
          e.exec.push(explained["Execution Time"])
          e.last = JSON.stringify(explained.Plan, null, 1)
          byStatement.set(i, e)
        }
        yield* Effect.promise(() => client.query("ROLLBACK"))
      }
      console.log(`transaction ${t + 1}:`)
      for (const e of byStatement.values()) {
        console.log(`  plan ${median(e.plan).toFixed(3)} ms  exec ${median(e.exec).toFixed(3)} ms  ${e.text}`)
        if (showPlans) console.log(e.last)
      }
    }
    yield* Effect.promise(() => client.end())
  }),
)

main.pipe(
  Effect.catchAllDefect((defect) => Effect.sync(() => console.error("runPlans failed:", defect))),Logger.withMinimumLogLevel(LogLevel.Warning), Effect.withTracerEnabled(false), BunRuntime.runMain)
