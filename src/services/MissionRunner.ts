/**
 * One run of one mission for one scheduled time (SPEC §4–§6): claim → resolve inputs → plan → write back.
 * CONTRACT — implementation: MissionRunnerLive.
 */
import type { SqlError } from "@effect/sql/SqlError"
import { Context, Schema, type Effect } from "effect"
import type { Mission } from "../domain/mission.js"

/** The run's transient errors outlasted MISSION_TIMEOUT_MS: nothing written, the mission stays due. */
export class MissionTimeout extends Schema.TaggedError<MissionTimeout>()("MissionTimeout", {
  timeoutMs: Schema.Number,
}) {
  override get message() {
    return `mission run exceeded its deadline of ${this.timeoutMs} ms`
  }
}

export interface RunRequest {
  readonly userId: string
  readonly mission: Mission
}

export type RunOutcome =
  | {
      readonly _tag: "Written"
      readonly iterationId: string
      readonly overallStatus: "awaiting-review" | "approved" | "failed"
      readonly steps: number
      readonly nextRunAt: string | null
      /** A valid plan came back from the planner (false for a failed iteration). */
      readonly planProduced: boolean
      /** Planner answers the parser rejected during this run. */
      readonly parseFailures: number
      /** For a failed iteration: the error's tag (errorDetails.name). */
      readonly failure?: string
    }
  | {
      readonly _tag: "Skipped"
      /** not-due: the mission as it stands now was rescheduled past the present (the snapshot was stale). */
      readonly reason: "claimed-elsewhere" | "not-found" | "deleted" | "not-active" | "not-due" | "already-written" | "malformed"
        // SPEC §14: the agent's decision (nothing written, the mission stays due) and a broken agent record.
        | "skipped-paused" | "skipped-archived" | "skipped-budget" | "agent-malformed"
      readonly planProduced: boolean
      readonly parseFailures: number
      /** skipped-budget: the budget that stopped the run. */
      readonly budget?: "agent" | "user" | "process"
      /**
       * skipped-budget: when enough of the window has passed for the run to ask again (ISO instant), so
       * the caller can wait without a database read; null when only a record change can free it (limit 0).
       */
      readonly freeAt?: string | null
      /** agent-malformed: which fields of the agent record are wrong (never their values). */
      readonly detail?: string
    }

export interface MissionRunnerShape {
  /**
   * Runs under MISSION_TIMEOUT_MS. A permanent planning failure writes a failed iteration (outcome
   * Written with overallStatus "failed"); transient failures that outlast the deadline fail with
   * MissionTimeout and write nothing. Interruption (drain) never leaves a partial write.
   */
  readonly run: (request: RunRequest) => Effect.Effect<RunOutcome, MissionTimeout | SqlError>
}

export class MissionRunner extends Context.Tag("mana-ai/MissionRunner")<MissionRunner, MissionRunnerShape>() {}
