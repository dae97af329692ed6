import { describe, expect, it } from "vitest"
import {
  applyChange,
  applyChanges,
  initialState,
  isApplicable,
  isLive,
  parseInstant,
  type RecordState,
  type ReplayRow,
  fieldTimesProblem,
  replay,
  replayOrdered,
} from "../../src/domain/replay.js"

const R = "rec-1"
let seq = 0
/** A row of record R; `at` is created_at, `ts` its field_timestamps. */
const row = (
  at: string,
  op: ReplayRow["op"],
  data: unknown,
  ts: unknown = {},
  id = `row-${String(++seq).padStart(4, "0")}`,
): ReplayRow => ({ id, op, data, field_timestamps: ts, created_at: new Date(at), record_id: R })

const T0 = "2025-03-01T10:00:00.000Z"
const T1 = "2025-03-01T10:00:01.000Z"
const T2 = "2025-03-01T10:00:02.000Z"
const T3 = "2025-03-01T10:00:03.000Z"

interface Case {
  readonly name: string
  readonly rows: ReadonlyArray<ReplayRow>
  readonly record: Record<string, unknown> | null
  readonly times?: Record<string, string>
  readonly live: boolean
}

const cases: ReadonlyArray<Case> = [
  {
    name: "no rows: never created",
    rows: [],
    record: null,
    live: false,
  },
  {
    name: "insert creates {id: record_id, ...data}; field times fall back to created_at",
    rows: [row(T0, "insert", { title: "a", state: "active" })],
    record: { id: R, title: "a", state: "active" },
    times: { title: T0, state: T0 },
    live: true,
  },
  {
    name: "record_id is authoritative for id (data.id ignored on insert and update)",
    rows: [row(T0, "insert", { id: "other", title: "a" }), row(T1, "update", { id: "third" })],
    record: { id: R, title: "a" },
    live: true,
  },
  {
    name: "record_id stays the id through a delete and a new insert whose data.id differs, and against a data.id with a newer field time",
    rows: [
      row(T0, "insert", { id: "first", title: "a" }),
      row(T1, "delete", null),
      row(T2, "insert", { id: "second", title: "b" }, { id: "2030-01-01T00:00:00Z" }),
      row(T3, "update", { id: "third" }, { id: "2031-01-01T00:00:00Z" }),
    ],
    record: { id: R, title: "b" },
    live: true,
  },
  {
    name: "an update alone creates the record",
    rows: [row(T0, "update", { title: "a" })],
    record: { id: R, title: "a" },
    live: true,
  },
  {
    name: "a newer field timestamp replaces the value",
    rows: [row(T0, "insert", { title: "a" }, { title: T0 }), row(T1, "update", { title: "b" }, { title: T1 })],
    record: { id: R, title: "b" },
    times: { title: T1 },
    live: true,
  },
  {
    name: "an older field timestamp loses even though its row is later",
    rows: [row(T0, "insert", { title: "a" }, { title: T2 }), row(T1, "update", { title: "b" }, { title: T1 })],
    record: { id: R, title: "a" },
    times: { title: T2 },
    live: true,
  },
  {
    name: "a tie goes to the later row",
    rows: [row(T0, "insert", { title: "a" }, { title: T2 }), row(T1, "update", { title: "b" }, { title: T2 })],
    record: { id: R, title: "b" },
    times: { title: T2 },
    live: true,
  },
  {
    name: "a tie of created_at and timestamps is broken by row id",
    rows: [
      row(T0, "update", { title: "second" }, {}, "row-b"),
      row(T0, "insert", { title: "first" }, {}, "row-a"),
    ],
    record: { id: R, title: "second" },
    live: true,
  },
  {
    name: "…00Z equals …00.000Z (compared as instants, so the later row wins the tie)",
    rows: [
      row(T0, "insert", { title: "a" }, { title: "2025-03-01T12:00:00.000Z" }),
      row(T1, "update", { title: "b" }, { title: "2025-03-01T12:00:00Z" }),
    ],
    record: { id: R, title: "b" },
    times: { title: "2025-03-01T12:00:00.000Z" },
    live: true,
  },
  {
    name: "instants, not strings: +02:00 offset is two hours earlier than Z",
    rows: [
      row(T0, "insert", { title: "a" }, { title: "2025-03-01T11:00:00Z" }),
      // as a string "…12:00:00+02:00" > "…11:00:00Z", as an instant it is 10:00Z: older, loses
      row(T1, "update", { title: "b" }, { title: "2025-03-01T12:00:00+02:00" }),
    ],
    record: { id: R, title: "a" },
    times: { title: "2025-03-01T11:00:00.000Z" },
    live: true,
  },
  {
    name: "a missing field timestamp falls back to the row's created_at",
    rows: [
      row(T0, "insert", { title: "a", state: "active" }, { title: T3 }),
      row(T2, "update", { title: "b", state: "paused" }, { title: T1 }),
    ],
    record: { id: R, title: "a", state: "paused" },
    times: { title: T3, state: T2 },
    live: true,
  },
  {
    name: "an unparseable field timestamp falls back to created_at",
    rows: [
      row(T0, "insert", { title: "a" }, { title: T1 }),
      row(T2, "update", { title: "b" }, { title: "yesterday" }),
    ],
    record: { id: R, title: "b" },
    times: { title: T2 },
    live: true,
  },
  {
    name: "unparseable timestamps of other kinds (number, zone-less, impossible date) fall back to created_at",
    rows: [
      row(T0, "insert", { a: 1, b: 1, c: 1 }, { a: T3, b: T3, c: T3 }),
      row(T1, "update", { a: 2, b: 2, c: 2 }, { a: 1e15, b: "2099-01-01T00:00:00", c: "2099-02-30T00:00:00Z" }),
    ],
    record: { id: R, a: 1, b: 1, c: 1 },
    times: { a: T3, b: T3, c: T3 },
    live: true,
  },
  {
    name: "field_timestamps that is not an object counts as {}",
    rows: [row(T0, "insert", { title: "a" }, { title: T3 }), row(T1, "update", { title: "b" }, "garbage")],
    record: { id: R, title: "a" },
    times: { title: T3 },
    live: true,
  },
  {
    name: "field_timestamps null counts as {}",
    rows: [row(T0, "insert", { title: "a" }, null), row(T1, "update", { title: "b" }, null)],
    record: { id: R, title: "b" },
    times: { title: T1 },
    live: true,
  },
  {
    name: "out-of-order input is sorted by (created_at, id)",
    rows: [row(T2, "update", { title: "c" }), row(T0, "insert", { title: "a", x: 1 }), row(T1, "update", { title: "b" })],
    record: { id: R, title: "c", x: 1 },
    live: true,
  },
  {
    name: "delete removes the record",
    rows: [row(T0, "insert", { title: "a" }), row(T1, "delete", null)],
    record: null,
    live: false,
  },
  {
    name: "delete then recreate starts anew with only the new row's fields",
    rows: [
      row(T0, "insert", { title: "a", state: "active" }, { title: T3 }),
      row(T1, "delete", null),
      row(T2, "update", { title: "b" }, { title: T0 }),
    ],
    record: { id: R, title: "b" },
    times: { title: T0 },
    live: true,
  },
  {
    name: "deletedAt set is a soft delete: the record stays but is not live",
    rows: [row(T0, "insert", { title: "a" }), row(T1, "update", { deletedAt: "2025-03-01T10:00:01Z" })],
    record: { id: R, title: "a", deletedAt: "2025-03-01T10:00:01Z" },
    live: false,
  },
  {
    name: "deletedAt null is not deleted",
    rows: [row(T0, "insert", { title: "a", deletedAt: null })],
    record: { id: R, title: "a", deletedAt: null },
    live: true,
  },
  {
    name: "a later deletedAt: null undeletes",
    rows: [row(T0, "insert", { title: "a", deletedAt: "2025-03-01T10:00:00Z" }), row(T1, "update", { deletedAt: null })],
    record: { id: R, title: "a", deletedAt: null },
    live: true,
  },
  {
    name: "unknown fields are kept, nested values untouched",
    rows: [
      row(T0, "insert", { title: "a", someFutureField: { deep: [1, 2] } }),
      row(T1, "update", { title: "b", another: true }),
    ],
    record: { id: R, title: "b", someFutureField: { deep: [1, 2] }, another: true },
    live: true,
  },
  {
    name: "a __proto__ key is stored as a plain field, not as a prototype",
    rows: [row(T0, "insert", JSON.parse('{"title":"a","__proto__":{"polluted":true}}'))],
    record: JSON.parse(`{"id":"${R}","title":"a","__proto__":{"polluted":true}}`),
    live: true,
  },
  ...(
    [
      ["null", null],
      ["an array", [1, 2]],
      ["a string", "x"],
      ["a number", 7],
    ] as const
  ).flatMap(([label, bad]): ReadonlyArray<Case> => [
    {
      name: `update with data ${label} changes nothing`,
      rows: [row(T0, "insert", { title: "a" }), row(T1, "update", bad)],
      record: { id: R, title: "a" },
      times: { title: T0 },
      live: true,
    },
    {
      name: `insert with data ${label} creates nothing; a later row with data creates the record`,
      rows: [row(T0, "insert", bad), row(T1, "update", { title: "b" })],
      record: { id: R, title: "b" },
      times: { title: T1 },
      live: true,
    },
  ]),
]

const isoTimes = (state: RecordState): Record<string, string> =>
  Object.fromEntries(Object.entries(state.times).map(([k, v]) => [k, new Date(v).toISOString()]))

describe("replay", () => {
  it.each(cases)("$name", ({ rows, record, times, live }) => {
    const state = replay(rows)
    expect(state.record).toStrictEqual(record)
    if (times !== undefined) expect(isoTimes(state)).toStrictEqual(times)
    expect(isLive(state)).toBe(live)
    // JSON round trip: the state can be persisted as a snapshot.
    expect(JSON.parse(JSON.stringify(state))).toStrictEqual(state)
    expect(Object.getPrototypeOf(state.record ?? {})).toBe(Object.prototype)
  })

  it("does not mutate the state it is given", () => {
    const first = applyChange(initialState, row(T0, "insert", { title: "a" }))
    const snapshot = JSON.stringify(first)
    const second = applyChange(first, row(T1, "update", { title: "b" }))
    expect(JSON.stringify(first)).toBe(snapshot)
    expect(second.record).toStrictEqual({ id: R, title: "b" })
    expect(initialState).toStrictEqual({ record: null, times: {} })
  })

  it("incremental application from a snapshot equals a full replay", () => {
    const rows = [
      row(T0, "insert", { title: "a", n: 1 }, { title: T1 }),
      row(T1, "update", { title: "b" }, { title: T0 }),
      row(T2, "update", { n: 2 }),
      row(T3, "update", { title: "c" }, { title: T3 }),
    ]
    const snapshot = JSON.parse(JSON.stringify(replay(rows.slice(0, 2)))) as RecordState
    expect(rows.slice(2).reduce(applyChange, snapshot)).toStrictEqual(replay(rows))
  })

  it("applyChanges (one working copy) equals folding applyChange row by row, and leaves its input alone", () => {
    // A fixed pseudo-random walk over ops, data shapes, fields and per-field times (ties included).
    let x = 7
    const next = (n: number) => {
      x = (x * 1103515245 + 12345) % 2147483648
      return x % n
    }
    const times = [T0, T1, T2, T3, "not a time", undefined]
    for (let c = 0; c < 200; c++) {
      const rows = Array.from({ length: 1 + next(12) }, (_, i) => {
        const op = (["insert", "update", "update", "update", "delete"] as const)[next(5)]!
        const field = ["title", "n", "deletedAt", "__proto__", "id"][next(5)]!
        const data = next(9) === 0 ? [1] : next(9) === 0 ? null : { [field]: next(4), ...(next(2) ? { other: i } : {}) }
        const t = times[next(times.length)]
        return row(times[next(4)]!, op, data, t === undefined ? {} : { [field]: t, other: times[next(4)] })
      })
      const start = next(3) === 0 ? initialState : (JSON.parse(JSON.stringify(replay(rows.slice(0, 1)))) as RecordState)
      const before = JSON.stringify(start)
      expect(applyChanges(start, rows)).toStrictEqual(rows.reduce(applyChange, start))
      expect(JSON.stringify(start)).toBe(before)
    }
    expect(initialState).toStrictEqual({ record: null, times: {} })
  })

  it.each([
    [row(T0, "insert", { a: 1 }), true],
    [row(T0, "update", {}), true],
    [row(T0, "delete", null), true],
    [row(T0, "insert", null), false],
    [row(T0, "update", [1]), false],
    [row(T0, "update", "s"), false],
  ] as const)("isApplicable %# → %s", (r, expected) => {
    expect(isApplicable(r)).toBe(expected)
  })
})

describe("fieldTimesProblem (the per-field time column, field_meta or field_timestamps)", () => {
  it.each([
    { name: "an empty object", times: {}, data: { title: "a" }, reason: null },
    { name: "SQL NULL", times: null, data: { title: "a" }, reason: null },
    { name: "valid instants", times: { title: T0 }, data: { title: "a" }, reason: null },
    { name: "a time only for a field the row does not carry", times: { other: "garbage" }, data: { title: "a" }, reason: null },
    { name: "a string", times: "garbage", data: { title: "a" }, reason: "field-times-not-object" },
    { name: "an array", times: [T0], data: { title: "a" }, reason: "field-times-not-object" },
    { name: "a number", times: 7, data: { title: "a" }, reason: "field-times-not-object" },
    { name: "a non-string value", times: { title: 7 }, data: { title: "a" }, reason: "field-time-not-instant" },
    { name: "a string that is not an instant", times: { title: "yesterday" }, data: { title: "a" }, reason: "field-time-not-instant" },
    { name: "an object value (today's client shape)", times: { title: { at: T0 } }, data: { title: "a" }, reason: "field-time-not-instant" },
  ])("$name → $reason", ({ times, data, reason }) => {
    expect(fieldTimesProblem(times, data)?.reason ?? null).toBe(reason)
  })

  it("a bad time is replayed as the row's created_at, never a crash", () => {
    const state = replayOrdered([
      row(T0, "insert", { title: "a", state: "active" }, "garbage"),
      row(T1, "update", { title: "b" }, { title: 7 }),
      row(T2, "update", { state: "paused" }, { state: { at: T3 } }),
    ])
    expect(state.record).toEqual({ id: R, title: "b", state: "paused" })
    expect(state.times).toEqual({ title: Date.parse(T1), state: Date.parse(T2) })
  })
})

describe("parseInstant", () => {
  it.each([
    ["2025-03-01T10:00:00Z", "2025-03-01T10:00:00.000Z"],
    ["2025-03-01T10:00:00.000Z", "2025-03-01T10:00:00.000Z"],
    ["2025-03-01T10:00:00.123456Z", "2025-03-01T10:00:00.123Z"],
    ["2025-03-01T10:00Z", "2025-03-01T10:00:00.000Z"],
    ["2025-03-01T12:00:00+02:00", "2025-03-01T10:00:00.000Z"],
    ["2025-03-01T05:30:00-0430", "2025-03-01T10:00:00.000Z"],
    ["2025-03-01 10:00:00+00", "2025-03-01T10:00:00.000Z"],
    ["2025-03-01", "2025-03-01T00:00:00.000Z"],
    ["2024-02-29T00:00:00Z", "2024-02-29T00:00:00.000Z"],
  ])("%s → %s", (input, expected) => {
    const ms = parseInstant(input)
    expect(ms === undefined ? undefined : new Date(ms).toISOString()).toBe(expected)
  })

  it.each([
    "",
    "yesterday",
    "2025-03-01T10:00:00",
    "2025-02-29T00:00:00Z",
    "2025-13-01T00:00:00Z",
    "2025-03-01T24:00:00Z",
    "2025-03-01T10:60:00Z",
    "1741000000000",
    12,
    null,
    {},
  ])("rejects %j", (input) => {
    expect(parseInstant(input)).toBeUndefined()
  })

  // toISOString's form is read by hand; the same text with a space in front takes the general path.
  it("reads toISOString's form as the general parser does, valid or not", () => {
    const pad = (n: number, width: number) => String(n).padStart(width, "0")
    const cases = [
      "2024-02-29T23:59:59.999Z",
      "2025-02-29T00:00:00.000Z",
      "2000-02-29T12:00:00.000Z",
      "1900-02-29T12:00:00.000Z",
      "2025-04-31T00:00:00.000Z",
      "2025-03-01T24:00:00.000Z",
      "2025-03-01T10:60:00.000Z",
      "2025-03-01T10:00:60.000Z",
      "0099-01-01T00:00:00.000Z",
      "0100-03-01T00:00:00.000Z",
      "2025-03-01T10:00:00.000z",
      "2025-03-01t10:00:00.000Z",
      "2025-03-01T10:00:00,000Z",
      "2025-0a-01T10:00:00.000Z",
      "+25-03-01T10:00:00.000Z",
    ]
    let seed = 7
    const next = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31
      return seed % n
    }
    for (let i = 0; i < 2000; i++) {
      cases.push(
        `${pad(next(10000), 4)}-${pad(next(14), 2)}-${pad(next(33), 2)}T${pad(next(25), 2)}:${pad(next(61), 2)}:${pad(next(61), 2)}.${pad(next(1000), 3)}Z`,
      )
    }
    let valid = 0
    for (const text of cases) {
      const general = parseInstant(` ${text}`)
      expect(parseInstant(text), text).toBe(general)
      if (general !== undefined) {
        valid++
        if (/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/.test(text) && Number(text.slice(0, 4)) >= 100) {
          expect(new Date(general).toISOString(), text).toBe(text)
        }
      }
    }
    // Both kinds are among the cases.
    expect(valid).toBeGreaterThan(100)
    expect(valid).toBeLessThan(cases.length - 100)
  })
})

describe("replayOrdered", () => {
  it("keeps the given order where millisecond Dates tie (Postgres ordered by microseconds)", () => {
    const at = new Date("2026-01-01T00:00:00.000Z")
    // Row "b" sorts after "a" in Postgres (a few µs later) although its id sorts first.
    const rows = [
      { id: "b", op: "insert" as const, data: { title: "first" }, field_timestamps: {}, created_at: at, record_id: "m" },
      { id: "a", op: "update" as const, data: { title: "second" }, field_timestamps: {}, created_at: at, record_id: "m" },
    ]
    expect(replayOrdered(rows).record).toEqual({ id: "m", title: "second" })
    expect(replay(rows).record).toEqual({ id: "m", title: "first" })
  })
})
