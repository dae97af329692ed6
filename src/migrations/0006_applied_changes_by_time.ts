/**
 * mana_ai.applied_changes keyed by (created_at, change_id) instead of change_id alone, and no separate
 * created_at index (issue 16 item 3). A burst of rows inside the look-back window marks every row
 * applied: a million random uuids inserted into a uuid primary key plus a created_at index cost
 * about 7.7 s of Postgres CPU (loaded machine, 50 batches as the pass writes them), the time-led key
 * about 3.3 s. The prune (created_at <=) reads the same key's leading column; the pass's anti-join
 * probes it with the row's created_at and id. A row's created_at never changes, so the new key is as
 * unique as the old.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"

export default Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  yield* sql`ALTER TABLE mana_ai.applied_changes DROP CONSTRAINT IF EXISTS applied_changes_pkey`
  yield* sql`ALTER TABLE mana_ai.applied_changes ADD CONSTRAINT applied_changes_pkey PRIMARY KEY (created_at, change_id)`
  yield* sql`DROP INDEX IF EXISTS mana_ai.applied_changes_created_idx`
})
