/**
 * The strict plan parser (SPEC §4): an LLM answer becomes a PlanDraft that only uses catalogue tools
 * with well-typed parameters, or a PlanParseError whose reason a person can read. Never a half-valid
 * plan, and never raw LLM output in a reason beyond a short quoted name.
 */
import { Data, Either } from "effect"
import type { Tool, ToolParam } from "./tools.js"

export interface PlannedStep {
  readonly summary: string
  readonly toolName: string
  readonly params: Readonly<Record<string, unknown>>
  readonly rationale: string
}

export interface PlanDraft {
  readonly summary: string
  readonly steps: ReadonlyArray<PlannedStep>
}

export class PlanParseError extends Data.TaggedError("PlanParseError")<{ readonly reason: string }> {
  override get message() {
    return this.reason
  }
}

export const MAX_PLAN_STEPS = 5

/** Quotes a name taken from the answer: printable characters only, at most 40 of them. */
export const quoteName = (value: string): string => {
  const printable = value.replace(/[^\p{L}\p{N}\p{P}\p{S} ]/gu, "?")
  return JSON.stringify(printable.length > 40 ? `${printable.slice(0, 40)}…` : printable)
}

const FENCE = /```([A-Za-z0-9_-]*)[ \t]*\r?\n([\s\S]*?)\r?\n?```/g

type Extracted = { readonly json: string } | { readonly reason: string }

const extractJson = (text: string): Extracted => {
  const blocks = [...text.matchAll(FENCE)].filter((m) => {
    const lang = (m[1] ?? "").toLowerCase()
    return lang === "json" || lang === ""
  })
  if (blocks.length > 1) return { reason: `the answer holds ${blocks.length} json blocks; expected exactly one` }
  if (blocks.length === 1) return { json: (blocks[0]?.[2] ?? "").trim() }
  const trimmed = text.trim()
  if (trimmed.startsWith("{") && trimmed.endsWith("}")) return { json: trimmed }
  return { reason: "the answer holds no JSON: expected one ```json fenced block or a bare JSON object" }
}

const isPlainObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v)

const typeOf = (v: unknown): string => (v === null ? "null" : Array.isArray(v) ? "array" : typeof v)

const DATE = /^(\d{4})-(\d{2})-(\d{2})$/
const DATE_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$/

const isCalendarDate = (s: string): boolean => {
  const m = DATE.exec(s)
  if (m === null) return false
  const [y, mo, d] = [Number(m[1]), Number(m[2]), Number(m[3])]
  const date = new Date(Date.UTC(y, mo - 1, d))
  return date.getUTCFullYear() === y && date.getUTCMonth() === mo - 1 && date.getUTCDate() === d
}

const isDateTime = (s: string): boolean => DATE_TIME.test(s) && !Number.isNaN(Date.parse(s))

/** Why `value` does not fit `param`, or undefined when it does. */
const paramProblem = (param: ToolParam, value: unknown): string | undefined => {
  const actual = typeOf(value)
  const fitsType =
    param.type === "number" ? typeof value === "number" && Number.isFinite(value) : actual === param.type
  if (!fitsType) return `must be of type ${param.type}, not ${actual}`
  if (param.enum !== undefined && !param.enum.includes(value as string | number | boolean)) {
    return `must be one of ${param.enum.join(", ")}`
  }
  if (typeof value === "string") {
    if (param.required === true && value.trim() === "") return "must not be empty"
    if (param.format === "date" && !isCalendarDate(value)) return "must be a calendar date YYYY-MM-DD"
    if (param.format === "date-time" && !isDateTime(value)) {
      return "must be an ISO-8601 date-time with offset, e.g. 2025-03-01T09:00:00Z"
    }
    if (param.pattern !== undefined && !new RegExp(param.pattern, "u").test(value)) {
      return `must match the pattern ${param.pattern}`
    }
  }
  return undefined
}

const parseStep = (raw: unknown, index: number, tools: ReadonlyArray<Tool>): Either.Either<PlannedStep, string> => {
  const at = `step ${index + 1}`
  if (!isPlainObject(raw)) return Either.left(`${at} is not an object`)
  const { summary, toolName, params, rationale } = raw
  if (typeof summary !== "string" || summary.trim() === "") {
    return Either.left(`${at}: summary is missing or empty`)
  }
  if (typeof toolName !== "string" || toolName.trim() === "") {
    return Either.left(`${at}: toolName is missing or not a string`)
  }
  const tool = tools.find((t) => t.name === toolName)
  if (tool === undefined) {
    return Either.left(`${at}: tool ${quoteName(toolName)} is not in the catalogue (${tools.map((t) => t.name).join(", ")})`)
  }
  if (typeof rationale !== "string" || rationale.trim() === "") {
    return Either.left(`${at} (${tool.name}): rationale is missing or empty`)
  }
  if (params !== undefined && !isPlainObject(params)) {
    return Either.left(`${at} (${tool.name}): params must be an object, not ${typeOf(params)}`)
  }
  const given = params ?? {}
  for (const key of Object.keys(given)) {
    if (!tool.params.some((p) => p.name === key)) {
      return Either.left(`${at} (${tool.name}): unknown parameter ${quoteName(key)}`)
    }
  }
  for (const param of tool.params) {
    if (!Object.hasOwn(given, param.name)) {
      if (param.required === true) return Either.left(`${at} (${tool.name}): required parameter "${param.name}" is missing`)
      continue
    }
    const problem = paramProblem(param, given[param.name])
    if (problem !== undefined) return Either.left(`${at} (${tool.name}): parameter "${param.name}" ${problem}`)
  }
  return Either.right({ summary: summary.trim(), toolName: tool.name, params: { ...given }, rationale: rationale.trim() })
}

// NUL and an unpaired surrogate are valid in a JSON string but not in Postgres jsonb: a plan holding
// one could never be written back, and the run would fail the same way on every retry.
const UNPAIRED_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/
const UNSTORABLE = { test: (s: string): boolean => s.includes("\u0000") || UNPAIRED_SURROGATE.test(s) }

/** The path of the first string (value or key) the event log cannot store, or undefined. */
const unstorableAt = (value: unknown, path: string): string | undefined => {
  if (typeof value === "string") return UNSTORABLE.test(value) ? path : undefined
  if (Array.isArray(value)) {
    for (const [i, v] of value.entries()) {
      const found = unstorableAt(v, `${path}[${i}]`)
      if (found !== undefined) return found
    }
    return undefined
  }
  if (isPlainObject(value)) {
    for (const [k, v] of Object.entries(value)) {
      // Keys come from the answer: a plain short one as is, anything else quoted and cut short.
      const key = /^[A-Za-z0-9_]{1,40}$/.test(k) ? k : quoteName(k)
      if (UNSTORABLE.test(k)) return `${path}.${key}`
      const found = unstorableAt(v, `${path}.${key}`)
      if (found !== undefined) return found
    }
  }
  return undefined
}

/** Checks an already-parsed answer object against the catalogue. */
export const validatePlan = (value: unknown, tools: ReadonlyArray<Tool>): Either.Either<PlanDraft, PlanParseError> => {
  const fail = (reason: string) => Either.left(new PlanParseError({ reason }))
  if (!isPlainObject(value)) return fail(`the JSON must be an object with summary and steps, not ${typeOf(value)}`)
  const unstorable = unstorableAt(value, "answer")
  if (unstorable !== undefined) {
    return fail(`${unstorable} holds a NUL character or an unpaired surrogate, which cannot be stored`)
  }
  const { summary, steps } = value
  if (typeof summary !== "string") return fail("summary is missing or not a string")
  if (summary.trim() === "") return fail("summary is empty")
  if (!Array.isArray(steps)) return fail(`steps must be an array, not ${typeOf(steps)}`)
  if (steps.length > MAX_PLAN_STEPS) return fail(`the plan has ${steps.length} steps; at most ${MAX_PLAN_STEPS} are allowed`)
  const parsed: Array<PlannedStep> = []
  for (const [i, raw] of steps.entries()) {
    const step = parseStep(raw, i, tools)
    if (Either.isLeft(step)) return fail(step.left)
    parsed.push(step.right)
  }
  return Either.right({ summary: summary.trim(), steps: parsed })
}

/** Parses an LLM answer: one ```json fenced block (prose around it is ignored) or a bare JSON object. */
export const parsePlan = (text: string, tools: ReadonlyArray<Tool>): Either.Either<PlanDraft, PlanParseError> => {
  const extracted = extractJson(text)
  if ("reason" in extracted) return Either.left(new PlanParseError({ reason: extracted.reason }))
  let value: unknown
  try {
    value = JSON.parse(extracted.json)
  } catch (e) {
    // V8's message quotes the input; keep only the position.
    const position = /position (\d+)/.exec(String(e))?.[1]
    return Either.left(
      new PlanParseError({ reason: `the json block is not valid JSON${position === undefined ? "" : ` (at position ${position})`}` }),
    )
  }
  return validatePlan(value, tools)
}
