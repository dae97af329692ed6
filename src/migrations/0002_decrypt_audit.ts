/**
 * The Mission Grant audit (SPEC §15): one row per input the runner tries under a grant. Row-level
 * security is forced (the runner owns the table, and FORCE makes the policy bind its owner too), so
 * each user's rows are read and written only inside that user's RLS scope.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"

export default Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  yield* sql`
    CREATE TABLE IF NOT EXISTS mana_ai.decrypt_audit (
      id bigserial PRIMARY KEY,
      user_id text NOT NULL,
      mission_id text NOT NULL,
      iteration_id text NOT NULL,
      table_name text NOT NULL,
      record_id text NOT NULL,
      status text NOT NULL CHECK (status IN ('ok', 'failed', 'scope-violation')),
      reason text,
      at timestamptz NOT NULL DEFAULT now()
    )`
  // GET /internal/audit/:userId lists newest first, optionally for one mission.
  yield* sql`
    CREATE INDEX IF NOT EXISTS decrypt_audit_user_at_idx ON mana_ai.decrypt_audit (user_id, at DESC, id DESC)`
  yield* sql`
    CREATE INDEX IF NOT EXISTS decrypt_audit_user_mission_at_idx
      ON mana_ai.decrypt_audit (user_id, mission_id, at DESC, id DESC)`
  yield* sql`ALTER TABLE mana_ai.decrypt_audit ENABLE ROW LEVEL SECURITY`
  yield* sql`ALTER TABLE mana_ai.decrypt_audit FORCE ROW LEVEL SECURITY`
  yield* sql`DROP POLICY IF EXISTS decrypt_audit_user_scope ON mana_ai.decrypt_audit`
  yield* sql`
    CREATE POLICY decrypt_audit_user_scope ON mana_ai.decrypt_audit
      USING (user_id = current_setting('app.current_user_id', true))
      WITH CHECK (user_id = current_setting('app.current_user_id', true))`
})
