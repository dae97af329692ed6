/**
 * CPU of a run and of discovery as a mission's history grows (issue 16): `--missions=N` missions (one
 * per user) run `--rounds=R` times each, made due again before each round by a device's update, as
 * the process-memory figure does. Each round: one discovery pass (store.refresh: the device's updates
 * and whatever the runner's own rows cost it), then every mission's run (MissionRunner.run called
 * directly, 64 at a time, LLM 0 ms, json mode). Prints this process's CPU (utime + stime) per run for
 * both parts, per round, and the rows the pass read.
 *
 *   bun bench/tools/historyRuns.ts --missions=300 --rounds=30
 */
import { BunRuntime } from "@effect/platform-bun"
import { Context, Effect, Either, Layer, Logger, LogLevel } from "effect"
import { MissionRunner } from "../../src/services/MissionRunner.js"
import { MissionStore } from "../../src/services/MissionStore.js"
import { servicesLayer } from "../support/app.js"
import { DEFAULT_OWNER_URL, makeBenchDatabase } from "../support/benchDatabase.js"
import { startLlmStandIn } from "../support/llmStandIn.js"
import { makeRecorder } from "../support/probes.js"
import { missionsDueAgain } from "../support/seed.js"

const option = (name: string, fallback: number) => Number(process.argv.find((a) => a.startsWith(`--${name}=`))?.split("=")[1] ?? fallback)
const missions = option("missions", 300)
const rounds = option("rounds", 30)
const CONCURRENCY = 64
const nowMs = () => performance.now()

const cpuMs = () => {
  const c = process.cpuUsage()
  return (c.user + c.system) / 1000
}

const main = Effect.scoped(
  Effect.gen(function* () {
    const standIn = yield* startLlmStandIn(0)
    const db = yield* makeBenchDatabase(process.env.BENCH_OWNER_URL ?? DEFAULT_OWNER_URL)
    const ctx = yield* Layer.build(servicesLayer(db, { globalConcurrency: CONCURRENCY }, standIn.url, makeRecorder(), "json"))
    const store = Context.get(ctx, MissionStore)
    const runner = Context.get(ctx, MissionRunner)
    for (let round = 1; round <= rounds; round++) {
      yield* missionsDueAgain(db, "h", "History mission", round, missions)
      const t0 = nowMs()
      const c0 = cpuMs()
      const pass = yield* store.refresh
      const c1 = cpuMs()
      const due = (yield* store.due(new Date())).flatMap((s) =>
        Either.isRight(s.decoded) ? [{ userId: s.userId, mission: s.decoded.right }] : [],
      )
      const c2 = cpuMs()
      const outcomes = yield* Effect.forEach(due, (d) => runner.run(d), { concurrency: CONCURRENCY }).pipe(Effect.orDie)
      const c3 = cpuMs()
      const written = outcomes.filter((o) => o._tag === "Written").length
      // What a write-back carries by now (SPEC §6: every iteration, after appending): the round's runner rows.
      const [size] = yield* db.ownerQuery(
        `SELECT round(avg(octet_length(data::text))) AS bytes FROM sync_changes WHERE client_id = 'mana-ai-runner' AND created_at > now() - interval '1 second' * $1`,
        [Math.ceil((nowMs() - t0) / 1000) + 1],
      )
      const line = `round ${round}: ${written} written (rows of ${size?.bytes ?? "?"} B); discovery read ${pass.rowsRead} rows, ${((c1 - c0) / Math.max(1, written)).toFixed(3)} ms CPU per run; due read ${((c2 - c1) / Math.max(1, written)).toFixed(3)} ms; run ${((c3 - c2) / Math.max(1, written)).toFixed(3)} ms CPU per run`
      yield* Effect.logWarning(line)
    }
  }),
)

main.pipe(Logger.withMinimumLogLevel(LogLevel.Warning), Effect.withTracerEnabled(false), BunRuntime.runMain)
