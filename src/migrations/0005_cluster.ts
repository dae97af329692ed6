/**
 * Cluster mode's tables and columns (issue 19). Every statement is a no-op for one process (the
 * default): the new column stays NULL and the new tables stay empty. Owned here rather than created at
 * cluster start, so sql/runner-role.sql's grant and the migration path own the whole schema; each
 * statement is IF NOT EXISTS because cluster start created the first two on databases from before.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"

export default Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient

  // Which process holds a claim owner id: its liveness session (pid + backend start). A runner that
  // died has no such session any more, so a survivor gives its claims back at once.
  yield* sql`
    CREATE TABLE IF NOT EXISTS mana_ai.cluster_claim_owners (
      owner text PRIMARY KEY,
      pid integer NOT NULL,
      backend_start timestamptz NOT NULL,
      registered_at timestamptz NOT NULL DEFAULT now()
    )`
  // Where that runner listens (RUNNER_ADDRESS): a survivor tells the cluster at once when it died.
  yield* sql`ALTER TABLE mana_ai.cluster_claim_owners ADD COLUMN IF NOT EXISTS runner_host text`
  yield* sql`ALTER TABLE mana_ai.cluster_claim_owners ADD COLUMN IF NOT EXISTS runner_port integer`

  // Another runner's discovery pass reaches a user's owner through the snapshots it changed (changedElsewhere).
  yield* sql`
    CREATE INDEX IF NOT EXISTS mission_snapshots_updated_idx ON mana_ai.mission_snapshots (updated_at)`

  // The cluster shard of the snapshot's user, as @effect/cluster computes it for the shard count in
  // snapshot_shards; NULL when written by a single process (it knows no shard count and never reads by
  // shard). A runner reads only its own shards through this index: priming, after a shard change, due.
  yield* sql`ALTER TABLE mana_ai.mission_snapshots ADD COLUMN IF NOT EXISTS shard integer`
  yield* sql`
    CREATE INDEX IF NOT EXISTS mission_snapshots_shard_due_idx
      ON mana_ai.mission_snapshots (shard, next_run_at) WHERE schedulable`

  // The shard count the `shard` column was computed with (one row; absent before the first cluster start).
  yield* sql`
    CREATE TABLE IF NOT EXISTS mana_ai.snapshot_shards (
      singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
      shards integer NOT NULL,
      stamped_at timestamptz NOT NULL DEFAULT now()
    )`

  // Which runner runs a user's missions now, until when (USER_CONCURRENCY across the cluster). A
  // claim takes or extends its user's row in the same statement; another runner may take the row only
  // once it expired or its holder gave it back (its runs of that user done, or the holder dead).
  yield* sql`
    CREATE TABLE IF NOT EXISTS mana_ai.cluster_user_leases (
      user_id text PRIMARY KEY,
      owner text NOT NULL,
      expires_at timestamptz NOT NULL
    )`
  yield* sql`
    CREATE INDEX IF NOT EXISTS cluster_user_leases_owner_idx ON mana_ai.cluster_user_leases (owner)`
})
