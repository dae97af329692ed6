/**
 * A CPU profile of whole runs (MissionRunner.run called directly, as the stages figure does, LLM 0 ms,
 * tools mode): seeds, warms up (`--warm=N` runs, default 500), then runs `--runs=N` missions 64 at a time and prints this process's
 * CPU per run and per SELECT 1. The services are built without the bench's stopwatches (probes.ts), as the
 * stages figure builds them; `--probes` wraps them as the throughput and precision parts do. Run it under the profiler:
 *
 *   bun --cpu-prof --cpu-prof-md --cpu-prof-dir=/tmp/prof bench/tools/profileRun.ts --runs=3000
 *
 * The "measuring … at T0" and "measured at T1" lines on stderr give the measured window in epoch ms
 * (a .cpuprofile's startTime is in epoch µs): `bench/tools/profileWindow.ts` sums the samples between them.
 */
import { SqlClient } from "@effect/sql"
import { BunRuntime } from "@effect/platform-bun"
import { Context, Effect, Either, Layer, Logger, LogLevel } from "effect"
import { MissionRunner } from "../../src/services/MissionRunner.js"
import { MissionStore } from "../../src/services/MissionStore.js"
import { servicesLayer } from "../support/app.js"
import { DEFAULT_OWNER_URL, makeBenchDatabase } from "../support/benchDatabase.js"
import { startLlmStandIn } from "../support/llmStandIn.js"
import { makeRecorder } from "../support/probes.js"
import { seedDueMissions } from "../support/seed.js"

const runs = Number(process.argv.find((a) => a.startsWith("--runs="))?.slice(7) ?? 3000)
const warmRuns = Number(process.argv.find((a) => a.startsWith("--warm="))?.slice(7) ?? 500)
const CONCURRENCY = 64

const main = Effect.scoped(
  Effect.gen(function* () {
    const standIn = yield* startLlmStandIn(0)
    const db = yield* makeBenchDatabase(process.env.BENCH_OWNER_URL ?? DEFAULT_OWNER_URL)
    yield* seedDueMissions(db, { users: Math.ceil((runs + warmRuns) / 5), missionsPerUser: 5, firstDueAt: Date.now() - 60_000, spreadMs: 0, withGoal: true })
    const ctx = yield* Layer.build(servicesLayer(db, { globalConcurrency: CONCURRENCY }, standIn.url, process.argv.includes("--probes") ? makeRecorder() : undefined))
    const store = Context.get(ctx, MissionStore)
    const sql = Context.get(ctx, SqlClient.SqlClient)
    const runner = Context.get(ctx, MissionRunner)
    yield* store.refresh
    const all = (yield* store.due(new Date())).flatMap((s) => (Either.isRight(s.decoded) ? [{ userId: s.userId, mission: s.decoded.right }] : []))
    const warm = all.slice(0, warmRuns)
    const measured = all.slice(warmRuns, warmRuns + runs)
    yield* Effect.forEach(warm, (d) => runner.run(d), { concurrency: CONCURRENCY, discard: true }).pipe(Effect.orDie)
    const perCall = <A, E>(items: ReadonlyArray<unknown>, f: (i: number) => Effect.Effect<A, E>) =>
      Effect.suspend(() => {
        const c0 = process.cpuUsage()
        return Effect.forEach(items, (_, i) => f(i), { concurrency: CONCURRENCY, discard: true }).pipe(
          Effect.orDie,
          Effect.map(() => {
            const c = process.cpuUsage(c0)
            return (c.user + c.system) / 1000 / items.length
          }),
        )
      })
    const select1Before = yield* perCall(measured, () => sql`SELECT 1`)
    // On stderr, for a profiler attached from outside (e.g. `perf record -p <pid>`) to start with the measured runs.
    process.stderr.write(`measuring ${measured.length} runs (pid ${process.pid}) at ${Date.now()}\n`)
    const run = yield* perCall(measured, (i) => runner.run(measured[i]!))
    process.stderr.write(`measured at ${Date.now()}\n`)
    const select1 = yield* perCall(measured, () => sql`SELECT 1`)
    yield* Effect.logWarning(
      `runs ${measured.length}: ${run.toFixed(3)} ms CPU per run, ${select1.toFixed(3)} ms per SELECT 1 after the runs (${select1Before.toFixed(3)} before), ratio ${(run / select1).toFixed(1)}`,
    )
  }),
)

main.pipe(Logger.withMinimumLogLevel(LogLevel.Warning), Effect.withTracerEnabled(false), BunRuntime.runMain)
