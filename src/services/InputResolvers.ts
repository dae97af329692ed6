/**
 * Input resolvers (SPEC §5): a registry keyed by module; each replays one record under the user's
 * RLS scope and renders it for the prompt.
 * CONTRACT — implementation: InputResolversLive (goals shipped).
 */
import type { SqlError } from "@effect/sql/SqlError"
import { Context, type Effect } from "effect"
import type { MissionInput } from "../domain/mission.js"

export interface ResolvedInput {
  readonly id: string
  readonly module: string
  readonly table: string
  readonly title: string
  readonly content: string
  /** Decrypted under a Mission Grant (SPEC §15): may reach the LLM request and nothing else. */
  readonly confidential?: boolean
}

/** An encrypted input left out of this run, and why (for the prompt: no value, no key). */
export interface UnavailableInput {
  readonly id: string
  readonly module: string
  readonly table: string
  readonly reason: string
}

/** What a run knows beyond its inputs: who it is for, and the mission's raw `grant` field (SPEC §15). */
export interface RunContext {
  readonly missionId: string
  readonly iterationId: string
  /** The replayed record's `grant`: absent or null means no grant. */
  readonly grant: unknown
}

export interface RunInputs {
  readonly resolved: ReadonlyArray<ResolvedInput>
  readonly unavailable: ReadonlyArray<UnavailableInput>
}

export interface InputResolversShape {
  /**
   * Resolves what it can, in one RLS-scoped transaction for `userId`. Inputs of modules without a
   * resolver, and records missing, deleted or unreadable, are left out with a logged reason and a
   * counted metric. Values starting `enc:1:` never appear in the result.
   */
  readonly resolve: (
    userId: string,
    inputs: ReadonlyArray<MissionInput>,
  ) => Effect.Effect<ReadonlyArray<ResolvedInput>, SqlError>
  /**
   * `resolve` plus the encrypted modules of SPEC §15: with a grant that opens, each encrypted input
   * the grant covers is read and decrypted, and every one tried is audited; the others are named in
   * `unavailable`.
   */
  readonly resolveForRun: (
    userId: string,
    inputs: ReadonlyArray<MissionInput>,
    run: RunContext,
  ) => Effect.Effect<RunInputs, SqlError>
}

export class InputResolvers extends Context.Tag("mana-ai/InputResolvers")<InputResolvers, InputResolversShape>() {}
