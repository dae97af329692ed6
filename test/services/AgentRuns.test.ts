/**
 * Agents, token budgets and per-agent concurrency through the real run pipeline (SPEC §14): a real
 * database as the runner role, the process's runner services (runnerServicesLayer: the real planner,
 * LLM client, ledger, breaker and agent permits) against the HTTP stand-in for the LLM.
 */
import { it } from "@effect/vitest"
import { Effect, Either, Layer, Metric, Option, TestServices } from "effect"
import { expect } from "vitest"
import type { RunOutcome } from "../../src/services/MissionRunner.js"
import { agentDecisionsTotal } from "../../src/services/metrics.js"
import { BUDGET_WINDOW_MS, TokenLedger } from "../../src/services/TokenLedger.js"
import { insertChange, missionData, runnerRows } from "../support/eventLogRows.js"
import {
  LlmStandIn,
  type RecordedRequest,
  completion,
  defaultPlan,
  messagesOf,
  planAnswer,
  toolsOf,
} from "../support/LlmStandIn.js"
import { runnerServices, runOnce, snapshotOf, missionOf } from "../support/RunnerStack.js"
import { TestDatabaseLive } from "../support/TestDatabase.js"
import { MissionRunner } from "../../src/services/MissionRunner.js"
import { LlmBreaker } from "../../src/services/LlmBreaker.js"

const USAGE = { prompt_tokens: 150, completion_tokens: 50 } // 200 tokens per answer

let n = 0
const fresh = (prefix: string) => `${prefix}-${++n}-${Math.random().toString(36).slice(2, 8)}`

const decisions = (decision: string) => Effect.map(Metric.value(Metric.tagged(agentDecisionsTotal, "decision", decision)), (s) => s.count)

/** An agent record as the app writes it; `overrides` replace fields (undefined drops one). */
const agentData = (overrides: Record<string, unknown> = {}) =>
  Object.fromEntries(
    Object.entries({
      name: "Coach",
      state: "active",
      policy: { tools: {}, defaultForAi: "propose" },
      maxConcurrentMissions: 1,
      ...overrides,
    }).filter(([, v]) => v !== undefined),
  )

const insertAgent = (user: string, agentId: string, overrides: Record<string, unknown> = {}) =>
  insertChange({ user, table: "agents", id: agentId, data: agentData(overrides) })

const insertMission = (user: string, fields: Record<string, unknown> = {}) =>
  Effect.gen(function* () {
    const missionId = fresh("mission")
    yield* insertChange({ user, id: missionId, data: missionData(fields) })
    return missionId
  })

const outcomeOf = (result: Either.Either<RunOutcome, unknown>): RunOutcome => {
  if (Either.isLeft(result)) throw new Error(`the run failed: ${String((result.left as { _tag?: string })._tag)}`)
  return result.right
}

const requestCount = Effect.flatMap(LlmStandIn, (s) => Effect.map(s.requests, (r) => r.length))

const allText = (requests: ReadonlyArray<RecordedRequest>) => requests.map((r) => JSON.stringify(r.body)).join("\n")

// json: one LLM request per answer, each with a scripted usage, so the tests count tokens exactly.
const JsonStack = runnerServices({ plannerMode: "json", repairAttempts: 1, missionTimeout: "5 seconds", llmTimeout: "1 second" }).pipe(
  Layer.provideMerge(Layer.merge(TestDatabaseLive, LlmStandIn.layer)),
)

it.layer(JsonStack, { timeout: 180_000 })("agents in runs (json planner)", (it) => {
  it.effect("a paused or archived agent skips its missions with a typed reason: no LLM request, nothing written, counted", () =>
    Effect.gen(function* () {
      const standIn = yield* LlmStandIn
      yield* standIn.reset
      const user = fresh("pat")
      yield* insertAgent(user, "agent-paused", { state: "paused" })
      yield* insertAgent(user, "agent-archived", { state: "archived" })
      const paused = yield* insertMission(user, { agentId: "agent-paused" })
      const archived = yield* insertMission(user, { agentId: "agent-archived" })
      const before = { paused: yield* decisions("skipped-paused"), archived: yield* decisions("skipped-archived") }

      const p = outcomeOf(yield* runOnce(user, paused))
      const a = outcomeOf(yield* runOnce(user, archived))
      expect(p).toMatchObject({ _tag: "Skipped", reason: "skipped-paused" })
      expect(a).toMatchObject({ _tag: "Skipped", reason: "skipped-archived" })
      expect(yield* requestCount).toBe(0)
      expect(yield* runnerRows(user, paused)).toHaveLength(0)
      expect(yield* runnerRows(user, archived)).toHaveLength(0)
      expect((yield* decisions("skipped-paused")) - before.paused).toBe(1)
      expect((yield* decisions("skipped-archived")) - before.archived).toBe(1)

      // The agent resumes (a later row): the same mission runs and is written under it.
      yield* insertChange({ user, table: "agents", id: "agent-paused", op: "update", data: { state: "active" } })
      expect(outcomeOf(yield* runOnce(user, paused))).toMatchObject({ _tag: "Written" })
      expect(yield* runnerRows(user, paused)).toHaveLength(1)
    }).pipe(TestServices.provideLive),
  )

  it.effect("an agent record that does not decode skips only its missions, naming the field; the user's other missions run", () =>
    Effect.gen(function* () {
      const standIn = yield* LlmStandIn
      yield* standIn.reset
      const user = fresh("mal")
      yield* insertAgent(user, "agent-broken", { maxTokensPerDay: -5 })
      const broken = yield* insertMission(user, { agentId: "agent-broken" })
      const legacy = yield* insertMission(user)

      const b = outcomeOf(yield* runOnce(user, broken))
      expect(b).toMatchObject({ _tag: "Skipped", reason: "agent-malformed" })
      expect(b._tag === "Skipped" ? b.detail : "").toContain("maxTokensPerDay")
      expect(yield* requestCount).toBe(0)
      expect(yield* runnerRows(user, broken)).toHaveLength(0)

      expect(outcomeOf(yield* runOnce(user, legacy))).toMatchObject({ _tag: "Written" })
      expect(yield* requestCount).toBe(1)
    }).pipe(TestServices.provideLive),
  )

  it.effect("another user's agent of the same id is not seen (RLS): the mission runs on the legacy path", () =>
    Effect.gen(function* () {
      const standIn = yield* LlmStandIn
      yield* standIn.reset
      const owner = fresh("own")
      const other = fresh("oth")
      yield* insertAgent(owner, "agent-shared-id", { state: "paused" })
      const missionId = yield* insertMission(other, { agentId: "agent-shared-id" })
      expect(outcomeOf(yield* runOnce(other, missionId))).toMatchObject({ _tag: "Written" })
      expect(yield* requestCount).toBe(1)
    }).pipe(TestServices.provideLive),
  )

  it.effect("the prompt lists only the tools the agent proposes; a step naming a denied tool is rejected like an unknown one", () =>
    Effect.gen(function* () {
      const standIn = yield* LlmStandIn
      yield* standIn.reset
      const user = fresh("pol")
      // create_place denied by name, the calendar module by default, everything else proposed.
      yield* insertAgent(user, "agent-policy", {
        policy: { tools: { create_place: "deny" }, defaultsByModule: { calendar: "auto" }, defaultForAi: "propose" },
      })
      const missionId = yield* insertMission(user, { agentId: "agent-policy" })
      // defaultPlan names create_task and create_place: rejected twice (answer and repair turn).
      yield* standIn.setResponder(() => ({ body: completion(planAnswer(defaultPlan), USAGE) }))

      const outcome = outcomeOf(yield* runOnce(user, missionId))
      expect(outcome).toMatchObject({ _tag: "Written", overallStatus: "failed", failure: "PlanRejected", parseFailures: 2 })
      const requests = yield* standIn.requests
      expect(requests).toHaveLength(2)
      const system = messagesOf(requests[0]).find((m) => m.role === "system")?.content ?? ""
      expect(system).toContain("create_task")
      expect(system).toContain("complete_task")
      expect(system).not.toContain("create_place")
      expect(system).not.toContain("create_event")
      // The repair turn quotes the parser's reason: the tool is unknown to this mission.
      expect(messagesOf(requests[1]).at(-1)?.content ?? "").toContain("create_place")
    }).pipe(TestServices.provideLive),
  )

  it.effect("the persona joins the system message as plain text; an enc:1: value never reaches a request", () =>
    Effect.gen(function* () {
      const standIn = yield* LlmStandIn
      yield* standIn.reset
      const user = fresh("per")
      const secret = "enc:1:c2VjcmV0LW1lbW9yeQ==.aXY="
      yield* insertAgent(user, "agent-persona", {
        name: "Trainer Tom",
        systemPrompt: "Answer like a patient running coach.",
        memory: secret,
      })
      yield* insertAgent(user, "agent-enc-prompt", { name: "Quiet", systemPrompt: "enc:1:b3RoZXI=.aXY=", memory: "Likes mornings." })
      const a = yield* insertMission(user, { agentId: "agent-persona" })
      const b = yield* insertMission(user, { agentId: "agent-enc-prompt" })
      expect(outcomeOf(yield* runOnce(user, a))).toMatchObject({ _tag: "Written" })
      expect(outcomeOf(yield* runOnce(user, b))).toMatchObject({ _tag: "Written" })
      const requests = yield* standIn.requests
      const systemOf = (r: RecordedRequest | undefined) => messagesOf(r).find((m) => m.role === "system")?.content ?? ""
      expect(systemOf(requests[0])).toContain("Answer like a patient running coach.")
      expect(systemOf(requests[0])).toContain("Trainer Tom")
      expect(systemOf(requests[1])).toContain("Likes mornings.")
      expect(allText(requests)).not.toContain("enc:1:")
    }).pipe(TestServices.provideLive),
  )

  it.effect("maxConcurrentMissions holds across the agent's missions: more due missions than the cap, measured at the stand-in", () =>
    Effect.gen(function* () {
      const standIn = yield* LlmStandIn
      yield* standIn.reset
      const user = fresh("cap")
      yield* insertAgent(user, "agent-two", { name: "Two", systemPrompt: "AGENT-TWO", maxConcurrentMissions: 2 })
      yield* insertAgent(user, "agent-one", { name: "One", systemPrompt: "AGENT-ONE", maxConcurrentMissions: 1 })
      const twos = yield* Effect.all(Array.from({ length: 5 }, () => insertMission(user, { agentId: "agent-two" })))
      const ones = yield* Effect.all(Array.from({ length: 3 }, () => insertMission(user, { agentId: "agent-one" })))
      // 400 ms per answer: a run waiting for a permit cannot ask before the answer it waits on left.
      const DELAY = 400
      yield* standIn.setResponder(() => ({ body: completion(planAnswer(defaultPlan), USAGE), delayMs: DELAY }))
      const runner = yield* MissionRunner
      const missions = yield* Effect.forEach([...twos, ...ones], (id) => snapshotOf(user, id))
      const outcomes = yield* Effect.forEach(missions, (s) => runner.run({ userId: user, mission: missionOf(s) }), {
        concurrency: "unbounded",
      })
      expect(outcomes.every((o) => o._tag === "Written")).toBe(true)

      const requests = yield* standIn.requests
      expect(requests).toHaveLength(8)
      // Each request counts as in flight for 300 ms from its arrival (its answer takes 400 ms).
      const maxOverlap = (marker: string) => {
        const starts = requests.filter((r) => JSON.stringify(r.body).includes(marker)).map((r) => r.receivedAt)
        let max = 0
        for (const s of starts) max = Math.max(max, starts.filter((t) => t >= s && t < s + DELAY - 100).length)
        return { count: starts.length, max }
      }
      expect(maxOverlap("AGENT-TWO")).toEqual({ count: 5, max: 2 })
      expect(maxOverlap("AGENT-ONE")).toEqual({ count: 3, max: 1 })
    }).pipe(TestServices.provideLive),
  )

  it.effect("a spent agent budget stops the run between a rejected answer and its repair turn: skipped-budget, nothing written, freeAt given", () =>
    Effect.gen(function* () {
      const standIn = yield* LlmStandIn
      yield* standIn.reset
      const user = fresh("bud")
      yield* insertAgent(user, "agent-budget", { maxTokensPerDay: 150 })
      const missionId = yield* insertMission(user, { agentId: "agent-budget" })
      yield* standIn.setResponder(() => ({ body: completion("not a plan", USAGE) }))
      const before = yield* decisions("skipped-budget")
      const t0 = Date.now()

      const outcome = outcomeOf(yield* runOnce(user, missionId))
      const t1 = Date.now()
      expect(outcome).toMatchObject({ _tag: "Skipped", reason: "skipped-budget", budget: "agent" })
      expect(yield* requestCount).toBe(1) // the repair turn was never sent
      expect(yield* runnerRows(user, missionId)).toHaveLength(0)
      expect((yield* decisions("skipped-budget")) - before).toBe(1)
      // The window frees when the one answer (recorded between t0 and t1) leaves it.
      const freeAt = Date.parse(outcome._tag === "Skipped" ? String(outcome.freeAt) : "")
      expect(freeAt).toBeGreaterThanOrEqual(t0 + BUDGET_WINDOW_MS)
      expect(freeAt).toBeLessThanOrEqual(t1 + BUDGET_WINDOW_MS)
      const ledger = yield* TokenLedger
      expect(yield* ledger.spentInWindow({ _tag: "Agent", userId: user, agentId: "agent-budget" })).toBe(200)

      // Still due, still spent: the next run stops before its first request.
      expect(outcomeOf(yield* runOnce(user, missionId))).toMatchObject({ _tag: "Skipped", reason: "skipped-budget" })
      expect(yield* requestCount).toBe(1)
    }).pipe(TestServices.provideLive),
  )

  it.effect("every answer is recorded once: a run that died after an answer, run again for the same iteration, counts each answer once", () =>
    Effect.gen(function* () {
      const standIn = yield* LlmStandIn
      yield* standIn.reset
      const user = fresh("once")
      const missionId = yield* insertMission(user)
      // First attempt: a rejected answer (200 tokens), then the repair turn hangs past the deadline.
      yield* standIn.enqueue({ body: completion("not a plan", USAGE) })
      yield* standIn.setResponder(() => ({ hang: true }))
      const snapshot = yield* snapshotOf(user, missionId)
      const runner = yield* MissionRunner
      const first = yield* Effect.either(runner.run({ userId: user, mission: missionOf(snapshot) }))
      expect(Either.isLeft(first) && first.left._tag).toBe("MissionTimeout")
      expect(yield* runnerRows(user, missionId)).toHaveLength(0)
      const ledger = yield* TokenLedger
      expect(yield* ledger.spentInWindow({ _tag: "User", userId: user })).toBe(200)

      // The same iteration again (same snapshot): one good answer, written.
      yield* standIn.setResponder(() => ({ body: completion(planAnswer(defaultPlan), USAGE) }))
      const second = outcomeOf(yield* Effect.either(runner.run({ userId: user, mission: missionOf(snapshot) })))
      expect(second).toMatchObject({ _tag: "Written" })
      expect(yield* ledger.spentInWindow({ _tag: "User", userId: user })).toBe(400)

      // And once more: already written, no request, nothing counted again.
      const requestsBefore = yield* requestCount
      const third = outcomeOf(yield* Effect.either(runner.run({ userId: user, mission: missionOf(snapshot) })))
      expect(third).toMatchObject({ _tag: "Skipped", reason: "already-written" })
      expect(yield* requestCount).toBe(requestsBefore)
      expect(yield* ledger.spentInWindow({ _tag: "User", userId: user })).toBe(400)
      expect(yield* runnerRows(user, missionId)).toHaveLength(1)
    }).pipe(TestServices.provideLive),
  )
})

// More repair turns, so concurrent runs make several requests each: the overshoot's worst case.
const OvershootStack = runnerServices({ plannerMode: "json", repairAttempts: 4, missionTimeout: "20 seconds" }).pipe(
  Layer.provideMerge(Layer.merge(TestDatabaseLive, LlmStandIn.layer)),
)

it.layer(OvershootStack, { timeout: 180_000 })("budget overshoot (json planner)", (it) => {
  it.effect("concurrent runs of one agent overshoot its budget by at most one answer per run", () =>
    Effect.gen(function* () {
      const standIn = yield* LlmStandIn
      yield* standIn.reset
      const user = fresh("over")
      const RUNS = 4
      const LIMIT = 1_000
      yield* insertAgent(user, "agent-over", { maxTokensPerDay: LIMIT, maxConcurrentMissions: RUNS })
      const ids = yield* Effect.all(Array.from({ length: RUNS }, () => insertMission(user, { agentId: "agent-over" })))
      // Every answer rejected and slow, so the runs' checks pass together before usage lands.
      yield* standIn.setResponder(() => ({ body: completion("not a plan", USAGE), delayMs: 150 }))
      const runner = yield* MissionRunner
      const snapshots = yield* Effect.forEach(ids, (id) => snapshotOf(user, id))
      const outcomes = yield* Effect.forEach(snapshots, (s) => runner.run({ userId: user, mission: missionOf(s) }), {
        concurrency: "unbounded",
      })
      const answers = (yield* standIn.requests).length
      const ledger = yield* TokenLedger
      const spent = yield* ledger.spentInWindow({ _tag: "Agent", userId: user, agentId: "agent-over" })
      expect(spent).toBe(answers * 200)
      expect(outcomes.some((o) => o._tag === "Skipped" && o.reason === "skipped-budget")).toBe(true)
      const overshoot = spent - LIMIT
      expect(overshoot).toBeGreaterThanOrEqual(0)
      expect(overshoot).toBeLessThanOrEqual(RUNS * 200)
      console.log(`run budget overshoot: ${RUNS} concurrent runs, limit ${LIMIT}, spent ${spent} (${answers} answers), overshoot ${overshoot}`)
    }).pipe(TestServices.provideLive),
  )
})

const ToolsStack = runnerServices({ plannerMode: "tools", repairAttempts: 1 }).pipe(
  Layer.provideMerge(Layer.merge(TestDatabaseLive, LlmStandIn.layer)),
)

it.layer(ToolsStack, { timeout: 180_000 })("agents in runs (tools planner)", (it) => {
  it.effect("only the tools the agent proposes are offered; a call to a denied tool is rejected like an unknown one", () =>
    Effect.gen(function* () {
      const standIn = yield* LlmStandIn
      yield* standIn.reset
      const user = fresh("tool")
      yield* insertAgent(user, "agent-tools", {
        systemPrompt: "Plan gently.",
        policy: { tools: { create_task: "propose", create_place: "deny" }, defaultsByModule: { todo: "auto" }, defaultForAi: "auto" },
      })
      const missionId = yield* insertMission(user, { agentId: "agent-tools" })
      // The stand-in's default answer calls create_task and create_place: the answer is rejected (all
      // or nothing); the repair turn answers each call with its reason and the stand-in then only sums up.
      const outcome = outcomeOf(yield* runOnce(user, missionId))
      expect(outcome).toMatchObject({ _tag: "Written", overallStatus: "approved", steps: 0, parseFailures: 1 })
      const requests = yield* standIn.requests
      expect(requests).toHaveLength(2)
      const repair = messagesOf(requests[1]).filter((m) => m.role === "tool").map((m) => m.content)
      expect(repair.some((c) => c.includes("create_place"))).toBe(true)
      for (const r of requests) expect(toolsOf(r).map((t) => t.function.name)).toEqual(["create_task"])
      expect(messagesOf(requests[0]).find((m) => m.role === "system")?.content ?? "").toContain("Plan gently.")
    }).pipe(TestServices.provideLive),
  )
})

// A deadline shorter than the breaker's 5 s cool-down: a run that waits for it inside the deadline times out.
const BreakerStack = runnerServices({ plannerMode: "json", missionTimeout: "2 seconds", breakerFailures: 2 }).pipe(
  Layer.provideMerge(Layer.merge(TestDatabaseLive, LlmStandIn.layer)),
)

it.layer(BreakerStack, { timeout: 180_000 })("the breaker and the run's deadline", (it) => {
  it.effect("a run due while the breaker is open waits outside its deadline and is written once the probe succeeds", () =>
    Effect.gen(function* () {
      const standIn = yield* LlmStandIn
      yield* standIn.reset
      const breaker = yield* LlmBreaker
      // Taken before the breaker opens, so the bound below holds however slow the steps in between are.
      const t0 = Date.now()
      // Two transient failures in a row (the process's other runs) open it for 5 s.
      for (let i = 0; i < 2; i++) yield* Effect.either(breaker.guard(Effect.fail("transient"), () => true))
      expect((yield* breaker.state).state).toBe("open")
      const user = fresh("brk")
      const missionId = yield* insertMission(user)
      const outcome = outcomeOf(yield* runOnce(user, missionId))
      expect(outcome).toMatchObject({ _tag: "Written" })
      const requests = yield* standIn.requests
      expect(requests).toHaveLength(1)
      // Nothing was sent before the cool-down (5 s from the opening, after t0) ended.
      expect(requests[0]!.receivedAt - t0).toBeGreaterThanOrEqual(4_990)
      expect((yield* breaker.state).state).toBe("closed")
    }).pipe(TestServices.provideLive),
  )
})

// USER_DAILY_TOKEN_BUDGET=300 for missions without an agent budget; LLM_DAILY_TOKEN_BUDGET=1000 for all.
const BudgetConfigStack = runnerServices({ plannerMode: "json", tokenBudget: { userDailyTokens: Option.some(300), llmDailyTokens: Option.some(1_000) } }).pipe(
  Layer.provideMerge(Layer.merge(TestDatabaseLive, LlmStandIn.layer)),
)

it.layer(BudgetConfigStack, { timeout: 180_000 })("USER_DAILY_TOKEN_BUDGET and LLM_DAILY_TOKEN_BUDGET in runs", (it) => {
  it.effect("a legacy mission falls under the user's budget, an agent's budget replaces it, and the process budget stops every run", () =>
    Effect.gen(function* () {
      const standIn = yield* LlmStandIn
      yield* standIn.reset
      yield* standIn.setResponder(() => ({ body: completion(planAnswer(defaultPlan), USAGE) }))
      const user = fresh("usr")
      yield* insertAgent(user, "agent-big", { maxTokensPerDay: 10_000 })
      const legacy = yield* Effect.all(Array.from({ length: 3 }, () => insertMission(user)))
      const underAgent = yield* insertMission(user, { agentId: "agent-big" })

      // 200 tokens per run: the second run starts at 200 (< 300), the third at 400 (≥ 300).
      expect(outcomeOf(yield* runOnce(user, legacy[0]!))).toMatchObject({ _tag: "Written" })
      expect(outcomeOf(yield* runOnce(user, legacy[1]!))).toMatchObject({ _tag: "Written" })
      const third = outcomeOf(yield* runOnce(user, legacy[2]!))
      expect(third).toMatchObject({ _tag: "Skipped", reason: "skipped-budget", budget: "user" })
      expect(yield* requestCount).toBe(2)
      // The agent's own budget applies to its missions instead of the user's.
      expect(outcomeOf(yield* runOnce(user, underAgent))).toMatchObject({ _tag: "Written" })

      // Other users: the process-wide window (600 so far) reaches 1000 after two more runs.
      const others = yield* Effect.all(Array.from({ length: 3 }, () => Effect.flatMap(Effect.sync(() => fresh("oth")), (u) => Effect.map(insertMission(u), (m) => [u, m] as const))))
      expect(outcomeOf(yield* runOnce(others[0]![0], others[0]![1]))).toMatchObject({ _tag: "Written" })
      expect(outcomeOf(yield* runOnce(others[1]![0], others[1]![1]))).toMatchObject({ _tag: "Written" })
      expect(outcomeOf(yield* runOnce(others[2]![0], others[2]![1]))).toMatchObject({ _tag: "Skipped", reason: "skipped-budget", budget: "process" })
      expect(yield* requestCount).toBe(5)
    }).pipe(TestServices.provideLive),
  )
})
