/**
 * The one rule for a valid, schedulable mission (src/domain/missionValidity.ts), one row per
 * rejection and per way a record passes, with the sentence the log, the snapshot and
 * GET /internal/missions all show.
 */
import { Either } from "effect"
import { describe, expect, it } from "vitest"
import { decodeMissionRecord, isSchedulable, missionValidity } from "../../src/domain/missionValidity.js"

const base = {
  id: "m1",
  title: "Get fit",
  objective: "Run a 10k",
  state: "active",
  nextRunAt: "2026-03-02T08:00:00Z",
  cadence: { kind: "daily", atHour: 8, atMinute: 0 },
  iterations: [],
}

const without = (key: keyof typeof base) => Object.fromEntries(Object.entries(base).filter(([k]) => k !== key))

describe("missionValidity: rejections, each with a sentence naming the field", () => {
  const rejected: ReadonlyArray<readonly [name: string, record: unknown, reason: string | RegExp]> = [
    ["a record that is not an object", "just text", /^the mission does not decode: field the record: expected /],
    ["a title of the wrong type", { ...base, title: 5 }, "the mission does not decode: field title: expected string, actual 5"],
    ["no objective", without("objective"), /^the mission does not decode: field objective: is missing/],
    ["an unknown state", { ...base, state: "sleeping" }, /^the mission does not decode: field state: expected "active" or "paused" or "done" or "archived", actual "sleeping"/],
    ["iterations that are not an array", { ...base, iterations: "none" }, 'the mission does not decode: field iterations: expected an array, actual "none"'],
    ["a nextRunAt that is no instant", { ...base, nextRunAt: "next tuesday-ish" }, /^the mission does not decode: field nextRunAt: expected an ISO-8601 date-time with a zone/],
    ["an interval of zero minutes", { ...base, cadence: { kind: "interval", everyMinutes: 0 } }, /^the mission does not decode: field cadence\.everyMinutes/],
    ["a cron of four fields", { ...base, cadence: { kind: "cron", expression: "0 8 * *" } }, /^the mission does not decode: field cadence\.expression: expected a five-field cron expression/],
    ["a cron that does not parse", { ...base, cadence: { kind: "cron", expression: "61 * * * *" } }, /^field cadence: invalid cron expression "61 \* \* \* \*"/],
    ["an unknown time zone", { ...base, timezone: "Mars/Olympus_Mons" }, 'field timezone: "Mars/Olympus_Mons" is not an IANA time zone'],
    [
      "five wrong fields: three named, the rest counted",
      { ...base, title: 1, objective: 2, conceptMarkdown: 3, state: "x", inputs: "no" },
      "the mission does not decode: field title: expected string, actual 1; field objective: expected string, actual 2; " +
        "field conceptMarkdown: expected string, actual 3 (and 2 more)",
    ],
  ]
  it.each(rejected)("%s", (_name, record, reason) => {
    const judged = missionValidity(record, "UTC")
    expect(Either.isLeft(judged)).toBe(true)
    if (Either.isLeft(judged)) {
      if (typeof reason === "string") expect(judged.left).toBe(reason)
      else expect(judged.left).toMatch(reason)
    }
  })

  it("a cadence is checked in the default zone when the mission names none", () => {
    const daily = { ...base, cadence: { kind: "daily", atHour: 8, atMinute: 0 } }
    expect(missionValidity(daily, "Nowhere/Atlantis")).toEqual(Either.left('field cadence: unknown time zone "Nowhere/Atlantis"'))
    expect(Either.isRight(missionValidity({ ...daily, timezone: "Europe/Berlin" }, "Nowhere/Atlantis"))).toBe(true)
  })

  it("decodeMissionRecord, the rule's first step, gives the same sentence for a record that does not decode", () => {
    const bad = { ...base, title: 5 }
    expect(decodeMissionRecord(bad)).toEqual(missionValidity(bad, "UTC"))
  })
})

describe("missionValidity: valid missions, and which of them are schedulable", () => {
  const accepted: ReadonlyArray<readonly [name: string, record: unknown, nextRunAt: string | null, schedulable: boolean]> = [
    ["active with a nextRunAt", base, "2026-03-02T08:00:00.000Z", true],
    ["a nextRunAt with an offset is normalised to UTC", { ...base, nextRunAt: "2026-03-02T09:00:00+01:00" }, "2026-03-02T08:00:00.000Z", true],
    ["active with nextRunAt null: unscheduled", { ...base, nextRunAt: null }, null, false],
    ["active without nextRunAt: unscheduled", without("nextRunAt"), null, false],
    ["paused", { ...base, state: "paused" }, "2026-03-02T08:00:00.000Z", false],
    ["done", { ...base, state: "done" }, "2026-03-02T08:00:00.000Z", false],
    ["no iterations field: none yet", without("iterations"), "2026-03-02T08:00:00.000Z", true],
    ["timezone null means absent", { ...base, timezone: null }, "2026-03-02T08:00:00.000Z", true],
    ["a cron of five fields in a named zone", { ...base, cadence: { kind: "cron", expression: "0 8 * * 1-5" }, timezone: "Europe/Berlin" }, "2026-03-02T08:00:00.000Z", true],
    ["manual", { ...base, cadence: { kind: "manual" } }, "2026-03-02T08:00:00.000Z", true],
    ["unknown fields are no reason", { ...base, colour: "teal" }, "2026-03-02T08:00:00.000Z", true],
  ]
  it.each(accepted)("%s", (_name, record, nextRunAt, schedulable) => {
    const judged = missionValidity(record, "UTC")
    if (Either.isLeft(judged)) throw new Error(judged.left)
    expect(judged.right.nextRunAt).toBe(nextRunAt)
    expect(isSchedulable(judged.right)).toBe(schedulable)
  })
})
