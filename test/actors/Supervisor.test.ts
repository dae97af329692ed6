import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Ref } from "effect"
import { advance, advanceUntilDone, MIN, makeWorld, startSupervisor } from "./doubles.js"

describe("Supervisor", () => {
  it.scoped("3 users × 5 due missions: at most 2 runs per user, 3 LLM calls overall, each mission planned once", () =>
    Effect.gen(function* () {
      const world = yield* makeWorld({ userConcurrency: 2, globalConcurrency: 3, tickEnabled: false })
      for (const u of ["u1", "u2", "u3"])
        for (let i = 1; i <= 5; i++) yield* world.store.put({ userId: u, id: `${u}-m${i}`, nextRunAt: 0 })
      const supervisor = yield* startSupervisor(world.layer)
      const tick = yield* Effect.fork(supervisor.tick)
      const report = yield* advanceUntilDone(tick, 50)

      const perUser = yield* Ref.get(world.runner.perUser)
      expect([...perUser.values()].map((c) => c.max)).toEqual([2, 2, 2])
      expect((yield* Ref.get(world.runner.llm)).max).toBe(3)
      const writes = yield* Ref.get(world.runner.writes)
      expect(writes.map((w) => w.missionId).sort()).toEqual(
        ["u1", "u2", "u3"].flatMap((u) => [1, 2, 3, 4, 5].map((i) => `${u}-m${i}`)).sort(),
      )
      expect(report).toMatchObject({ dueMissionCount: 15, plansProduced: 15, plansWrittenBack: 15, parseFailures: 0, errors: [] })
    }),
  )

  it.scoped("an interval of 10 min runs at 0, 10 and 20 min and never in between", () =>
    Effect.gen(function* () {
      const world = yield* makeWorld({ tickEnabled: true, tickInterval: Duration.seconds(5) }, { beforeMs: 0, llmMs: 0, afterMs: 0 })
      yield* world.store.put({ userId: "u1", id: "m1", nextRunAt: 0, everyMinutes: 10 })
      yield* startSupervisor(world.layer)
      yield* advance(15_000, 4 * 25) // 25 minutes in 15 s steps
      const starts = yield* Ref.get(world.runner.starts)
      expect(starts.map((s) => s.at)).toEqual([0, 10 * MIN, 20 * MIN])
    }),
  )
})
