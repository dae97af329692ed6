/**
 * Field-level last-writer-wins replay of one record from its `sync_changes` rows (SPEC §2).
 * Pure: no I/O, no clock; the caller reads the rows and decides what a state means.
 */

export interface ReplayRow {
  readonly id: string
  readonly op: "insert" | "update" | "delete"
  readonly data: unknown
  readonly field_timestamps: unknown
  readonly created_at: Date
  readonly record_id: string
}

export interface RecordState {
  /** null: never created, or removed by a delete op. */
  readonly record: Readonly<Record<string, unknown>> | null
  /** field -> epoch ms of the value held (kept JSON-serialisable on purpose). */
  readonly times: Readonly<Record<string, number>>
}

export const initialState: RecordState = { record: null, times: {} }

const isPlainObject = (u: unknown): u is Record<string, unknown> =>
  typeof u === "object" && u !== null && !Array.isArray(u)

/** Whether an object has no own enumerable keys (most rows' per-field times: `{}`), without allocating. */
const isEmptyObject = (o: Record<string, unknown>): boolean => {
  for (const key in o) if (Object.hasOwn(o, key)) return false
  return true
}

// Date.parse on anything but the strict ECMAScript form differs between engines (V8 vs JSC) and
// reads a zone-less time in the process's zone, so ISO instants are parsed by hand.
const ISO_INSTANT =
  /^(\d{4})-(\d{2})-(\d{2})(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?(?:([Zz])|([+-])(\d{2})(?::?(\d{2}))?))?$/

/** Days in `month` (1–12) of `year` in the proleptic Gregorian calendar, as Date counts them. */
const daysInMonth = (year: number, month: number): number =>
  month === 2
    ? (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0
      ? 29
      : 28
    : month === 4 || month === 6 || month === 9 || month === 11
      ? 30
      : 31

/** The number of `n` ASCII digits at `at`, or -1. */
const digits = (s: string, at: number, n: number): number => {
  let value = 0
  for (let i = at; i < at + n; i++) {
    const c = s.charCodeAt(i) - 48
    if (c < 0 || c > 9) return -1
    value = value * 10 + c
  }
  return value
}

/**
 * `YYYY-MM-DDTHH:MM:SS.sssZ` with a year from 100 on, read by hand; undefined for anything else (the
 * general parser then decides, so a string this rejects is never wrongly accepted or refused).
 */
const canonicalInstant = (s: string): number | undefined => {
  if (s.charCodeAt(4) !== 45 || s.charCodeAt(7) !== 45 || s.charCodeAt(10) !== 84 || s.charCodeAt(13) !== 58) return undefined
  if (s.charCodeAt(16) !== 58 || s.charCodeAt(19) !== 46 || s.charCodeAt(23) !== 90) return undefined
  const year = digits(s, 0, 4)
  const month = digits(s, 5, 2)
  const day = digits(s, 8, 2)
  const hour = digits(s, 11, 2)
  const minute = digits(s, 14, 2)
  const second = digits(s, 17, 2)
  const ms = digits(s, 20, 3)
  if (year < 100 || month < 0 || day < 0 || hour < 0 || minute < 0 || second < 0 || ms < 0) return undefined
  if (month < 1 || month > 12 || day < 1 || day > daysInMonth(year, month)) return undefined
  if (hour > 23 || minute > 59 || second > 59) return undefined
  return Date.UTC(year, month - 1, day, hour, minute, second, ms)
}

/**
 * Epoch ms of an ISO-8601 instant (`2024-01-01T00:00:00Z`, `…00.000Z`, `…+02:00`, `2024-01-01`),
 * or undefined when it is not one. A date-time without a zone is not an instant and is rejected.
 */
export const parseInstant = (u: unknown): number | undefined => {
  if (typeof u !== "string") return undefined
  // Almost every stamp is toISOString's form (`2024-01-01T00:00:00.000Z`): read without the regex
  // and its captures (issue 16: about 1 % of a run's CPU); anything else takes the general path.
  if (u.length === 24) {
    const fast = canonicalInstant(u)
    if (fast !== undefined) return fast
  }
  const m = ISO_INSTANT.exec(u.trim())
  if (m === null) return undefined
  const [, y, mo, d, h, mi, s, frac, z, sign, oh, om] = m
  const year = Number(y)
  const month = Number(mo)
  const day = Number(d)
  if (month < 1 || month > 12 || day < 1 || day > daysInMonth(year, month)) return undefined
  if (h === undefined) return Date.UTC(year, month - 1, day)
  if (z === undefined && sign === undefined) return undefined
  const hour = Number(h)
  const minute = Number(mi)
  const second = s === undefined ? 0 : Number(s)
  if (hour > 23 || minute > 59 || second > 59) return undefined
  const ms = frac === undefined ? 0 : Number(frac.slice(0, 3).padEnd(3, "0"))
  let offsetMinutes = 0
  if (sign !== undefined) {
    const offH = Number(oh)
    const offM = om === undefined ? 0 : Number(om)
    if (offH > 23 || offM > 59) return undefined
    offsetMinutes = (sign === "-" ? -1 : 1) * (offH * 60 + offM)
  }
  const utc = new Date(0)
  // setUTCFullYear keeps years 0–99 literal, which Date.UTC would map to 1900–1999.
  utc.setUTCFullYear(year, month - 1, day)
  utc.setUTCHours(hour, minute, second, ms)
  return utc.getTime() - offsetMinutes * 60_000
}

// A data key may be "__proto__"; plain assignment would change the prototype instead of storing it.
const put = <A>(target: Record<string, A>, key: string, value: A): void => {
  if (key === "__proto__") Object.defineProperty(target, key, { value, writable: true, enumerable: true, configurable: true })
  else target[key] = value
}

const fieldTime = (fieldTimestamps: unknown, field: string, fallback: number): number => {
  if (!isPlainObject(fieldTimestamps) || !Object.hasOwn(fieldTimestamps, field)) return fallback
  return parseInstant(fieldTimestamps[field]) ?? fallback
}

/**
 * What is wrong with a row's per-field times (`field_timestamps`, or `field_meta` on today's sync
 * server), for counting and logging: not an object, or a time for one of the row's fields that is
 * not an ISO instant. Replay treats both alike, the row's created_at standing in. null: nothing wrong
 * (an absent column, SQL NULL, or an empty object means "use created_at" and is not a problem).
 */
export const fieldTimesProblem = (
  fieldTimes: unknown,
  data: unknown,
): { readonly reason: "field-times-not-object" | "field-time-not-instant"; readonly detail: string } | null => {
  if (fieldTimes === null || fieldTimes === undefined) return null
  if (!isPlainObject(fieldTimes)) {
    const kind = Array.isArray(fieldTimes) ? "an array" : `a ${typeof fieldTimes}`
    return { reason: "field-times-not-object", detail: `the per-field times are ${kind}, not an object` }
  }
  if (!isPlainObject(data) || isEmptyObject(fieldTimes)) return null
  const bad = Object.keys(data).filter(
    (field) => field !== "id" && Object.hasOwn(fieldTimes, field) && parseInstant(fieldTimes[field]) === undefined,
  )
  if (bad.length === 0) return null
  return {
    reason: "field-time-not-instant",
    detail: `the time of field${bad.length > 1 ? "s" : ""} ${bad.slice(0, 3).join(", ")}${bad.length > 3 ? ` (and ${bad.length - 3} more)` : ""} is not an ISO instant`,
  }
}

/** Whether a row can change a record at all: a delete, or a row whose `data` is an object. */
export const isApplicable = (row: ReplayRow): boolean => row.op === "delete" || isPlainObject(row.data)

/** Merges one row's fields into a record and its times (both owned by the caller): field-level LWW. */
const mergeFields = (
  record: Record<string, unknown>,
  times: Record<string, number>,
  row: ReplayRow,
  data: Record<string, unknown>,
): void => {
  const rowTime = row.created_at.getTime()
  const fieldTimes = row.field_timestamps
  // No usable per-field times (absent, not an object, or empty): every field takes the row's time.
  const perField = isPlainObject(fieldTimes) && !isEmptyObject(fieldTimes) ? fieldTimes : undefined
  for (const field in data) {
    // Own keys only (what Object.entries gave); record_id is authoritative for the id.
    if (!Object.hasOwn(data, field) || field === "id") continue
    const t = perField === undefined ? rowTime : fieldTime(perField, field, rowTime)
    const held = Object.hasOwn(times, field) ? times[field] : undefined
    if (held === undefined || t >= held) {
      put(record, field, data[field])
      put(times, field, t)
    }
  }
}

const copyState = (state: RecordState): { record: Record<string, unknown>; times: Record<string, number> } => {
  const record: Record<string, unknown> = {}
  const times: Record<string, number> = {}
  for (const [k, v] of Object.entries(state.record ?? {})) put(record, k, v)
  for (const [k, v] of Object.entries(state.times)) put(times, k, v)
  return { record, times }
}

/**
 * Applies one row; rows must come in `(created_at, id)` order. A row whose data is not an object
 * (other than a delete) returns the state unchanged, so callers can detect and count it.
 */
export const applyChange = (state: RecordState, row: ReplayRow): RecordState => {
  if (row.op === "delete") return initialState
  const data = row.data
  if (!isPlainObject(data)) return state
  let next: { record: Record<string, unknown>; times: Record<string, number> }
  if (state.record === null) {
    next = { record: {}, times: {} }
    put(next.record, "id", row.record_id)
  } else next = copyState(state)
  mergeFields(next.record, next.times, row, data)
  return next
}

/**
 * The same as folding applyChange over `rows` (in log order), with one working copy of the record
 * for all of them instead of one per row: what a first discovery of a long history needs.
 */
export const applyChanges = (state: RecordState, rows: Iterable<ReplayRow>): RecordState => {
  let current: RecordState = state
  // The working copy this call owns (null: `current` is not ours to change).
  let own: { record: Record<string, unknown>; times: Record<string, number> } | null = null
  for (const row of rows) {
    if (row.op === "delete") {
      current = initialState
      own = null
      continue
    }
    const data = row.data
    if (!isPlainObject(data)) continue
    if (own === null) {
      if (current.record === null) {
        own = { record: {}, times: {} }
        put(own.record, "id", row.record_id)
      } else own = copyState(current)
      current = own
    }
    mergeFields(own.record, own.times, row, data)
  }
  return current
}

/** Total order of the event log: `created_at`, then `id` (byte order, as Postgres sorts a uuid). */
const compareRows = (a: ReplayRow, b: ReplayRow): number => {
  const d = a.created_at.getTime() - b.created_at.getTime()
  if (d !== 0) return d
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0
}

/**
 * Replays rows already in Postgres's `ORDER BY created_at, id` order. Prefer this for rows read from
 * SQL: created_at has microseconds, a JS Date only milliseconds, so re-sorting could swap two rows
 * that are a few microseconds apart.
 */
export const replayOrdered = (rows: Iterable<ReplayRow>): RecordState => {
  let state = initialState
  for (const row of rows) state = applyChange(state, row)
  return state
}

/** Replays rows of one record from scratch; sorts them by `(created_at, id)` itself (millisecond precision). */
export const replay = (rows: Iterable<ReplayRow>): RecordState =>
  Array.from(rows).sort(compareRows).reduce(applyChange, initialState)

/** A record that exists and carries no `deletedAt` (soft delete). */
export const isLive = (state: RecordState): boolean =>
  state.record !== null && (state.record.deletedAt === null || state.record.deletedAt === undefined)
