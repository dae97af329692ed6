/**
 * The claim on one run (SPEC §8) as one statement's WITH item, shared by MissionStore.claim and the
 * runner's first transaction (claim and scope, then check and inputs, sent as one sequence, issue 16). A
 * claim is taken when there is none, when it expired, or when the caller already holds it.
 *
 * Cluster mode (issue 19) adds the user's lease to the same statement: a claim is taken only while
 * the caller holds `mana_ai.cluster_user_leases`' row of the user, or can take it (none, expired, or
 * given back). A runner that lost the user's shard keeps the row while its runs of that user are under
 * way, so the new owner cannot start one beside them: USER_CONCURRENCY holds across the handover. The
 * check reads only the row it upserts (ON CONFLICT … WHERE is evaluated on the row's latest version
 * under its lock), so two runners claiming at once cannot both pass. One process adds nothing.
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import type * as Statement from "@effect/sql/Statement"
import { scopeStatement } from "./withUserScope.js"

export interface ClaimKey {
  readonly userId: string
  readonly missionId: string
  readonly iterationId: string
}

/** A claim's two instants as ISO text: when it is taken and until when it holds. */
export interface ClaimTimes {
  readonly now: string
  readonly until: string
}

/**
 * ISO text, which the timestamptz columns and casts read as the same instants: a Date parameter is
 * formatted by pg's dateToString in local time with its offset, three times per run (issue 16).
 */
export const claimTimes = (nowMs: number, ttlMs: number): ClaimTimes => ({
  now: new Date(nowMs).toISOString(),
  until: new Date(nowMs + ttlMs).toISOString(),
})

/**
 * `claimed AS (INSERT … RETURNING 1)`: one row in `claimed` when the caller holds the claim. The key,
 * owner and times are parameters only, so the runner builds this once per shape (sqlShapes.ts) with
 * placeholders for them.
 */
export const claimCte = (
  sql: Statement.Constructor,
  key: { readonly [K in keyof ClaimKey]: unknown },
  owner: unknown,
  times: { readonly [K in keyof ClaimTimes]: unknown },
  /** Cluster mode: take or extend the user's lease too, and claim only with it. */
  cluster = false,
): Statement.Fragment => {
  const { now, until } = times
  if (!cluster) {
    return sql`
  claimed AS (
    INSERT INTO mana_ai.run_claims AS c (user_id, mission_id, iteration_id, owner, expires_at, claimed_at)
    VALUES (${key.userId}, ${key.missionId}, ${key.iterationId}, ${owner}, ${until}, ${now})
    ON CONFLICT (user_id, mission_id, iteration_id) DO UPDATE
      SET owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at, claimed_at = EXCLUDED.claimed_at
      WHERE c.expires_at <= ${now} OR c.owner = EXCLUDED.owner
    RETURNING 1)`
  }
  return sql`
  leased AS (
    INSERT INTO mana_ai.cluster_user_leases AS l (user_id, owner, expires_at)
    VALUES (${key.userId}, ${owner}, ${until})
    ON CONFLICT (user_id) DO UPDATE
      SET owner = EXCLUDED.owner,
          expires_at = CASE WHEN l.owner = EXCLUDED.owner THEN GREATEST(l.expires_at, EXCLUDED.expires_at) ELSE EXCLUDED.expires_at END
      WHERE l.owner = EXCLUDED.owner OR l.expires_at <= ${now}::timestamptz
    RETURNING 1),
  claimed AS (
    INSERT INTO mana_ai.run_claims AS c (user_id, mission_id, iteration_id, owner, expires_at, claimed_at)
    SELECT ${key.userId}::text, ${key.missionId}::text, ${key.iterationId}::text, ${owner}::text, ${until}::timestamptz, ${now}::timestamptz
    FROM leased
    ON CONFLICT (user_id, mission_id, iteration_id) DO UPDATE
      SET owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at, claimed_at = EXCLUDED.claimed_at
      WHERE c.expires_at <= ${now}::timestamptz OR c.owner = EXCLUDED.owner
    RETURNING 1)`
}

/** What the runner's claim statement binds: the key, the owner and the times. */
export type ClaimValues = ClaimKey & ClaimTimes & { readonly owner: string }

/**
 * The runner's scoping statement with the claim in it (the first statement of a run's first
 * transaction): the user's RLS scope, the claim, and `claimed`, 1 when the caller holds it. Values are
 * parameters only (the runner builds it once per `cluster`, sqlShapes.ts).
 */
export const scopedClaimStatement = (sql: SqlClient.SqlClient) => (cluster: boolean, v: ClaimValues) =>
  scopeStatement(sql, v.userId, {
    with: claimCte(sql, v, v.owner, v, cluster),
    columns: sql`, (SELECT count(*)::int FROM claimed) AS claimed`,
  })
