/**
 * The strict plan parser (SPEC §4): an LLM answer becomes a PlanDraft that only uses catalogue tools
 * with well-typed parameters, or a PlanParseError whose reason a person can read. Never a half-valid
 * plan, and never raw LLM output in a reason beyond a short quoted name.
 */
import * as Data from "effect/Data"
import * as Either from "effect/Either"
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

/**
 * What kind of rejection: named by the runner, never by the model. A failed iteration shows the
 * user only this (via `describeRejection`); the `reason`, which may quote the model's names, goes to
 * the log and back to the model in the repair turn.
 */
export const rejectionKinds = [
  "no-json",
  "invalid-json",
  "malformed-plan",
  "too-many-steps",
  "unknown-tool",
  "empty-rationale",
  "invalid-arguments",
  "unknown-parameter",
  "missing-parameter",
  "invalid-parameter",
  "unstorable-text",
  "empty-answer",
] as const
export type RejectionKind = (typeof rejectionKinds)[number]

const KIND_TEXT: Record<RejectionKind, string> = {
  "no-json": "it held no JSON plan",
  "invalid-json": "its JSON was not valid",
  "malformed-plan": "it did not have the shape of a plan",
  "too-many-steps": "it proposed more steps than allowed",
  "unknown-tool": "it named a tool outside the catalogue",
  "empty-rationale": "a step had no rationale",
  "invalid-arguments": "a tool call's arguments were not a JSON object",
  "unknown-parameter": "a step used a parameter its tool does not have",
  "missing-parameter": "a step left out a required parameter",
  "invalid-parameter": "a parameter had the wrong type or value",
  "unstorable-text": "it held a NUL character or an unpaired surrogate, which cannot be stored",
  "empty-answer": "it held neither tool calls nor text",
}

/** The kind of a rejection in a few words a user can read; quotes nothing from the answer. */
export const describeRejection = (kind: RejectionKind): string => KIND_TEXT[kind]

export interface Rejection {
  readonly kind: RejectionKind
  readonly reason: string
}

export class PlanParseError extends Data.TaggedError("PlanParseError")<Rejection> {
  override get message() {
    return this.reason
  }
}

export const MAX_PLAN_STEPS = 5

/** Quotes a name taken from the answer: printable characters only, at most 40 of them. */
const quoteName = (value: string): string => {
  const printable = value.replace(/[^\p{L}\p{N}\p{P}\p{S} ]/gu, "?")
  return JSON.stringify(printable.length > 40 ? `${printable.slice(0, 40)}…` : printable)
}

const FENCE = /```([A-Za-z0-9_-]*)[ \t]*\r?\n([\s\S]*?)\r?\n?```/g

type Extracted = { readonly json: string } | Rejection

const extractJson = (text: string): Extracted => {
  const blocks = [...text.matchAll(FENCE)].filter((m) => {
    const lang = (m[1] ?? "").toLowerCase()
    return lang === "json" || lang === ""
  })
  if (blocks.length > 1) return { kind: "malformed-plan", reason: `the answer holds ${blocks.length} json blocks; expected exactly one` }
  if (blocks.length === 1) return { json: (blocks[0]?.[2] ?? "").trim() }
  const trimmed = text.trim()
  if (trimmed.startsWith("{") && trimmed.endsWith("}")) return { json: trimmed }
  return { kind: "no-json", reason: "the answer holds no JSON: expected one ```json fenced block or a bare JSON object" }
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

const reject = (kind: RejectionKind, reason: string): Either.Either<never, Rejection> => Either.left({ kind, reason })

const unknownTool = (at: string, name: string, tools: ReadonlyArray<Tool>) =>
  reject("unknown-tool", `${at}: tool ${quoteName(name)} is not in the catalogue (${tools.map((t) => t.name).join(", ")})`)

/** The given parameters against the tool's: unknown, missing, mistyped or out of enum. */
const checkParams = (at: string, tool: Tool, given: Readonly<Record<string, unknown>>): Rejection | undefined => {
  for (const key of Object.keys(given)) {
    if (!tool.params.some((p) => p.name === key)) {
      return { kind: "unknown-parameter", reason: `${at} (${tool.name}): unknown parameter ${quoteName(key)}` }
    }
  }
  for (const param of tool.params) {
    if (!Object.hasOwn(given, param.name)) {
      if (param.required === true) {
        return { kind: "missing-parameter", reason: `${at} (${tool.name}): required parameter "${param.name}" is missing` }
      }
      continue
    }
    const problem = paramProblem(param, given[param.name])
    if (problem !== undefined) {
      return { kind: "invalid-parameter", reason: `${at} (${tool.name}): parameter "${param.name}" ${problem}` }
    }
  }
  return undefined
}

const parseStep = (raw: unknown, index: number, tools: ReadonlyArray<Tool>): Either.Either<PlannedStep, Rejection> => {
  const at = `step ${index + 1}`
  if (!isPlainObject(raw)) return reject("malformed-plan", `${at} is not an object`)
  const { summary, toolName, params, rationale } = raw
  if (typeof summary !== "string" || summary.trim() === "") {
    return reject("malformed-plan", `${at}: summary is missing or empty`)
  }
  if (typeof toolName !== "string" || toolName.trim() === "") {
    return reject("malformed-plan", `${at}: toolName is missing or not a string`)
  }
  const tool = tools.find((t) => t.name === toolName)
  if (tool === undefined) return unknownTool(at, toolName, tools)
  if (typeof rationale !== "string" || rationale.trim() === "") {
    return reject("empty-rationale", `${at} (${tool.name}): rationale is missing or empty`)
  }
  if (params !== undefined && !isPlainObject(params)) {
    return reject("malformed-plan", `${at} (${tool.name}): params must be an object, not ${typeOf(params)}`)
  }
  const given = params ?? {}
  const problem = checkParams(at, tool, given)
  if (problem !== undefined) return Either.left(problem)
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
  const fail = (kind: RejectionKind, reason: string) => Either.left(new PlanParseError({ kind, reason }))
  if (!isPlainObject(value)) return fail("malformed-plan", `the JSON must be an object with summary and steps, not ${typeOf(value)}`)
  const unstorable = unstorableAt(value, "answer")
  if (unstorable !== undefined) {
    return fail("unstorable-text", `${unstorable} holds a NUL character or an unpaired surrogate, which cannot be stored`)
  }
  const { summary, steps } = value
  if (typeof summary !== "string") return fail("malformed-plan", "summary is missing or not a string")
  if (summary.trim() === "") return fail("malformed-plan", "summary is empty")
  if (!Array.isArray(steps)) return fail("malformed-plan", `steps must be an array, not ${typeOf(steps)}`)
  if (steps.length > MAX_PLAN_STEPS) {
    return fail("too-many-steps", `the plan has ${steps.length} steps; at most ${MAX_PLAN_STEPS} are allowed`)
  }
  const parsed: Array<PlannedStep> = []
  for (const [i, raw] of steps.entries()) {
    const step = parseStep(raw, i, tools)
    if (Either.isLeft(step)) return Either.left(new PlanParseError(step.left))
    parsed.push(step.right)
  }
  return Either.right({ summary: summary.trim(), steps: parsed })
}

// ---------------------------------------------------------------- tools mode

/** Structurally the LLM client's ToolCall: the model's name and arguments, unchecked. */
export interface ToolCallLike {
  readonly id: string
  readonly name: unknown
  readonly arguments: unknown
}

/** The parameter the runner adds to every offered tool and strips again (SPEC §4 tools mode). */
export const RATIONALE_PARAM = "rationale"

const STEP_LABEL_MAX = 80

/** A tool call's step summary: the tool and, when it has one, its first required text parameter. */
const callSummary = (tool: Tool, params: Readonly<Record<string, unknown>>): string => {
  const first = tool.params.find((p) => p.required === true && p.type === "string")
  const value = first === undefined ? undefined : params[first.name]
  if (typeof value !== "string" || value.trim() === "") return tool.name
  const text = value.trim().replace(/\s+/g, " ")
  return `${tool.name}: ${text.length > STEP_LABEL_MAX ? `${text.slice(0, STEP_LABEL_MAX - 1)}…` : text}`
}

/** One tool call as a step, or why not. `index` counts steps over the whole plan (for the reason). */
export const parseToolCall = (call: ToolCallLike, index: number, tools: ReadonlyArray<Tool>): Either.Either<PlannedStep, Rejection> => {
  const at = `call ${index + 1}`
  if (typeof call.name !== "string" || call.name.trim() === "") return reject("unknown-tool", `${at}: the tool name is missing`)
  const tool = tools.find((t) => t.name === call.name)
  if (tool === undefined) return unknownTool(at, call.name, tools)
  if (typeof call.arguments !== "string") {
    return reject("invalid-arguments", `${at} (${tool.name}): arguments must be a string holding a JSON object, not ${typeOf(call.arguments)}`)
  }
  let args: unknown
  try {
    args = JSON.parse(call.arguments)
  } catch {
    return reject("invalid-arguments", `${at} (${tool.name}): arguments are not valid JSON`)
  }
  if (!isPlainObject(args)) return reject("invalid-arguments", `${at} (${tool.name}): arguments must be a JSON object, not ${typeOf(args)}`)
  const unstorable = unstorableAt(args, "arguments")
  if (unstorable !== undefined) {
    return reject("unstorable-text", `${at} (${tool.name}): ${unstorable} holds a NUL character or an unpaired surrogate, which cannot be stored`)
  }
  const { [RATIONALE_PARAM]: rationale, ...params } = args
  if (typeof rationale !== "string" || rationale.trim() === "") {
    return reject("empty-rationale", `${at} (${tool.name}): rationale is missing or empty`)
  }
  const problem = checkParams(at, tool, params)
  if (problem !== undefined) return Either.left(problem)
  return Either.right({ summary: callSummary(tool, params), toolName: tool.name, params, rationale: rationale.trim() })
}

/**
 * One answer's tool calls against the catalogue, with `planned` steps accepted in earlier rounds.
 * All or nothing: the steps, or the first rejection and, per call, the reason to answer it with.
 */
export const validateToolCalls = (
  calls: ReadonlyArray<ToolCallLike>,
  planned: number,
  tools: ReadonlyArray<Tool>,
): Either.Either<ReadonlyArray<PlannedStep>, { readonly rejection: Rejection; readonly perCall: ReadonlyArray<string> }> => {
  const total = planned + calls.length
  if (total > MAX_PLAN_STEPS) {
    const reason = `the plan would have ${total} steps; at most ${MAX_PLAN_STEPS} are allowed in all${planned > 0 ? ` (${planned} already recorded)` : ""}`
    return Either.left({ rejection: { kind: "too-many-steps", reason }, perCall: calls.map(() => reason) })
  }
  const results = calls.map((c, i) => parseToolCall(c, planned + i, tools))
  const first = results.find(Either.isLeft)
  if (first === undefined) return Either.right(results.map((r) => (Either.isRight(r) ? r.right : (undefined as never))))
  const perCall = results.map((r) =>
    Either.isLeft(r) ? r.left.reason : `not recorded, because another call of this answer was rejected; call it again if it is still wanted`,
  )
  return Either.left({ rejection: first.left, perCall })
}

/** The assistant's text as a plan summary: trimmed, storable, or why not. */
export const checkSummaryText = (text: string): Either.Either<string, Rejection> =>
  UNSTORABLE.test(text)
    ? reject("unstorable-text", "the answer's text holds a NUL character or an unpaired surrogate, which cannot be stored")
    : Either.right(text.trim())

/** Parses an LLM answer: one ```json fenced block (prose around it is ignored) or a bare JSON object. */
export const parsePlan = (text: string, tools: ReadonlyArray<Tool>): Either.Either<PlanDraft, PlanParseError> => {
  const extracted = extractJson(text)
  if ("reason" in extracted) return Either.left(new PlanParseError(extracted))
  let value: unknown
  try {
    value = JSON.parse(extracted.json)
  } catch (e) {
    // V8's message quotes the input; keep only the position.
    const position = /position (\d+)/.exec(String(e))?.[1]
    return Either.left(
      new PlanParseError({ kind: "invalid-json", reason: `the json block is not valid JSON${position === undefined ? "" : ` (at position ${position})`}` }),
    )
  }
  return validatePlan(value, tools)
}
