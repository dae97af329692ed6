/**
 * 5. Memory: heap and RSS growth per idle actor. Users with one mission each, due a day from now,
 * so every actor starts, reads its missions and sleeps until then. The baseline is taken with every
 * service built but no supervisor; the second reading once every actor is up and idle. Both after
 * forced full collections and a pause (RSS right after start-up still holds its garbage's pages).
 */
import { Context, Duration, Effect, Layer } from "effect"
import { Supervisor, SupervisorLive, servicesLayer } from "../support/app.js"
import { makeBenchDatabase } from "../support/benchDatabase.js"
import type { BenchLlmStandIn } from "../support/llmStandIn.js"
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
      const services = yield* Layer.build(servicesLayer(db, {}, options.standIn.url, makeRecorder()))
      const before = yield* collect
      const t0 = nowMs()
      const ctx = yield* Layer.build(SupervisorLive.pipe(Layer.provide(Layer.succeedContext(services))))
      const supervisor = Context.get(ctx, Supervisor)
      // Bounded: every actor up, with its mission read and its wake-up set, or the deadline.
      const deadline = nowMs() + Duration.toMillis(Duration.decode(options.startDeadline))
      let ready = 0
      let spawned = 0
      let lastLog = nowMs()
      while (nowMs() < deadline) {
        const status = yield* supervisor.status
        spawned = status.length
        ready = status.filter((s) => s.missions.length === 1 && s.nextWakeAt !== null).length
        if (ready >= options.actors) break
        if (nowMs() - lastLog > 10_000) {
          lastLog = nowMs()
          yield* options.log(`memory: ${spawned} actors spawned, ${ready} up and idle`)
        }
        yield* Effect.sleep("500 millis")
      }
      const startSeconds = (nowMs() - t0) / 1000
      const complete = ready >= options.actors
      yield* options.log(
        `memory: ${ready} of ${spawned} actors up and idle after ${round(startSeconds, 1)} s${complete ? "" : " (start-up not finished by the deadline)"}`,
      )
      const after = yield* collect
      // Every spawned actor holds its fibers, idle or still starting: that is what the growth is for.
      const perActor = (a: number, b: number) => (b - a) / Math.max(1, spawned) / 1024
      return [
        {
          id: "memory.heap.perActor",
          label: `5. heap growth per actor (${spawned} actors${complete ? ", all idle" : `, ${ready} idle`})`,
          value: perActor(before.heapUsed, after.heapUsed),
          unit: "KB",
          target: { op: "<", value: 10, text: "< 10 KB" },
          detail: {
            actorsSpawned: spawned,
            actorsIdle: ready,
            wanted: options.actors,
            startupComplete: complete,
            secondsToStart: round(startSeconds, 1),
            heapUsedBeforeMb: round(before.heapUsed / 2 ** 20, 1),
            heapUsedAfterMb: round(after.heapUsed / 2 ** 20, 1),
          },
        },
        {
          id: "memory.rss.perActor",
          label: "5. RSS growth per actor",
          value: perActor(before.rss, after.rss),
          unit: "KB",
          target: { op: "<", value: 10, text: "< 10 KB" },
          detail: { rssBeforeMb: round(before.rss / 2 ** 20, 1), rssAfterMb: round(after.rss / 2 ** 20, 1) },
        },
      ] satisfies Array<Figure>
    }),
  )
