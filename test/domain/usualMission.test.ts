/**
 * decodeUsualMission (src/domain/usualMission.ts), the hand check discovery judges most missions
 * with, against the Mission Schema it stands in for: on generated records (every field absent, usual,
 * unusual or wrong) it answers only what the Schema answers, the same value with its keys in the same
 * order, and it does answer for the usual shapes.
 */
import fc from "fast-check"
import { Either, Schema } from "effect"
import { describe, expect, it } from "vitest"
import { Mission } from "../../src/domain/mission.js"
import { decodeMissionRecord } from "../../src/domain/missionValidity.js"
import { decodeUsualMission } from "../../src/domain/usualMission.js"

const schemaDecode = Schema.decodeUnknownEither(Mission)

/** A value that is absent (the key left out), or one of `values`. */
const ABSENT = Symbol("absent")

const anyJunk = fc.oneof(
  fc.constant(undefined),
  fc.constant(null),
  fc.integer({ min: -3, max: 70 }),
  fc.double({ noNaN: true }),
  fc.string({ maxLength: 4 }),
  fc.boolean(),
  fc.constant([]),
  fc.constant({}),
)

const instant = fc.constantFrom("2026-03-02T08:00:00Z", "2026-03-02T08:00:00.000Z", "2026-03-02T08:00:00+02:00", "2026-03-02", "2026-02-30T08:00:00Z", "08:00", "2026-03-02T08:00:00")

const intish = fc.oneof(fc.integer({ min: -2, max: 70 }), fc.constantFrom(1.5, -0, 2 ** 53, Number.MAX_SAFE_INTEGER, "8"))

const cadence = fc.oneof(
  fc.record({ kind: fc.constant("manual") }),
  fc.record({ kind: fc.constant("interval"), everyMinutes: intish }, { requiredKeys: [] }),
  fc.record({ kind: fc.constant("daily"), atHour: intish, atMinute: intish }, { requiredKeys: ["kind"] }),
  fc.record({ kind: fc.constant("weekly"), dayOfWeek: intish, atHour: intish, atMinute: fc.oneof(intish, fc.constant(undefined)) }, { requiredKeys: ["kind"] }),
  fc.record({ kind: fc.constant("cron"), expression: fc.constantFrom("0 8 * * 1", " 0  8 * * 1 ", "0 8 * *", "61 * * * *", 5) }),
  fc.record({ kind: fc.constantFrom("hourly", 3, undefined), extra: anyJunk }),
  anyJunk,
)
  .chain((c) => fc.boolean().map((extra) => (extra && typeof c === "object" && c !== null && !Array.isArray(c) ? { ...c, extra: 1 } : c)))

const input = fc.oneof(
  fc.record({ module: fc.constant("goals"), table: fc.constant("companionGoals"), id: fc.string({ maxLength: 3 }) }),
  fc.record({ module: fc.constant("goals"), table: fc.constant("companionGoals"), id: fc.string({ maxLength: 3 }), extra: anyJunk }),
  fc.record({ module: anyJunk, table: fc.constant("t"), id: fc.constant("x") }, { requiredKeys: [] }),
  anyJunk,
)

const iteration = fc.oneof(
  fc.constant({ id: "it-1", startedAt: "2026-03-01T08:00:00Z", plan: [], overallStatus: "approved" }),
  fc.constant({
    id: "it-2",
    startedAt: "2026-03-01T08:00:00Z",
    finishedAt: "2026-03-01T08:00:05Z",
    plan: [{ id: "s1", summary: "Note it", intent: { kind: "note", body: "b" }, status: "planned", extra: 1 }],
    summary: "done",
    overallStatus: "awaiting-review",
    source: "server",
    unknownField: true,
  }),
  fc.constant({ id: "it-3", startedAt: "x", plan: "none", overallStatus: "approved" }),
  fc.constant({ id: "it-4", startedAt: "x", plan: [], overallStatus: "approved", summary: undefined }),
  anyJunk,
)

const field = <A>(usual: fc.Arbitrary<A>) =>
  fc.oneof({ weight: 30, arbitrary: usual }, { weight: 1, arbitrary: fc.constant(ABSENT) }, { weight: 1, arbitrary: anyJunk })

const record = fc
  .record({
    id: field(fc.constant("m1")),
    title: field(fc.string({ maxLength: 5 })),
    objective: field(fc.constant("Run a 10k")),
    conceptMarkdown: field(fc.constant("Small steps")),
    state: field(fc.constantFrom("active", "paused", "done", "archived", "sleeping")),
    nextRunAt: field(fc.oneof(instant, fc.constant(null))),
    inputs: field(fc.array(input, { maxLength: 3 })),
    cadence: field(cadence),
    iterations: field(fc.array(iteration, { maxLength: 2 })),
    createdAt: field(fc.constant("2026-01-01T00:00:00.000Z")),
    updatedAt: field(fc.constant("2026-01-02T00:00:00.000Z")),
    deletedAt: field(fc.constantFrom(null, "2026-01-03T00:00:00.000Z")),
    timezone: field(fc.constantFrom("Europe/Berlin", null, "Mars/Olympus_Mons")),
    agentId: field(fc.constant("agent-1")),
    grant: field(fc.constantFrom({ scope: ["a"] }, null, 7)),
    somethingElse: field(fc.constant({ kept: "in the raw record" })),
  })
  .chain((fields) => {
    // Fields in a shuffled order, as a record replayed from other rows or read back from jsonb has them.
    const entries = Object.entries(fields).filter(([, v]) => v !== ABSENT)
    return fc.shuffledSubarray(entries, { minLength: entries.length }).map((e) => Object.fromEntries(e) as Record<string, unknown>)
  })

/** Usual records, each of which the hand check must answer for (else the test above proves little). */
const usual: ReadonlyArray<readonly [string, Record<string, unknown>]> = [
  [
    "the bench's seeded mission after its updates",
    {
      id: "hist-m-1",
      title: "Bench mission 1",
      objective: "Revision 20 of mission 1",
      conceptMarkdown: "Small steps, three times a week. Review progress every Sunday.",
      state: "active",
      nextRunAt: "2026-12-02T19:00:00.000Z",
      inputs: [],
      cadence: { kind: "interval", everyMinutes: 60 },
      iterations: [],
      createdAt: "2026-10-31T19:00:00.000Z",
      updatedAt: "2026-11-30T18:00:00.000Z",
    },
  ],
  [
    "a mission with an input, an agent, a time zone and iterations the runner wrote",
    {
      id: "m2",
      title: "Get fit",
      objective: "Run a 10k",
      state: "paused",
      nextRunAt: null,
      inputs: [{ module: "goals", table: "companionGoals", id: "g1" }],
      cadence: { kind: "weekly", dayOfWeek: 1, atHour: 8 },
      iterations: [
        {
          id: "it-1",
          startedAt: "2026-03-01T08:00:00Z",
          finishedAt: "2026-03-01T08:00:05Z",
          plan: [{ id: "s1", summary: "Note it", intent: { kind: "note", body: "b" }, status: "planned" }],
          overallStatus: "awaiting-review",
          source: "server",
        },
      ],
      timezone: "Europe/Berlin",
      agentId: "agent-1",
      grant: { scope: ["notes"] },
      deletedAt: null,
    },
  ],
  ["a cron mission without optional fields", { id: "m3", title: "t", objective: "o", state: "done", cadence: { kind: "cron", expression: "0 8 * * 1" } }],
  ["a daily mission whose time zone is null", { id: "m4", title: "t", objective: "o", state: "active", cadence: { kind: "daily", atHour: 8, atMinute: 0 }, timezone: null }],
]

describe("decodeUsualMission: the Mission Schema's answer, by hand", () => {
  it("answers only with what the Schema decodes the same record to (generated records)", () => {
    let answered = 0
    let runs = 0
    fc.assert(
      fc.property(record, (r) => {
        runs++
        const fast = decodeUsualMission(r)
        if (fast === undefined) return
        answered++
        const slow = schemaDecode(r)
        expect(Either.isRight(slow), JSON.stringify(r)).toBe(true)
        if (Either.isRight(slow)) {
          expect(fast).toStrictEqual(slow.right)
          expect(JSON.stringify(fast)).toBe(JSON.stringify(slow.right)) // same key order
        }
      }),
      { numRuns: 5000 },
    )
    // Some generated records are usual, else the comparison above compared nothing.
    expect(answered).toBeGreaterThan(runs / 200)
  })

  it.each(usual)("answers for the usual shape: %s", (_name, r) => {
    const fast = decodeUsualMission(r)
    expect(fast).toBeDefined()
    const slow = schemaDecode(r)
    expect(Either.isRight(slow) && slow.right).toStrictEqual(fast)
    expect(JSON.stringify(fast)).toBe(JSON.stringify(Either.getOrThrow(slow)))
  })

  it("leaves rejections to the Schema, so their sentences are unchanged", () => {
    const bad = { ...usual[0]![1], cadence: { kind: "interval", everyMinutes: 0 } }
    expect(decodeUsualMission(bad)).toBeUndefined()
    expect(decodeMissionRecord(bad)).toEqual(Either.left(expect.stringMatching(/^the mission does not decode: field cadence\.everyMinutes/)))
  })
})
