/**
 * 5. Memory: heap and RSS growth per idle actor. Users with one mission each, due a day from now,
 * so every actor starts, reads its missions and sleeps until then. In a fresh child process: the
 * baseline is taken with every service built but no supervisor, the second reading once every
 * actor is up and idle (or at the start-up deadline). Both after forced full collections and a
 * pause (RSS right after start-up still holds its garbage's pages).
 */
import { Context, Duration, Effect, Layer, Redacted, type Scope } from "effect"
import { Supervisor, SupervisorLive, servicesLayer } from "../support/app.js"
import { makeBenchDatabase } from "../support/benchDatabase.js"
import { runInChild } from "../support/child.js"
import type { BenchLlmStandIn } from "../support/llmStandIn.js"
import { benchLog } from "../support/log.js"
import { makeRecorder } from "../support/probes.js"
import type { Figure } from "../support/report.js"
import { seedDueMissions } from "../support/seed.js"
import { nowMs, round } from "../support/stats.js"

export interface MemoryOptions {
  readonly ownerUrl: string
  readonly standIn: BenchLlmStandIn
  readonly actors: number
  /** How long to wait for every actor to be up and idle (bounded). */
  readonly startDeadline: Duration.DurationInput
  readonly log: (line: string) => Effect.Effect<void>
}

interface Reading {
  readonly heapUsed: number
  readonly rss: number
}

export interface MemoryChildInput {
  readonly runnerUrl: string
  readonly standInUrl: string
  readonly actors: number
  readonly startDeadlineMs: number
}

export interface MemoryChildResult {
  readonly before: Reading
  readonly after: Reading
  readonly spawned: number
  readonly ready: number
  readonly startSeconds: number
}

const fullGc = Effect.promise(async () => {
  const bun = (globalThis as { Bun?: { gc: (force: boolean) => void } }).Bun
  const gc = bun === undefined ? (globalThis as { gc?: () => void }).gc : () => bun.gc(true)
  for (let i = 0; i < 3; i++) {
    gc?.()
    // Let finalizers and deferred frees run between collections.
    await new Promise((resolve) => setImmediate(resolve))
  }
})

/** After full collections and a pause: Bun hands freed pages back to the OS a few seconds later. */
const collect = Effect.gen(function* () {
  yield* fullGc
  yield* Effect.sleep("6 seconds")
  yield* fullGc
  const m = process.memoryUsage()
  return { heapUsed: m.heapUsed, rss: m.rss } satisfies Reading
})

/** Child side. */
export const memoryChild = (input: MemoryChildInput): Effect.Effect<MemoryChildResult, never, Scope.Scope> =>
    Effect.gen(function* () {
      const services = yield* Layer.build(
        servicesLayer({ runnerUrl: Redacted.make(input.runnerUrl) }, {}, input.standInUrl, makeRecorder()),
      )
      const before = yield* collect
      const t0 = nowMs()
      const ctx = yield* Layer.build(SupervisorLive.pipe(Layer.provide(Layer.succeedContext(services))))
      const supervisor = Context.get(ctx, Supervisor)
      // Bounded: every actor up, with its mission read and its wake-up set, or the deadline.
      const deadline = nowMs() + input.startDeadlineMs
      let ready = 0
      let spawned = 0
      let lastLog = nowMs()
      while (nowMs() < deadline) {
        const status = yield* supervisor.status
        spawned = status.length
        ready = status.filter((s) => s.missions.length === 1 && s.nextWakeAt !== null).length
        if (ready >= input.actors) break
        if (nowMs() - lastLog > 10_000) {
          lastLog = nowMs()
          yield* benchLog(`memory: ${spawned} actors spawned, ${ready} up and idle`)
        }
        yield* Effect.sleep("500 millis")
      }
      const startSeconds = (nowMs() - t0) / 1000
      yield* benchLog(
        `memory: ${ready} of ${spawned} actors up and idle after ${round(startSeconds, 1)} s${ready >= input.actors ? "" : " (start-up not finished by the deadline)"}`,
      )
      const after = yield* collect
      return { before, after, spawned, ready, startSeconds }
    }).pipe(Effect.orDie)

export const measureMemory = (options: MemoryOptions) =>
  Effect.scoped(
    Effect.gen(function* () {
      const db = yield* makeBenchDatabase(options.ownerUrl)
      yield* seedDueMissions(db, {
        users: options.actors,
        missionsPerUser: 1,
        firstDueAt: Date.now() + 86_400_000,
        spreadMs: 3_600_000,
        withGoal: false,
      })
      yield* options.log(`memory: seeded ${options.actors} users with one mission each, due tomorrow`)
      const startDeadlineMs = Duration.toMillis(Duration.decode(options.startDeadline))
      const r = yield* runInChild<MemoryChildResult>(
        "memory",
        {
          runnerUrl: Redacted.value(db.runnerUrl),
          standInUrl: options.standIn.url,
          actors: options.actors,
          startDeadlineMs,
        } satisfies MemoryChildInput,
        Duration.millis(startDeadlineMs + 120_000),
      )
      const complete = r.ready >= options.actors
      // Every spawned actor holds its fibers, idle or still starting: that is what the growth is for.
      const perActor = (a: number, b: number) => (b - a) / Math.max(1, r.spawned) / 1024
      return [
        {
          id: "memory.heap.perActor",
          label: `5. heap growth per actor (${r.spawned} actors${complete ? ", all idle" : `, ${r.ready} idle`})`,
          value: perActor(r.before.heapUsed, r.after.heapUsed),
          unit: "KB",
          target: { op: "<", value: 10, text: "< 10 KB" },
          detail: {
            actorsSpawned: r.spawned,
            actorsIdle: r.ready,
            wanted: options.actors,
            startupComplete: complete,
            secondsToStart: round(r.startSeconds, 1),
            heapUsedBeforeMb: round(r.before.heapUsed / 2 ** 20, 1),
            heapUsedAfterMb: round(r.after.heapUsed / 2 ** 20, 1),
          },
        },
        {
          id: "memory.rss.perActor",
          label: "5. RSS growth per actor",
          value: perActor(r.before.rss, r.after.rss),
          unit: "KB",
          target: { op: "<", value: 10, text: "< 10 KB" },
          detail: { rssBeforeMb: round(r.before.rss / 2 ** 20, 1), rssAfterMb: round(r.after.rss / 2 ** 20, 1) },
        },
      ] satisfies Array<Figure>
    }),
  )
