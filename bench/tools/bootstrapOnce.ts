/**
 * One first discovery (and optionally one burst) of a seeded mission history, nothing else, with the
 * CPU of this process (the store) and of the database's postgres backends beside the wall time: for
 * profiling the cold start (issue 16 item 3) without the rest of the discovery measurement.
 *
 *   bun bench/tools/bootstrapOnce.ts --rows=200000 [--burst [--seed-parts=2]]
 *   bun --cpu-prof --cpu-prof-md --cpu-prof-dir=/tmp/prof bench/tools/bootstrapOnce.ts --rows=200000
 */
import { BunRuntime } from "@effect/platform-bun"
import { Context, Effect, Layer, Logger, LogLevel } from "effect"
import { MissionStore } from "../../src/services/MissionStore.js"
import { seedMissionBurst, withPartyCpu } from "../measure/discovery.js"
import { storeLayer } from "../support/app.js"
import { DEFAULT_OWNER_URL, makeBenchDatabase } from "../support/benchDatabase.js"
import { seedMissionHistory } from "../support/seed.js"
import { nowMs, round } from "../support/stats.js"

const option = (name: string) => process.argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3)
const rows = Number(option("rows") ?? 200_000)
const burst = process.argv.includes("--burst")
/** The burst's rows by this many INSERTs at once (the full run's discovery part uses 2). */
const seedParts = Number(option("seed-parts") ?? 1)
/** An experiment: a CHECKPOINT between the burst's seed and its pass, so the pass does not write out the seed's dirty pages. */
const checkpointFirst = process.argv.includes("--checkpoint-first")

const main = Effect.scoped(
  Effect.gen(function* () {
    const db = yield* makeBenchDatabase(process.env.BENCH_OWNER_URL ?? DEFAULT_OWNER_URL)
    const timed = <A, E, R>(what: string, effect: Effect.Effect<A, E, R>) =>
      Effect.gen(function* () {
        const t0 = nowMs()
        const [a, cpu] = yield* withPartyCpu(db, effect)
        const ms = nowMs() - t0
        console.log(
          `${what}: ${round(ms / 1000, 2)} s wall, Bun ${cpu.bunCpuSeconds} s, postgres ${cpu.postgresCpuSeconds} s CPU; autovacuum workers seen ${cpu.autovacuumWorkersSeen}, runs ${cpu.autovacuumRuns}; server: checkpoints ${cpu.serverCheckpoints}, buffers written by backends ${cpu.serverBuffersWrittenByBackends}`,
        )
        return a
      })
    if (burst) yield* seedMissionHistory(db, { rows: 100, rowsPerMission: 20, endingSecondsAgo: 600 })
    else yield* seedMissionHistory(db, { rows, rowsPerMission: 20, endingSecondsAgo: 600 })
    const ctx = yield* Layer.build(storeLayer(db))
    const store = Context.get(ctx, MissionStore)
    if (burst) {
      yield* store.refresh
      const t0 = nowMs()
      yield* seedMissionBurst(db, rows, 20, 60, seedParts)
      console.log(`burst seeded by ${seedParts} INSERT(s) at once in ${round((nowMs() - t0) / 1000, 1)} s`)
      if (checkpointFirst) yield* db.ownerQuery("CHECKPOINT")
    }
    const r = yield* timed(burst ? `burst ${rows}` : `bootstrap ${rows}`, store.refresh)
    console.log(`rows read ${r.rowsRead} on ${r.parts ?? 1} connection(s), missions changed ${r.changed.length}`)
  }),
)

BunRuntime.runMain(main.pipe(Effect.orDie, Logger.withMinimumLogLevel(LogLevel.Warning)))
