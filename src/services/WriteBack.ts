/**
 * Write-back (SPEC §6): appends one iteration as one RLS-scoped `sync_changes` row.
 * CONTRACT — implementation: WriteBackLive.
 */
import type { SqlError } from "@effect/sql/SqlError"
import { Context, type Effect } from "effect"
import type { Iteration } from "../domain/mission.js"
import type { UsageEntry } from "./TokenLedger.js"

export interface WriteRequest {
  readonly userId: string
  readonly missionId: string
  /** The iteration to append; its id is the run's idempotency key (iterationIdFor). */
  readonly iteration: Iteration
  /**
   * The run's LLM answers not yet recorded (SPEC §14): inserted into mana_ai.token_usage in the same
   * transaction as the iteration, keyed per answer (one already recorded is not counted again).
   * Only when a TokenLedger is provided; a Skipped result records nothing (the caller does).
   */
  readonly usage?: ReadonlyArray<UsageEntry>
}

export type WriteResult =
  | { readonly _tag: "Written"; readonly iterationId: string; readonly nextRunAt: string | null; readonly writtenAt: string }
  | {
      readonly _tag: "Skipped"
      readonly reason: "not-found" | "deleted" | "not-active" | "already-written" | "malformed"
    }

export interface WriteBackShape {
  /**
   * In one transaction scoped to `userId`: takes a per-mission advisory lock, replays the mission as
   * it stands now, and unless it is gone, not active, or already holds this iteration id, inserts one
   * `update` row with all iterations (existing ones as stored, plus this one) and the next `nextRunAt`
   * computed from the cadence strictly after the write time.
   */
  readonly append: (request: WriteRequest) => Effect.Effect<WriteResult, SqlError>
}

export class WriteBack extends Context.Tag("mana-ai/WriteBack")<WriteBack, WriteBackShape>() {}
