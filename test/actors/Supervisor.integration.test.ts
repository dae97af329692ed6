/**
 * The supervisor on the real stack: the real database as the runner role (a real server when
 * TEST_DATABASE_URL is set, else PGlite), the real MissionStore, MissionRunner, Planner, LlmClient
 * and WriteBack, and a real HTTP server standing in for the LLM. Every run goes through an actor.
 */
import { layer } from "@effect/vitest"
import { Duration, Effect, Layer, Schedule } from "effect"
import { expect } from "vitest"
import { Supervisor, SupervisorLive } from "../../src/actors/Supervisor.js"
import { LlmStandIn, messagesOf } from "../support/LlmStandIn.js"
import { runnerRowCount, runnerServices } from "../support/RunnerStack.js"
import { insertChanges, missionInsertRow } from "../support/seed.js"
import { TcpProxy } from "../support/TcpProxy.js"
import { TestDatabaseLive } from "../support/TestDatabase.js"
import { ProxiedPool, ProxiedWorld } from "../support/ProxiedDatabase.js"

const Stack = SupervisorLive.pipe(
  Layer.provideMerge(runnerServices({ missionTimeout: "20 seconds", runner: { tickEnabled: false, userConcurrency: 2 } })),
  Layer.provideMerge(Layer.merge(TestDatabaseLive, LlmStandIn.layer)),
)

/** Runs that asked the LLM: a run's first request holds only the prompt (tools mode asks again after the calls). */
const runsAsked = Effect.map(
  Effect.flatMap(LlmStandIn, (s) => s.requests),
  (requests) => requests.filter((r) => messagesOf(r).length === 2).length,
)

const minutesAgo = (n: number) => new Date(Date.now() - n * 60_000).toISOString()
const inMinutes = (n: number) => new Date(Date.now() + n * 60_000).toISOString()

layer(Stack, { timeout: 120_000, excludeTestServices: true })("Supervisor on the real stack", (it) => {
  it.effect("a tick plans every due mission of two users exactly once; a second tick writes nothing", () =>
    Effect.gen(function* () {
      const due = [
        ["ana", "ana-1"],
        ["ana", "ana-2"],
        ["ana", "ana-3"],
        ["ben", "ben-1"],
        ["ben", "ben-2"],
      ] as const
      yield* insertChanges([
        ...due.map(([user, id], i) => missionInsertRow(user, id, { nextRunAt: minutesAgo(i + 1) })),
        missionInsertRow("ana", "ana-paused", { state: "paused", nextRunAt: minutesAgo(5) }),
        missionInsertRow("ben", "ben-later", { nextRunAt: inMinutes(30) }),
      ])
      const supervisor = yield* Supervisor

      const first = yield* supervisor.tick
      expect(first).toMatchObject({ dueMissionCount: 5, plansProduced: 5, plansWrittenBack: 5, parseFailures: 0, errors: [] })
      for (const [user, id] of due) expect(yield* runnerRowCount(user, id)).toBe(1)
      expect(yield* runnerRowCount("ana", "ana-paused")).toBe(0)
      expect(yield* runnerRowCount("ben", "ben-later")).toBe(0)
      expect(yield* runsAsked).toBe(5)
      expect((yield* supervisor.status).map((s) => [s.userId, s.inFlight])).toEqual([
        ["ana", 0],
        ["ben", 0],
      ])

      const second = yield* supervisor.tick
      expect(second).toMatchObject({ dueMissionCount: 0, plansProduced: 0, plansWrittenBack: 0, errors: [] })
      for (const [user, id] of due) expect(yield* runnerRowCount(user, id)).toBe(1)
      expect(yield* runsAsked).toBe(5)
    }),
  )
})

const SelfScheduling = SupervisorLive.pipe(
  Layer.provideMerge(
    runnerServices({
      missionTimeout: "20 seconds",
      runner: { tickEnabled: true, tickInterval: Duration.millis(200), userConcurrency: 2 },
    }),
  ),
  Layer.provideMerge(Layer.merge(TestDatabaseLive, LlmStandIn.layer)),
)

layer(SelfScheduling, { timeout: 120_000, excludeTestServices: true })("Supervisor on the real stack, ticking", (it) => {
  it.effect("discovery finds due missions and their actors plan each exactly once, without any tick call", () =>
    Effect.gen(function* () {
      const due = [
        ["cleo", "cleo-1"],
        ["cleo", "cleo-2"],
        ["dan", "dan-1"],
      ] as const
      yield* insertChanges(due.map(([user, id]) => missionInsertRow(user, id, { nextRunAt: minutesAgo(1) })))
      const supervisor = yield* Supervisor
      const written = Effect.forEach(due, ([user, id]) => runnerRowCount(user, id))
      // Real time: poll until every mission has its row (bounded by the layer's timeout).
      yield* written.pipe(
        Effect.repeat({ until: (counts) => counts.every((n) => n >= 1), schedule: Schedule.spaced("100 millis") }),
        Effect.timeout("60 seconds"),
      )
      // Several more discovery passes see the write-backs; nothing runs twice.
      yield* Effect.sleep("1500 millis")
      expect(yield* written).toEqual([1, 1, 1])
      const status = yield* supervisor.status
      expect(status.map((s) => s.userId)).toEqual(["cleo", "dan"])
      for (const actor of status) {
        expect(actor.state).toBe("idle")
        for (const m of actor.missions) expect(Date.parse(m.nextRunAt ?? "")).toBeGreaterThan(Date.now())
      }
    }),
  )
})

const Proxied = SupervisorLive.pipe(
  Layer.provideMerge(
    runnerServices({ sql: ProxiedPool, missionTimeout: "20 seconds", runner: { tickEnabled: false, userConcurrency: 2 } }),
  ),
  Layer.provideMerge(
    ProxiedWorld,
  ),
)

layer(Proxied, { timeout: 120_000, excludeTestServices: true })("Supervisor on the real stack, database away", (it) => {
  it.scoped("a tick whose discovery fails answers with the reason and runs nothing; the next tick after recovery plans the mission", () =>
    Effect.gen(function* () {
      yield* insertChanges([missionInsertRow("eve", "eve-1", { nextRunAt: minutesAgo(1) })])
      const supervisor = yield* Supervisor
      const standIn = yield* LlmStandIn
      const proxy = yield* TcpProxy
      yield* proxy.setMode("refuse")
      yield* Effect.addFinalizer(() => proxy.resume)
      yield* proxy.dropAll

      const failed = yield* supervisor.tick
      expect(failed).toMatchObject({ dueMissionCount: 0, plansProduced: 0, plansWrittenBack: 0, parseFailures: 0 })
      expect(failed.errors.length).toBeGreaterThanOrEqual(1)
      expect(failed.errors[0]).toMatch(/^discovery: /)
      expect((yield* standIn.requests).length).toBe(0)
      expect(yield* runnerRowCount("eve", "eve-1")).toBe(0)

      yield* proxy.resume
      // The pool may still hold a connection cut a moment ago: a tick or two may report it, none writes twice.
      let recovered = yield* supervisor.tick
      for (let i = 0; i < 5 && recovered.errors.length > 0; i++) {
        yield* Effect.sleep("200 millis")
        recovered = yield* supervisor.tick
      }
      expect(recovered).toMatchObject({ dueMissionCount: 1, plansWrittenBack: 1, errors: [] })
      expect(yield* runnerRowCount("eve", "eve-1")).toBe(1)
    }),
  )
})
