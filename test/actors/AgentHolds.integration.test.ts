/**
 * SPEC §14 on the real stack (the supervisor and its actors, the live MissionStore and MissionRunner,
 * the real database as the runner role, the HTTP stand-in for the LLM): a mission its agent skipped
 * is looked at again only when the reason can have changed.
 * - skipped-budget: the actor wakes it when the budget's window frees (TestClock), not on the retry
 *   backoff: no run (so no database read for it, no LLM request) before then;
 * - skipped-paused: discovery passes the agent's change (AgentDirectory) to the user's actor, which
 *   runs the mission within that one discovery pass, without a restart.
 * Runs are counted by a spy around the real MissionRunner: each run claims and reads the mission.
 */
import { layer } from "@effect/vitest"
import { Duration, Effect, Layer, TestClock } from "effect"
import { expect } from "vitest"
import { Supervisor, SupervisorLive } from "../../src/actors/Supervisor.js"
import { MissionRunner } from "../../src/services/MissionRunner.js"
import { insertChange, missionData } from "../support/eventLogRows.js"
import { LlmStandIn } from "../support/LlmStandIn.js"
import { runnerRowCount, runnerServices } from "../support/RunnerStack.js"
import { TestDatabase, TestDatabaseLive } from "../support/TestDatabase.js"

/** Runs started per mission id (the spy below). */
const runs = new Map<string, number>()
const runsOf = (missionId: string) => runs.get(missionId) ?? 0

const CountingRunner = Layer.effect(
  MissionRunner,
  Effect.map(MissionRunner, (real) =>
    MissionRunner.make({
      run: (request) =>
        Effect.suspend(() => {
          runs.set(request.mission.id, runsOf(request.mission.id) + 1)
          return real.run(request)
        }),
    }),
  ),
)

const stackWith = (tickInterval: Duration.DurationInput) =>
  SupervisorLive.pipe(
    Layer.provide(CountingRunner),
    Layer.provideMerge(
      runnerServices({
        missionTimeout: "20 seconds",
        runner: { tickEnabled: true, tickInterval: Duration.decode(tickInterval), userConcurrency: 2 },
      }),
    ),
    Layer.provideMerge(Layer.merge(TestDatabaseLive, LlmStandIn.layer)),
  )

/** Real time, whatever clock the test runs on: the database and the stand-in answer in real time. */
const realSleep = (ms: number) => Effect.promise(() => new Promise<void>((resolve) => setTimeout(resolve, ms)))

const eventually = <A, E, R>(check: Effect.Effect<A, E, R>, ok: (a: A) => boolean, what: string) =>
  Effect.gen(function* () {
    for (let i = 0; i < 600; i++) {
      const a = yield* check
      if (ok(a)) return a
      yield* realSleep(50)
    }
    return yield* Effect.dieMessage(`timed out waiting for ${what}`)
  })

const missionStatus = (userId: string, missionId: string) =>
  Effect.map(Effect.flatMap(Supervisor, (s) => s.status), (all) => {
    const actor = all.find((a) => a.userId === userId)
    return { actor, mission: actor?.missions.find((m) => m.missionId === missionId) }
  })

const llmRequests = Effect.flatMap(LlmStandIn, (s) => Effect.map(s.requests, (r) => r.length))

const HOUR = 60 * 60 * 1000

layer(stackWith("10 seconds"), { timeout: 120_000 })("a budget-skipped mission (TestClock)", (it) => {
  it.effect("sleeps until its budget's window frees: no run, no LLM request before then; then it runs and is written", () =>
    Effect.gen(function* () {
      const db = yield* TestDatabase
      const standIn = yield* LlmStandIn
      yield* standIn.reset
      const user = "budget-hold"
      const missionId = "budget-hold-mission"
      const t0 = yield* TestClock.currentTimeMillis
      yield* insertChange({
        user,
        table: "agents",
        id: "agent-b",
        data: { name: "Saver", state: "active", policy: { tools: {}, defaultForAi: "propose" }, maxConcurrentMissions: 1, maxTokensPerDay: 1000 },
      })
      yield* insertChange({ user, id: missionId, data: missionData({ agentId: "agent-b", nextRunAt: new Date(t0).toISOString() }) })
      // The agent spent its 1000 tokens at t0: the window frees at t0 + 24 h.
      yield* Effect.promise(() =>
        db.ownerQuery(
          `INSERT INTO mana_ai.token_usage (user_id, agent_id, mission_id, iteration_id, answer_key, tokens, at)
           VALUES ($1, 'agent-b', $2, 'earlier', 'earlier/0', 1000, $3)`,
          [user, missionId, new Date(t0).toISOString()],
        ),
      )
      const freeAt = new Date(t0 + 24 * HOUR).toISOString()

      const supervisor = yield* Supervisor
      yield* supervisor.discover
      yield* eventually(
        Effect.map(missionStatus(user, missionId), (s) => runsOf(missionId) > 0 && s.actor?.inFlight === 0),
        (done) => done,
        "the skip",
      )
      // (A discovery pass of the loop racing the inserts may pass the agent as news to a run in
      // flight, which is then looked at once more before it is held: count from then on.)
      yield* realSleep(300)
      const skippedRuns = runsOf(missionId)

      // A day less a second, an hour at a time (each step also runs a discovery pass): nothing.
      for (let h = 1; h < 24; h++) {
        yield* TestClock.adjust(Duration.hours(1))
        yield* realSleep(60)
      }
      yield* TestClock.adjust(Duration.minutes(59))
      yield* TestClock.adjust(Duration.seconds(59))
      yield* realSleep(500)
      expect(runsOf(missionId), "no run (no database read) before the window frees").toBe(skippedRuns)
      expect(yield* llmRequests).toBe(0)
      expect(yield* runnerRowCount(user, missionId)).toBe(0)
      // /internal/actors shows why it waits and until when; the actor sleeps until then.
      const held = yield* missionStatus(user, missionId)
      expect(held.mission?.held).toEqual({ reason: "skipped-budget", until: freeAt })
      expect(held.actor?.nextWakeAt).toBe(freeAt)

      // The window frees: the actor wakes it, the budget lets it ask, the plan is written.
      yield* TestClock.adjust(Duration.seconds(1))
      yield* eventually(runnerRowCount(user, missionId), (n) => n === 1, "the write-back")
      expect(runsOf(missionId)).toBe(skippedRuns + 1)
      expect(yield* llmRequests).toBeGreaterThan(0)
    }),
  )
})

// The discovery loop's own next pass is an hour away: only the passes the test calls run.
layer(stackWith("1 hour"), { timeout: 120_000, excludeTestServices: true })("an agent's change reaches its user's actor", (it) => {
  it.effect("a paused agent's mission is skipped and writes nothing; resumed by a new sync_changes row, it runs within one discovery pass", () =>
    Effect.gen(function* () {
      const standIn = yield* LlmStandIn
      yield* standIn.reset
      const user = "agent-resume"
      const missionId = "agent-resume-mission"
      yield* insertChange({
        user,
        table: "agents",
        id: "agent-p",
        data: { name: "Coach", state: "paused", policy: { tools: {}, defaultForAi: "propose" }, maxConcurrentMissions: 1 },
      })
      yield* insertChange({
        user,
        id: missionId,
        data: missionData({ agentId: "agent-p", nextRunAt: new Date(Date.now() - 60_000).toISOString() }),
      })
      const supervisor = yield* Supervisor
      yield* supervisor.discover
      const held = yield* eventually(
        missionStatus(user, missionId),
        (s) => s.mission?.held !== null && s.mission?.held !== undefined && s.actor?.inFlight === 0,
        "the skip",
      )
      expect(held.mission?.held).toEqual({ reason: "skipped-paused", until: null })
      const skippedRuns = runsOf(missionId)
      // Held, not retried on a backoff: nothing more happens by itself.
      yield* realSleep(1_000)
      expect(runsOf(missionId)).toBe(skippedRuns)
      expect(yield* llmRequests).toBe(0)
      expect(yield* runnerRowCount(user, missionId)).toBe(0)

      // The user resumes the agent on a device: one update row.
      const now = new Date().toISOString()
      yield* insertChange({ user, table: "agents", id: "agent-p", op: "update", data: { state: "active" }, fieldTimestamps: { state: now } })
      const pass = yield* supervisor.discover
      expect(pass.agentsChanged).toBe(1)
      yield* eventually(runnerRowCount(user, missionId), (n) => n === 1, "the write-back after the resume")
      expect(runsOf(missionId)).toBe(skippedRuns + 1)
      expect((yield* missionStatus(user, missionId)).mission?.held ?? null).toBeNull()
    }),
  )

  it.effect("a budget-skipped mission held for a day runs within one discovery pass once its agent's budget is raised", () =>
    Effect.gen(function* () {
      const db = yield* TestDatabase
      const standIn = yield* LlmStandIn
      yield* standIn.reset
      const user = "agent-raise"
      const missionId = "agent-raise-mission"
      yield* insertChange({
        user,
        table: "agents",
        id: "agent-r",
        data: { name: "Saver", state: "active", policy: { tools: {}, defaultForAi: "propose" }, maxConcurrentMissions: 1, maxTokensPerDay: 1000 },
      })
      yield* insertChange({
        user,
        id: missionId,
        data: missionData({ agentId: "agent-r", nextRunAt: new Date(Date.now() - 60_000).toISOString() }),
      })
      yield* Effect.promise(() =>
        db.ownerQuery(
          `INSERT INTO mana_ai.token_usage (user_id, agent_id, mission_id, iteration_id, answer_key, tokens, at)
           VALUES ($1, 'agent-r', $2, 'earlier', 'earlier/0', 1000, now())`,
          [user, missionId],
        ),
      )
      const supervisor = yield* Supervisor
      yield* supervisor.discover
      const held = yield* eventually(
        missionStatus(user, missionId),
        (s) => s.mission?.held !== null && s.mission?.held !== undefined && s.actor?.inFlight === 0,
        "the skip",
      )
      expect(held.mission?.held?.reason).toBe("skipped-budget")
      expect(Date.parse(held.mission?.held?.until ?? "")).toBeGreaterThan(Date.now() + 23 * HOUR)
      expect(yield* llmRequests).toBe(0)

      const now = new Date().toISOString()
      yield* insertChange({
        user,
        table: "agents",
        id: "agent-r",
        op: "update",
        data: { maxTokensPerDay: 100_000 },
        fieldTimestamps: { maxTokensPerDay: now },
      })
      const pass = yield* supervisor.discover
      expect(pass.agentsChanged).toBe(1)
      yield* eventually(runnerRowCount(user, missionId), (n) => n === 1, "the write-back after the budget was raised")
    }),
  )
})
