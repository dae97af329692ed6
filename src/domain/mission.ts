/**
 * The app's own mission types (SPEC §3). Iteration and PlanStep are closed: what the runner writes
 * has exactly these keys, and an absent optional field is left out, never null.
 */
import { Schema } from "effect"
import { parseInstant } from "./replay.js"

/** An ISO-8601 instant with a zone (parsed the same way in Bun and Node); kept as the string the app wrote. */
export const IsoInstant = Schema.String.pipe(
  Schema.filter((s) => parseInstant(s) !== undefined, { message: () => "expected an ISO-8601 date-time with a zone" }),
)

const Hour = Schema.Int.pipe(Schema.between(0, 23))
const Minute = Schema.Int.pipe(Schema.between(0, 59))

export const ManualCadence = Schema.Struct({ kind: Schema.Literal("manual") })
export const IntervalCadence = Schema.Struct({
  kind: Schema.Literal("interval"),
  everyMinutes: Schema.Int.pipe(Schema.greaterThanOrEqualTo(1)),
})
export const DailyCadence = Schema.Struct({ kind: Schema.Literal("daily"), atHour: Hour, atMinute: Minute })
export const WeeklyCadence = Schema.Struct({
  kind: Schema.Literal("weekly"),
  dayOfWeek: Schema.Int.pipe(Schema.between(0, 6)),
  atHour: Hour,
  atMinute: Schema.optional(Minute),
})
export const CronCadence = Schema.Struct({
  kind: Schema.Literal("cron"),
  expression: Schema.String.pipe(
    Schema.filter((s) => s.trim().split(/\s+/).length === 5, { message: () => "expected a five-field cron expression" }),
  ),
})
export const Cadence = Schema.Union(ManualCadence, IntervalCadence, DailyCadence, WeeklyCadence, CronCadence)
export type Cadence = typeof Cadence.Type

export const MissionState = Schema.Literal("active", "paused", "done", "archived")
export type MissionState = typeof MissionState.Type

export const MissionInput = Schema.Struct({ module: Schema.String, table: Schema.String, id: Schema.String })
export type MissionInput = typeof MissionInput.Type

export const ToolCallIntent = Schema.Struct({
  kind: Schema.Literal("toolCall"),
  toolName: Schema.String,
  params: Schema.Record({ key: Schema.String, value: Schema.Unknown }),
})
export const NoteIntent = Schema.Struct({ kind: Schema.Literal("note"), body: Schema.String })

export const PlanStepStatus = Schema.Literal("planned", "staged", "approved", "rejected", "skipped", "failed")
export const PlanStep = Schema.Struct({
  id: Schema.String,
  summary: Schema.String,
  intent: Schema.Union(ToolCallIntent, NoteIntent),
  proposalId: Schema.optional(Schema.String),
  status: PlanStepStatus,
})
export type PlanStep = typeof PlanStep.Type

export const IterationStatus = Schema.Literal("running", "awaiting-review", "approved", "rejected", "failed")
export const ErrorPhase = Schema.Literal("resolving-inputs", "calling-llm", "parsing-response", "finalizing")
export type ErrorPhase = typeof ErrorPhase.Type

export const Iteration = Schema.Struct({
  id: Schema.String,
  startedAt: Schema.String,
  finishedAt: Schema.optional(Schema.String),
  plan: Schema.Array(PlanStep),
  summary: Schema.optional(Schema.String),
  userFeedback: Schema.optional(Schema.String),
  overallStatus: IterationStatus,
  source: Schema.optional(Schema.Literal("browser", "server")),
  errorDetails: Schema.optional(
    Schema.Struct({ name: Schema.String, message: Schema.String, phase: Schema.optional(ErrorPhase) }),
  ),
})
export type Iteration = typeof Iteration.Type

/**
 * A replayed mission record as the runner needs it. Unknown fields are not part of this type but
 * stay in the raw record, and the write-back touches only `iterations` and `nextRunAt`.
 */
export const Mission = Schema.Struct({
  id: Schema.String,
  title: Schema.String,
  objective: Schema.String,
  conceptMarkdown: Schema.optionalWith(Schema.String, { default: () => "" }),
  state: MissionState,
  nextRunAt: Schema.optionalWith(Schema.NullOr(IsoInstant), { default: () => null }),
  inputs: Schema.optionalWith(Schema.Array(MissionInput), { default: () => [] }),
  cadence: Cadence,
  iterations: Schema.Array(Iteration),
  createdAt: Schema.optional(Schema.String),
  updatedAt: Schema.optional(Schema.String),
  deletedAt: Schema.optional(Schema.NullOr(Schema.String)),
  timezone: Schema.optional(Schema.String),
})
export type Mission = typeof Mission.Type

export const MISSIONS_APP_ID = "ai"
export const MISSIONS_TABLE = "aiMissions"
export const RUNNER_CLIENT_ID = "mana-ai-runner"
export const RUNNER_ACTOR = { kind: "system", source: "mission-runner" } as const
