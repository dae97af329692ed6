/**
 * The Mission schema's decode (src/domain/mission.ts) checked by hand for the shapes records usually
 * have, without building a parse result: a first discovery judges every mission of a long history
 * (50k in the bench's 1M rows; the Schema decode was a fifth of the pass's Bun CPU). It answers only
 * when it is sure: a Mission equal to the Schema's output, keys in the same order (the Schema builds
 * its output in the order of the struct's fields), or undefined, and then the Schema decides and
 * explains. It never rejects; anything unusual (a key present with the value undefined, an unknown
 * cadence kind, a value out of range) is left to the Schema. Non-empty iterations are decoded by the
 * Schema of the iteration array alone. test/domain/usualMission.test.ts compares both on generated records.
 */
import * as Either from "effect/Either"
import * as Schema from "effect/Schema"
import { type Cadence, Iteration, type Mission, type MissionInput } from "./mission.js"
import { parseInstant } from "./replay.js"

const MISSION_STATES: ReadonlySet<unknown> = new Set(["active", "paused", "done", "archived"])

const isRecord = (u: unknown): u is Record<string, unknown> => typeof u === "object" && u !== null && !Array.isArray(u)

/** Schema.Int with a range: a safe integer within [min, max]. */
const intIn = (u: unknown, min: number, max: number): u is number =>
  typeof u === "number" && Number.isSafeInteger(u) && u >= min && u <= max

/** Whether the key is absent (`in` sees inherited keys too: any such record goes to the Schema). */
const absent = (o: Record<string, unknown>, key: string): boolean => !(key in o)

/** A key the schema marks optional: absent, or present with a value (undefined is the Schema's call). */
const optionalOk = (o: Record<string, unknown>, key: string, ok: (u: unknown) => boolean): boolean =>
  absent(o, key) || (Object.hasOwn(o, key) && ok(o[key]))

const isString = (u: unknown): u is string => typeof u === "string"

/** Own keys only: a value the record inherits is the Schema's call. */
const own = (o: Record<string, unknown>, ...keys: ReadonlyArray<string>): boolean => keys.every((k) => Object.hasOwn(o, k))

const usualCadence = (u: unknown): Cadence | undefined => {
  if (!isRecord(u) || !own(u, "kind")) return undefined
  switch (u.kind) {
    case "manual":
      return { kind: "manual" }
    case "interval":
      return own(u, "everyMinutes") && intIn(u.everyMinutes, 1, Number.MAX_SAFE_INTEGER) ? { kind: "interval", everyMinutes: u.everyMinutes } : undefined
    case "daily":
      return own(u, "atHour", "atMinute") && intIn(u.atHour, 0, 23) && intIn(u.atMinute, 0, 59)
        ? { kind: "daily", atHour: u.atHour, atMinute: u.atMinute }
        : undefined
    case "weekly": {
      if (!own(u, "dayOfWeek", "atHour") || !intIn(u.dayOfWeek, 0, 6) || !intIn(u.atHour, 0, 23)) return undefined
      if (absent(u, "atMinute")) return { kind: "weekly", dayOfWeek: u.dayOfWeek, atHour: u.atHour }
      return Object.hasOwn(u, "atMinute") && intIn(u.atMinute, 0, 59)
        ? { kind: "weekly", dayOfWeek: u.dayOfWeek, atHour: u.atHour, atMinute: u.atMinute }
        : undefined
    }
    case "cron":
      return own(u, "expression") && isString(u.expression) && u.expression.trim().split(/\s+/).length === 5
        ? { kind: "cron", expression: u.expression }
        : undefined
    default:
      return undefined
  }
}

const usualInputs = (u: unknown): ReadonlyArray<MissionInput> | undefined => {
  if (!Array.isArray(u)) return undefined
  const out: Array<MissionInput> = []
  for (const input of u) {
    if (!isRecord(input) || !own(input, "module", "table", "id") || !isString(input.module) || !isString(input.table) || !isString(input.id)) return undefined
    out.push({ module: input.module, table: input.table, id: input.id })
  }
  return out
}

const decodeIterations = Schema.decodeUnknownEither(Schema.Array(Iteration))

const usualIterations = (u: unknown): Mission["iterations"] | undefined => {
  if (!Array.isArray(u)) return undefined
  if (u.length === 0) return []
  const decoded = decodeIterations(u)
  return Either.isRight(decoded) ? decoded.right : undefined
}

/** The Mission the Schema would decode `record` to, when its shape is the usual one; undefined: ask the Schema. */
export const decodeUsualMission = (record: unknown): Mission | undefined => {
  if (!isRecord(record)) return undefined
  const r = record
  if (!isString(r.id) || !isString(r.title) || !isString(r.objective) || !MISSION_STATES.has(r.state)) return undefined
  if (!own(r, "id", "title", "objective", "state", "cadence")) return undefined
  if (!optionalOk(r, "conceptMarkdown", isString)) return undefined
  if (!optionalOk(r, "nextRunAt", (v) => v === null || (isString(v) && parseInstant(v) !== undefined))) return undefined
  if (!optionalOk(r, "createdAt", isString) || !optionalOk(r, "updatedAt", isString)) return undefined
  if (!optionalOk(r, "deletedAt", (v) => v === null || isString(v))) return undefined
  if (!optionalOk(r, "timezone", (v) => v === null || isString(v))) return undefined
  if (!optionalOk(r, "agentId", isString)) return undefined
  if (!optionalOk(r, "grant", (v) => v !== undefined)) return undefined
  const cadence = usualCadence(r.cadence)
  if (cadence === undefined) return undefined
  let inputs: ReadonlyArray<MissionInput> = []
  if (!absent(r, "inputs")) {
    const decoded = Object.hasOwn(r, "inputs") ? usualInputs(r.inputs) : undefined
    if (decoded === undefined) return undefined
    inputs = decoded
  }
  let iterations: Mission["iterations"] = []
  if (!absent(r, "iterations")) {
    const decoded = Object.hasOwn(r, "iterations") ? usualIterations(r.iterations) : undefined
    if (decoded === undefined) return undefined
    iterations = decoded
  }
  // The struct's field order, as the Schema builds its output.
  const out: Record<string, unknown> = {
    id: r.id,
    title: r.title,
    objective: r.objective,
    conceptMarkdown: absent(r, "conceptMarkdown") ? "" : r.conceptMarkdown,
    state: r.state,
    nextRunAt: absent(r, "nextRunAt") ? null : r.nextRunAt,
    inputs,
    cadence,
    iterations,
  }
  if (!absent(r, "createdAt")) out.createdAt = r.createdAt
  if (!absent(r, "updatedAt")) out.updatedAt = r.updatedAt
  if (!absent(r, "deletedAt")) out.deletedAt = r.deletedAt
  if (!absent(r, "timezone") && r.timezone !== null) out.timezone = r.timezone
  if (!absent(r, "agentId")) out.agentId = r.agentId
  if (!absent(r, "grant")) out.grant = r.grant
  return out as Mission
}
