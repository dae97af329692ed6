/**
 * The statements (client round trips) one run sends, by kind: `bun bench/tools/runStatements.ts --runs=50`.
 * Counts every pg `Client#query` the process makes while whole runs (MissionRunner.run, as the stages
 * figure calls it, tools mode, LLM 0 ms) go one at a time, and prints them per run with the first
 * words of each statement. One `query` is one round trip (a pipelined batch, too). It also counts the
 * socket writes under them (net.Socket `_write` / `_writev`, each one a send to the server): one per
 * round trip is the least there can be.
 */
import { BunRuntime } from "@effect/platform-bun"
import { Context, Effect, Either, Layer, Logger, LogLevel } from "effect"
import net from "node:net"
import Pg from "pg"
import { MissionRunner } from "../../src/services/MissionRunner.js"
import { MissionStore } from "../../src/services/MissionStore.js"
import { servicesLayer } from "../support/app.js"
import { DEFAULT_OWNER_URL, makeBenchDatabase } from "../support/benchDatabase.js"
import { startLlmStandIn } from "../support/llmStandIn.js"
import { makeRecorder } from "../support/probes.js"
import { seedDueMissions } from "../support/seed.js"

const runs = Number(process.argv.find((a) => a.startsWith("--runs="))?.slice(7) ?? 50)

const counted = new Map<string, number>()
let counting = false
const query = Pg.Client.prototype.query
Pg.Client.prototype.query = function (this: Pg.Client, config: unknown, ...rest: Array<unknown>) {
  if (counting) {
    const text =
      typeof config === "string" ? config : typeof (config as { text?: unknown })?.text === "string" ? (config as { text: string }).text : "?"
    const kind = text.replace(/\s+/g, " ").trim().slice(0, Number(process.env.STMT_WIDTH ?? 60))
    counted.set(kind, (counted.get(kind) ?? 0) + 1)
  }
  return (query as (...a: Array<unknown>) => unknown).call(this, config, ...rest)
} as typeof query

let socketWrites = 0
const socket = net.Socket.prototype as unknown as Record<"_write" | "_writev", (...args: Array<unknown>) => unknown>
for (const method of ["_write", "_writev"] as const) {
  const original = socket[method]
  socket[method] = function (this: unknown, ...args: Array<unknown>) {
    if (counting) socketWrites++
    return original.apply(this, args)
  }
}

const main = Effect.scoped(
  Effect.gen(function* () {
    const standIn = yield* startLlmStandIn(0)
    const db = yield* makeBenchDatabase(process.env.BENCH_OWNER_URL ?? DEFAULT_OWNER_URL)
    yield* seedDueMissions(db, { users: Math.ceil((runs + 10) / 5), missionsPerUser: 5, firstDueAt: Date.now() - 60_000, spreadMs: 0, withGoal: true })
    const ctx = yield* Layer.build(servicesLayer(db, { globalConcurrency: 1 }, standIn.url, makeRecorder()))
    const store = Context.get(ctx, MissionStore)
    const runner = Context.get(ctx, MissionRunner)
    yield* store.refresh
    const all = (yield* store.due(new Date())).flatMap((s) => (Either.isRight(s.decoded) ? [{ userId: s.userId, mission: s.decoded.right }] : []))
    // The first runs prune expired claims and warm the pool up: not counted.
    yield* Effect.forEach(all.slice(0, 10), (d) => runner.run(d), { discard: true }).pipe(Effect.orDie)
    const measured = all.slice(10, 10 + runs)
    counting = true
    const outcomes = yield* Effect.forEach(measured, (d) => runner.run(d)).pipe(Effect.orDie)
    counting = false
    const written = outcomes.filter((o) => o._tag === "Written").length
    const lines = [...counted].sort((a, b) => b[1] - a[1]).map(([k, n]) => `  ${(n / measured.length).toFixed(2)}  ${k}`)
    const total = [...counted.values()].reduce((a, b) => a + b, 0)
    yield* Effect.logWarning(
      `${measured.length} runs (${written} written): ${(total / measured.length).toFixed(2)} pg queries (round trips) and ${(socketWrites / measured.length).toFixed(2)} socket writes per run\n${lines.join("\n")}`,
    )
  }),
)

main.pipe(Logger.withMinimumLogLevel(LogLevel.Warning), Effect.withTracerEnabled(false), BunRuntime.runMain)
