/**
 * Planner: prompt → LLM → strict parser, with PLANNER_REPAIR_ATTEMPTS repair turns (SPEC §4).
 * CONTRACT — implementations: PlannerLive (LlmClient) and the deterministic offline planner.
 */
import { Context, Schema, type Effect } from "effect"
import type { Mission } from "../domain/mission.js"
import type { LlmError, TokenUsage } from "./LlmClient.js"
import type { ResolvedInput, UnavailableInput } from "./InputResolvers.js"
import { type PlanDraft, describeRejection, rejectionKinds } from "../domain/planParser.js"

// The plan types live in the domain (the parser builds them); re-exported here for the contract's users.
export type { PlanDraft, PlannedStep } from "../domain/planParser.js"

export interface PlannerResult {
  readonly plan: PlanDraft
  /** One entry per LLM answer that reported usage (the repair turn included). */
  readonly usage: ReadonlyArray<TokenUsage>
  /** "offline" for the deterministic planner, shown to the user in the iteration summary. */
  readonly planner: "llm" | "offline"
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

export interface PlannerInput {
  readonly mission: Mission
  readonly resolvedInputs: ReadonlyArray<ResolvedInput>
  /** Encrypted inputs left out of this run (SPEC §15); the prompt names them. */
  readonly unavailableInputs?: ReadonlyArray<UnavailableInput>
}

export interface PlannerShape {
  readonly plan: (input: PlannerInput) => Effect.Effect<PlannerResult, LlmError | PlanRejected>
}

export class Planner extends Context.Tag("mana-ai/Planner")<Planner, PlannerShape>() {}
