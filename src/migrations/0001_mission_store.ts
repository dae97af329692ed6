/**
 * The runner's own tables (SPEC §7), all inside schema mana_ai, which the operator's grant created:
 * the runner role may create tables there and nothing outside it.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"

export default Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient

  // One row per mission record (user_id, record_id): the replayed record and what scheduling needs.
  yield* sql`
    CREATE TABLE IF NOT EXISTS mana_ai.mission_snapshots (
      user_id text NOT NULL,
      record_id text NOT NULL,
      record jsonb,
      field_times jsonb NOT NULL DEFAULT '{}'::jsonb,
      last_created_at timestamptz NOT NULL,
      last_change_id uuid NOT NULL,
      deleted boolean NOT NULL,
      state text,
      next_run_at timestamptz,
      schedulable boolean NOT NULL,
      malformed_reason text,
      updated_at timestamptz NOT NULL DEFAULT now(),
      PRIMARY KEY (user_id, record_id)
    )`
  // The due query (schedulable AND next_run_at <= now) reads only this small partial index.
  yield* sql`
    CREATE INDEX IF NOT EXISTS mission_snapshots_due_idx
      ON mana_ai.mission_snapshots (next_run_at) WHERE schedulable`

  // Discovery's high-water mark: the greatest created_at applied (one row; absent before the first refresh).
  yield* sql`
    CREATE TABLE IF NOT EXISTS mana_ai.discovery_cursor (
      singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
      created_at timestamptz NOT NULL,
      updated_at timestamptz NOT NULL DEFAULT now()
    )`

  // Ids applied within the look-back window behind the cursor, so re-reading that window skips them.
  yield* sql`
    CREATE TABLE IF NOT EXISTS mana_ai.applied_changes (
      change_id uuid PRIMARY KEY,
      created_at timestamptz NOT NULL
    )`
  yield* sql`
    CREATE INDEX IF NOT EXISTS applied_changes_created_idx ON mana_ai.applied_changes (created_at)`

  // One scheduled run claimed by one runner instance until expires_at. Keyed per user: two users may
  // share a mission id, and so an iteration id.
  yield* sql`
    CREATE TABLE IF NOT EXISTS mana_ai.run_claims (
      user_id text NOT NULL,
      mission_id text NOT NULL,
      iteration_id text NOT NULL,
      owner text NOT NULL,
      expires_at timestamptz NOT NULL,
      claimed_at timestamptz NOT NULL DEFAULT now(),
      PRIMARY KEY (user_id, mission_id, iteration_id)
    )`
  yield* sql`
    CREATE INDEX IF NOT EXISTS run_claims_expires_idx ON mana_ai.run_claims (expires_at)`
})
