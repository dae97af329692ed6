/**
 * Supervision on the real stack (issue 15 items 12 and 18): the real database as the runner role
 * (a server with TEST_DATABASE_URL, else PGlite), the live MissionStore, MissionRunner, Planner,
 * LlmClient and WriteBack, a real HTTP server standing in for the LLM, and the supervisor as the
 * process composes it. Faults come from outside: a stand-in that hangs, a TCP proxy that refuses.
 *
 * Where time matters (deadline, retry backoff, restart backoff, quarantine window, idle TTL) the
 * process runs on the TestClock: the test moves it to the instant an event is due and then waits in
 * real time for the real I/O to show its effect (`until`, bounded by a wide margin, never measured).
 * Each describe block has its own database, so one block's missions never run in another's process.
 */
import { layer } from "@effect/vitest"
import { Context, Duration, Effect, Exit, Fiber, Layer, Scope, TestClock, TestContext, TestServices } from "effect"
import { expect } from "vitest"
import { type ActorStatus, Supervisor, SupervisorLive } from "../../src/actors/Supervisor.js"
import { defaultResponder, LlmStandIn, messagesOf, type RecordedRequest } from "../support/LlmStandIn.js"
import { runnerRowCount, runnerServices, type StackOptions } from "../support/RunnerStack.js"
import { insertChanges, missionInsertRow, missionUpdateRow } from "../support/seed.js"
import { TcpProxy } from "../support/TcpProxy.js"
import { TestDatabase, TestDatabaseLive } from "../support/TestDatabase.js"
import { ProxiedPool, ProxiedWorld } from "../support/ProxiedDatabase.js"

const SECOND = 1_000
const MINUTE = 60_000
const iso = (ms: number) => new Date(ms).toISOString()

/** Real time for the real I/O under way; the TestClock does not move meanwhile. */
const pause = (ms: number) => TestServices.provideLive(Effect.sleep(Duration.millis(ms)))

/**
 * Waits in real time until `check` holds. The bound (90 s) is a wide margin for a loaded 2-core
 * machine where each step takes milliseconds; it measures nothing, it only stops a hung test.
 */
const until = <E, R>(what: string, check: Effect.Effect<boolean, E, R>) =>
  Effect.gen(function* () {
    for (let i = 0; i < 1_800; i++) {
      if (yield* check) return
      yield* pause(50)
    }
    return yield* Effect.dieMessage(`still waiting after 90 s for ${what}`)
  })

/** Moves the TestClock to `at` (epoch ms). */
const clockTo = (at: number) => Effect.flatMap(TestClock.currentTimeMillis, (now) => TestClock.adjust(Duration.millis(at - now)))

/** One process: the supervisor over the runner's services, in its own scope. */
const startProcess = <R = TestDatabase>(options: StackOptions<R>) =>
  Effect.gen(function* () {
    const scope = yield* Scope.make()
    const ctx = yield* Layer.buildWithScope(SupervisorLive.pipe(Layer.provideMerge(runnerServices(options))), scope)
    return { supervisor: Context.get(ctx, Supervisor), stop: Scope.close(scope, Exit.void) }
  })

/** The process's clock on a TestClock set to the wall clock's current second (the database's now() is real). */
const onTestClock = <A, E, R>(body: (t0: number) => Effect.Effect<A, E, R>) =>
  Effect.gen(function* () {
    const t0 = Math.floor(Date.now() / SECOND) * SECOND
    yield* TestClock.setTime(t0)
    return yield* body(t0)
  }).pipe(Effect.provide(TestContext.TestContext))

const statusOf = (supervisor: Supervisor["Type"], userId: string) =>
  Effect.map(supervisor.status, (all): ActorStatus | undefined => all.find((s) => s.userId === userId))

/** Requests whose prompt names the mission title. */
const requestsFor = (title: string) =>
  Effect.map(
    Effect.flatMap(LlmStandIn, (s) => s.requests),
    (all) => all.filter((r) => messagesOf(r).some((m) => m.content.includes(title))),
  )

const json = { plannerMode: "json" } as const

// ---------------------------------------------------------------- deadline and retry backoff

layer(Layer.merge(TestDatabaseLive, LlmStandIn.layer), { timeout: 180_000, excludeTestServices: true })(
  "run deadline and retry backoff on the real stack (TestClock)",
  (it) => {
    it.scoped("a run past MISSION_TIMEOUT_MS writes nothing and retries after 30 s, then 60 s; once the LLM heals it writes once", () =>
      onTestClock((t0) =>
        Effect.gen(function* () {
          const standIn = yield* LlmStandIn
          // Every request hangs: only the run's deadline (10 s, under the 60 s request timeout) ends it.
          yield* standIn.setResponder(() => ({ hang: true }))
          yield* insertChanges([
            missionInsertRow("tess", "tess-slow", { title: "Slow mission", nextRunAt: iso(t0 - MINUTE) }),
          ])
          const p = yield* startProcess({
            ...json,
            missionTimeout: "10 seconds",
            llmTimeout: "60 seconds",
            runner: { tickEnabled: true, tickInterval: Duration.seconds(5), userConcurrency: 2 },
          })
          const requests = requestsFor("Slow mission")
          const slow = Effect.map(statusOf(p.supervisor, "tess"), (s) => s?.missions.find((m) => m.missionId === "tess-slow"))

          // The first discovery pass, at start, runs it: its request hangs.
          yield* until("the first run's request", Effect.map(requests, (r) => r.length === 1))
          yield* clockTo(t0 + 10 * SECOND - 1)
          yield* pause(300)
          expect((yield* slow)?.consecutiveFailures).toBe(0)
          yield* clockTo(t0 + 10 * SECOND)
          yield* until("the first timeout", Effect.map(slow, (m) => m?.consecutiveFailures === 1))
          expect(yield* slow).toMatchObject({ running: false, retryAt: iso(t0 + 40 * SECOND) })
          expect((yield* statusOf(p.supervisor, "tess"))?.lastError).toMatch(/^mission tess-slow: .*MissionTimeout|deadline/)
          expect(yield* runnerRowCount("tess", "tess-slow")).toBe(0)
          yield* until("the abandoned request to close", Effect.map(requests, (r) => r[0]?.abortedByClient === true))

          // Not before 30 s: discovery passes meanwhile do not start it.
          yield* clockTo(t0 + 40 * SECOND - 1)
          yield* pause(300)
          expect(yield* requests).toHaveLength(1)
          yield* clockTo(t0 + 40 * SECOND)
          yield* until("the second run's request", Effect.map(requests, (r) => r.length === 2))
          yield* clockTo(t0 + 50 * SECOND)
          yield* until("the second timeout", Effect.map(slow, (m) => m?.consecutiveFailures === 2))
          // Doubled: 60 s after the second timeout.
          expect(yield* slow).toMatchObject({ retryAt: iso(t0 + 110 * SECOND) })
          yield* clockTo(t0 + 110 * SECOND - 1)
          yield* pause(300)
          expect(yield* requests).toHaveLength(2)

          yield* standIn.setResponder(defaultResponder)
          yield* clockTo(t0 + 110 * SECOND)
          yield* until("the healed run's write", Effect.map(runnerRowCount("tess", "tess-slow"), (n) => n === 1))
          yield* until("the actor to see its write", Effect.map(slow, (m) => m?.consecutiveFailures === 0 && !m.running))
          expect(yield* slow).toMatchObject({ retryAt: null, nextRunAt: expect.any(String) })
          expect(Date.parse((yield* slow)?.nextRunAt ?? "")).toBeGreaterThan(t0 + 110 * SECOND)
          yield* clockTo(t0 + 170 * SECOND)
          yield* pause(300)
          expect(yield* requests).toHaveLength(3)
          expect(yield* runnerRowCount("tess", "tess-slow")).toBe(1)
          yield* p.stop
        }),
      ),
    )
  },
)

// ---------------------------------------------------------------- restart backoff, quarantine, lift


layer(ProxiedWorld, { timeout: 180_000, excludeTestServices: true })(
  "restart backoff and quarantine on the real stack (TestClock, database refused)",
  (it) => {
    it.scoped("a parked actor restarted while the database refuses fails, comes back after 1 s then 2 s, is quarantined at RESTART_MAX past the window, and restart lifts it", () =>
      onTestClock((t0) =>
        Effect.gen(function* () {
          const db = yield* TestDatabase
          const proxy = yield* TcpProxy
          yield* insertChanges([
            missionInsertRow("rita", "rita-later", { title: "Later mission", nextRunAt: iso(t0 + 30 * MINUTE) }),
          ])
          const p = yield* startProcess({
            ...json,
            sql: ProxiedPool,
            missionTimeout: "20 seconds",
            llmTimeout: "10 seconds",
            runner: {
              tickEnabled: true,
              tickInterval: Duration.seconds(5),
              restartMax: 3,
              restartWindow: Duration.minutes(1),
            },
          })
          const rita = statusOf(p.supervisor, "rita")
          yield* until("rita's actor", Effect.map(rita, (s) => s !== undefined))
          // Parked: nothing due for 30 min, no run in flight.
          expect(yield* rita).toMatchObject({ state: "idle", inFlight: 0, restarts: 0, nextWakeAt: iso(t0 + 30 * MINUTE) })

          // An operator restart of a parked actor with the database up: a fresh incarnation that reads the store.
          expect(yield* p.supervisor.restart("rita")).toBe(true)
          yield* until("the fresh incarnation", Effect.map(rita, (s) => s?.restarts === 1 && s.state === "idle"))
          expect(yield* rita).toMatchObject({ lastError: null, missions: [{ missionId: "rita-later", nextRunAt: iso(t0 + 30 * MINUTE) }] })

          // The database refuses: the next incarnation's start-up read fails, a real failure of the actor.
          yield* proxy.setMode("refuse")
          yield* Effect.addFinalizer(() => proxy.resume)
          yield* proxy.dropAll
          expect(yield* p.supervisor.restart("rita")).toBe(true)
          yield* until("the first failure", Effect.map(rita, (s) => s?.state === "backing-off"))
          expect(yield* rita).toMatchObject({ restarts: 2, inFlight: 0 })
          expect((yield* rita)?.lastError).not.toBeNull()
          // Backoff 1 s jittered ±20 % (0.8–1.2 s).
          const firstBack = Date.parse((yield* rita)?.nextWakeAt ?? "")
          expect(firstBack - t0).toBeGreaterThanOrEqual(800)
          expect(firstBack - t0).toBeLessThanOrEqual(1_200)
          yield* clockTo(firstBack - 1)
          yield* pause(200)
          expect(yield* rita).toMatchObject({ state: "backing-off", restarts: 2 })
          // The jittered delay has a fraction of a millisecond that the ISO time drops: one more.
          yield* clockTo(firstBack + 1)
          yield* until("the second failure", Effect.map(rita, (s) => s?.restarts === 3 && s.state === "backing-off"))
          // Doubled: 2 s jittered (1.6–2.4 s) after the second failure.
          const secondBack = Date.parse((yield* rita)?.nextWakeAt ?? "")
          expect(secondBack - (firstBack + 1)).toBeGreaterThanOrEqual(1_600 - 1)
          expect(secondBack - (firstBack + 1)).toBeLessThanOrEqual(2_400)
          yield* clockTo(secondBack + 1)
          // The third failure within RESTART_WINDOW_MS: quarantined, with no wake-up.
          yield* until("the quarantine", Effect.map(rita, (s) => s?.state === "quarantined"))
          expect(yield* rita).toMatchObject({ restarts: 4, nextWakeAt: null, inFlight: 0 })

          // The database is back, the window long past: it holds until an operator lifts it, and the
          // quarantine taken while the database refused reaches mana_ai (retried), so it survives a restart.
          yield* proxy.resume
          yield* clockTo(t0 + 5 * MINUTE)
          // Each look moves the clock 30 s (the retry's longest spacing), so a retry that was still in
          // flight when the clock last moved gets its turn too.
          yield* until(
            "the quarantine recorded",
            Effect.zipRight(
              TestClock.adjust(Duration.seconds(30)),
              Effect.map(
                Effect.promise(() => db.ownerQuery("SELECT user_id FROM mana_ai.actor_quarantines")),
                (rows) => rows.length === 1 && (rows[0] as { user_id: string }).user_id === "rita",
              ),
            ),
          )
          expect(yield* rita).toMatchObject({ state: "quarantined", restarts: 4 })
          // A mission that falls due meanwhile: a tick is told the user is quarantined, and nothing runs.
          yield* insertChanges([missionInsertRow("rita", "rita-now", { title: "Now mission", nextRunAt: iso(t0) })])
          const tick = yield* p.supervisor.tick
          expect(tick).toMatchObject({ dueMissionCount: 1, plansProduced: 0, plansWrittenBack: 0, errors: ["user rita: quarantined"] })
          expect(yield* runnerRowCount("rita", "rita-now")).toBe(0)
          expect(yield* (yield* LlmStandIn).requests).toHaveLength(0)

          // Lifted: the actor comes back, reads the store and runs what is due, once.
          expect(yield* p.supervisor.restart("rita")).toBe(true)
          yield* until("the lifted actor's run", Effect.map(runnerRowCount("rita", "rita-now"), (n) => n === 1))
          expect(yield* rita).toMatchObject({ restarts: 5 })
          expect((yield* rita)?.state).not.toBe("quarantined")
          expect(yield* Effect.promise(() => db.ownerQuery("SELECT user_id FROM mana_ai.actor_quarantines"))).toEqual([])
          // And it runs its mission when it is due: one write.
          yield* clockTo(t0 + 30 * MINUTE)
          yield* until("the mission's write", Effect.map(runnerRowCount("rita", "rita-later"), (n) => n === 1))
          yield* p.stop
        }),
      ),
    )
  },
)

// ---------------------------------------------------------------- idle retirement

layer(Layer.merge(TestDatabaseLive, LlmStandIn.layer), { timeout: 180_000, excludeTestServices: true })(
  "idle retirement on the real stack (TestClock)",
  (it) => {
    it.scoped("a user whose mission is paused in the log loses the actor ACTOR_IDLE_TTL_MS later, not before; made active again, it gets one and runs", () =>
      onTestClock((t0) =>
        Effect.gen(function* () {
          yield* insertChanges([
            missionInsertRow("ida", "ida-1", { title: "Idle mission", nextRunAt: iso(t0 + 20 * MINUTE) }),
          ])
          const p = yield* startProcess({
            ...json,
            runner: { tickEnabled: true, tickInterval: Duration.seconds(5), actorIdleTtl: Duration.minutes(5) },
          })
          const ida = statusOf(p.supervisor, "ida")
          yield* until("ida's actor", Effect.map(ida, (s) => s !== undefined))

          yield* insertChanges([missionUpdateRow("ida", "ida-1", { state: "paused" })])
          // The discovery pass at 5 s hands the pause to the actor: from then on it has nothing scheduled.
          yield* clockTo(t0 + 5 * SECOND)
          yield* until("the pause to reach the actor", Effect.map(ida, (s) => s !== undefined && s.missions.length === 0))
          const idleSince = Date.parse((yield* ida)?.nextWakeAt ?? "") - 5 * MINUTE
          expect(idleSince).toBe(t0 + 5 * SECOND)
          yield* clockTo(idleSince + 5 * MINUTE - 1)
          yield* pause(300)
          expect(yield* ida).toMatchObject({ state: "idle" })
          yield* clockTo(idleSince + 5 * MINUTE)
          yield* until("the retirement", Effect.map(ida, (s) => s === undefined))

          // Active and due again: the next discovery pass spawns a new actor, which runs it once.
          yield* insertChanges([missionUpdateRow("ida", "ida-1", { state: "active", nextRunAt: iso(t0) })])
          yield* clockTo(idleSince + 5 * MINUTE + 5 * SECOND)
          yield* until("the new actor's write", Effect.map(runnerRowCount("ida", "ida-1"), (n) => n === 1))
          expect((yield* ida)?.restarts).toBe(0)
          yield* p.stop
        }),
      ),
    )
  },
)

// ---------------------------------------------------------------- caps and the drain (real time)

/** The most requests of these that were open at once (from the stand-in's own arrival and close times). */
const mostAtOnce = (requests: ReadonlyArray<RecordedRequest>): number => {
  const edges = requests.flatMap((r) => [
    { at: r.receivedAt, d: 1 },
    { at: r.closedAt ?? Number.POSITIVE_INFINITY, d: -1 },
  ])
  // A close and an arrival at the same instant: the close first.
  edges.sort((a, b) => a.at - b.at || a.d - b.d)
  let now = 0
  let most = 0
  for (const e of edges) {
    now += e.d
    most = Math.max(most, now)
  }
  return most
}

const titleOf = (r: RecordedRequest) => messagesOf(r).find((m) => m.role === "user")?.content ?? ""

layer(Layer.merge(TestDatabaseLive, LlmStandIn.layer), { timeout: 180_000, excludeTestServices: true })(
  "caps and the drain on the real stack",
  (it) => {
    it.scoped("USER_CONCURRENCY=2: five due missions of one user are planned two at a time while another user's run beside them, each written once", () =>
      Effect.gen(function* () {
        const standIn = yield* LlmStandIn
        yield* standIn.reset
        // Each answer takes 2 s of real time, so the runs the cap lets through overlap for certain:
        // starting a run takes milliseconds, 2 s is a wide margin for a loaded machine.
        yield* standIn.setResponder((r) => ({ ...defaultResponder(r), delayMs: 2_000 }))
        const missions = [
          ...[1, 2, 3, 4, 5].map((i) => ["una", `una-${i}`, `Una task ${i}`] as const),
          ...[1, 2].map((i) => ["vic", `vic-${i}`, `Vic task ${i}`] as const),
        ]
        yield* insertChanges(missions.map(([user, id, title]) => missionInsertRow(user, id, { title })))
        // GLOBAL_CONCURRENCY well above: only the per-user cap holds una back.
        const p = yield* startProcess({
          ...json,
          missionTimeout: "60 seconds",
          llmTimeout: "30 seconds",
          runner: { tickEnabled: false, userConcurrency: 2, globalConcurrency: 16 },
        })
        const report = yield* p.supervisor.tick
        expect(report).toMatchObject({ dueMissionCount: 7, plansProduced: 7, plansWrittenBack: 7, errors: [] })
        for (const [user, id] of missions) expect([id, yield* runnerRowCount(user, id)]).toEqual([id, 1])
        const requests = yield* standIn.requests
        expect(requests).toHaveLength(7)
        const una = requests.filter((r) => titleOf(r).includes("Una task"))
        expect(una).toHaveLength(5)
        expect(mostAtOnce(una)).toBe(2)
        // Per user, not process-wide: vic's two ran beside una's two.
        expect(mostAtOnce(requests)).toBe(4)
        yield* p.stop
      }),
    )

    it.scoped("GLOBAL_CONCURRENCY=3: four users' eight due runs send at most three LLM requests at once, each written once", () =>
      Effect.gen(function* () {
        const standIn = yield* LlmStandIn
        yield* standIn.reset
        // As above: 2 s per answer makes the runs the cap lets through overlap for certain.
        yield* standIn.setResponder((r) => ({ ...defaultResponder(r), delayMs: 2_000 }))
        const missions = ["gia", "hal", "ike", "jo"].flatMap((u) => [1, 2].map((i) => [u, `${u}-${i}`] as const))
        yield* insertChanges(missions.map(([user, id]) => missionInsertRow(user, id, { title: `Global ${id}` })))
        const p = yield* startProcess({
          ...json,
          missionTimeout: "60 seconds",
          llmTimeout: "30 seconds",
          runner: { tickEnabled: false, userConcurrency: 2, globalConcurrency: 3 },
        })
        const report = yield* p.supervisor.tick
        expect(report).toMatchObject({ dueMissionCount: 8, plansProduced: 8, plansWrittenBack: 8, errors: [] })
        for (const [user, id] of missions) expect([id, yield* runnerRowCount(user, id)]).toEqual([id, 1])
        const requests = (yield* standIn.requests).filter((r) => titleOf(r).includes("Global "))
        expect(requests).toHaveLength(8)
        expect(mostAtOnce(requests)).toBe(3)
        expect(yield* standIn.maxInFlight).toBe(3)
        yield* p.stop
      }),
    )

    it.scoped("the drain: a tick while draining runs nothing and says so; the run in flight finishes its write-back within the grace", () =>
      Effect.gen(function* () {
        const standIn = yield* LlmStandIn
        yield* standIn.reset
        // The drain must begin while the answer is out: we wait for the request, then stop at once, which
        // takes milliseconds; 8 s is a wide margin for a loaded machine (and well inside the 60 s grace).
        yield* standIn.setResponder((r) => ({ ...defaultResponder(r), delayMs: 8_000 }))
        // Two due missions, one run at a time: the second waits for the user's permit when the drain begins.
        yield* insertChanges([
          missionInsertRow("xena", "xena-1", { title: "Drain one" }),
          missionInsertRow("xena", "xena-2", { title: "Drain two" }),
        ])
        const p = yield* startProcess({
          ...json,
          missionTimeout: "60 seconds",
          llmTimeout: "30 seconds",
          // Discovery runs once at start (the next pass is an hour away): the first pass starts the run.
          runner: { tickEnabled: true, tickInterval: Duration.hours(1), userConcurrency: 1, shutdownGrace: Duration.seconds(60) },
        })
        const asked = Effect.map(standIn.requests, (all) => all.filter((r) => titleOf(r).includes("Drain ")))
        yield* until("the first run's request", Effect.map(asked, (r) => r.length >= 1))
        const first = titleOf((yield* asked)[0]!).includes("Drain one") ? ["xena-1", "xena-2"] : ["xena-2", "xena-1"]
        const stopping = yield* Effect.fork(p.stop)
        yield* until("the drain", p.supervisor.draining)

        const during = yield* p.supervisor.tick
        expect(during).toMatchObject({ dueMissionCount: 0, plansProduced: 0, plansWrittenBack: 0, errors: ["shutting-down"] })

        yield* Fiber.join(stopping)
        // The run whose answer was out when the drain began wrote its iteration; the waiting one never started.
        expect(yield* runnerRowCount("xena", first[0]!)).toBe(1)
        expect(yield* runnerRowCount("xena", first[1]!)).toBe(0)
        const titles = (yield* asked).map(titleOf)
        expect(titles.every((t) => t === titles[0])).toBe(true)
      }),
    )
  },
)
