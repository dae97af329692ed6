/**
 * What one run does in Effect's runtime (issue 16, CPU per run): whole runs (MissionRunner.run called
 * directly, as the stages figure does, LLM 0 ms, tools mode) under a Supervisor that counts every
 * instruction the run loop evaluates (by op code and, for Sync/OnSuccess/Commit, where it comes
 * from), every fiber started, and every FiberRef read and write, per run.
 *
 *   bun bench/tools/runOps.ts --runs=200 [--top=40] [--what=run|llm|plan|select1|read|writeBack] [--trace=FILE]
 *
 * The services are built as the process builds them (as the stages figure does); `--probes` wraps them in
 * the bench's stopwatches, as the throughput and precision parts do. `--what` counts one piece instead of the whole run; `--trace` writes every instruction of the last
 * call in order (op code, then where its function comes from), to see which combinator made them.
 */
import { writeFileSync } from "node:fs"
import { SqlClient } from "@effect/sql"
import { BunRuntime } from "@effect/platform-bun"
import { Context, Effect, Either, Layer, Logger, LogLevel, RuntimeFlags, RuntimeFlagsPatch } from "effect"
import { MissionRunner } from "../../src/services/MissionRunner.js"
import { LlmClient } from "../../src/services/LlmClient.js"
import { Planner } from "../../src/services/Planner.js"
import { WriteBack } from "../../src/services/WriteBack.js"
import { EventLogSchema } from "../../src/services/EventLogSchema.js"
import { iterationIdFor, plannedIteration } from "../../src/domain/iteration.js"
import { runReadQuery } from "../../src/services/currentMission.js"
import { pipelinedTransaction } from "../../src/services/pipelinedTransaction.js"
import { scopeStatement } from "../../src/services/withUserScope.js"
import { MissionStore } from "../../src/services/MissionStore.js"
import { servicesLayer } from "../support/app.js"
import { DEFAULT_OWNER_URL, makeBenchDatabase } from "../support/benchDatabase.js"
import { startLlmStandIn } from "../support/llmStandIn.js"
import { makeRecorder } from "../support/probes.js"
import { countFiberRefCalls, countInstruction, describeInstruction, instructionSupervisor, makeTally } from "../support/runLoopCounts.js"
import { seedDueMissions } from "../support/seed.js"

const arg = (name: string, fallback: number) => Number(process.argv.find((a) => a.startsWith(`--${name}=`))?.split("=")[1] ?? fallback)
const runs = arg("runs", 200)
const top = arg("top", 40)
const what = process.argv.find((a) => a.startsWith("--what="))?.slice(7) ?? "run"

const tally = makeTally()
const bump = tally.bump
let counting = false
/** `--trace=FILE`: every instruction of the last run, in order. */
const traceFile = process.argv.find((a) => a.startsWith("--trace="))?.slice(8)
let trace: Array<string> | undefined

const counter = instructionSupervisor({
  onFiber: () => {
    if (counting) bump("fiber started")
  },
  onInstruction: (_fiber, effect) => {
    if (!counting) return
    if (trace !== undefined) trace.push(describeInstruction(effect))
    countInstruction(tally, effect)
  },
})

// FiberRef reads and writes, by the FiberRef's initial value.
await countFiberRefCalls(tally, () => counting, true)

const main = Effect.scoped(
  Effect.gen(function* () {
    const standIn = yield* startLlmStandIn(0)
    const db = yield* makeBenchDatabase(process.env.BENCH_OWNER_URL ?? DEFAULT_OWNER_URL)
    yield* seedDueMissions(db, { users: Math.ceil((runs + 100) / 5), missionsPerUser: 5, firstDueAt: Date.now() - 60_000, spreadMs: 0, withGoal: true })
    const ctx = yield* Layer.build(servicesLayer(db, { globalConcurrency: 64 }, standIn.url, process.argv.includes("--probes") ? makeRecorder() : undefined))
    const store = Context.get(ctx, MissionStore)
    const sql = Context.get(ctx, SqlClient.SqlClient)
    const llm = Context.get(ctx, LlmClient)
    const planner = Context.get(ctx, Planner)
    const writeBack = Context.get(ctx, WriteBack)
    const eventLog = Context.get(ctx, EventLogSchema)
    const runner = Context.get(ctx, MissionRunner)
    yield* store.refresh
    const all = (yield* store.due(new Date())).flatMap((s) => (Either.isRight(s.decoded) ? [{ userId: s.userId, mission: s.decoded.right }] : []))
    const warm = all.slice(0, 100)
    const measured = all.slice(100, 100 + runs)
    yield* Effect.forEach(warm, (d) => runner.run(d), { concurrency: 16, discard: true }).pipe(Effect.orDie)
    let outcomes = 0
    yield* Effect.forEach(
      measured,
      (d) =>
        Effect.suspend((): Effect.Effect<void, unknown> => {
          counting = true
          if (traceFile !== undefined) trace = []
          switch (what) {
            case "llm":
              return Effect.asVoid(llm.complete([{ role: "user", content: d.mission.objective }]))
            case "plan":
              return Effect.asVoid(planner.plan({ mission: d.mission, resolvedInputs: [] }))
            case "select1":
              return Effect.asVoid(sql`SELECT 1`)
            case "read":
              return Effect.asVoid(
                pipelinedTransaction(sql, [scopeStatement(sql, d.userId), runReadQuery(sql, eventLog.timeColumn, d.userId, d.mission.id, [])]),
              )
            case "writeBack":
              return Effect.asVoid(
                writeBack.append({
                  userId: d.userId,
                  missionId: d.mission.id,
                  iteration: plannedIteration({
                    id: iterationIdFor(d.mission.id, "2030-01-01T00:00:00.000Z"),
                    startedAt: new Date(),
                    finishedAt: new Date(),
                    summary: "stage",
                    steps: [],
                  }),
                }),
              )
            default:
              return Effect.asVoid(runner.run(d))
          }
        }).pipe(
          Effect.tap(() => {
            outcomes += 1
          }),
          Effect.ensuring(Effect.sync(() => (counting = false))),
          Effect.supervised(counter),
          Effect.withRuntimeFlagsPatch(RuntimeFlagsPatch.enable(RuntimeFlags.OpSupervision)),
        ),
      { concurrency: 1, discard: true },
    ).pipe(Effect.orDie)
    if (traceFile !== undefined && trace !== undefined) writeFileSync(traceFile, trace.join("\n"))
    const rows = tally.top(top)
    console.log(`runs ${outcomes} (one at a time); per run:`)
    for (const [key, n] of rows) console.log(`${(n / outcomes).toFixed(1).padStart(8)}  ${key}`)
  }),
)

main.pipe(Logger.withMinimumLogLevel(LogLevel.Warning), Effect.withTracerEnabled(false), BunRuntime.runMain)
