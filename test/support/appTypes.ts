/**
 * The app's own types for what the runner writes, copied from the public monorepo at HEAD
 * (Memo-2023/mana-monorepo 907a3add4: packages/shared-ai/src/missions/types.ts and actor.ts, as
 * shared/research/upstream-head.md §5–§6 records them), written out again here rather than imported
 * from the runner, so a test holds the runner's rows against the app's contract and not its own.
 *
 * Beside each interface an exact-keys Schema: decoding with `onExcessProperty: "error"` refuses any
 * key the app's type lacks. The `Same` checks below make tsc fail if a Schema and its interface drift.
 */
import { Schema } from "effect"

// ---------------------------------------------------------------- the interfaces (upstream's shape)

export type IterationPhase = "resolving-inputs" | "calling-llm" | "parsing-response" | "staging-proposals" | "finalizing"

export interface PlanStep {
  readonly id: string
  readonly summary: string
  readonly intent:
    | { readonly kind: "toolCall"; readonly toolName: string; readonly params: Record<string, unknown> }
    | { readonly kind: "note"; readonly body: string }
  readonly proposalId?: string
  readonly status: "planned" | "staged" | "approved" | "rejected" | "skipped" | "failed"
}

export interface MissionIteration {
  readonly id: string
  readonly startedAt: string
  readonly finishedAt?: string
  readonly plan: readonly PlanStep[]
  readonly summary?: string
  readonly userFeedback?: string
  readonly overallStatus: "running" | "awaiting-review" | "approved" | "rejected" | "failed"
  readonly source?: "browser" | "server"
  readonly errorDetails?: {
    readonly name: string
    readonly message: string
    readonly phase?: IterationPhase
    readonly stack?: string
  }
  readonly currentPhase?: IterationPhase
  readonly phaseStartedAt?: string
  readonly phaseDetail?: string
  readonly cancelRequested?: boolean
}

/** Today's actor of an AI write (SPEC §6; upstream's makeAgentActor). */
export interface AiActor {
  readonly kind: "ai"
  readonly principalId: string
  readonly displayName: string
  readonly missionId: string
  readonly iterationId: string
  readonly rationale: string
}

/** The seed's system actor (SPEC §6), which clients' normalizeActor maps to system:mission-runner. */
export interface LegacySystemActor {
  readonly kind: "system"
  readonly source: "mission-runner"
}

// ---------------------------------------------------------------- exact-keys schemas

const Phase = Schema.Literal("resolving-inputs", "calling-llm", "parsing-response", "staging-proposals", "finalizing")

export const PlanStepSchema = Schema.Struct({
  id: Schema.String,
  summary: Schema.String,
  intent: Schema.Union(
    Schema.Struct({
      kind: Schema.Literal("toolCall"),
      toolName: Schema.String,
      params: Schema.Record({ key: Schema.String, value: Schema.Unknown }),
    }),
    Schema.Struct({ kind: Schema.Literal("note"), body: Schema.String }),
  ),
  proposalId: Schema.optionalWith(Schema.String, { exact: true }),
  status: Schema.Literal("planned", "staged", "approved", "rejected", "skipped", "failed"),
})

export const MissionIterationSchema = Schema.Struct({
  id: Schema.String,
  startedAt: Schema.String,
  finishedAt: Schema.optionalWith(Schema.String, { exact: true }),
  plan: Schema.Array(PlanStepSchema),
  summary: Schema.optionalWith(Schema.String, { exact: true }),
  userFeedback: Schema.optionalWith(Schema.String, { exact: true }),
  overallStatus: Schema.Literal("running", "awaiting-review", "approved", "rejected", "failed"),
  source: Schema.optionalWith(Schema.Literal("browser", "server"), { exact: true }),
  errorDetails: Schema.optionalWith(
    Schema.Struct({
      name: Schema.String,
      message: Schema.String,
      phase: Schema.optionalWith(Phase, { exact: true }),
      stack: Schema.optionalWith(Schema.String, { exact: true }),
    }),
    { exact: true },
  ),
  currentPhase: Schema.optionalWith(Phase, { exact: true }),
  phaseStartedAt: Schema.optionalWith(Schema.String, { exact: true }),
  phaseDetail: Schema.optionalWith(Schema.String, { exact: true }),
  cancelRequested: Schema.optionalWith(Schema.Boolean, { exact: true }),
})

export const AiActorSchema = Schema.Struct({
  kind: Schema.Literal("ai"),
  principalId: Schema.String,
  displayName: Schema.String,
  missionId: Schema.String,
  iterationId: Schema.String,
  rationale: Schema.String,
})

export const LegacySystemActorSchema = Schema.Struct({ kind: Schema.Literal("system"), source: Schema.Literal("mission-runner") })

// ---------------------------------------------------------------- the schemas are the interfaces

type Mutable<T> = { -readonly [K in keyof T]: T[K] extends object ? Mutable<T[K]> : T[K] }
type Same<A, B> = [Mutable<A>] extends [Mutable<B>] ? ([Mutable<B>] extends [Mutable<A>] ? true : false) : false
const same = <T extends true>(): T | undefined => undefined

export const schemasMatchInterfaces = [
  same<Same<typeof PlanStepSchema.Type, PlanStep>>(),
  same<Same<typeof MissionIterationSchema.Type, MissionIteration>>(),
  same<Same<typeof AiActorSchema.Type, AiActor>>(),
  same<Same<typeof LegacySystemActorSchema.Type, LegacySystemActor>>(),
]
