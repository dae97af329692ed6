/**
 * When a mission runs next (SPEC §3, §6). Pure: the caller passes the write time as `after`.
 *
 * daily/weekly/cron are schedules of local wall-clock slots. Effect's `Cron.next` with a named zone
 * moves a slot skipped by a spring-forward gap by the gap's length (02:30 → 03:30), not to the end
 * of the gap as SPEC §6 asks, so slots are enumerated by `Cron.next` in UTC standing for wall-clock
 * time and each slot is mapped to an instant here: a repeated time → its first occurrence, a
 * skipped time → the first instant after the gap.
 */
import * as Cron from "effect/Cron"
import * as Data from "effect/Data"
import * as DateTime from "effect/DateTime"
import * as Either from "effect/Either"
import type { Cadence } from "./mission.js"

export class CadenceError extends Data.TaggedError("CadenceError")<{ readonly reason: string }> {}

export interface NextRunOptions {
  /** Slots at or before this instant are past (the write time). */
  readonly after: Date
  /** The mission's current `nextRunAt` (the slot just run); anchors interval cadences. */
  readonly previous: Date | null
  /** IANA zone of the mission (or DEFAULT_TIMEZONE). */
  readonly timeZone: string
}

const MINUTE = 60_000
const DAY = 86_400_000
/** The last instant a Date (and so an ISO `nextRunAt`) can hold: +275760-09-13T00:00:00Z. */
const LATEST_INSTANT_MS = 8.64e15
/** Bounds the walk over slots that map to past instants (at most a repeated hour of minute slots). */
const MAX_SLOT_STEPS = 10_000

const fail = (reason: string) => Either.left(new CadenceError({ reason }))

const zoneFor = (timeZone: string): Either.Either<DateTime.TimeZone.Named, CadenceError> => {
  const zone = DateTime.zoneMakeNamed(timeZone)
  return zone._tag === "Some" ? Either.right(zone.value) : fail(`unknown time zone ${JSON.stringify(timeZone)}`)
}

// Wall-clock slots live in UTC so Cron's own DST adjustment never runs on them.
const UTC = DateTime.zoneUnsafeMakeNamed("UTC")

const isIntIn = (n: unknown, lo: number, hi: number): n is number =>
  typeof n === "number" && Number.isInteger(n) && n >= lo && n <= hi

type SlotCadence = Extract<Cadence, { readonly kind: "daily" | "weekly" | "cron" }>

/** The cadence's wall-clock slots as a Cron read in UTC. */
const slotsOf = (cadence: SlotCadence): Either.Either<Cron.Cron, CadenceError> => {
  if (cadence.kind === "cron") {
    const expression = String(cadence.expression)
    if (expression.trim().split(/\s+/).length !== 5) {
      return fail(`cron expression ${JSON.stringify(expression)} must have five fields`)
    }
    return Cron.parse(expression, UTC).pipe(
      Either.mapLeft(
        (e) => new CadenceError({ reason: `invalid cron expression ${JSON.stringify(expression)}: ${e.message}` }),
      ),
    )
  }
  const minute = cadence.atMinute ?? 0
  if (!isIntIn(cadence.atHour, 0, 23)) return fail(`atHour must be an integer 0–23, got ${cadence.atHour}`)
  if (!isIntIn(minute, 0, 59)) return fail(`atMinute must be an integer 0–59, got ${minute}`)
  if (cadence.kind === "weekly" && !isIntIn(cadence.dayOfWeek, 0, 6)) {
    return fail(`dayOfWeek must be an integer 0 (Sunday)–6, got ${cadence.dayOfWeek}`)
  }
  return Either.right(
    Cron.make({
      minutes: [minute],
      hours: [cadence.atHour],
      days: [],
      months: [],
      weekdays: cadence.kind === "weekly" ? [cadence.dayOfWeek] : [],
      tz: UTC,
    }),
  )
}

/** The zone's UTC offset at an instant, in ms. */
const offsetAt = (zone: DateTime.TimeZone.Named, epochMs: number): number =>
  DateTime.zonedOffset(DateTime.unsafeMakeZoned(epochMs, { timeZone: zone }))

/** Wall-clock time of an instant, as epoch ms of the same reading in UTC. */
const wallOf = (zone: DateTime.TimeZone.Named, epochMs: number): number => epochMs + offsetAt(zone, epochMs)

/**
 * The instant a wall-clock time stands for: the earliest instant showing it (a repeated time runs
 * at its first occurrence), or, for a time a DST gap skips, the first instant after the gap.
 */
const instantOfWallTime = (zone: DateTime.TimeZone.Named, wallMs: number): number => {
  // A zone has at most one transition within a day of any wall time, so these cover every offset in play.
  const offsets = [...new Set([offsetAt(zone, wallMs - DAY), offsetAt(zone, wallMs), offsetAt(zone, wallMs + DAY)])]
  const valid = offsets.map((o) => wallMs - o).filter((t) => offsetAt(zone, t) === wallMs - t)
  if (valid.length > 0) return Math.min(...valid)
  // In a gap: the transition lies between the instant read with the larger offset (still before
  // it) and the one read with the smaller offset (already after it); find it by bisection.
  let lo = wallMs - Math.max(...offsets)
  let hi = wallMs - Math.min(...offsets)
  const before = offsetAt(zone, lo)
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2)
    if (offsetAt(zone, mid) === before) lo = mid
    else hi = mid
  }
  return hi
}

const nextLocalSlot = (
  cron: Cron.Cron,
  zone: DateTime.TimeZone.Named,
  after: number,
): Either.Either<Date, CadenceError> => {
  // Slots before the wall time of `after` map to instants at or before it (the mapping is monotone).
  let cursor = wallOf(zone, after)
  for (let i = 0; i < MAX_SLOT_STEPS; i++) {
    let slot: number
    try {
      slot = Cron.next(cron, new Date(cursor)).getTime()
    } catch {
      // Cron.next throws when no slot exists (e.g. 30 February).
      return fail("the cadence never fires")
    }
    const instant = instantOfWallTime(zone, slot)
    if (instant > after) return Either.right(new Date(instant))
    cursor = slot
  }
  return fail("no slot found after the given time")
}

/**
 * The first run of `cadence` strictly after `options.after`, or null for a manual cadence.
 * interval: `previous` plus the fewest whole intervals (at least one) past `after`, so slots missed
 * while down are skipped, not caught up; `previous` null → `after` plus one interval.
 * daily/weekly/cron: the first local slot in `timeZone` strictly after `after`, DST-correct.
 */
export const nextRunAt = (cadence: Cadence, options: NextRunOptions): Either.Either<Date | null, CadenceError> => {
  const after = options.after.getTime()
  if (Number.isNaN(after)) return fail("`after` is not a valid date")
  // The generator function is made once, not per call (DEVELOPERS.md: no generator function made per
  // call on a hot path; JavaScriptCore recompiled its body after every few collections).
  return Either.gen(() => nextRunSteps(cadence, options, after))
}

function* nextRunSteps(cadence: Cadence, options: NextRunOptions, after: number) {
  const zone = yield* zoneFor(options.timeZone)
  switch (cadence.kind) {
    case "manual":
      return null
    case "interval": {
      if (!isIntIn(cadence.everyMinutes, 1, Number.MAX_SAFE_INTEGER / MINUTE)) {
        return yield* fail(`everyMinutes must be an integer ≥ 1, got ${cadence.everyMinutes}`)
      }
      const step = cadence.everyMinutes * MINUTE
      const previous = options.previous?.getTime()
      // At least one step: `previous` is the slot that just ran.
      const next =
        previous === undefined || Number.isNaN(previous)
          ? after + step
          : previous + Math.max(1, Math.floor((after - previous) / step) + 1) * step
      // No instant to write (SPEC §6 wants the cadence's own next instant, so no clamping): unschedulable.
      if (!(next <= LATEST_INSTANT_MS)) {
        return yield* fail(
          `everyMinutes ${cadence.everyMinutes} puts the next run past the latest instant a timestamp can hold (${new Date(LATEST_INSTANT_MS).toISOString()})`,
        )
      }
      return new Date(next)
    }
    default:
      return yield* nextLocalSlot(yield* slotsOf(cadence), zone, after)
  }
}

/** Whether the runtime knows `zone` as an IANA time zone (DEFAULT_TIMEZONE, a mission's `timezone`). */
export const isValidTimeZone = (zone: string): boolean => {
  // Asked once per mission judged that names a zone; building a formatter costs more than the rest.
  if (knownZones.has(zone)) return true
  try {
    new Intl.DateTimeFormat("en-US", { timeZone: zone })
  } catch {
    return false
  }
  if (knownZones.size >= KNOWN_ZONES_MAX) knownZones.clear()
  knownZones.add(zone)
  return true
}

const KNOWN_ZONES_MAX = 1_000
const knownZones = new Set<string>()

// Any fixed instant works: a slot that exists at all recurs within the years Cron.next searches.
const VALIDATION_INSTANT = new Date("2000-01-01T00:00:00Z")

/**
 * Right when the cadence can be scheduled in `timeZone` (known zone, parseable cron that fires,
 * in-range fields); a mission that fails this is malformed.
 */
export const validateCadence = (cadence: Cadence, timeZone: string): Either.Either<void, CadenceError> => {
  // A pure function of its two arguments, asked once per mission judged: a first discovery judges
  // tens of thousands of missions that share a handful of cadences (a zone lookup and, for a slot
  // cadence, a cron parse each time). The answers are kept per cadence and zone, a bounded number.
  const key = `${timeZone}\u0000${JSON.stringify(cadence)}`
  const known = validatedCadences.get(key)
  if (known !== undefined) return known
  const answer = nextRunAt(cadence, { after: VALIDATION_INSTANT, previous: null, timeZone }).pipe(Either.map((): void => undefined))
  if (validatedCadences.size >= VALIDATED_CADENCES_MAX) validatedCadences.clear()
  validatedCadences.set(key, answer)
  return answer
}

const VALIDATED_CADENCES_MAX = 10_000
const validatedCadences = new Map<string, Either.Either<void, CadenceError>>()
