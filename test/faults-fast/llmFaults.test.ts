/**
 * LLM faults through the real run pipeline (MissionStore → MissionRunner → Planner → LlmClient over
 * HTTP → WriteBack) on a real database: the stand-in answers 500s, 429 with Retry-After, hangs past
 * LLM_TIMEOUT_MS, garbage, a tool outside the catalogue, parameters of the wrong type, a 10 MB body.
 *
 * Each due mission ends with exactly one iteration (planned, or failed with a reason) — or, when a
 * transient fault outlasts MISSION_TIMEOUT_MS, with none and a later retry that writes one — and
 * never with two: every scenario re-runs the same scheduled slot afterwards and must get no write.
 */
import { layer } from "@effect/vitest"
import { Effect, Either } from "effect"
import { expect } from "vitest"
import { iterationIdFor } from "../../src/domain/iteration.js"
import type { Iteration, Mission } from "../../src/domain/mission.js"
import { MissionRunner, type RunOutcome } from "../../src/services/MissionRunner.js"
import { audited } from "../support/auditedTest.js"
import { auditMissions, missionKey } from "../support/FaultLedger.js"
import { LlmStandIn, type StandInReply, completion, planAnswer } from "../support/LlmStandIn.js"
import { runnerRows } from "../support/eventLogRows.js"
import { missionOf, runnerRowCount, runnerStack, snapshotOf } from "../support/RunnerStack.js"
import { insertChanges, missionInsertRow } from "../support/seed.js"

const LLM_TIMEOUT_MS = 1000
const MISSION_TIMEOUT_MS = 4000

// JSON mode: the scenarios script fenced answers and count one request per answer.
const Stack = runnerStack({ missionTimeout: `${MISSION_TIMEOUT_MS} millis`, llmTimeout: `${LLM_TIMEOUT_MS} millis`, plannerMode: "json" })

const tally = { faults: {} as Record<string, number>, runs: 0, written: 0 }
/** Runs the runner reported Written: Postgres acknowledged their commit, so each must be stored. */
const acknowledged: Array<{ key: string; iterationId: string }> = []
const noteAck = (userId: string, missionId: string, result: Either.Either<RunOutcome, unknown>) => {
  if (Either.isRight(result) && result.right._tag === "Written") {
    acknowledged.push({ key: missionKey(userId, missionId), iterationId: result.right.iterationId })
  }
}
const fault = (kind: string, n = 1) => {
  tally.faults[kind] = (tally.faults[kind] ?? 0) + n
}

let counter = 0
/** A fresh user with one mission due a minute ago. */
const dueMission = (prefix: string) =>
  Effect.gen(function* () {
    const userId = `${prefix}-user-${++counter}`
    const missionId = `${prefix}-mission-${counter}`
    const nextRunAt = new Date(Date.now() - 60_000).toISOString()
    yield* insertChanges([missionInsertRow(userId, missionId, { nextRunAt })])
    return { userId, missionId }
  })

const plan = (steps: ReadonlyArray<Record<string, unknown>>) =>
  completion(planAnswer({ summary: "A plan", steps }), { prompt_tokens: 10, completion_tokens: 5 })

const wrongTool = plan([{ summary: "Wipe", toolName: "delete_all_data", params: {}, rationale: "Fresh start." }])
const wrongType = plan([{ summary: "Task", toolName: "create_task", params: { title: 42 }, rationale: "Numbers are titles too." }])
const GARBAGE = "Sure! Go for a run tomorrow at 7, it'll be great :) no json here"

interface Scenario {
  readonly userId: string
  readonly missionId: string
  readonly mission: Mission
}

/** Seeds, scripts the stand-in, runs the mission once; returns the outcome (or error) and the scenario. */
const runScenario = (prefix: string, replies: ReadonlyArray<StandInReply>) =>
  Effect.gen(function* () {
    const standIn = yield* LlmStandIn
    yield* standIn.reset
    const { userId, missionId } = yield* dueMission(prefix)
    const mission = missionOf(yield* snapshotOf(userId, missionId))
    yield* standIn.enqueue(...replies)
    const runner = yield* MissionRunner
    const result = yield* Effect.either(runner.run({ userId, mission }))
    tally.runs++
    noteAck(userId, missionId, result)
    return { result, scenario: { userId, missionId, mission } satisfies Scenario }
  })

/** The iteration the runner appended (exactly one row), as stored. */
const onlyIteration = (s: Scenario) =>
  Effect.gen(function* () {
    const rows = yield* runnerRows(s.userId, s.missionId)
    expect(rows).toHaveLength(1)
    tally.written++
    const data = rows[0]!.data as { iterations: ReadonlyArray<Iteration>; nextRunAt: string | null }
    expect(data.iterations).toHaveLength(1)
    const it = data.iterations[0]!
    expect(it.id).toBe(iterationIdFor(s.missionId, s.mission.nextRunAt))
    expect(it.source).toBe("server")
    // nextRunAt advanced into the future: the mission is no longer due.
    expect(Date.parse(data.nextRunAt ?? "")).toBeGreaterThan(Date.now() - 5_000)
    return it
  })

/** The same scheduled slot run again (a retry, a second instance): no second write. */
const rerunWritesNothing = (s: Scenario) =>
  Effect.gen(function* () {
    const runner = yield* MissionRunner
    const again = yield* Effect.either(runner.run({ userId: s.userId, mission: s.mission }))
    tally.runs++
    expect(Either.isRight(again) && again.right._tag).toBe("Skipped")
    expect(yield* runnerRowCount(s.userId, s.missionId)).toBe(1)
  })

const expectFailedIteration = (it: Iteration, name: string, phase: string) => {
  expect(it.overallStatus).toBe("failed")
  expect(it.plan).toEqual([])
  expect(it.errorDetails?.name).toBe(name)
  expect(it.errorDetails?.phase).toBe(phase)
  expect(it.summary).toMatch(/^Planning failed/)
  expect(Object.keys(it.errorDetails ?? {}).sort()).toEqual(["message", "name", "phase"])
  expect(JSON.stringify(it)).not.toMatch(/stack|at Object\.|\.ts:\d+/)
}

layer(Stack, { timeout: 120_000, excludeTestServices: true })("LLM faults through the run pipeline", (it) => {
  // Every test ends with the audit of what it stored: no duplicate iteration, each Written run's row
  // there, and no runner row beyond them; each records its own figures.
  const check = <A, E, R>(body: Effect.Effect<A, E, R>) =>
    Effect.gen(function* () {
      const before = { rows: (yield* auditMissions).runnerRows, acks: acknowledged.length }
      const result = yield* audited("llmFaults", () => ({ runs: tally.runs, rejected: 0, faults: tally.faults }), body, () => acknowledged)
      expect((yield* auditMissions).runnerRows - before.rows).toBe(acknowledged.length - before.acks)
      return result
    })

  it.effect("500, 500, then a plan: one planned iteration after three requests", () =>
    check(Effect.gen(function* () {
      const { result, scenario } = yield* runScenario("e500", [{ status: 500 }, { status: 503, body: "upstream sad" }])
      fault("llm:http-5xx", 2)
      expect(Either.isRight(result) && result.right._tag).toBe("Written")
      expect((yield* (yield* LlmStandIn).requests).length).toBe(3)
      const written = yield* onlyIteration(scenario)
      expect(written.overallStatus).toBe("awaiting-review")
      expect(written.plan.map((p) => p.id)).toEqual([`${written.id}-0`, `${written.id}-1`])
      expect(written.plan.every((p) => p.status === "planned" && p.intent.kind === "toolCall")).toBe(true)
      expect(written.plan[0]!.summary).toContain(" — ")
      yield* rerunWritesNothing(scenario)
    })))

  it.effect("429 with Retry-After: 1 is honoured (the retry waits a second), then one planned iteration", () =>
    check(Effect.gen(function* () {
      const { result, scenario } = yield* runScenario("e429", [{ status: 429, headers: { "retry-after": "1" } }])
      fault("llm:429-retry-after")
      expect(Either.isRight(result) && result.right._tag).toBe("Written")
      const [first, second] = yield* (yield* LlmStandIn).requests
      expect(second!.receivedAt - (first!.closedAt ?? first!.receivedAt)).toBeGreaterThanOrEqual(950)
      expect((yield* onlyIteration(scenario)).overallStatus).toBe("awaiting-review")
      yield* rerunWritesNothing(scenario)
    })))

  it.effect("a request hanging past LLM_TIMEOUT_MS is abandoned and retried; one planned iteration", () =>
    check(Effect.gen(function* () {
      const { result, scenario } = yield* runScenario("hang", [{ hang: true }])
      fault("llm:hang-past-timeout")
      expect(Either.isRight(result) && result.right._tag).toBe("Written")
      const requests = yield* (yield* LlmStandIn).requests
      expect(requests).toHaveLength(2)
      expect(requests[0]!.abortedByClient).toBe(true)
      // Abandoned at its timeout, not at once. Half the timeout is a wide margin: the timer starts before
      // the request reaches the stand-in, which a loaded machine can delay (the exact instant is pinned on
      // the TestClock in test/services/LlmClient.test.ts).
      expect((requests[0]!.closedAt ?? 0) - requests[0]!.receivedAt).toBeGreaterThanOrEqual(LLM_TIMEOUT_MS / 2)
      expect((yield* onlyIteration(scenario)).overallStatus).toBe("awaiting-review")
      yield* rerunWritesNothing(scenario)
    })))

  it.effect("garbage text, then garbage again after the repair turn: one failed iteration naming the kind of failure, no raw output", () =>
    check(Effect.gen(function* () {
      const { result, scenario } = yield* runScenario("garbage", [{ body: completion(GARBAGE) }, { body: completion(GARBAGE) }])
      fault("llm:garbage-text", 2)
      expect(Either.isRight(result) && result.right._tag === "Written" && result.right.overallStatus).toBe("failed")
      const requests = yield* (yield* LlmStandIn).requests
      expect(requests).toHaveLength(2) // the answer and one repair turn (PLANNER_REPAIR_ATTEMPTS=1)
      const written = yield* onlyIteration(scenario)
      expectFailedIteration(written, "PlanRejected", "parsing-response")
      expect(written.summary).toBe("Planning failed: the model's answer was rejected 2 times (it held no JSON plan).")
      expect(written.errorDetails?.message).toBe("plan rejected: it held no JSON plan")
      expect(JSON.stringify(written)).not.toContain("Go for a run")
      yield* rerunWritesNothing(scenario)
    })))

  it.effect("garbage first, a valid plan in the repair turn: one planned iteration, one parse failure counted", () =>
    check(Effect.gen(function* () {
      const { result, scenario } = yield* runScenario("repair", [{ body: completion(GARBAGE) }])
      fault("llm:garbage-text")
      expect(Either.isRight(result) && result.right._tag === "Written" && result.right.parseFailures).toBe(1)
      const repair = (yield* (yield* LlmStandIn).requests)[1]
      expect(JSON.stringify(repair?.body)).toContain("no JSON")
      expect((yield* onlyIteration(scenario)).overallStatus).toBe("awaiting-review")
      yield* rerunWritesNothing(scenario)
    })))

  it.effect("a plan naming a tool outside the catalogue, twice: one failed iteration naming the kind of failure, never the tool; nothing planned", () =>
    check(Effect.gen(function* () {
      const { result, scenario } = yield* runScenario("tool", [{ body: wrongTool }, { body: wrongTool }])
      fault("llm:tool-outside-catalogue", 2)
      expect(Either.isRight(result) && result.right._tag === "Written" && result.right.failure).toBe("PlanRejected")
      const written = yield* onlyIteration(scenario)
      expectFailedIteration(written, "PlanRejected", "parsing-response")
      // The model chose the name: the user sees the kind of failure only; the name is in the log.
      expect(written.summary).toBe("Planning failed: the model's answer was rejected 2 times (it named a tool outside the catalogue).")
      expect(written.errorDetails?.message).toBe("plan rejected: it named a tool outside the catalogue")
      expect(JSON.stringify(written)).not.toContain("delete_all_data")
      yield* rerunWritesNothing(scenario)
    })))

  it.effect("parameters of the wrong type, twice: one failed iteration naming the kind of failure, not the parameter", () =>
    check(Effect.gen(function* () {
      const { result, scenario } = yield* runScenario("ptype", [{ body: wrongType }, { body: wrongType }])
      fault("llm:param-wrong-type", 2)
      expect(Either.isRight(result) && result.right._tag === "Written" && result.right.overallStatus).toBe("failed")
      const written = yield* onlyIteration(scenario)
      expectFailedIteration(written, "PlanRejected", "parsing-response")
      expect(written.summary).toBe("Planning failed: the model's answer was rejected 2 times (a parameter had the wrong type or value).")
      expect(written.errorDetails?.message).toBe("plan rejected: a parameter had the wrong type or value")
      expect(JSON.stringify(written)).not.toContain("title")
      yield* rerunWritesNothing(scenario)
    })))

  it.effect("a 10 MB answer is cut off unread past the body cap: one failed iteration, the stand-in sees the abort", () =>
    check(Effect.gen(function* () {
      const { result, scenario } = yield* runScenario("huge", [{ hugeBodyBytes: 10 * 1024 * 1024 }])
      fault("llm:10mb-answer")
      expect(Either.isRight(result) && result.right._tag === "Written" && result.right.failure).toBe("LlmInvalidResponse")
      const requests = yield* (yield* LlmStandIn).requests
      expect(requests).toHaveLength(1)
      expect(requests[0]!.abortedByClient).toBe(true)
      const written = yield* onlyIteration(scenario)
      expectFailedIteration(written, "LlmInvalidResponse", "calling-llm")
      expect(JSON.stringify(written).length).toBeLessThan(4000)
      yield* rerunWritesNothing(scenario)
    })))

  it.effect("a 10 MB answer with Content-Length is refused before reading: one failed iteration", () =>
    check(Effect.gen(function* () {
      const { result, scenario } = yield* runScenario("hugecl", [{ hugeBodyBytes: 10 * 1024 * 1024, declareLength: true }])
      fault("llm:10mb-answer")
      expect(Either.isRight(result) && result.right._tag === "Written" && result.right.failure).toBe("LlmInvalidResponse")
      expectFailedIteration(yield* onlyIteration(scenario), "LlmInvalidResponse", "calling-llm")
      yield* rerunWritesNothing(scenario)
    })))

  it.effect("HTTP 400 is permanent: no retry, one failed iteration naming the status", () =>
    check(Effect.gen(function* () {
      const { result, scenario } = yield* runScenario("e400", [{ status: 400, body: { error: "bad request" } }])
      fault("llm:http-4xx")
      expect(Either.isRight(result) && result.right._tag === "Written" && result.right.failure).toBe("LlmHttpError")
      expect(yield* (yield* LlmStandIn).requests).toHaveLength(1)
      const written = yield* onlyIteration(scenario)
      expectFailedIteration(written, "LlmHttpError", "calling-llm")
      expect(written.summary).toContain("400")
      yield* rerunWritesNothing(scenario)
    })))

  it.effect("a 200 that is not a chat completion: one failed iteration", () =>
    check(Effect.gen(function* () {
      const { result, scenario } = yield* runScenario("notchat", [{ body: { choices: [{ message: { content: 7 } }] } }])
      fault("llm:not-a-completion")
      expect(Either.isRight(result) && result.right._tag === "Written" && result.right.failure).toBe("LlmInvalidResponse")
      expectFailedIteration(yield* onlyIteration(scenario), "LlmInvalidResponse", "calling-llm")
      yield* rerunWritesNothing(scenario)
    })))

  it.effect("500s outlasting MISSION_TIMEOUT_MS: MissionTimeout, nothing written, and the retry once the LLM heals writes one", () =>
    check(Effect.gen(function* () {
      const standIn = yield* LlmStandIn
      yield* standIn.reset
      yield* standIn.setResponder(() => ({ status: 502 }))
      const { userId, missionId } = yield* dueMission("deadline")
      const mission = missionOf(yield* snapshotOf(userId, missionId))
      const runner = yield* MissionRunner
      const started = Date.now()
      const first = yield* Effect.either(runner.run({ userId, mission }))
      tally.runs++
      fault("llm:http-5xx", (yield* standIn.requests).length)
      expect(Either.isLeft(first) && first.left._tag).toBe("MissionTimeout")
      expect(Date.now() - started).toBeGreaterThanOrEqual(MISSION_TIMEOUT_MS - 100)
      // Upper bound with a wide margin: it only says the deadline ended the run, not a hang.
      expect(Date.now() - started).toBeLessThan(MISSION_TIMEOUT_MS + 15_000)
      expect(yield* runnerRowCount(userId, missionId)).toBe(0)
      // Still due: discovery keeps it schedulable at the same slot.
      const still = yield* snapshotOf(userId, missionId)
      expect(still.schedulable).toBe(true)
      expect(missionOf(still).nextRunAt).toBe(mission.nextRunAt)

      yield* standIn.reset
      const retry = yield* Effect.either(runner.run({ userId, mission: missionOf(still) }))
      tally.runs++
      noteAck(userId, missionId, retry)
      expect(Either.isRight(retry) && retry.right._tag).toBe("Written")
      expect((yield* onlyIteration({ userId, missionId, mission })).overallStatus).toBe("awaiting-review")
      yield* rerunWritesNothing({ userId, missionId, mission })
    })))

  it.effect("a hang on every attempt outlasts the deadline the same way: no write, then one on retry", () =>
    check(Effect.gen(function* () {
      const standIn = yield* LlmStandIn
      yield* standIn.reset
      yield* standIn.setResponder(() => ({ hang: true }))
      const { userId, missionId } = yield* dueMission("hangs")
      const mission = missionOf(yield* snapshotOf(userId, missionId))
      const runner = yield* MissionRunner
      const first = yield* Effect.either(runner.run({ userId, mission }))
      tally.runs++
      fault("llm:hang-past-timeout", (yield* standIn.requests).length)
      expect(Either.isLeft(first) && first.left._tag).toBe("MissionTimeout")
      expect(yield* runnerRowCount(userId, missionId)).toBe(0)
      // Every abandoned request was closed by the client, none left dangling.
      expect(yield* standIn.inFlight).toBe(0)
      yield* standIn.reset
      const retry = yield* Effect.either(runner.run({ userId, mission }))
      tally.runs++
      noteAck(userId, missionId, retry)
      expect(Either.isRight(retry) && retry.right._tag).toBe("Written")
      yield* onlyIteration({ userId, missionId, mission })
    })))
})
