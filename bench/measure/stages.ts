/**
 * Where a run's CPU goes, to explain the throughput figure: each step of a run called directly on
 * the real services (no actors, LLM latency 0), many at once as under load, and this process's CPU
 * per call. The whole run (MissionRunner.run) comes first, then its parts one by one.
 */
import { EventLogSchema } from "../../src/services/EventLogSchema.js"
import { SqlClient } from "@effect/sql"
import { Context, Duration, Effect, Either, Layer } from "effect"
import { iterationIdFor, plannedIteration } from "../../src/domain/iteration.js"
import { InputResolvers } from "../../src/services/InputResolvers.js"
import { LlmClient } from "../../src/services/LlmClient.js"
import { MissionRunner } from "../../src/services/MissionRunner.js"
import { MissionStore } from "../../src/services/MissionStore.js"
import { Planner } from "../../src/services/Planner.js"
import { WriteBack } from "../../src/services/WriteBack.js"
import { readCurrentMission } from "../../src/services/currentMission.js"
import { withUserScope } from "../../src/services/withUserScope.js"
import { servicesLayer } from "../support/app.js"
import { makeBenchDatabase } from "../support/benchDatabase.js"
import type { BenchLlmStandIn } from "../support/llmStandIn.js"
import { threadsSchedstat } from "../support/probes.js"
import type { Figure } from "../support/report.js"
import { seedDueMissions } from "../support/seed.js"
import { round } from "../support/stats.js"

export interface StagesOptions {
  readonly ownerUrl: string
  readonly standIn: BenchLlmStandIn
  readonly missions: number
  readonly log: (line: string) => Effect.Effect<void>
}

const CONCURRENCY = 64
/** Paired rounds of whole runs and SELECT 1 (see below); odd, so the median is one round's. */
const ROUNDS = 5
/**
 * How long a measured step waits before it starts and after its calls end, counting the second wait:
 * the background threads (GC helpers, mimalloc's purge thread) go on with a step's garbage after its
 * last call. Without the waits that work landed in the next step's count: in the seventeenth session
 * SELECT 1 right after whole runs read 0.048–0.092 ms, its main thread 0.049–0.057 and the rest
 * mimalloc's purge and the like. The idle process's own CPU over one wait is printed beside it.
 */
const SETTLE_MS = 200

/** On-core ms per call of each thread of this process between two `threadsSchedstat` readings (≥ 0.005 ms). */
const perCallByThread = (before: Map<string, [number, number]>, after: Map<string, [number, number]>, calls: number) =>
  Object.fromEntries(
    [...after]
      .map(([name, [run]]) => [name, round((run - (before.get(name)?.[0] ?? 0)) / calls, 3)] as const)
      .filter(([, ms]) => ms >= 0.005)
      .sort((a, b) => b[1] - a[1]),
  )

/** A full, synchronous collection where the runtime offers one (Bun; Node with --expose-gc). */
const fullGc = (): void => {
  const bun = (globalThis as { Bun?: { gc: (force: boolean) => void } }).Bun
  if (bun !== undefined) bun.gc(true)
  else (globalThis as { gc?: () => void }).gc?.()
}

export const measureStages = (options: StagesOptions) =>
  Effect.scoped(
    Effect.gen(function* () {
      const db = yield* makeBenchDatabase(options.ownerUrl)
      yield* seedDueMissions(db, {
        // The first `missions` warm the code paths up (JIT); each of the ROUNDS after them is measured once.
        users: Math.ceil(((1 + ROUNDS) * options.missions) / 5),
        missionsPerUser: 5,
        firstDueAt: Date.now() - 60_000,
        spreadMs: 0,
        withGoal: true,
      })
      yield* options.standIn.configure(0)
      // The services as the process builds them: no bench stopwatch around the runner, the store or the
      // LLM client (this figure reads none of their records, and their schedstat reads would count here).
      const ctx = yield* Layer.build(servicesLayer(db, { globalConcurrency: CONCURRENCY }, options.standIn.url, undefined))
      const store = Context.get(ctx, MissionStore)
      const sql = Context.get(ctx, SqlClient.SqlClient)
      yield* store.refresh
      const all = (yield* store.due(new Date())).flatMap((s) =>
        Either.isRight(s.decoded) ? [{ userId: s.userId, mission: s.decoded.right }] : [],
      )
      const perRound = Math.floor(all.length / (1 + ROUNDS))
      const warmUp = all.slice(0, perRound)
      const rounds = Array.from({ length: ROUNDS }, (_, r) => all.slice(perRound * (r + 1), perRound * (r + 2)))
      // The steps after the paired rounds are measured on the first round's missions.
      const due = rounds[0]!
      // Each step is measured in steady state: first the same calls once unmeasured (indexes from
      // due.length on, so a claim or write-back of the warm-up is another one than the measured), so
      // code the step runs first does not charge its compilation (JavaScriptCore's compiler threads
      // count in this process's CPU) to the step. Without it the SELECT 1 step, whose path no earlier
      // step runs, read 0.13–0.42 ms in five runs and the ratio to it 5.5–14.8×; warmed, 0.10–0.17 ms in four.
      // The whole run has its own warm-up (the first `missions` of the seed, and each round missions of
      // its own: a second run of the same mission would find its plan written and take another path).
      const cpuMsPerCall = <A, E>(f: (d: (typeof due)[number], i: number) => Effect.Effect<A, E>, warm = true, over = due) =>
        (warm ? Effect.forEach(over, (d, i) => f(d, over.length + i), { concurrency: CONCURRENCY, discard: true }) : Effect.void).pipe(Effect.orDie, Effect.zipRight(Effect.suspend(() => {
          // Each step starts after a full collection, so it does not pay for the garbage of the one before,
          // and after the background threads are done with it (see SETTLE_MS).
          fullGc()
          return Effect.sleep(SETTLE_MS).pipe(
            Effect.zipRight(Effect.suspend(() => {
              const threads0 = threadsSchedstat()
              const c0 = process.cpuUsage()
              return Effect.forEach(over, f, { concurrency: CONCURRENCY, discard: true }).pipe(
                Effect.orDie,
                // The step's own deferred work (sweeping, mimalloc's purge of what it freed) counts to it.
                Effect.zipLeft(Effect.sleep(SETTLE_MS)),
                Effect.map(() => {
                  const c = process.cpuUsage(c0)
                  byThread.push(perCallByThread(threads0, threadsSchedstat(), over.length))
                  return round((c.user + c.system) / 1000 / over.length, 3)
                }),
              )
            })),
          )
        })))
      const runner = Context.get(ctx, MissionRunner)
      const resolvers = Context.get(ctx, InputResolvers)
      const llm = Context.get(ctx, LlmClient)
      const planner = Context.get(ctx, Planner)
      const writeBack = Context.get(ctx, WriteBack)
      const stages: Record<string, number> = {}
      /** Each measured step's on-core ms per call by thread name, in the order measured. */
      const byThread: Array<Record<string, number>> = []
      yield* Effect.forEach(warmUp, (d) => runner.run(d), { concurrency: CONCURRENCY, discard: true }).pipe(Effect.orDie)
      // The ratio in paired rounds: each round measures whole runs of missions of its own, then as many
      // SELECT 1, back to back, so both halves of a ratio see the machine in the same state. One pair
      // alone moved from 10.9× to 19.0× between runs of the same code (the sixteenth and seventeenth
      // sessions), the two halves often in opposite directions; the figure is the median round's.
      const pairs: Array<{ readonly wholeRun: number; readonly sqlSelect1: number; readonly ratio: number; readonly threads: ReadonlyArray<Record<string, number>> }> = []
      for (const [r, missions] of rounds.entries()) {
        const wholeRun = yield* cpuMsPerCall((d) => runner.run(d), false, missions)
        // SELECT 1's path is warmed once, before the first round's (no run takes it).
        const sqlSelect1 = yield* cpuMsPerCall(() => sql`SELECT 1`, r === 0, missions)
        pairs.push({ wholeRun, sqlSelect1, ratio: round(wholeRun / sqlSelect1, 1), threads: byThread.splice(-2) })
      }
      const median = [...pairs].sort((a, b) => a.ratio - b.ratio)[Math.floor(pairs.length / 2)]!
      stages.wholeRun = median.wholeRun
      byThread.push(median.threads[0]!)
      stages.claim = yield* cpuMsPerCall((d, i) =>
        store.claim({ userId: d.userId, missionId: d.mission.id, iterationId: `stage-${i}` }, "bench", Duration.minutes(1)),
      )
      stages.checkMission = yield* cpuMsPerCall((d) =>
        withUserScope(d.userId, (s) => readCurrentMission(s, d.userId, d.mission.id, "stage", "UTC")).pipe(
          Effect.provideService(SqlClient.SqlClient, sql),
          Effect.provideService(EventLogSchema, Context.get(ctx, EventLogSchema)),
        ),
      )
      stages.resolveInputs = yield* cpuMsPerCall((d) => resolvers.resolve(d.userId, d.mission.inputs))
      stages.llmCall = yield* cpuMsPerCall((d) => llm.complete([{ role: "user", content: d.mission.objective }]))
      stages.plan = yield* cpuMsPerCall((d) => planner.plan({ mission: d.mission, resolvedInputs: [] }))
      stages.writeBack = yield* cpuMsPerCall((d, i) =>
        writeBack.append({
          userId: d.userId,
          missionId: d.mission.id,
          iteration: plannedIteration({
            id: iterationIdFor(d.mission.id, new Date(Date.UTC(2030, 0, 1) + i * 1000).toISOString()),
            startedAt: new Date(),
            finishedAt: new Date(),
            summary: "stage",
            steps: [],
          }),
        }),
      )
      stages.sqlSelect1 = median.sqlSelect1
      byThread.push(median.threads[1]!)
      let idleThreads: Record<string, number> = {}
      // What one settling wait costs an idle process (timers, the pool's idle checks): each step's count holds one.
      const idleMsPerSettle = yield* Effect.sleep(SETTLE_MS).pipe(
        Effect.zipRight(Effect.suspend(() => {
          const c0 = process.cpuUsage()
          const threads0 = threadsSchedstat()
          return Effect.map(Effect.sleep(SETTLE_MS), () => {
            const c = process.cpuUsage(c0)
            idleThreads = perCallByThread(threads0, threadsSchedstat(), 1)
            return round((c.user + c.system) / 1000, 3)
          })
        })),
      )
      // Per row written since the first refresh (every run above and every write-back stage wrote one):
      // the write-back folds the runner's own rows into their snapshots, so the pass reads only what it
      // must; dividing by the rows it read would charge the pass's fixed cost to those few.
      const rowsWritten = warmUp.length + ROUNDS * perRound + due.length
      let refreshRowsRead = 0
      stages.refreshPerRow = yield* Effect.suspend(() => {
        fullGc()
        const c0 = process.cpuUsage()
        return Effect.map(store.refresh, (r) => {
          const c = process.cpuUsage(c0)
          refreshRowsRead = r.rowsRead
          return round((c.user + c.system) / 1000 / rowsWritten, 3)
        })
      }).pipe(Effect.orDie)
      yield* options.log(`stages: ${JSON.stringify(stages)}; on-core ms per call by thread: ${JSON.stringify(byThread)}; paired rounds: ${JSON.stringify(pairs)}; CPU of an idle ${SETTLE_MS} ms wait: ${idleMsPerSettle} ms ${JSON.stringify(idleThreads)}`)
      const perSelect1 = median.ratio
      return [
        {
          id: "stages.cpuPerRun",
          label: "1. runner CPU per run, called directly (no actors)",
          value: stages.wholeRun,
          unit: "ms",
          detail: {
            calls: due.length,
            rounds: ROUNDS,
            concurrency: CONCURRENCY,
            llmLatencyMs: 0,
            cpuMsPerCall: stages,
            onCoreMsPerCallByThread: Object.fromEntries(Object.keys(stages).filter((k) => k !== "refreshPerRow").map((k, i) => [k, byThread[i]])),
            settleMs: SETTLE_MS,
            idleCpuMsPerSettle: idleMsPerSettle,
            refreshRowsWritten: rowsWritten,
            refreshRowsRead,
            note: "CPU of this process (all threads) per call, many calls at once, the services without the bench's stopwatches, each step warmed first (the whole run by 1,000 runs of other missions, the others by the same calls once); wholeRun and sqlSelect1 are the median round's of the ratio figure; plan = LLM call + prompt + parser; refreshPerRow = the discovery pass after the runs, per mission row they wrote (each run and write-back stage wrote one; the write-back folds its own row into the snapshot, so the pass reads few of them: refreshRowsRead)",
          },
        },
        {
          id: "stages.cpuPerRunInSelect1",
          label: "1. runner CPU per run ÷ CPU of one SELECT 1 round trip",
          value: perSelect1,
          unit: "×",
          target: { op: "<=", value: 12, text: "≤ 12×" },
          detail: {
            cpuMsPerRun: stages.wholeRun,
            cpuMsPerSelect1: stages.sqlSelect1,
            rounds: pairs.map(({ wholeRun, sqlSelect1, ratio }) => ({ cpuMsPerRun: wholeRun, cpuMsPerSelect1: sqlSelect1, ratio })),
            plannerMode: "tools (two LLM requests per run)",
            note: `both measured in this run, the same way: many calls at once, this process's CPU per call; ${ROUNDS} rounds, each ${perRound} whole runs of missions of its own, then as many SELECT 1; the figure is the median round's`,
          },
        },
      ] satisfies Array<Figure>
    }),
  )
