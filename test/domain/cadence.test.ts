import { Either } from "effect"
import { describe, expect, it } from "vitest"
import { isValidTimeZone, nextRunAt, validateCadence } from "../../src/domain/cadence.js"
import type { Cadence } from "../../src/domain/mission.js"

// Transitions used below (checked against Intl):
//   Europe/Berlin    2025-03-30 01:00Z 02:00 CET → 03:00 CEST · 2025-10-26 01:00Z 03:00 CEST → 02:00 CET
//   America/New_York 2025-03-09 07:00Z 02:00 EST → 03:00 EDT · 2025-11-02 06:00Z 02:00 EDT → 01:00 EST
//   Australia/Lord_Howe 2025-10-04 15:30Z 02:00 +10:30 → 02:30 +11 (a half-hour gap)
// 2025-03-09, 2025-03-30, 2025-10-26 and 2025-11-02 are Sundays; 2025-01-01 is a Wednesday.

const BER = "Europe/Berlin"
const NY = "America/New_York"

const manual: Cadence = { kind: "manual" }
const every = (everyMinutes: number): Cadence => ({ kind: "interval", everyMinutes })
const daily = (atHour: number, atMinute: number): Cadence => ({ kind: "daily", atHour, atMinute })
const weekly = (dayOfWeek: number, atHour: number, atMinute?: number): Cadence =>
  atMinute === undefined ? { kind: "weekly", dayOfWeek, atHour } : { kind: "weekly", dayOfWeek, atHour, atMinute }
const cron = (expression: string): Cadence => ({ kind: "cron", expression })

type Row = readonly [name: string, cadence: Cadence, timeZone: string, after: string, previous: string | null, expected: string | null]

const cases: ReadonlyArray<Row> = [
  ["manual is unscheduled", manual, "UTC", "2025-01-01T10:00:00Z", "2025-01-01T09:00:00Z", null],

  // interval: previous + whole intervals, strictly after `after`
  ["interval without previous: after + interval", every(60), "UTC", "2025-01-01T10:00:00Z", null, "2025-01-01T11:00:00.000Z"],
  ["interval right after its slot: previous + 1", every(60), "UTC", "2025-01-01T10:00:05Z", "2025-01-01T10:00:00Z", "2025-01-01T11:00:00.000Z"],
  ["interval skips slots missed while down", every(60), "UTC", "2025-01-01T13:30:00Z", "2025-01-01T10:00:00Z", "2025-01-01T14:00:00.000Z"],
  ["interval: after on a slot → the next slot", every(60), "UTC", "2025-01-01T13:00:00Z", "2025-01-01T10:00:00Z", "2025-01-01T14:00:00.000Z"],
  ["interval: a millisecond past a slot → the next", every(15), "UTC", "2025-01-01T10:15:00.001Z", "2025-01-01T10:00:00Z", "2025-01-01T10:30:00.000Z"],
  ["interval with previous in the future still advances one step", every(60), "UTC", "2025-01-01T10:00:00Z", "2025-01-01T12:00:00Z", "2025-01-01T13:00:00.000Z"],
  ["interval counts real minutes across a DST gap", every(60), BER, "2025-03-30T00:31:00Z", "2025-03-30T00:30:00Z", "2025-03-30T01:30:00.000Z"],
  ["interval of a week across a DST change keeps real time", every(7 * 24 * 60), NY, "2025-03-05T00:00:00Z", "2025-03-04T14:00:00Z", "2025-03-11T14:00:00.000Z"],

  // daily, UTC
  ["daily later today", daily(9, 30), "UTC", "2025-01-01T08:00:00Z", null, "2025-01-01T09:30:00.000Z"],
  ["daily: after == slot → tomorrow", daily(9, 30), "UTC", "2025-01-01T09:30:00Z", null, "2025-01-02T09:30:00.000Z"],
  ["daily: 1 ms before the slot → the slot", daily(9, 30), "UTC", "2025-01-01T09:29:59.999Z", null, "2025-01-01T09:30:00.000Z"],
  ["daily: 1 ms after the slot → tomorrow", daily(9, 30), "UTC", "2025-01-01T09:30:00.001Z", null, "2025-01-02T09:30:00.000Z"],
  ["daily across a year end", daily(0, 0), "UTC", "2025-12-31T23:59:00Z", null, "2026-01-01T00:00:00.000Z"],
  ["daily ignores previous", daily(9, 30), "UTC", "2025-01-01T08:00:00Z", "2024-12-01T09:30:00Z", "2025-01-01T09:30:00.000Z"],

  // daily, Europe/Berlin
  ["daily Berlin in winter (+01:00)", daily(9, 0), BER, "2025-01-15T12:00:00Z", null, "2025-01-16T08:00:00.000Z"],
  ["daily Berlin in summer (+02:00)", daily(9, 0), BER, "2025-07-01T00:00:00Z", null, "2025-07-01T07:00:00.000Z"],
  ["daily Berlin: local date differs from UTC date", daily(0, 30), BER, "2025-01-15T23:00:00Z", null, "2025-01-15T23:30:00.000Z"],
  ["daily Berlin 02:30 skipped by spring-forward → 03:00 CEST", daily(2, 30), BER, "2025-03-29T12:00:00Z", null, "2025-03-30T01:00:00.000Z"],
  ["daily Berlin 02:30 the day after spring-forward", daily(2, 30), BER, "2025-03-30T01:00:00Z", null, "2025-03-31T00:30:00.000Z"],
  ["daily Berlin 02:00 (gap start) → 03:00 CEST", daily(2, 0), BER, "2025-03-29T12:00:00Z", null, "2025-03-30T01:00:00.000Z"],
  ["daily Berlin 03:00 on spring-forward day exists", daily(3, 0), BER, "2025-03-29T12:00:00Z", null, "2025-03-30T01:00:00.000Z"],
  ["daily Berlin 01:59 before the gap", daily(1, 59), BER, "2025-03-29T12:00:00Z", null, "2025-03-30T00:59:00.000Z"],
  ["daily Berlin 02:30 repeated by fall-back → first occurrence (CEST)", daily(2, 30), BER, "2025-10-25T12:00:00Z", null, "2025-10-26T00:30:00.000Z"],
  ["daily Berlin 02:30 after its first occurrence → tomorrow, not the repeat", daily(2, 30), BER, "2025-10-26T00:30:00Z", null, "2025-10-27T01:30:00.000Z"],
  ["daily Berlin 02:30 from inside the repeated hour → tomorrow", daily(2, 30), BER, "2025-10-26T01:10:00Z", null, "2025-10-27T01:30:00.000Z"],

  // daily, America/New_York
  ["daily New York 02:30 skipped by spring-forward → 03:00 EDT", daily(2, 30), NY, "2025-03-08T12:00:00Z", null, "2025-03-09T07:00:00.000Z"],
  ["daily New York 02:30 the day after spring-forward", daily(2, 30), NY, "2025-03-09T07:00:00Z", null, "2025-03-10T06:30:00.000Z"],
  ["daily New York 01:30 repeated by fall-back → first occurrence (EDT)", daily(1, 30), NY, "2025-11-01T12:00:00Z", null, "2025-11-02T05:30:00.000Z"],
  ["daily New York 01:30 after its first occurrence → tomorrow (EST)", daily(1, 30), NY, "2025-11-02T05:30:00Z", null, "2025-11-03T06:30:00.000Z"],
  ["daily New York 01:30 from inside the repeated hour (01:00 EST) → tomorrow", daily(1, 30), NY, "2025-11-02T06:00:00Z", null, "2025-11-03T06:30:00.000Z"],
  ["daily New York 02:30 on fall-back day (not repeated)", daily(2, 30), NY, "2025-11-01T12:00:00Z", null, "2025-11-02T07:30:00.000Z"],

  // daily, a half-hour DST gap
  ["daily Lord Howe 02:15 skipped by a 30-minute gap → 02:30 +11", daily(2, 15), "Australia/Lord_Howe", "2025-10-04T00:00:00Z", null, "2025-10-04T15:30:00.000Z"],

  // weekly
  ["weekly atMinute defaults to 0", weekly(1, 9), "UTC", "2025-01-01T00:00:00Z", null, "2025-01-06T09:00:00.000Z"],
  ["weekly: after == slot → next week", weekly(1, 9), "UTC", "2025-01-06T09:00:00Z", null, "2025-01-13T09:00:00.000Z"],
  ["weekly on the same weekday, later today", weekly(3, 18), "UTC", "2025-01-01T00:00:00Z", null, "2025-01-01T18:00:00.000Z"],
  ["weekly Berlin atMinute default 0 in local time", weekly(3, 18), BER, "2025-01-01T00:00:00Z", null, "2025-01-01T17:00:00.000Z"],
  ["weekly uses the local weekday (Sat 23:00 New York is Sunday UTC)", weekly(6, 23), NY, "2025-01-04T00:00:00Z", null, "2025-01-05T04:00:00.000Z"],
  ["weekly Sunday 0 with atMinute", weekly(0, 12, 15), "UTC", "2025-01-01T00:00:00Z", null, "2025-01-05T12:15:00.000Z"],
  ["weekly Berlin Sunday 02:30 skipped by spring-forward → 03:00 CEST", weekly(0, 2, 30), BER, "2025-03-24T00:00:00Z", null, "2025-03-30T01:00:00.000Z"],
  ["weekly Berlin Sunday 02:30 repeated by fall-back → first occurrence", weekly(0, 2, 30), BER, "2025-10-20T00:00:00Z", null, "2025-10-26T00:30:00.000Z"],
  ["weekly Berlin Sunday 02:30 after the first occurrence → next week (CET)", weekly(0, 2, 30), BER, "2025-10-26T00:30:00Z", null, "2025-11-02T01:30:00.000Z"],
  ["weekly New York Sunday 02:30 skipped → 03:00 EDT", weekly(0, 2, 30), NY, "2025-03-03T00:00:00Z", null, "2025-03-09T07:00:00.000Z"],
  ["weekly New York Sunday 01:30 repeated → first occurrence (EDT)", weekly(0, 1, 30), NY, "2025-10-27T00:00:00Z", null, "2025-11-02T05:30:00.000Z"],
  ["weekly New York Sunday 01:30 after the first occurrence → next week (EST)", weekly(0, 1, 30), NY, "2025-11-02T05:30:00Z", null, "2025-11-09T06:30:00.000Z"],

  // cron
  ["cron */15 UTC", cron("*/15 * * * *"), "UTC", "2025-01-01T10:07:00Z", null, "2025-01-01T10:15:00.000Z"],
  ["cron */15 UTC: after == slot → next slot", cron("*/15 * * * *"), "UTC", "2025-01-01T10:15:00Z", null, "2025-01-01T10:30:00.000Z"],
  ["cron weekdays only skips the weekend", cron("0 9 * * 1-5"), "UTC", "2025-01-03T10:00:00Z", null, "2025-01-06T09:00:00.000Z"],
  ["cron day-of-week 7 is Sunday", cron("0 12 * * 7"), "UTC", "2025-01-01T00:00:00Z", null, "2025-01-05T12:00:00.000Z"],
  ["cron names (MON)", cron("0 12 * * MON"), "UTC", "2025-01-01T00:00:00Z", null, "2025-01-06T12:00:00.000Z"],
  ["cron 29 February waits for a leap year", cron("0 0 29 2 *"), "UTC", "2025-01-01T00:00:00Z", null, "2028-02-29T00:00:00.000Z"],
  ["cron Berlin in local time", cron("0 9 * * *"), BER, "2025-07-01T00:00:00Z", null, "2025-07-01T07:00:00.000Z"],
  ["cron Berlin 02:30 skipped → 03:00 CEST", cron("30 2 * * *"), BER, "2025-03-29T12:00:00Z", null, "2025-03-30T01:00:00.000Z"],
  ["cron Berlin */15 slots in the gap run once, at 03:00 CEST", cron("*/15 * * * *"), BER, "2025-03-30T00:50:00Z", null, "2025-03-30T01:00:00.000Z"],
  ["cron Berlin */15 after the gap's run → 03:15 CEST", cron("*/15 * * * *"), BER, "2025-03-30T01:00:00Z", null, "2025-03-30T01:15:00.000Z"],
  ["cron Berlin hourly: 02:00 and 03:00 collapse, then 04:00 CEST", cron("0 * * * *"), BER, "2025-03-30T01:00:00Z", null, "2025-03-30T02:00:00.000Z"],
  ["cron Berlin 02:30 repeated → first occurrence", cron("30 2 * * *"), BER, "2025-10-25T12:00:00Z", null, "2025-10-26T00:30:00.000Z"],
  ["cron Berlin 02:30 after its first occurrence → tomorrow", cron("30 2 * * *"), BER, "2025-10-26T00:30:00Z", null, "2025-10-27T01:30:00.000Z"],
  ["cron New York 02:30 skipped → 03:00 EDT", cron("30 2 * * *"), NY, "2025-03-08T12:00:00Z", null, "2025-03-09T07:00:00.000Z"],
  ["cron New York 01:30 repeated → first occurrence", cron("30 1 * * *"), NY, "2025-11-01T12:00:00Z", null, "2025-11-02T05:30:00.000Z"],
  ["cron New York 01:30 after the first occurrence → tomorrow", cron("30 1 * * *"), NY, "2025-11-02T05:30:00Z", null, "2025-11-03T06:30:00.000Z"],
  ["cron New York */30 does not rerun the repeated hour", cron("*/30 * * * *"), NY, "2025-11-02T05:45:00Z", null, "2025-11-02T07:00:00.000Z"],
  ["cron New York */30 from inside the repeated hour → 02:00 EST", cron("*/30 * * * *"), NY, "2025-11-02T06:10:00Z", null, "2025-11-02T07:00:00.000Z"],
  ["cron extra whitespace is fine", cron("  0  9 * * *  "), "UTC", "2025-01-01T00:00:00Z", null, "2025-01-01T09:00:00.000Z"],
]

describe("nextRunAt", () => {
  it.each(cases)("%s", (_name, cadence, timeZone, after, previous, expected) => {
    const result = nextRunAt(cadence, {
      after: new Date(after),
      previous: previous === null ? null : new Date(previous),
      timeZone,
    })
    expect(Either.isRight(result) ? (result.right?.toISOString() ?? null) : result.left).toBe(expected)
    expect(validateCadence(cadence, timeZone)).toStrictEqual(Either.right(undefined))
  })

  it("a chain of daily runs across both Berlin DST changes hits each local 02:30 once", () => {
    const seen: Array<string> = []
    let after = new Date("2025-03-28T12:00:00Z")
    for (let i = 0; i < 4; i++) {
      const next = Either.getOrThrow(nextRunAt(daily(2, 30), { after, previous: null, timeZone: BER }))
      if (next === null) throw new Error("unexpected null")
      seen.push(next.toISOString())
      after = next
    }
    expect(seen).toStrictEqual([
      "2025-03-29T01:30:00.000Z",
      "2025-03-30T01:00:00.000Z",
      "2025-03-31T00:30:00.000Z",
      "2025-04-01T00:30:00.000Z",
    ])
  })
})

type Rejection = readonly [name: string, cadence: Cadence, timeZone: string, reason: RegExp]

const rejections: ReadonlyArray<Rejection> = [
  ["unknown time zone (daily)", daily(9, 0), "Mars/Olympus", /unknown time zone "Mars\/Olympus"/],
  ["unknown time zone (cron)", cron("0 9 * * *"), "Not/AZone", /unknown time zone/],
  ["unknown time zone (manual)", manual, "", /unknown time zone ""/],
  ["unknown time zone (interval)", every(5), "Europe/Nowhere", /unknown time zone/],
  ["cron with a value out of range", cron("61 * * * *"), "UTC", /invalid cron expression "61 \* \* \* \*"/],
  ["cron that is not cron", cron("every day at nine"), "UTC", /invalid cron expression|five fields/],
  ["cron with six fields", cron("0 0 9 * * *"), "UTC", /five fields/],
  ["cron with four fields", cron("0 9 * *"), "UTC", /five fields/],
  ["cron that never fires (30 February)", cron("0 0 30 2 *"), "UTC", /never fires/],
  ["daily atHour 24", daily(24, 0), "UTC", /atHour/],
  ["daily atMinute 60", daily(9, 60), "UTC", /atMinute/],
  ["weekly dayOfWeek 7", weekly(7, 9), "UTC", /dayOfWeek/],
  ["weekly fractional hour", weekly(1, 9.5), "UTC", /atHour/],
  ["interval of 0 minutes", every(0), "UTC", /everyMinutes/],
  ["interval of 1.5 minutes", every(1.5), "UTC", /everyMinutes/],
  // 150,000,000,000 min = 9e15 ms: past +275760-09-13, the last instant a Date or an ISO nextRunAt holds.
  ["interval whose next run no timestamp can hold", every(150_000_000_000), "UTC", /everyMinutes 150000000000 puts the next run past the latest instant a timestamp can hold \(\+275760-09-13T00:00:00\.000Z\)/],
]

describe("rejections", () => {
  it.each(rejections)("%s", (_name, cadence, timeZone, reason) => {
    const result = nextRunAt(cadence, { after: new Date("2025-01-01T00:00:00Z"), previous: null, timeZone })
    if (Either.isRight(result)) throw new Error(`expected a CadenceError, got ${String(result.right)}`)
    expect(result.left._tag).toBe("CadenceError")
    expect(result.left.reason).toMatch(reason)
    const validated = validateCadence(cadence, timeZone)
    expect(Either.isLeft(validated) ? validated.left.reason : "valid").toMatch(reason)
  })

  it("an interval that fits from 2000 but not from the write time is an error at the write, not an Invalid Date", () => {
    // 143,980,000,000 min = 8,638,800,000,000,000 ms: 2000-01-01 plus it fits under 8.64e15 ms, 2026-01-01 plus it does not.
    const cadence = every(143_980_000_000)
    expect(validateCadence(cadence, "UTC")).toStrictEqual(Either.right(undefined))
    const late = nextRunAt(cadence, { after: new Date("2026-01-01T00:00:00Z"), previous: null, timeZone: "UTC" })
    expect(Either.isLeft(late) ? late.left.reason : "no error").toMatch(/past the latest instant/)
    // Anchored on a previous slot the same bound holds.
    const anchored = nextRunAt(cadence, {
      after: new Date("2026-01-01T00:00:00Z"),
      previous: new Date("2025-12-31T00:00:00Z"),
      timeZone: "UTC",
    })
    expect(Either.isLeft(anchored)).toBe(true)
    // Just inside the bound: a valid instant.
    const inside = nextRunAt(every(143_900_000_000), { after: new Date("2025-01-01T00:00:00Z"), previous: null, timeZone: "UTC" })
    expect(Either.map(inside, (d) => d?.toISOString())).toStrictEqual(Either.right("+275625-07-27T13:20:00.000Z"))
  })

  it("an invalid `after` is an error, not a NaN date", () => {
    const result = nextRunAt(daily(9, 0), { after: new Date("nope"), previous: null, timeZone: "UTC" })
    expect(Either.isLeft(result)).toBe(true)
  })

  it("daily without atMinute (hand-built record) defaults to minute 0", () => {
    const cadence = { kind: "daily", atHour: 7 } as unknown as Cadence
    const result = nextRunAt(cadence, { after: new Date("2025-01-01T00:00:00Z"), previous: null, timeZone: "UTC" })
    expect(Either.map(result, (d) => d?.toISOString())).toStrictEqual(Either.right("2025-01-01T07:00:00.000Z"))
  })
})

describe("validateCadence and isValidTimeZone keep their answers per cadence and zone", () => {
  it("asked again, each answers for its own arguments, not the last ones asked", () => {
    const daily = { kind: "daily", atHour: 8, atMinute: 0 } as const
    expect(Either.isRight(validateCadence(daily, "UTC"))).toBe(true)
    expect(Either.isLeft(validateCadence(daily, "Mars/Olympus_Mons"))).toBe(true)
    expect(Either.isRight(validateCadence(daily, "UTC"))).toBe(true)
    expect(Either.isLeft(validateCadence({ ...daily, atMinute: 60 }, "UTC"))).toBe(true)
    expect(Either.isLeft(validateCadence({ kind: "cron", expression: "0 8 30 2 *" }, "UTC"))).toBe(true)
    expect(Either.isRight(validateCadence({ kind: "cron", expression: "0 8 28 2 *" }, "UTC"))).toBe(true)
    expect(isValidTimeZone("Europe/Berlin")).toBe(true)
    expect(isValidTimeZone("Europe/Berlin")).toBe(true)
    expect(isValidTimeZone("Mars/Olympus_Mons")).toBe(false)
    expect(isValidTimeZone("Mars/Olympus_Mons")).toBe(false)
  })
})
