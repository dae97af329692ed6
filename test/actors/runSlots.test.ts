/**
 * The run-slot cap (issue 15 item 18): runs at work at once, process-wide, are max(2 × GLOBAL_CONCURRENCY,
 * USER_CONCURRENCY), whatever is due. On the doubles under TestClock, so "at once" is exact; the cap on
 * LLM requests with the real runner is measured at the stand-in in supervision.integration.test.ts.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Ref } from "effect"
import { advanceUntilDone, makeWorld, startSupervisor } from "./doubles.js"

/** Wraps the runner double so it counts the runs at work (inside their run slot) at once. */
const countAtWork = (world: Effect.Effect.Success<ReturnType<typeof makeWorld>>) =>
  Effect.gen(function* () {
    const atWork = yield* Ref.make({ now: 0, max: 0 })
    yield* Ref.set(world.runner.script, (_, run) =>
      Effect.acquireUseRelease(
        Ref.update(atWork, (c) => ({ now: c.now + 1, max: Math.max(c.max, c.now + 1) })),
        () => run,
        () => Ref.update(atWork, (c) => ({ ...c, now: c.now - 1 })),
      ),
    )
    return atWork
  })

describe("run slots", () => {
  it.scoped("GLOBAL_CONCURRENCY=2 with 12 users due: 4 runs at work at once, never more, each mission once", () =>
    Effect.gen(function* () {
      const world = yield* makeWorld(
        { userConcurrency: 2, globalConcurrency: 2, tickEnabled: false },
        { beforeMs: 100, llmMs: 1_000, afterMs: 50 },
      )
      const atWork = yield* countAtWork(world)
      const users = Array.from({ length: 12 }, (_, i) => `u${String(i).padStart(2, "0")}`)
      for (const u of users) yield* world.store.put({ userId: u, id: `${u}-m`, nextRunAt: 0 })
      const supervisor = yield* startSupervisor(world.layer)
      const report = yield* advanceUntilDone(yield* Effect.fork(supervisor.tick), 50)
      expect(report).toMatchObject({ dueMissionCount: 12, plansWrittenBack: 12, errors: [] })
      expect((yield* Ref.get(atWork)).max).toBe(4)
      expect((yield* Ref.get(world.runner.llm)).max).toBe(2)
      expect((yield* Ref.get(world.runner.writes)).map((w) => w.missionId).sort()).toEqual(users.map((u) => `${u}-m`))
    }),
  )

  it.scoped("USER_CONCURRENCY above 2 × GLOBAL_CONCURRENCY: one user's own limit is the cap (6 at work, not 4)", () =>
    Effect.gen(function* () {
      const world = yield* makeWorld(
        { userConcurrency: 6, globalConcurrency: 2, tickEnabled: false },
        { beforeMs: 100, llmMs: 1_000, afterMs: 50 },
      )
      const atWork = yield* countAtWork(world)
      for (let i = 0; i < 10; i++) yield* world.store.put({ userId: "solo", id: `solo-${i}`, nextRunAt: 0 })
      const supervisor = yield* startSupervisor(world.layer)
      const report = yield* advanceUntilDone(yield* Effect.fork(supervisor.tick), 50)
      expect(report).toMatchObject({ dueMissionCount: 10, plansWrittenBack: 10, errors: [] })
      expect((yield* Ref.get(atWork)).max).toBe(6)
      expect((yield* Ref.get(world.runner.llm)).max).toBe(2)
    }),
  )
})
