/**
 * The rows the runner writes fit the app's own types (test/support/appTypes.ts, a copy of upstream's),
 * key for key, on the generation the suite runs on (vitest.config.ts runs this file on both): every
 * iteration of `data.iterations` is a MissionIteration with PlanSteps and no key the app lacks, and the
 * actor is today's AI actor or the seed's system actor.
 */
import { it } from "@effect/vitest"
import { Effect, Layer, Schema, TestClock } from "effect"
import { expect } from "vitest"
import { failedIteration, plannedIteration } from "../../src/domain/iteration.js"
import type { Iteration } from "../../src/domain/mission.js"
import { RunnerConfig } from "../../src/services/AppConfig.js"
import { WriteBack } from "../../src/services/WriteBack.js"
import {
  AiActorSchema,
  LegacySystemActorSchema,
  type MissionIteration,
  MissionIterationSchema,
} from "../support/appTypes.js"
import { insertChange, missionData, runnerRows } from "../support/eventLogRows.js"
import { RunnerSqlLive, TestDatabase, TestDatabaseLive } from "../support/TestDatabase.js"

const L = Layer.provideMerge(WriteBack.Default, Layer.mergeAll(Layer.provideMerge(RunnerSqlLive(4), TestDatabaseLive), RunnerConfig.test()))

// Compile time: what the runner builds is assignable to the app's type (tsc checks this file).
const asAppIteration = (it: Iteration): MissionIteration => it

const exact = { onExcessProperty: "error" } as const
const decodeIteration = Schema.decodeUnknownEither(MissionIterationSchema, exact)

it.layer(L, { timeout: 60_000 })("rows written fit the app's types", (it) => {
  it.effect("a planned and a failed iteration, with the generation's actor, decode against the app's exact types", () =>
    Effect.gen(function* () {
      const db = yield* TestDatabase
      yield* insertChange({ user: "tina", id: "m-types", data: missionData({ agentId: "agent-t" }), createdAt: "2026-03-01T00:00:00Z" })
      yield* insertChange({ user: "tina", app: "ai", table: "agents", id: "agent-t", data: { name: "Tidy", state: "active" }, createdAt: "2026-03-01T00:00:00Z" })
      const planned = plannedIteration({
        id: "it-planned",
        startedAt: "2026-03-02T08:00:01.000Z",
        finishedAt: "2026-03-02T08:00:02.000Z",
        summary: "Two things",
        steps: [
          { summary: "Book a run", toolName: "create_event", params: { title: "Run", startIso: "2026-03-03T07:00:00Z" }, rationale: "keeps the habit" },
          { summary: "Note it", toolName: "create_task", params: { title: "Shoes" }, rationale: "needed" },
        ],
      })
      const failed = failedIteration({
        id: "it-failed",
        startedAt: "2026-03-02T09:00:01.000Z",
        finishedAt: "2026-03-02T09:00:02.000Z",
        summary: "The planner's answer was rejected",
        errorName: "PlanRejected",
        errorMessage: "the answer did not parse",
        phase: "parsing-response",
      })
      const wb = yield* WriteBack
      yield* TestClock.setTime(Date.parse("2026-03-02T08:00:30.000Z"))
      expect((yield* wb.append({ userId: "tina", missionId: "m-types", iteration: asAppIteration(planned) as Iteration }))._tag).toBe("Written")
      yield* TestClock.setTime(Date.parse("2026-03-02T09:00:30.000Z"))
      expect((yield* wb.append({ userId: "tina", missionId: "m-types", iteration: failed }))._tag).toBe("Written")

      const rows = yield* runnerRows("tina", "m-types")
      expect(rows).toHaveLength(2)
      for (const row of rows) {
        const iterations = (row.data as { iterations: ReadonlyArray<unknown> }).iterations
        for (const iteration of iterations) {
          const decoded = decodeIteration(iteration)
          expect(decoded._tag, JSON.stringify(decoded)).toBe("Right")
        }
        if (db.generation === "field_meta") {
          expect(Schema.decodeUnknownSync(AiActorSchema, exact)(row.actor)).toMatchObject({ principalId: "agent-t", displayName: "Tidy" })
          expect(row.origin).toBe("agent")
        } else {
          expect(Schema.decodeUnknownEither(LegacySystemActorSchema, exact)(row.actor)._tag).toBe("Right")
          expect(row.origin).toBeNull()
        }
      }
      const last = (rows[1]!.data as { iterations: ReadonlyArray<Record<string, unknown>> }).iterations
      expect(last.map((i) => i.id)).toEqual(["it-planned", "it-failed"])
      expect(last[1]!.errorDetails).toEqual({ name: "PlanRejected", message: "the answer did not parse", phase: "parsing-response" })
    }))

  it.effect("the exact check has teeth: a key the app's type lacks, or a null for an absent optional, is refused", () =>
    Effect.sync(() => {
      const base = { id: "x", startedAt: "2026-03-02T08:00:01.000Z", plan: [], overallStatus: "approved" }
      expect(decodeIteration(base)._tag).toBe("Right")
      expect(decodeIteration({ ...base, runnerOnly: 1 })._tag).toBe("Left")
      expect(decodeIteration({ ...base, finishedAt: null })._tag).toBe("Left")
      expect(decodeIteration({ ...base, plan: [{ id: "s", summary: "s", intent: { kind: "note", body: "b" }, status: "planned", rationale: "r" }] })._tag).toBe("Left")
    }))
})
