/**
 * Planner: prompt → LLM → strict parser, with PLANNER_REPAIR_ATTEMPTS repair turns (SPEC §4).
 * CONTRACT — implementations: PlannerLive (LlmClient) and the deterministic offline planner.
 */
import type { SqlError } from "@effect/sql/SqlError"
import * as Context from "effect/Context"
import * as Schema from "effect/Schema"
import type * as Effect from "effect/Effect"
import type * as Ref from "effect/Ref"
import type { Agent } from "../domain/agent.js"
import type { Mission } from "../domain/mission.js"
import type { LlmError, TokenUsage } from "./LlmClient.js"
import type { ResolvedInput, UnavailableInput } from "./InputResolvers.js"
import type { UsageEntry } from "./TokenLedger.js"
import { type PlanDraft, describeRejection, rejectionKinds } from "../domain/planParser.js"

// The plan types live in the domain (the parser builds them); re-exported here for the contract's users.
export type { PlanDraft, PlannedStep } from "../domain/planParser.js"

export interface PlannerResult {
  readonly plan: PlanDraft
  /** One entry per LLM answer that reported usage (the repair turn included). */
  readonly usage: ReadonlyArray<TokenUsage>
  /** How many answers the parser rejected before this one (0 or up to PLANNER_REPAIR_ATTEMPTS). */
  readonly rejectedAnswers: number
}

/**
 * The answer was still rejected after the repair turn(s). Permanent. `reason` is the parser's (it may
 * quote names the model chose: for the log only); `message` names only the kind (SPEC §6).
 */
export class PlanRejected extends Schema.TaggedError<PlanRejected>()("PlanRejected", {
  kind: Schema.Literal(...rejectionKinds),
  reason: Schema.String,
  attempts: Schema.Number,
}) {
  override get message() {
    return `plan rejected: ${describeRejection(this.kind)}`
  }
}

/**
 * A budget was at or over its limit before an LLM request (SPEC §14): no request was sent. Not a
 * failure of the run: it ends as `skipped-budget`, writes nothing, and the mission stays due.
 */
export class BudgetExhausted extends Schema.TaggedError<BudgetExhausted>()("BudgetExhausted", {
  budget: Schema.Literal("agent", "user", "process"),
  spent: Schema.Number,
  limit: Schema.Number,
  /** Epoch ms when the window frees by time alone; absent when only a record change can free it (limit 0). */
  freeAtMs: Schema.optional(Schema.Number),
}) {
  override get message() {
    return `the ${this.budget} token budget is spent (${this.spent} of ${this.limit} in the last 24 h)`
  }
}

/** Who the run's LLM answers are charged to (SPEC §14); without it the planner checks no budget. */
export interface PlannerRunContext {
  readonly userId: string
  readonly iterationId: string
  /** Fresh per run attempt: with the answer's ordinal it keys each answer's usage row. */
  readonly attemptId: string
  /**
   * When set, the run's latest answer is not recorded on its own but left here: a later request of
   * the run records it first (the next budget check must see it), and the one still here when the
   * plan ends (or fails) is the caller's to record, in its write-back transaction (SPEC §14).
   */
  readonly heldUsage?: Ref.Ref<ReadonlyArray<UsageEntry>>
}

export interface PlannerInput {
  readonly mission: Mission
  readonly resolvedInputs: ReadonlyArray<ResolvedInput>
  /** Encrypted inputs left out of this run (SPEC §15); the prompt names them. */
  readonly unavailableInputs?: ReadonlyArray<UnavailableInput>
  /** The mission's agent (SPEC §14): its catalogue, its persona, its budget. Absent: the legacy path. */
  readonly agent?: Agent
  /** Budget and usage accounting per LLM request; absent: none (unit tests, the offline planner). */
  readonly run?: PlannerRunContext
}

export interface PlannerShape {
  readonly plan: (input: PlannerInput) => Effect.Effect<PlannerResult, LlmError | PlanRejected | BudgetExhausted | SqlError>
}

export class Planner extends Context.Tag("mana-ai/Planner")<Planner, PlannerShape>() {}
