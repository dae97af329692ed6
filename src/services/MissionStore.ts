/**
 * Mission snapshots kept incrementally in schema mana_ai (SPEC §2, §7, §8).
 * CONTRACT — implementation: MissionStoreLive (SqlClient; tables created by the migrations).
 */
import type { SqlError } from "@effect/sql/SqlError"
import { Context, type Duration, type Effect, type Either } from "effect"
import type { Mission } from "../domain/mission.js"

export interface MissionSnapshot {
  readonly userId: string
  readonly missionId: string
  /** The replayed record with every field (unknown ones included); null once deleted. */
  readonly record: Readonly<Record<string, unknown>> | null
  /** Right: the decoded mission. Left: why it is skipped (malformed), a sentence for logs/API. */
  readonly decoded: Either.Either<Mission, string>
  /** Active, not deleted, decodes, and has a nextRunAt: the actor schedules it. */
  readonly schedulable: boolean
  readonly nextRunAt: Date | null
}

export interface RefreshResult {
  /** Snapshots whose record changed in this refresh (deleted ones included, record null). */
  readonly changed: ReadonlyArray<MissionSnapshot>
  /** Event-log rows read by this refresh. */
  readonly rowsRead: number
}

export interface MissionStoreShape {
  /**
   * Applies mission rows new since the last refresh (re-reading a short window behind the cursor,
   * skipping ids already applied, so a late-committing row is still seen). Cost follows new rows.
   * Rows that cannot be applied are counted and logged; the rest goes on. Once per reconcile interval
   * it also replays every mission up to the window and corrects snapshots that missed a row (a sync
   * transaction open longer than the window); those are in `changed` too.
   */
  readonly refresh: Effect.Effect<RefreshResult, SqlError>
  /** Every stored snapshot that is schedulable, across users (supervisor start-up). */
  readonly schedulable: Effect.Effect<ReadonlyArray<MissionSnapshot>, SqlError>
  /** Schedulable snapshots with nextRunAt <= now. */
  readonly due: (now: Date) => Effect.Effect<ReadonlyArray<MissionSnapshot>, SqlError>
  /** All of one user's snapshots, deleted ones excluded (for /internal/missions/:userId). */
  readonly forUser: (userId: string) => Effect.Effect<ReadonlyArray<MissionSnapshot>, SqlError>
  /**
   * Claims one scheduled run (mission + iteration id) for `ttl` so a second runner instance does not
   * spend an LLM call on it. True when this caller holds the claim (new, expired, or already its own).
   */
  readonly claim: (
    key: { readonly userId: string; readonly missionId: string; readonly iterationId: string },
    owner: string,
    ttl: Duration.Duration,
  ) => Effect.Effect<boolean, SqlError>
  readonly releaseClaim: (
    key: { readonly userId: string; readonly missionId: string; readonly iterationId: string },
    owner: string,
  ) => Effect.Effect<void, SqlError>
}

export class MissionStore extends Context.Tag("mana-ai/MissionStore")<MissionStore, MissionStoreShape>() {}
