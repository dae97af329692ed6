/**
 * The actor host on a toy behaviour (a counter), so its runtime is proven apart from missions:
 * parking and waking, the shared wake-up schedule, idle retirement, restart intensity and
 * quarantine, restart on request, and the shutdown's answers.
 */
import { describe, expect, it } from "@effect/vitest"
import { Deferred, Duration, Effect, Exit, Metric, Option, Schedule, Scope, TestClock } from "effect"
import * as ActorHost from "../../src/actors/ActorHost.js"

type Msg =
  | { readonly _tag: "Add"; readonly n: number }
  | { readonly _tag: "Fail" }
  /** Waits for the gate, then fails: messages sent meanwhile wait in the mailbox. */
  | { readonly _tag: "FailAfter"; readonly gate: Deferred.Deferred<void> }
  /** Busy until Release: the fiber stays. */
  | { readonly _tag: "Hold" }
  | { readonly _tag: "Release" }
  | { readonly _tag: "Ask"; readonly reply: Deferred.Deferred<string> }

interface Toy {
  total: number
  holding: number
  /** Nothing left to do: answers Retire. */
  quiet: boolean
  /** A wake-up it wants (cleared once reached). */
  wakeAt: number | null
}

let counter = 0

const makeWorld = (overrides: Partial<ActorHost.HostOptions> = {}, toy: Partial<Toy> = {}) =>
  Effect.gen(function* () {
    const n = ++counter
    const stats = { starts: 0, turns: 0, turnsClosed: 0, wokenAt: [] as Array<number> }
    const behaviour: ActorHost.Behaviour<Msg, Toy, { total: number }, string> = {
      start: (_key, takeQueued) =>
        Effect.gen(function* () {
          stats.starts++
          const queued = yield* takeQueued
          return {
            state: { total: 0, holding: 0, quiet: false, wakeAt: null, ...toy },
            carried: queued.filter((m) => m._tag === "Ask"),
          }
        }),
      turn: (self, state) =>
        Effect.gen(function* () {
          stats.turns++
          yield* Effect.addFinalizer(() => Effect.sync(() => stats.turnsClosed++))
          return {
            receive: (m: Msg) => {
              switch (m._tag) {
                case "Add":
                  return Effect.sync(() => {
                    state.total += m.n
                  })
                case "Fail":
                  return Effect.fail(`toy ${self.key} failed`)
                case "FailAfter":
                  return Deferred.await(m.gate).pipe(Effect.zipRight(Effect.fail(`toy ${self.key} failed`)))
                case "Hold":
                  return Effect.sync(() => {
                    state.holding++
                  })
                case "Release":
                  return Effect.sync(() => {
                    state.holding--
                  })
                case "Ask":
                  return Deferred.succeed(m.reply, `total ${state.total}`)
              }
            },
            next: Effect.gen(function* () {
              const now = yield* TestClock.currentTimeMillis
              if (state.wakeAt !== null && state.wakeAt <= now) {
                stats.wokenAt.push(now)
                state.wakeAt = null
              }
              if (state.holding > 0) return ActorHost.Next.Continue({ wakeAt: state.wakeAt })
              if (state.quiet) return ActorHost.Next.Retire()
              return ActorHost.Next.Park({ wakeAt: state.wakeAt })
            }),
          }
        }),
      settle: (state) => (state.holding > 0 ? Option.none() : Option.some(state.wakeAt)),
      reject: (_key, m, why) => (m._tag === "Ask" ? Deferred.succeed(m.reply, `rejected: ${why}`) : Effect.void),
      view: (state) => ({ total: state.total }),
    }
    const metrics = {
      actors: Metric.gauge(`test_host_actors_${n}`),
      quarantined: Metric.gauge(`test_host_quarantined_${n}`),
      restarts: Metric.counter(`test_host_restarts_${n}`),
    }
    const scope = yield* Scope.make()
    const host = yield* ActorHost.make(behaviour, {
      idleTtl: Duration.seconds(10),
      restartMax: 3,
      restartWindow: Duration.minutes(1),
      restartBackoff: Schedule.spaced("1 second"),
      quarantine: Option.some(Duration.minutes(1)),
      keyName: "key",
      metrics,
      ...overrides,
    }).pipe(Scope.extend(scope))
    const ask = (key: string) =>
      Effect.gen(function* () {
        const reply = yield* Deferred.make<string>()
        const sent = yield* host.send(key, { _tag: "Ask", reply })
        return { sent, reply }
      })
    const info = (key: string) => Effect.map(host.status, (all) => all.find((a) => a.key === key))
    const fresh: Toy = { total: 0, holding: 0, quiet: false, wakeAt: null, ...toy }
    return { host, stats, metrics, scope, ask, info, fresh }
  })

/** Lets forked fibers run without moving the clock. */
const settle = TestClock.adjust(0).pipe(Effect.repeatN(5))

describe("ActorHost: parking and waking", () => {
  it.scoped("a parked actor has no fiber; a message gives it one, and it parks again once its mailbox is empty", () =>
    Effect.gen(function* () {
      const w = yield* makeWorld()
      expect(yield* w.host.spawn("a", Option.some({ ...w.fresh }))).toBe(true)
      expect(yield* w.host.spawn("a", Option.some({ ...w.fresh }))).toBe(false)
      yield* settle
      expect(w.stats.turns).toBe(0)
      expect(yield* w.host.phase("a")).toEqual(Option.some("parked"))
      expect(yield* w.host.send("a", { _tag: "Add", n: 2 })).toBe("delivered")
      expect(yield* w.host.send("a", { _tag: "Add", n: 3 })).toBe("delivered")
      yield* settle
      // Every turn ended: no fiber is left for a parked actor.
      expect(w.stats.turns).toBeGreaterThanOrEqual(1)
      expect(w.stats.turnsClosed).toBe(w.stats.turns)
      expect(yield* w.host.phase("a")).toEqual(Option.some("parked"))
      expect((yield* w.info("a"))?.view).toEqual({ total: 5 })
      // Spawned with a state: the state is the incarnation, the store-like start never ran.
      expect(w.stats.starts).toBe(0)
      expect(yield* w.host.send("nobody", { _tag: "Add", n: 1 })).toBe("no-actor")
    }),
  )

  it.scoped("an actor spawned without a state starts an incarnation on its first turn and keeps it across parking", () =>
    Effect.gen(function* () {
      const w = yield* makeWorld()
      yield* w.host.spawn("a", Option.none())
      yield* settle
      yield* w.host.send("a", { _tag: "Add", n: 1 })
      yield* settle
      const { reply } = yield* w.ask("a")
      expect(yield* Deferred.await(reply)).toBe("total 1")
      expect(w.stats.starts).toBe(1)
      expect(w.stats.turns).toBe(3)
    }),
  )

  it.scoped("the shared schedule wakes a parked actor at its wake-up, not before, and a later wakeAt replaces it", () =>
    Effect.gen(function* () {
      const w = yield* makeWorld({}, { wakeAt: 5_000 })
      yield* w.host.spawn("a", Option.some({ ...w.fresh }))
      yield* w.host.spawn("b", Option.some({ ...w.fresh, wakeAt: 3_000 }))
      yield* settle
      expect((yield* w.info("a"))?.nextWakeAt).toBe(5_000)
      yield* TestClock.adjust(2_999)
      expect(w.stats.wokenAt).toEqual([])
      yield* TestClock.adjust(1)
      expect(w.stats.wokenAt).toEqual([3_000])
      yield* w.host.wakeAt("a", 8_000)
      yield* TestClock.adjust(2_000) // t = 5 s: moved away
      expect(w.stats.wokenAt).toEqual([3_000])
      yield* TestClock.adjust(3_000) // t = 8 s: the host woke it; its own wake-up (5 s) has passed
      expect(w.stats.wokenAt).toEqual([3_000, 8_000])
      expect(yield* w.host.phase("a")).toEqual(Option.some("parked"))
    }),
  )

  it.scoped("no message is stranded by parking: 200 actors × 50 messages sent while they park and wake", () =>
    Effect.gen(function* () {
      const w = yield* makeWorld()
      const keys = Array.from({ length: 200 }, (_, i) => `k${i}`)
      for (const key of keys) yield* w.host.spawn(key, Option.some({ ...w.fresh }))
      for (let round = 0; round < 50; round++) {
        yield* Effect.forEach(keys, (key) => w.host.send(key, { _tag: "Add", n: 1 }), { concurrency: "unbounded" })
        if (round % 7 === 0) yield* settle
      }
      yield* settle
      const all = yield* w.host.status
      expect(all.reduce((n, a) => n + (a.view?.total ?? 0), 0)).toBe(200 * 50)
      expect(all.every((a) => a.phase === "parked")).toBe(true)
    }),
  )
})

describe("ActorHost: retirement", () => {
  it.scoped("an actor answering Retire leaves the books after idleTtl (cluster's maxIdleTime), not before; busy time does not count", () =>
    Effect.gen(function* () {
      const w = yield* makeWorld({}, { quiet: true })
      yield* w.host.spawn("a", Option.none())
      yield* settle
      expect((yield* Metric.value(w.metrics.actors)).value).toBe(1)
      yield* TestClock.adjust(4_000)
      // Busy from 4 s to 6 s: idle again from 6 s, so it retires at 16 s.
      yield* w.host.send("a", { _tag: "Hold" })
      yield* TestClock.adjust(2_000)
      yield* w.host.send("a", { _tag: "Release" })
      yield* TestClock.adjust(9_999)
      expect(yield* w.host.has("a")).toBe(true)
      yield* TestClock.adjust(1)
      expect(yield* w.host.has("a")).toBe(false)
      expect((yield* Metric.value(w.metrics.actors)).value).toBe(0)
      // Gone: a new spawn is a new actor.
      expect(yield* w.host.spawn("a", Option.none())).toBe(true)
    }),
  )
})

describe("ActorHost: supervision", () => {
  it.scoped("OTP intensity and period: the restartMax-th failure within restartWindow quarantines; failures further apart only restart", () =>
    Effect.gen(function* () {
      const w = yield* makeWorld({ restartMax: 3, restartWindow: Duration.minutes(1), quarantine: Option.some(Duration.minutes(1)) })
      yield* w.host.spawn("a", Option.none())
      yield* settle
      const fail = w.host.send("a", { _tag: "Fail" }).pipe(Effect.zipRight(settle))
      yield* fail // t = 0: failure 1
      expect(yield* w.info("a")).toMatchObject({ phase: "backing-off", restarts: 0, nextWakeAt: 1_000, lastError: "toy a failed" })
      yield* TestClock.adjust(1_000)
      expect(yield* w.info("a")).toMatchObject({ phase: "parked", restarts: 1 })
      yield* TestClock.adjust(29_000)
      yield* fail // t = 30 s: failure 2 within the window
      yield* TestClock.adjust(31_000)
      yield* fail // t = 61 s: the failure at 0 s has left the window: 2 within it
      expect(yield* w.info("a")).toMatchObject({ phase: "backing-off", restarts: 2 })
      yield* TestClock.adjust(1_000)
      yield* fail // t = 62 s: 30 s, 61 s, 62 s: the third within a minute
      expect(yield* w.info("a")).toMatchObject({ phase: "quarantined", restarts: 3, nextWakeAt: 122_000 })
      expect((yield* Metric.value(w.metrics.quarantined)).value).toBe(1)
      expect(w.stats.starts).toBe(4)
    }),
  )

  it.scoped("a quarantined actor takes nothing, answers what waited, and comes back when the quarantine ends", () =>
    Effect.gen(function* () {
      const w = yield* makeWorld({ restartMax: 1, quarantine: Option.some(Duration.minutes(5)) })
      yield* w.host.spawn("a", Option.some({ ...w.fresh }))
      const gate = yield* Deferred.make<void>()
      yield* w.host.send("a", { _tag: "FailAfter", gate })
      yield* settle
      const waiting = yield* w.ask("a") // queued behind the failure
      expect(waiting.sent).toBe("delivered")
      yield* Deferred.succeed(gate, undefined)
      yield* settle
      expect(yield* Deferred.await(waiting.reply)).toBe("rejected: quarantined")
      expect((yield* w.ask("a")).sent).toBe("quarantined")
      expect(yield* w.host.send("a", { _tag: "Add", n: 1 })).toBe("quarantined")
      yield* TestClock.adjust(Duration.minutes(5))
      expect(yield* w.info("a")).toMatchObject({ phase: "parked", restarts: 1 })
      expect((yield* Metric.value(w.metrics.quarantined)).value).toBe(0)
      const after = yield* w.ask("a")
      expect(yield* Deferred.await(after.reply)).toBe("total 0")
    }),
  )

  it.scoped("restart lifts a quarantine at once, and restarts a running actor with a fresh incarnation", () =>
    Effect.gen(function* () {
      const w = yield* makeWorld({ restartMax: 1, quarantine: Option.some(Duration.hours(1)) })
      yield* w.host.spawn("a", Option.none())
      yield* w.host.send("a", { _tag: "Fail" })
      yield* settle
      expect((yield* w.info("a"))?.phase).toBe("quarantined")
      expect(yield* w.host.restart("a")).toBe(true)
      yield* settle
      expect(yield* w.info("a")).toMatchObject({ phase: "parked", restarts: 1 })
      expect(w.stats.starts).toBe(2)

      yield* w.host.send("a", { _tag: "Add", n: 7 })
      yield* w.host.send("a", { _tag: "Hold" })
      yield* settle
      expect((yield* w.info("a"))?.phase).toBe("active")
      const closedBefore = w.stats.turnsClosed
      expect(yield* w.host.restart("a")).toBe(true)
      yield* settle
      // The running turn was interrupted (its scope closed) and a new incarnation started from scratch.
      expect(w.stats.turnsClosed).toBeGreaterThan(closedBefore)
      expect(w.stats.starts).toBe(3)
      expect(yield* w.info("a")).toMatchObject({ phase: "parked", restarts: 2, view: { total: 0 } })
      expect(yield* w.host.restart("nobody")).toBe(false)
    }),
  )

  it.effect("closing the host's scope answers every message still waiting with 'actor stopped'", () =>
    Effect.gen(function* () {
      const w = yield* makeWorld({ restartBackoff: Schedule.spaced("1 hour") })
      yield* w.host.spawn("a", Option.some({ ...w.fresh }))
      yield* w.host.send("a", { _tag: "Fail" })
      yield* settle
      expect((yield* w.info("a"))?.phase).toBe("backing-off")
      const waiting = yield* w.ask("a")
      expect(waiting.sent).toBe("delivered")
      yield* Scope.close(w.scope, Exit.void)
      expect(yield* Deferred.await(waiting.reply)).toBe("rejected: actor stopped")
    }),
  )

  it.scoped("without a quarantine duration a quarantine holds until restart; the owner is told when it is held and lifted", () =>
    Effect.gen(function* () {
      const told: Array<string> = []
      const w = yield* makeWorld({
        restartMax: 1,
        quarantine: Option.none(),
        onQuarantine: (key, reason) => Effect.sync(() => told.push(`held ${key}: ${reason}`)),
        onLift: (key) => Effect.sync(() => told.push(`lifted ${key}`)),
      })
      yield* w.host.spawn("a", Option.none())
      yield* w.host.send("a", { _tag: "Fail" })
      yield* settle
      expect(yield* w.info("a")).toMatchObject({ phase: "quarantined", nextWakeAt: null })
      yield* TestClock.adjust(Duration.days(30))
      expect(yield* w.info("a")).toMatchObject({ phase: "quarantined", restarts: 0 })
      expect(told).toEqual(["held a: toy a failed"])
      yield* w.host.restart("a")
      yield* settle
      expect(yield* w.info("a")).toMatchObject({ phase: "parked", restarts: 1 })
      expect(told).toEqual(["held a: toy a failed", "lifted a"])
    }),
  )

  it.scoped("quarantined(key) brings back a quarantine from an earlier process: no actor runs until restart", () =>
    Effect.gen(function* () {
      const w = yield* makeWorld({ quarantine: Option.none() })
      expect(yield* w.host.quarantined("a", "kept")).toBe(true)
      expect(yield* w.host.spawn("a", Option.none())).toBe(false)
      expect(yield* w.host.send("a", { _tag: "Add", n: 1 })).toBe("quarantined")
      yield* settle
      expect(w.stats.starts).toBe(0)
      expect(yield* w.info("a")).toMatchObject({ phase: "quarantined", lastError: "kept", view: null })
      expect((yield* Metric.value(w.metrics.quarantined)).value).toBe(1)
      yield* w.host.restart("a")
      yield* settle
      expect(w.stats.starts).toBe(1)
      expect((yield* Metric.value(w.metrics.quarantined)).value).toBe(0)
      expect(yield* w.host.quarantined("a", "again")).toBe(false)
    }),
  )
})

describe("ActorHost: census", () => {
  /** The census's counts, checked against a pass over `status` (the books read one by one). */
  const countsOf = (host: ActorHost.ActorHost<Msg, Toy, { total: number }>) =>
    Effect.gen(function* () {
      const census = yield* host.census
      const all = yield* host.status
      const counted = Object.fromEntries(ActorHost.PHASES.map((p) => [p, all.filter((a) => a.phase === p).length]))
      expect(census.counts).toEqual(counted)
      expect(census.size).toBe(all.length)
      expect(census.keys).toEqual(all.map((a) => a.key).sort())
      return Object.fromEntries(Object.entries(census.counts).filter(([, n]) => n > 0))
    })

  it.scoped("keeps per-phase counts and sorted keys right through spawn, park, restart, quarantine, lift and retire", () =>
    Effect.gen(function* () {
      const w = yield* makeWorld({ restartMax: 2, restartWindow: Duration.minutes(1), quarantine: Option.none() })
      for (const key of ["c", "a", "d"]) yield* w.host.spawn(key, Option.some({ ...w.fresh }))
      yield* w.host.spawn("b", Option.none()) // no state: a turn starts it, then it parks
      yield* settle
      expect(yield* countsOf(w.host)).toEqual({ parked: 4 })
      expect((yield* w.host.census).keys).toEqual(["a", "b", "c", "d"])

      yield* w.host.send("b", { _tag: "Hold" })
      yield* w.host.send("c", { _tag: "Fail" })
      yield* settle
      expect(yield* countsOf(w.host)).toEqual({ parked: 2, active: 1, "backing-off": 1 })
      const busy = (yield* w.host.census).inPhases(["active", "backing-off"])
      expect(busy.map((a) => [a.key, a.phase])).toEqual([
        ["b", "active"],
        ["c", "backing-off"],
      ])
      yield* TestClock.adjust(1_000) // c restarts after its backoff and parks
      expect(yield* countsOf(w.host)).toEqual({ parked: 3, active: 1 })
      yield* w.host.send("c", { _tag: "Fail" }) // the second failure within the minute
      yield* settle
      expect(yield* w.host.quarantined("q", "kept from an earlier process")).toBe(true)
      expect(yield* countsOf(w.host)).toEqual({ parked: 2, active: 1, quarantined: 2 })
      expect((yield* Metric.value(w.metrics.quarantined)).value).toBe(2)
      expect((yield* w.host.census).keys).toEqual(["a", "b", "c", "d", "q"])

      expect(yield* w.host.restart("c")).toBe(true) // lifts c's quarantine
      expect(yield* w.host.restart("b")).toBe(true) // a fresh incarnation of the holding one: it parks
      yield* settle
      expect(yield* countsOf(w.host)).toEqual({ parked: 4, quarantined: 1 })
      expect((yield* Metric.value(w.metrics.quarantined)).value).toBe(1)
      expect((yield* w.host.census).info("c")).toMatchObject({ key: "c", phase: "parked", restarts: 2 })
      expect((yield* w.host.census).info("nobody")).toBeUndefined()

      // A quiet actor retires after idleTtl and leaves the counts and the keys.
      yield* w.host.spawn("r", Option.some({ ...w.fresh, quiet: true }))
      yield* w.host.send("r", { _tag: "Add", n: 1 })
      yield* settle
      expect(yield* countsOf(w.host)).toEqual({ parked: 5, quarantined: 1 })
      yield* TestClock.adjust(Duration.seconds(10))
      expect(yield* w.host.has("r")).toBe(false)
      expect(yield* countsOf(w.host)).toEqual({ parked: 4, quarantined: 1 })
      expect((yield* w.host.census).keys).toEqual(["a", "b", "c", "d", "q"])
    }),
  )
})

describe("ActorHost: dropping an actor (its user moved to another runner)", () => {
  it.scoped("a parked actor leaves at once with its wake-up; a busy one finishes its turn first, then leaves", () =>
    Effect.gen(function* () {
      const w = yield* makeWorld({}, { wakeAt: 5_000 })
      yield* w.host.spawn("parked", Option.some({ ...w.fresh }))
      yield* w.host.spawn("busy", Option.some({ ...w.fresh, wakeAt: null }))
      yield* w.host.send("busy", { _tag: "Hold" })
      yield* settle
      expect(yield* w.host.phase("busy")).toEqual(Option.some("active"))

      expect(yield* w.host.drop("parked")).toBe(true)
      expect(yield* w.host.has("parked")).toBe(false)
      expect(yield* w.host.drop("busy")).toBe(true)
      // Still working: it stays until its turn parks.
      expect(yield* w.host.has("busy")).toBe(true)
      yield* w.host.send("busy", { _tag: "Add", n: 1 })
      yield* w.host.send("busy", { _tag: "Release" })
      yield* settle
      expect(yield* w.host.has("busy")).toBe(false)
      expect((yield* w.host.census).keys).toEqual([])
      // The dropped parked actor's wake-up went with it.
      yield* TestClock.adjust(6_000)
      expect(w.stats.wokenAt).toEqual([])
      expect(yield* w.host.drop("nobody")).toBe(false)
      // The key can have an actor again (the user came back).
      expect(yield* w.host.spawn("parked", Option.some({ ...w.fresh }))).toBe(true)
    }),
  )
})
