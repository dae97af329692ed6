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
}

export class InputResolvers extends Context.Tag("mana-ai/InputResolvers")<InputResolvers, InputResolversShape>() {}
