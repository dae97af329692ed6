import { Schema } from "effect"
import { describe, expect, it } from "vitest"
import {
  cap,
  failedIteration,
  iterationIdFor,
  plannedIteration,
  STEP_SUMMARY_MAX,
  SUMMARY_MAX,
} from "../../src/domain/iteration.js"
import { Iteration } from "../../src/domain/mission.js"

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/
const decodeIteration = Schema.decodeUnknownSync(Iteration, { onExcessProperty: "error" })

describe("iterationIdFor", () => {
  // Golden values: changing the derivation would let a runner upgraded mid-run write a duplicate.
  it.each([
    ["m-1", "2025-01-01T10:00:00.000Z", "f5b39ef1-0dd5-8949-852a-130a614e83e3"],
    ["m-1", "2025-01-01T10:00:00Z", "f5b39ef1-0dd5-8949-852a-130a614e83e3"],
    ["m-1", "2025-01-01T11:00:00+01:00", "f5b39ef1-0dd5-8949-852a-130a614e83e3"],
    ["m-1", null, "9e161e93-7b6e-8c9f-b0ba-b0dce20c6af2"],
  ] as const)("(%s, %s) → %s", (missionId, scheduledFor, expected) => {
    expect(iterationIdFor(missionId, scheduledFor)).toBe(expected)
  })

  it.each([
    ["another mission", ["m-2", "2025-01-01T10:00:00.000Z"]],
    ["another slot", ["m-1", "2025-01-01T10:00:00.001Z"]],
    ["no slot", ["m-1", null]],
    ["the empty string is not null", ["m-1", ""]],
    ["separator-like ids do not collide", ["m-1\u00002025-01-01T10:00:00.000Z", null]],
  ] as const)("differs for %s", (_label, [missionId, scheduledFor]) => {
    const other = iterationIdFor(missionId, scheduledFor)
    expect(other).not.toBe(iterationIdFor("m-1", "2025-01-01T10:00:00.000Z"))
    expect(other).toMatch(UUID)
  })

  it("an unparseable scheduledFor is hashed as given, to a fixed id (a change would re-run every slot after a deploy)", () => {
    expect(iterationIdFor("m-1", "soon")).toBe("e0010e7b-5b53-8528-a559-2381f4983af1")
    expect(iterationIdFor("m-1", "soon")).toMatch(UUID)
  })
})

describe("plannedIteration", () => {
  it("builds steps with ids <iterationId>-<i>, toolCall intents, status planned, awaiting review", () => {
    const iteration = plannedIteration({
      id: "it-1",
      startedAt: new Date("2025-01-01T10:00:00Z"),
      finishedAt: "2025-01-01T10:00:05.000Z",
      summary: "Two steps toward the goal",
      steps: [
        { summary: "Create a task", toolName: "create_task", params: { title: "Run 5k", priority: "high" }, rationale: "Keeps the streak" },
        { summary: "Add a place", toolName: "create_place", params: { name: "Park" }, rationale: "Somewhere to run" },
      ],
    })
    expect(iteration).toStrictEqual({
      id: "it-1",
      startedAt: "2025-01-01T10:00:00.000Z",
      finishedAt: "2025-01-01T10:00:05.000Z",
      plan: [
        {
          id: "it-1-0",
          summary: "Create a task — Keeps the streak",
          intent: { kind: "toolCall", toolName: "create_task", params: { title: "Run 5k", priority: "high" } },
          status: "planned",
        },
        {
          id: "it-1-1",
          summary: "Add a place — Somewhere to run",
          intent: { kind: "toolCall", toolName: "create_place", params: { name: "Park" } },
          status: "planned",
        },
      ],
      summary: "Two steps toward the goal",
      overallStatus: "awaiting-review",
      source: "server",
    })
    expect(decodeIteration(iteration)).toStrictEqual(iteration)
  })

  it("a plan with no steps is approved", () => {
    const iteration = plannedIteration({ id: "it-2", startedAt: "2025-01-01T10:00:00.000Z", summary: "Nothing to do", steps: [] })
    expect(iteration).toStrictEqual({
      id: "it-2",
      startedAt: "2025-01-01T10:00:00.000Z",
      plan: [],
      summary: "Nothing to do",
      overallStatus: "approved",
      source: "server",
    })
    expect(Object.hasOwn(iteration, "finishedAt")).toBe(false)
    expect(decodeIteration(iteration)).toStrictEqual(iteration)
  })

  it("caps the summary and each step summary", () => {
    const iteration = plannedIteration({
      id: "it-3",
      startedAt: "2025-01-01T10:00:00.000Z",
      summary: "x".repeat(5000),
      steps: [{ summary: "s", toolName: "create_task", params: {}, rationale: "r".repeat(5000) }],
    })
    expect(iteration.summary).toBe(`${"x".repeat(SUMMARY_MAX - 1)}…`)
    expect(Array.from(iteration.plan[0]?.summary ?? "").length).toBe(STEP_SUMMARY_MAX)
  })

  it("copies params so a later change to the input does not reach the iteration", () => {
    const params: Record<string, unknown> = { title: "a" }
    const iteration = plannedIteration({
      id: "it-4",
      startedAt: "2025-01-01T10:00:00.000Z",
      summary: "s",
      steps: [{ summary: "s", toolName: "create_task", params, rationale: "r" }],
    })
    params.title = "changed"
    expect(iteration.plan[0]?.intent).toStrictEqual({ kind: "toolCall", toolName: "create_task", params: { title: "a" } })
  })
})

describe("failedIteration", () => {
  it("has no steps, status failed, source server and errorDetails {name, message, phase}", () => {
    const iteration = failedIteration({
      id: "it-5",
      startedAt: "2025-01-01T10:00:00.000Z",
      finishedAt: new Date("2025-01-01T10:01:00Z"),
      summary: "The planner's answer was rejected: step 2 uses unknown tool \"rm_rf\"",
      errorName: "PlanRejected",
      errorMessage: "step 2 uses unknown tool \"rm_rf\"",
      phase: "parsing-response",
    })
    expect(iteration).toStrictEqual({
      id: "it-5",
      startedAt: "2025-01-01T10:00:00.000Z",
      finishedAt: "2025-01-01T10:01:00.000Z",
      plan: [],
      summary: "The planner's answer was rejected: step 2 uses unknown tool \"rm_rf\"",
      overallStatus: "failed",
      source: "server",
      errorDetails: { name: "PlanRejected", message: "step 2 uses unknown tool \"rm_rf\"", phase: "parsing-response" },
    })
    expect(decodeIteration(iteration)).toStrictEqual(iteration)
  })

  it("leaves out absent optional fields rather than writing null", () => {
    const iteration = failedIteration({
      id: "it-6",
      startedAt: "2025-01-01T10:00:00.000Z",
      summary: "LLM refused the request",
      errorName: "LlmHttpError",
      errorMessage: "HTTP 400",
    })
    expect(iteration).toStrictEqual({
      id: "it-6",
      startedAt: "2025-01-01T10:00:00.000Z",
      plan: [],
      summary: "LLM refused the request",
      overallStatus: "failed",
      source: "server",
      errorDetails: { name: "LlmHttpError", message: "HTTP 400" },
    })
    expect(JSON.stringify(iteration)).not.toContain("null")
    expect(decodeIteration(iteration)).toStrictEqual(iteration)
  })

  it("caps summary and message", () => {
    const iteration = failedIteration({
      id: "it-7",
      startedAt: "2025-01-01T10:00:00.000Z",
      summary: "s".repeat(1000),
      errorName: "PlanRejected",
      errorMessage: "m".repeat(1000),
      phase: "calling-llm",
    })
    expect(iteration.summary?.length).toBe(SUMMARY_MAX)
    expect(iteration.errorDetails?.message.length).toBe(SUMMARY_MAX)
  })
})

describe("cap", () => {
  it.each([
    ["short", 10, "short"],
    ["  padded  ", 10, "padded"],
    ["abcdefghij", 10, "abcdefghij"],
    ["abcdefghijk", 10, "abcdefghi…"],
    ["word word word", 10, "word word…"],
    ["😀😀😀😀😀", 3, "😀😀…"],
  ] as const)("cap(%j, %i) → %j", (text, max, expected) => {
    expect(cap(text, max)).toBe(expected)
  })
})
