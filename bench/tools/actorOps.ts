/**
 * What a run costs in Effect's runtime through the whole runner (issue 16, CPU per run): the
 * supervisor, the actors, discovery and the real services, as the throughput figure runs them (LLM
 * 0 ms, tools mode, GLOBAL_CONCURRENCY 64), counted as runOps.ts counts one direct run: every
 * run-loop instruction (by op code and origin), fiber started and FiberRef read or write, divided by
 * the runs written in the window. Missions come due over `--spread` seconds; the window opens once
 * `--warm` runs were written and closes once `--runs` more were.
 *
 *   bun bench/tools/actorOps.ts [--warm=500] [--runs=1500] [--spread=12] [--top=60] [--dump=DIR]
 *
 * It also groups the fibers that ran in the window by their first instructions (what started them)
 * and prints each group's instructions per run and per fiber; `--dump` writes every instruction of
 * one fiber of each of the six largest groups, in order, to DIR/fiber-N.txt. The figures move from
 * run to run (runs still under way at the window's ends, waits): compare in alternating pairs.
 *
 * Compare with `bun bench/tools/runOps.ts` (MissionRunner.run alone): the difference is what the
 * actor path, discovery and the rest of the process add per run.
 */
import { writeFileSync } from "node:fs"
import { BunRuntime } from "@effect/platform-bun"
import { Effect, Layer, Logger, LogLevel, RuntimeFlags, RuntimeFlagsPatch } from "effect"
import { appLayer } from "../support/app.js"
import { DEFAULT_OWNER_URL, makeBenchDatabase } from "../support/benchDatabase.js"
import { startLlmStandIn } from "../support/llmStandIn.js"
import { makeRecorder } from "../support/probes.js"
import { countFiberRefCalls, countInstruction, describeInstruction, instructionSupervisor, makeTally, whereFrom } from "../support/runLoopCounts.js"
import { seedDueMissions } from "../support/seed.js"

const arg = (name: string, fallback: number) => Number(process.argv.find((a) => a.startsWith(`--${name}=`))?.split("=")[1] ?? fallback)
const warmRuns = arg("warm", 500)
const runs = arg("runs", 1500)
const spreadS = arg("spread", 12)
const top = arg("top", 60)

const tally = makeTally()
const bump = tally.bump
let counting = false

/** What started each fiber (its first effect's function), to count instructions by the fiber that ran them. */
const fiberNames = new WeakMap<object, string>()
const fiberName = (effect: unknown): string => {
  const e = effect as { _op?: string; effect_instruction_i0?: unknown; effect_instruction_i1?: unknown; effect_instruction_i2?: unknown; commit?: unknown }
  const f = e.effect_instruction_i0 ?? e.commit
  return `${e._op ?? "?"} ${whereFrom(typeof f === "function" ? f : e.effect_instruction_i1 ?? e.effect_instruction_i2).slice(0, 110)}`
}

/** Each fiber's first instructions (which code it runs), and the fibers that ran in the window. */
const firstOps = new WeakMap<object, Array<string>>()
const fibersSeen = new Set<object>()
const opsOf = new WeakMap<object, number>()
/** `--dump=DIR`: every instruction of one fiber of each of the largest groups, in order. */
const dumpDir = process.argv.find((a) => a.startsWith("--dump="))?.slice(7)
const allOps = new WeakMap<object, Array<string>>()

const counter = instructionSupervisor({
  onFiber: (fiber, effect) => {
    fiberNames.set(fiber, fiberName(effect))
    firstOps.set(fiber, [])
    if (counting) bump("fiber started")
  },
  onInstruction: (fiber, effect) => {
    if (!counting) return
    const seen = firstOps.get(fiber)
    if (seen !== undefined && seen.length < 14) seen.push(describeInstruction(effect))
    if (dumpDir !== undefined) {
      const all = allOps.get(fiber) ?? []
      if (all.length < 3000) all.push(describeInstruction(effect))
      allOps.set(fiber, all)
    }
    bump(`by fiber ${fiberNames.get(fiber) ?? "(started before)"}`)
    fibersSeen.add(fiber)
    opsOf.set(fiber, (opsOf.get(fiber) ?? 0) + 1)
    countInstruction(tally, effect)
  },
})

await countFiberRefCalls(tally, () => counting)

const main = Effect.scoped(
  Effect.gen(function* () {
    const standIn = yield* startLlmStandIn(0)
    const db = yield* makeBenchDatabase(process.env.BENCH_OWNER_URL ?? DEFAULT_OWNER_URL)
    const total = warmRuns + runs + 200
    const users = Math.ceil(total / 3)
    yield* seedDueMissions(db, { users, missionsPerUser: 3, firstDueAt: Date.now() + 4000, spreadMs: spreadS * 1000, withGoal: true })
    const recorder = makeRecorder()
    yield* Layer.build(appLayer(db, { globalConcurrency: 64 }, standIn.url, recorder)).pipe(
      Effect.supervised(counter),
      Effect.withRuntimeFlagsPatch(RuntimeFlagsPatch.enable(RuntimeFlags.OpSupervision)),
    )
    const deadline = Date.now() + 180_000
    while (recorder.written < warmRuns && Date.now() < deadline) yield* Effect.sleep("20 millis")
    const from = recorder.written
    counting = true
    while (recorder.written < from + runs && Date.now() < deadline) yield* Effect.sleep("20 millis")
    counting = false
    const written = recorder.written - from
    // The fibers that ran in the window, grouped by their first instructions: how many, and one sample.
    const groups = new Map<string, { fibers: number; ops: number; sample: object }>()
    for (const f of fibersSeen) {
      const key = `${fiberNames.get(f) ?? "(started before)"}\n      ${(firstOps.get(f) ?? []).join("\n      ")}`
      const g = groups.get(key) ?? { fibers: 0, ops: 0, sample: f }
      g.fibers += 1
      g.ops += opsOf.get(f) ?? 0
      groups.set(key, g)
    }
    const largest = [...groups].sort((a, b) => b[1].ops - a[1].ops)
    if (dumpDir !== undefined) {
      for (const [i, [, g]] of largest.slice(0, 6).entries()) {
        writeFileSync(`${dumpDir}/fiber-${i + 1}.txt`, (allOps.get(g.sample) ?? []).join("\n"))
      }
    }
    for (const [key, g] of largest.slice(0, 14)) {
      console.log(`${(g.ops / written).toFixed(1)} ops per run in ${g.fibers} fibers (${(g.ops / g.fibers).toFixed(0)} each): ${key}`)
    }
    const rows = tally.top(top)
    console.log(`runs written in the window: ${written}; per written run:`)
    for (const [key, n] of rows) console.log(`${(n / written).toFixed(1).padStart(8)}  ${key}`)
  }),
)

main.pipe(Logger.withMinimumLogLevel(LogLevel.Warning), Effect.withTracerEnabled(false), BunRuntime.runMain)
