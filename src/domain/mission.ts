/**
 * The app's own mission types (SPEC §3). Iteration and PlanStep are closed: what the runner writes
 * has exactly these keys, and an absent optional field is left out, never null (nor undefined: the
 * optional fields are exact, so the types match the app's own, test/support/appTypes.ts).
 */
import * as Schema from "effect/Schema"
import { parseInstant } from "./replay.js"

/** An ISO-8601 instant with a zone (parsed the same way in Bun and Node); kept as the string the app wrote. */
const IsoInstant = Schema.String.pipe(
  Schema.filter((s) => parseInstant(s) !== undefined, { message: () => "expected an ISO-8601 date-time with a zone" }),
)

const Hour = Schema.Int.pipe(Schema.between(0, 23))
const Minute = Schema.Int.pipe(Schema.between(0, 59))

const ManualCadence = Schema.Struct({ kind: Schema.Literal("manual") })
const IntervalCadence = Schema.Struct({
  kind: Schema.Literal("interval"),
  everyMinutes: Schema.Int.pipe(Schema.greaterThanOrEqualTo(1)),
})
const DailyCadence = Schema.Struct({ kind: Schema.Literal("daily"), atHour: Hour, atMinute: Minute })
const WeeklyCadence = Schema.Struct({
  kind: Schema.Literal("weekly"),
  dayOfWeek: Schema.Int.pipe(Schema.between(0, 6)),
  atHour: Hour,
  atMinute: Schema.optional(Minute),
})
const CronCadence = Schema.Struct({
  kind: Schema.Literal("cron"),
  expression: Schema.String.pipe(
    Schema.filter((s) => s.trim().split(/\s+/).length === 5, { message: () => "expected a five-field cron expression" }),
  ),
})
export const Cadence = Schema.Union(ManualCadence, IntervalCadence, DailyCadence, WeeklyCadence, CronCadence)
export type Cadence = typeof Cadence.Type

const MissionState = Schema.Literal("active", "paused", "done", "archived")
export type MissionState = typeof MissionState.Type

export const MissionInput = Schema.Struct({ module: Schema.String, table: Schema.String, id: Schema.String })
export type MissionInput = typeof MissionInput.Type

const ToolCallIntent = Schema.Struct({
  kind: Schema.Literal("toolCall"),
  toolName: Schema.String,
  params: Schema.Record({ key: Schema.String, value: Schema.Unknown }),
})
const NoteIntent = Schema.Struct({ kind: Schema.Literal("note"), body: Schema.String })

const PlanStepStatus = Schema.Literal("planned", "staged", "approved", "rejected", "skipped", "failed")
export const PlanStep = Schema.Struct({
  id: Schema.String,
  summary: Schema.String,
  intent: Schema.Union(ToolCallIntent, NoteIntent),
  proposalId: Schema.optionalWith(Schema.String, { exact: true }),
  status: PlanStepStatus,
})
export type PlanStep = typeof PlanStep.Type

const IterationStatus = Schema.Literal("running", "awaiting-review", "approved", "rejected", "failed")
/** The phases today's app knows (SPEC §3); the runner reads them all. */
export const IterationPhase = Schema.Literal("resolving-inputs", "calling-llm", "parsing-response", "staging-proposals", "finalizing")
/** The phases a failed iteration of the runner names: only planning fails for good (input and write-back failures are retried or skipped). */
export type ErrorPhase = Extract<typeof IterationPhase.Type, "calling-llm" | "parsing-response">

export const Iteration = Schema.Struct({
  id: Schema.String,
  startedAt: Schema.String,
  finishedAt: Schema.optionalWith(Schema.String, { exact: true }),
  plan: Schema.Array(PlanStep),
  summary: Schema.optionalWith(Schema.String, { exact: true }),
  userFeedback: Schema.optionalWith(Schema.String, { exact: true }),
  overallStatus: IterationStatus,
  source: Schema.optionalWith(Schema.Literal("browser", "server"), { exact: true }),
  errorDetails: Schema.optionalWith(
    Schema.Struct({
      name: Schema.String,
      message: Schema.String,
      phase: Schema.optionalWith(IterationPhase, { exact: true }),
    }),
    { exact: true },
  ),
  // Today's app's progress fields (SPEC §3): read and kept (the write-back copies stored iterations
  // as they are), never written by the runner.
  currentPhase: Schema.optionalWith(IterationPhase, { exact: true }),
  phaseStartedAt: Schema.optionalWith(Schema.String, { exact: true }),
  phaseDetail: Schema.optionalWith(Schema.String, { exact: true }),
  cancelRequested: Schema.optionalWith(Schema.Boolean, { exact: true }),
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
  /** Missing means none yet. */
  iterations: Schema.optionalWith(Schema.Array(Iteration), { default: () => [] }),
  createdAt: Schema.optional(Schema.String),
  updatedAt: Schema.optional(Schema.String),
  deletedAt: Schema.optional(Schema.NullOr(Schema.String)),
  /** The runner's extension (SPEC §3); `null` means absent. */
  timezone: Schema.optionalWith(Schema.String, { nullable: true }),
  /** The mission's agent (SPEC §14); absent: the legacy path. */
  agentId: Schema.optional(Schema.String),
  /** The Mission Grant (SPEC §15), kept opaque here; src/domain/grant.ts decodes it. */
  grant: Schema.optional(Schema.Unknown),
})
export type Mission = typeof Mission.Type

/**
 * What a run needs of the mission it is asked to run: the rest (objective, iterations, grant, …) it
 * reads as the mission stands when the run starts. Actors keep only this of each mission, so their
 * memory does not grow with a mission's text or its iterations (issue 16 item 5).
 */
export type MissionRef = Pick<Mission, "id" | "nextRunAt" | "inputs" | "agentId">

/**
 * The run's reference of a decoded mission: a compact copy, so it keeps nothing of the decode's garbage
 * alive. `id`, when given and equal to the mission's id, is the string kept instead of the decode's
 * copy: an actor's view is keyed by the snapshot's mission id, and one string serves both (50,000
 * missions held after a first discovery of 1M rows: one copy of each id fewer).
 */
export const missionRefOf = (mission: Mission, id?: string): MissionRef => {
  const inputs = mission.inputs.length === 0 ? emptyInputs : structuredClone(mission.inputs)
  const ownId = id !== undefined && id === mission.id ? id : mission.id
  return mission.agentId === undefined
    ? { id: ownId, nextRunAt: mission.nextRunAt, inputs }
    : { id: ownId, nextRunAt: mission.nextRunAt, inputs, agentId: mission.agentId }
}
const emptyInputs: Mission["inputs"] = []

export const MISSIONS_APP_ID = "ai"
export const MISSIONS_TABLE = "aiMissions"
export const RUNNER_CLIENT_ID = "mana-ai-runner"
export const RUNNER_ACTOR = { kind: "system", source: "mission-runner" } as const

/** Today's generation (SPEC §6): the principal and name of the AI actor when a mission has no live agent. */
const LEGACY_AI_PRINCIPAL = "legacy:ai-default"
const LEGACY_AI_NAME = "Mana"
export const AGENTS_TABLE = "agents"
/** `origin` of the runner's rows on today's generation: what the app derives from an `ai` actor. */
export const RUNNER_ORIGIN = "agent"
const ACTOR_RATIONALE_MAX = 200

export interface AiActor {
  readonly kind: "ai"
  readonly principalId: string
  readonly displayName: string
  readonly missionId: string
  readonly iterationId: string
  readonly rationale: string
}

/**
 * The app's AI actor for a write-back on today's generation (SPEC §6): the mission's live agent, or
 * the legacy principal; the rationale is the plan's summary cut to 200 characters (code points).
 */
export const aiActorFor = (options: {
  readonly agent: { readonly id: string; readonly name: string } | null
  readonly missionId: string
  readonly iterationId: string
  readonly summary: string | undefined
}): AiActor => ({
  kind: "ai",
  principalId: options.agent?.id ?? LEGACY_AI_PRINCIPAL,
  displayName: options.agent?.name ?? LEGACY_AI_NAME,
  missionId: options.missionId,
  iterationId: options.iterationId,
  rationale: Array.from(options.summary ?? "").slice(0, ACTOR_RATIONALE_MAX).join(""),
})
