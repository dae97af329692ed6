import { describe, expect, it } from "@effect/vitest"
import { Deferred, Duration, Effect, Exit, Fiber, Layer, Metric, Option, Ref, Scope } from "effect"
import { PRIME_PAGE_SNAPSHOTS, PrimePageCollection } from "../../src/actors/Supervisor.js"
import { MissionTimeout } from "../../src/services/MissionRunner.js"
import { actorsGauge, quarantinedGauge, tickOverlapsTotal } from "../../src/services/metrics.js"
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

describe("Supervisor start-up", () => {
  it.scoped("starts every user's actor from the store's schedulable snapshots read in pages, a user across two pages with all its missions", () =>
    Effect.gen(function* () {
      const world = yield* makeWorld({ tickEnabled: false })
      // 3 missions per user: a page of PRIME_PAGE_SNAPSHOTS ends inside a user's missions.
      const users = Math.ceil((PRIME_PAGE_SNAPSHOTS + 100) / 3)
      expect(PRIME_PAGE_SNAPSHOTS % 3).not.toBe(0)
      const userId = (i: number) => `u${String(i).padStart(5, "0")}`
      for (let i = 0; i < users; i++)
        for (const m of ["m1", "m2", "m3"]) yield* world.store.put({ userId: userId(i), id: m, nextRunAt: 60 * MIN })
      const supervisor = yield* startSupervisor(world.layer)
      const report = yield* supervisor.discover
      expect(report.actorsStarted).toBe(users)
      expect(yield* Ref.get(world.store.schedulablePages)).toBe(Math.floor((3 * users) / PRIME_PAGE_SNAPSHOTS) + 1)
      const status = yield* supervisor.status
      expect(status.map((s) => s.userId)).toEqual(Array.from({ length: users }, (_, i) => userId(i)))
      for (const s of status) expect(s.missions.map((m) => m.missionId).sort(), s.userId).toEqual(["m1", "m2", "m3"])
    }),
  )

  it.scoped("collects once each page of stored snapshots is read, before its actors start (issue 16 item 5)", () =>
    Effect.gen(function* () {
      const world = yield* makeWorld({ tickEnabled: false })
      const users = PRIME_PAGE_SNAPSHOTS + 10
      const userId = (i: number) => `u${String(i).padStart(5, "0")}`
      for (let i = 0; i < users; i++) yield* world.store.put({ userId: userId(i), id: "m1", nextRunAt: 60 * MIN })
      const supervisor = yield* startSupervisor(world.layer)
      const collections: Array<number> = []
      const report = yield* Effect.locally(supervisor.discover, PrimePageCollection, (page) => {
        collections.push(page)
      })
      expect(report.actorsStarted).toBe(users)
      expect(yield* Ref.get(world.store.schedulablePages)).toBe(2)
      expect(collections).toEqual([0, 1])
    }),
  )
})

describe("Supervisor slots", () => {
  it.scoped("after a run the actor's own view moves on at once: a stale snapshot or a tick never re-runs the slot", () =>
    Effect.gen(function* () {
      const world = yield* makeWorld({ tickInterval: Duration.seconds(5) }, { beforeMs: 0, llmMs: 0, afterMs: 0 })
      // The write-back lands, but the store has not caught up with it yet.
      yield* Ref.set(world.runner.script, (request) =>
        Effect.succeed({
          _tag: "Written",
          iterationId: `${request.mission.id}@${request.mission.nextRunAt}`,
          overallStatus: "awaiting-review",
          steps: 1,
          nextRunAt: new Date(Date.parse(request.mission.nextRunAt ?? "") + 10 * MIN).toISOString(),
          planProduced: true,
          parseFailures: 0,
        } as const),
      )
      yield* world.store.put({ userId: "u", id: "m1", nextRunAt: 0 })
      const supervisor = yield* startSupervisor(world.layer)
      yield* advance(5_000, 12)
      // A refresh that read the record before the write: same slot as the one just run.
      yield* world.store.put({ userId: "u", id: "m1", nextRunAt: 0 })
      yield* advance(5_000, 12)
      const tick = yield* advanceUntilDone(yield* Effect.fork(supervisor.tick), 5_000)
      expect(tick).toMatchObject({ dueMissionCount: 1, plansWrittenBack: 0, errors: [] })
      const at = Ref.get(world.runner.starts).pipe(Effect.map((s) => s.map((r) => r.at)))
      expect(yield* at).toEqual([0])
      yield* advance(5_000, 12 * 8) // t = 10 min
      expect(yield* at).toEqual([0, 10 * MIN])
      // Had the runner handed back the slot it just ran, the actor would wait instead of looping.
      yield* Ref.set(world.runner.script, (request) =>
        Effect.succeed({
          _tag: "Written",
          iterationId: `${request.mission.id}@${request.mission.nextRunAt}`,
          overallStatus: "awaiting-review",
          steps: 1,
          nextRunAt: request.mission.nextRunAt,
          planProduced: true,
          parseFailures: 0,
        } as const),
      )
      yield* advance(5_000, 12 * 12) // t = 22 min
      expect(yield* at).toEqual([0, 10 * MIN, 20 * MIN])
    }),
  )
})

describe("Supervisor failures", () => {
  it.scoped("a runner that dies restarts its actor with backoff, quarantines the user after RESTART_MAX until restart lifts it (not when RESTART_WINDOW_MS has passed); others run on time", () =>
    Effect.gen(function* () {
      const world = yield* makeWorld(
        { restartMax: 3, restartWindow: Duration.minutes(1), tickInterval: Duration.seconds(5) },
        { beforeMs: 0, llmMs: 0, afterMs: 0 },
      )
      yield* Ref.set(world.runner.script, (request, run) =>
        request.mission.id === "boom" ? Effect.die(new Error("runner double exploded")) : run,
      )
      yield* world.store.put({ userId: "crash", id: "boom", nextRunAt: 0 })
      yield* world.store.put({ userId: "ok", id: "steady", nextRunAt: 0, everyMinutes: 1 })
      const supervisor = yield* startSupervisor(world.layer)
      const boomStarts = Ref.get(world.runner.starts).pipe(Effect.map((s) => s.filter((r) => r.missionId === "boom").length))
      const crash = supervisor.status.pipe(Effect.map((all) => all.find((s) => s.userId === "crash")))

      yield* advance(1_000, 10)
      expect(yield* boomStarts).toBe(3)
      expect(yield* crash).toMatchObject({ state: "quarantined", restarts: 2, inFlight: 0 })
      expect((yield* crash)?.lastError).toContain("runner double exploded")
      expect((yield* Metric.value(quarantinedGauge)).value).toBe(1)

      expect([...(yield* Ref.get(world.quarantines.held)).keys()]).toEqual(["crash"])

      // Quarantined: nothing runs for this user, also after the window has passed.
      yield* advance(1_000, 65) // t = 75 s
      expect(yield* boomStarts).toBe(3)
      expect(yield* crash).toMatchObject({ state: "quarantined", restarts: 2, nextWakeAt: null })

      // Fixed and restarted by hand: the quarantine is lifted at once and the mission runs.
      yield* Ref.set(world.runner.script, (_, run) => run)
      expect(yield* supervisor.restart("crash")).toBe(true)
      yield* advance(1_000, 2)
      expect(yield* crash).toMatchObject({ state: "idle", restarts: 3 })
      expect(yield* Ref.get(world.quarantines.held)).toEqual(new Map())
      expect((yield* Ref.get(world.runner.writes)).filter((w) => w.missionId === "boom")).toHaveLength(1)
      expect((yield* Metric.value(quarantinedGauge)).value).toBe(0)
      expect(yield* supervisor.restart("nobody")).toBe(false)

      yield* advance(1_000, 105) // t = 3 min
      const steady = (yield* Ref.get(world.runner.starts)).filter((s) => s.missionId === "steady").map((s) => s.at)
      expect(steady).toEqual([0, 1 * MIN, 2 * MIN, 3 * MIN])
    }),
  )

  it.scoped("a user whose last active mission is paused loses the actor after the idle TTL; a new user gets one at the next discovery", () =>
    Effect.gen(function* () {
      const world = yield* makeWorld(
        { actorIdleTtl: Duration.minutes(5), tickInterval: Duration.seconds(5) },
        { beforeMs: 0, llmMs: 0, afterMs: 0 },
      )
      yield* world.store.put({ userId: "a", id: "a1", nextRunAt: 0 })
      const supervisor = yield* startSupervisor(world.layer)
      const users = supervisor.status.pipe(Effect.map((all) => all.map((s) => s.userId)))
      yield* advance(1_000, 60) // t = 60 s
      expect(yield* users).toEqual(["a"])
      yield* world.store.put({ userId: "a", id: "a1", state: "paused", nextRunAt: 10 * MIN })
      // Discovery at 65 s hands the pause to the actor, which is idle from then on.
      yield* advance(1_000, 5 * 60) // t = 6:00
      expect(yield* users).toEqual(["a"])
      expect((yield* supervisor.status)[0]).toMatchObject({ state: "idle", missions: [] })
      yield* advance(1_000, 10) // t = 6:10
      expect(yield* users).toEqual([])
      expect((yield* Metric.value(actorsGauge)).value).toBe(0)

      yield* world.store.put({ userId: "b", id: "b1", nextRunAt: 7 * MIN })
      yield* advance(1_000, 5) // the next discovery pass
      expect(yield* users).toEqual(["b"])
      expect((yield* supervisor.status)[0]?.missions).toMatchObject([{ missionId: "b1", nextRunAt: new Date(7 * MIN).toISOString() }])
      yield* advance(1_000, 60)
      expect((yield* Ref.get(world.runner.starts)).map((s) => [s.missionId, s.at])).toEqual([
        ["a1", 0],
        ["b1", 7 * MIN],
      ])
    }),
  )

  it.scoped("the actor adds no deadline of its own: MISSION_TIMEOUT_MS is the runner's, and a runner that hangs is not cut off behind it", () =>
    Effect.gen(function* () {
      const world = yield* makeWorld({ userConcurrency: 1, missionTimeout: Duration.minutes(2), tickEnabled: false })
      // The double ignores the deadline (the real runner applies it, claim to commit: MissionRunner.test.ts)
      // and hangs until the test lets it go.
      const letGo = yield* Deferred.make<void>()
      yield* Ref.set(world.runner.script, (request, run) =>
        request.mission.id === "m1-hangs" ? world.permits.withPermit(Deferred.await(letGo)).pipe(Effect.zipRight(run)) : run,
      )
      yield* world.store.put({ userId: "u", id: "m1-hangs", nextRunAt: 0 })
      yield* world.store.put({ userId: "u", id: "m2-next", nextRunAt: 0 })
      const supervisor = yield* startSupervisor(world.layer)
      const tick = yield* Effect.fork(supervisor.tick)
      // Ten minutes: far past the deadline plus the 30 s a hidden backstop used to allow.
      yield* advance(10_000, 60)
      expect(Option.isNone(yield* Fiber.poll(tick))).toBe(true)
      expect((yield* Ref.get(world.runner.starts)).map((s) => s.missionId)).toEqual(["m1-hangs"])
      const [status] = yield* supervisor.status
      expect(status).toMatchObject({ inFlight: 1 })
      expect(status?.missions.find((m) => m.missionId === "m1-hangs")).toMatchObject({ consecutiveFailures: 0 })
      yield* Deferred.succeed(letGo, undefined)
      const report = yield* advanceUntilDone(tick, 1_000)
      expect(report).toMatchObject({ dueMissionCount: 2, plansWrittenBack: 2, errors: [] })
      const starts = yield* Ref.get(world.runner.starts)
      expect(starts.map((s) => s.missionId)).toEqual(["m1-hangs", "m2-next"])
      // The next due mission waited for the user's permit the whole ten minutes.
      expect(starts[1]?.at).toBeGreaterThanOrEqual(10 * MIN)
    }),
  )

  it.scoped("a runner failing with MissionTimeout at its deadline frees the user's permit for the next due mission at once", () =>
    Effect.gen(function* () {
      const world = yield* makeWorld({ userConcurrency: 1, missionTimeout: Duration.minutes(2), tickEnabled: false })
      yield* Ref.set(world.runner.script, (request, run) =>
        request.mission.id === "m1-slow-llm"
          ? world.permits.withPermit(Effect.sleep(Duration.minutes(2))).pipe(
              Effect.zipRight(Effect.fail(new MissionTimeout({ timeoutMs: 120_000 }))),
            )
          : run,
      )
      yield* world.store.put({ userId: "u", id: "m1-slow-llm", nextRunAt: 0 })
      yield* world.store.put({ userId: "u", id: "m2-next", nextRunAt: 0 })
      const supervisor = yield* startSupervisor(world.layer)
      const report = yield* advanceUntilDone(yield* Effect.fork(supervisor.tick), 10_000)
      expect(report).toMatchObject({ plansWrittenBack: 1, errors: ["mission m1-slow-llm: MissionTimeout"] })
      expect((yield* Ref.get(world.runner.starts)).map((s) => [s.missionId, s.at])).toEqual([
        ["m1-slow-llm", 0],
        ["m2-next", 2 * MIN],
      ])
      expect(yield* world.permits.inUse).toBe(0)
    }),
  )

  it.scoped("timed-out and skipped runs stay due and retry after 30 s, doubling, never hot", () =>
    Effect.gen(function* () {
      const world = yield* makeWorld({ tickInterval: Duration.seconds(5) })
      yield* Ref.set(world.runner.script, (request) =>
        request.mission.id === "slow-llm"
          ? Effect.fail(new MissionTimeout({ timeoutMs: 120_000 }))
          : Effect.succeed({ _tag: "Skipped", reason: "claimed-elsewhere", planProduced: false, parseFailures: 0 } as const),
      )
      yield* world.store.put({ userId: "u", id: "slow-llm", nextRunAt: 0 })
      yield* world.store.put({ userId: "v", id: "claimed", nextRunAt: 0 })
      yield* startSupervisor(world.layer)
      yield* advance(5_000, 12 * 8) // 8 minutes
      const at = (id: string) =>
        Ref.get(world.runner.starts).pipe(Effect.map((s) => s.filter((r) => r.missionId === id).map((r) => r.at / 1000)))
      expect(yield* at("slow-llm")).toEqual([0, 30, 90, 210, 450])
      expect(yield* at("claimed")).toEqual([0, 30, 90, 210, 450])
    }),
  )
})

describe("Supervisor ticks and shutdown", () => {
  it.scoped("with TICK_ENABLED=false nothing is discovered or run except by a tick", () =>
    Effect.gen(function* () {
      const world = yield* makeWorld({ tickEnabled: false })
      yield* world.store.put({ userId: "u", id: "m1", nextRunAt: 0 })
      const supervisor = yield* startSupervisor(world.layer)
      yield* advance(60_000, 10)
      expect(yield* Ref.get(world.store.refreshes)).toBe(0)
      expect(yield* Ref.get(world.runner.starts)).toEqual([])
      expect(yield* supervisor.status).toEqual([])
      const report = yield* advanceUntilDone(yield* Effect.fork(supervisor.tick), 100)
      expect(report).toMatchObject({ dueMissionCount: 1, plansWrittenBack: 1, errors: [] })
      expect(yield* Ref.get(world.store.refreshes)).toBe(1)
      // The run moved the mission on: a second tick finds nothing due.
      const again = yield* advanceUntilDone(yield* Effect.fork(supervisor.tick), 100)
      expect(again).toMatchObject({ dueMissionCount: 0, plansWrittenBack: 0, errors: [] })
      expect(yield* Ref.get(world.runner.starts)).toHaveLength(1)
    }),
  )

  it.scoped("a tick while one is under way returns at once with overlap-skipped", () =>
    Effect.gen(function* () {
      const world = yield* makeWorld({ tickEnabled: false }, { llmMs: 10_000 })
      yield* world.store.put({ userId: "u", id: "m1", nextRunAt: 0 })
      const supervisor = yield* startSupervisor(world.layer)
      const first = yield* Effect.fork(supervisor.tick)
      yield* advance(1_000, 1)
      expect(yield* supervisor.tickRunning).toBe(true)
      const overlapsBefore = (yield* Metric.value(tickOverlapsTotal)).count
      const second = yield* supervisor.tick
      expect(second).toMatchObject({ dueMissionCount: 0, plansWrittenBack: 0, errors: ["overlap-skipped"] })
      expect((yield* Metric.value(tickOverlapsTotal)).count).toBe(overlapsBefore + 1)
      const report = yield* advanceUntilDone(first, 1_000)
      expect(report).toMatchObject({ dueMissionCount: 1, plansWrittenBack: 1, errors: [] })
      expect(yield* supervisor.tickRunning).toBe(false)
    }),
  )

  it.effect("closing the scope: runs finishing within the grace write back, the rest write nothing, none starts after", () =>
    Effect.gen(function* () {
      // The time is spent in the LLM request: one already out when the drain begins may finish.
      const takes: Record<string, number> = { "a-fast": 5_000, "b-slow": 60_000, "c-queued": 1_000 }
      const world = yield* makeWorld(
        { userConcurrency: 2, shutdownGrace: Duration.seconds(10), tickInterval: Duration.seconds(5) },
        { beforeMs: 0, llmMsFor: (id) => takes[id] ?? 0, afterMs: 0 },
      )
      for (const id of Object.keys(takes)) yield* world.store.put({ userId: "u", id, nextRunAt: 0 })
      const scope = yield* Scope.make()
      yield* Layer.buildWithScope(world.layer, scope)
      yield* advance(1_000, 1)
      const started = Ref.get(world.runner.starts).pipe(Effect.map((s) => s.map((r) => r.missionId)))
      expect(yield* started).toEqual(["a-fast", "b-slow"])

      const closing = yield* Effect.fork(Scope.close(scope, Exit.void))
      yield* advance(1_000, 9) // t = 10 s: a-fast finished at 5 s, b-slow is still running
      expect(closing.unsafePoll()).toBeNull()
      yield* advance(1_000, 2) // t = 12 s: the grace (10 s from t = 1 s) is over
      yield* Fiber.join(closing)
      expect((yield* Ref.get(world.runner.writes)).map((w) => w.missionId)).toEqual(["a-fast"])
      yield* advance(10_000, 30)
      expect(yield* started).toEqual(["a-fast", "b-slow"])
      expect((yield* Ref.get(world.runner.writes)).map((w) => w.missionId)).toEqual(["a-fast"])
    }),
  )

  it.effect("the drain starts nothing: a run admitted and waiting for a run slot does not start, and one waiting for an LLM permit sends no request", () =>
    Effect.gen(function* () {
      // One LLM permit, two runs at work at once (2 × GLOBAL, at least USER): four users' runs are due.
      const world = yield* makeWorld(
        { userConcurrency: 2, globalConcurrency: 1, shutdownGrace: Duration.minutes(1), tickInterval: Duration.seconds(5) },
        { beforeMs: 100, llmMs: 10_000, afterMs: 50 },
      )
      for (const u of ["a", "b", "c", "d"]) yield* world.store.put({ userId: u, id: `${u}-m`, nextRunAt: 0 })
      const scope = yield* Scope.make()
      yield* Layer.buildWithScope(world.layer, scope)
      yield* advance(1_000, 1)
      const started = Ref.get(world.runner.starts).pipe(Effect.map((s) => s.map((r) => r.missionId)))
      // Two runs at work (one in the LLM call, one waiting for the permit), two waiting for a slot.
      expect(yield* started).toHaveLength(2)
      expect((yield* Ref.get(world.runner.llm)).now).toBe(1)

      const closing = yield* Effect.fork(Scope.close(scope, Exit.void))
      yield* advance(1_000, 30)
      yield* Fiber.join(closing)
      // Only the request already out finished and wrote; nothing else started or asked the LLM.
      expect(yield* started).toHaveLength(2)
      expect((yield* Ref.get(world.runner.llm)).max).toBe(1)
      const writes = yield* Ref.get(world.runner.writes)
      expect(writes).toHaveLength(1)
      expect(yield* started).toContain(writes[0]?.missionId)
      expect(yield* world.permits.inUse).toBe(0)
    }),
  )

  it.scoped("a quarantine kept from an earlier process holds: the user gets no run, a tick is told, and restart lifts it", () =>
    Effect.gen(function* () {
      const world = yield* makeWorld({ tickInterval: Duration.seconds(5) }, { beforeMs: 0, llmMs: 0, afterMs: 0 }, [
        { userId: "poisoned", reason: "Error: runner double exploded" },
      ])
      yield* world.store.put({ userId: "poisoned", id: "p1", nextRunAt: 0 })
      yield* world.store.put({ userId: "fine", id: "f1", nextRunAt: 0 })
      const supervisor = yield* startSupervisor(world.layer)
      yield* advance(5_000, 3)
      const started = Ref.get(world.runner.starts).pipe(Effect.map((s) => s.map((r) => r.missionId)))
      expect(yield* started).toEqual(["f1"])
      expect((yield* supervisor.status).find((s) => s.userId === "poisoned")).toMatchObject({
        state: "quarantined",
        lastError: "Error: runner double exploded",
      })
      expect((yield* Metric.value(quarantinedGauge)).value).toBe(1)
      const tick = yield* advanceUntilDone(yield* Effect.fork(supervisor.tick), 1_000)
      expect(tick.errors).toEqual(["user poisoned: quarantined"])

      expect(yield* supervisor.restart("poisoned")).toBe(true)
      yield* advance(1_000, 2)
      expect(yield* started).toEqual(["f1", "p1"])
      expect(yield* Ref.get(world.quarantines.held)).toEqual(new Map())
    }),
  )
})
