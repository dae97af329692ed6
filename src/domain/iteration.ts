/**
 * The iteration a run appends (SPEC §3, §6): its idempotency key and the two shapes the runner
 * writes. Closed types: exactly the app's keys, an absent optional field left out, never null.
 */
import { hash } from "node:crypto"
import type { ErrorPhase, Iteration, PlanStep } from "./mission.js"
import { parseInstant } from "./replay.js"

/** Iteration summaries and error messages stay short: they are a reason, not a transcript. */
export const SUMMARY_MAX = 300
/** A step's summary carries the rationale the user reads, so it may be longer. */
export const STEP_SUMMARY_MAX = 1000
const NAME_MAX = 100

/** Trims and cuts to `max` code points (never halving a surrogate pair), marking a cut with "…". */
export const cap = (text: string, max: number): string => {
  const trimmed = text.trim()
  // No more UTF-16 units than `max`: no more code points either (the usual case; no array of them).
  if (trimmed.length <= max) return trimmed
  const points = Array.from(trimmed)
  return points.length <= max ? trimmed : `${points.slice(0, max - 1).join("").trimEnd()}…`
}

/**
 * The id of the iteration for one run of one mission at one scheduled time; a retry, a restart or
 * a second runner computes the same id, so the write-back can refuse a duplicate. UUID-shaped
 * (version 8, RFC 9562 custom) from sha256. `scheduledFor` is normalised as an instant so
 * "…00Z" and "…00.000Z" give one id.
 */
export const iterationIdFor = (missionId: string, scheduledFor: string | null): string => {
  const ms = scheduledFor === null ? undefined : parseInstant(scheduledFor)
  const slot = ms === undefined ? scheduledFor : new Date(ms).toISOString()
  // One-shot hashing (no Hash object per run, issue 16); the same digest as createHash's.
  const bytes = hash("sha256", JSON.stringify(["mana-ai/iteration", missionId, slot]), "buffer").subarray(0, 16)
  bytes[6] = ((bytes[6] ?? 0) & 0x0f) | 0x80
  bytes[8] = ((bytes[8] ?? 0) & 0x3f) | 0x80
  const hex = bytes.toString("hex")
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`
}

const stepIdFor = (iterationId: string, index: number): string => `${iterationId}-${index}`

const iso = (t: Date | string): string => (typeof t === "string" ? t : t.toISOString())

export interface PlannedStepInput {
  readonly summary: string
  readonly toolName: string
  readonly params: Readonly<Record<string, unknown>>
  readonly rationale: string
}

export interface PlannedIterationInput {
  readonly id: string
  readonly startedAt: Date | string
  readonly finishedAt?: Date | string | undefined
  readonly summary: string
  readonly steps: ReadonlyArray<PlannedStepInput>
}

/** A validated plan as an iteration awaiting review ('approved' when there is nothing to review). */
export const plannedIteration = (input: PlannedIterationInput): Iteration => {
  const plan = input.steps.map(
    (step, i): PlanStep => ({
      id: stepIdFor(input.id, i),
      summary: cap(`${step.summary.trim()} — ${step.rationale.trim()}`, STEP_SUMMARY_MAX),
      intent: { kind: "toolCall", toolName: step.toolName, params: { ...step.params } },
      status: "planned",
    }),
  )
  return {
    id: input.id,
    startedAt: iso(input.startedAt),
    ...(input.finishedAt === undefined ? {} : { finishedAt: iso(input.finishedAt) }),
    plan,
    summary: cap(input.summary, SUMMARY_MAX),
    overallStatus: plan.length === 0 ? "approved" : "awaiting-review",
    source: "server",
  }
}

export interface FailedIterationInput {
  readonly id: string
  readonly startedAt: Date | string
  readonly finishedAt?: Date | string | undefined
  /** A short reason for the user; never raw LLM output or a secret (the caller's duty). */
  readonly summary: string
  /** The error's tag. */
  readonly errorName: string
  readonly errorMessage: string
  readonly phase?: ErrorPhase | undefined
}

/** A run whose planning failed for good: no steps, 'failed', and the error without a stack. */
export const failedIteration = (input: FailedIterationInput): Iteration => ({
  id: input.id,
  startedAt: iso(input.startedAt),
  ...(input.finishedAt === undefined ? {} : { finishedAt: iso(input.finishedAt) }),
  plan: [],
  summary: cap(input.summary, SUMMARY_MAX),
  overallStatus: "failed",
  source: "server",
  errorDetails: {
    name: cap(input.errorName, NAME_MAX),
    message: cap(input.errorMessage, SUMMARY_MAX),
    ...(input.phase === undefined ? {} : { phase: input.phase }),
  },
})
