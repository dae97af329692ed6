/**
 * The one rule for "this replayed record is a valid mission, and may be scheduled" (SPEC §3), with
 * the one sentence that says why not. Discovery (MissionStore), the run's pre-check and the
 * write-back (currentMission), GET /internal/missions (userMissions) and the test doubles all judge
 * a record here, so the log, the stored snapshot and the API give the same reason.
 */
import * as Either from "effect/Either"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import { isValidTimeZone, validateCadence } from "./cadence.js"
import { Mission } from "./mission.js"
import { parseInstant } from "./replay.js"
import { decodeUsualMission } from "./usualMission.js"

/** A record that passed the rule: the decoded mission and its nextRunAt as a normalised ISO instant. */
export interface ValidMission {
  readonly mission: Mission
  /** `mission.nextRunAt` as `Date#toISOString` text; null: unscheduled. */
  readonly nextRunAt: string | null
}

const decode = Schema.decodeUnknownEither(Mission, { errors: "all" })

const shortExpectation = (e: string): string =>
  e.startsWith("ReadonlyArray<") ? "an array" : e.startsWith("{ ") ? "an object" : e.length > 60 ? `${e.slice(0, 57)}…` : e

const pathText = (path: ReadonlyArray<PropertyKey>): string =>
  path.reduce<string>(
    (acc, key) => (typeof key === "number" ? `${acc}[${key}]` : acc === "" ? String(key) : `${acc}.${String(key)}`),
    "",
  ) || "the record"

/** "field cadence.everyMinutes: expected an integer, actual 1.5; field …" (at most three fields). */
const describeParseError = (error: ParseResult.ParseError): string => {
  const groups = new Map<string, Array<ParseResult.ArrayFormatterIssue>>()
  for (const issue of ParseResult.ArrayFormatter.formatErrorSync(error)) {
    const key = pathText(issue.path)
    groups.set(key, [...(groups.get(key) ?? []), issue])
  }
  const parts = [...groups.entries()].slice(0, 3).map(([field, issues]) => {
    const refinement = issues.find((i) => i._tag === "Refinement")
    const typed = issues
      .filter((i) => i._tag === "Type")
      .map((i) => /^Expected ([\s\S]+), actual ([\s\S]+)$/.exec(i.message))
      .filter((m) => m !== null)
    const actual = typed[0]?.[2]
    if (refinement !== undefined) {
      return `field ${field}: ${refinement.message}${actual !== undefined && !refinement.message.includes("actual") ? `, actual ${actual}` : ""}`
    }
    const expected = typed.map((m) => m[1]!).filter((e) => e !== "undefined")
    if (typed.length === issues.length && expected.length > 0) {
      return `field ${field}: expected ${expected.map(shortExpectation).join(" or ")}, actual ${actual}`
    }
    return `field ${field}: ${issues[0]!.message}`
  })
  return parts.join("; ") + (groups.size > 3 ? ` (and ${groups.size - 3} more)` : "")
}

/**
 * The rule's first step alone: does the record decode as the app's mission type. For records the
 * rule already passed (a stored snapshot read back), where the cadence need not be checked again.
 */
export const decodeMissionRecord = (record: unknown): Either.Either<Mission, string> => {
  // The usual shape checked by hand (the same Mission); the Schema decides, and explains, the rest.
  const usual = decodeUsualMission(record)
  if (usual !== undefined) return Either.right(usual)
  return Either.mapLeft(decode(record), (e) => `the mission does not decode: ${describeParseError(e)}`)
}

/**
 * Right when the record decodes as a mission whose time zone exists and whose cadence can be
 * scheduled in it (in `defaultTimezone` when it names none); Left: why not, a sentence naming the
 * field. A deleted record is not judged here: the callers skip it before.
 */
export const missionValidity = (record: unknown, defaultTimezone: string): Either.Either<ValidMission, string> => {
  const decoded = decodeMissionRecord(record)
  if (Either.isLeft(decoded)) return Either.left(decoded.left)
  const mission = decoded.right
  if (mission.timezone !== undefined && !isValidTimeZone(mission.timezone)) {
    return Either.left(`field timezone: ${JSON.stringify(mission.timezone)} is not an IANA time zone`)
  }
  const cadence = validateCadence(mission.cadence, mission.timezone ?? defaultTimezone)
  if (Either.isLeft(cadence)) return Either.left(`field cadence: ${cadence.left.reason}`)
  if (mission.nextRunAt === null) return Either.right({ mission, nextRunAt: null })
  const ms = parseInstant(mission.nextRunAt)
  if (ms === undefined) return Either.left(`field nextRunAt: ${JSON.stringify(mission.nextRunAt)} is not an ISO-8601 instant`)
  return Either.right({ mission, nextRunAt: new Date(ms).toISOString() })
}

/** A valid mission the actor schedules: active, with a nextRunAt (due once that has passed). */
export const isSchedulable = (valid: ValidMission): boolean => valid.mission.state === "active" && valid.nextRunAt !== null
