/**
 * The claim on one run (SPEC §8) as one statement's WITH item, shared by MissionStore.claim and the
 * runner's first transaction (claim, scope, check and inputs in one round trip each, issue 16). A
 * claim is taken when there is none, when it expired, or when the caller already holds it.
 */
import type { SqlClient, Statement } from "@effect/sql"

export interface ClaimKey {
  readonly userId: string
  readonly missionId: string
  readonly iterationId: string
}

/** `claimed AS (INSERT … RETURNING 1)`: one row in `claimed` when the caller holds the claim. */
export const claimCte = (sql: SqlClient.SqlClient, key: ClaimKey, owner: string, nowMs: number, ttlMs: number): Statement.Fragment => sql`
  claimed AS (
    INSERT INTO mana_ai.run_claims AS c (user_id, mission_id, iteration_id, owner, expires_at, claimed_at)
    VALUES (${key.userId}, ${key.missionId}, ${key.iterationId}, ${owner}, ${new Date(nowMs + ttlMs)}, ${new Date(nowMs)})
    ON CONFLICT (user_id, mission_id, iteration_id) DO UPDATE
      SET owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at, claimed_at = EXCLUDED.claimed_at
      WHERE c.expires_at <= ${new Date(nowMs)} OR c.owner = EXCLUDED.owner
    RETURNING 1)`
