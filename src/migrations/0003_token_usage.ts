/**
 * Token usage (SPEC §14): one row per LLM answer, for the rolling 24 h budgets.
 *
 * - `token_usage` is per user: row-level security forced (the runner owns the table, and FORCE makes
 *   the policy bind its owner too), read and written only inside the user's RLS scope. The primary
 *   key (user_id, answer_key) makes recording idempotent: a retried write-back, or an answer recorded
 *   on its own and again in the write-back, counts once.
 * - `token_usage_process` holds only (at, tokens): no user, agent, mission or iteration, so nothing
 *   per user to protect and no RLS. The process-wide sum (LLM_DAILY_TOKEN_BUDGET) is read there,
 *   because no cross-user read of token_usage exists. Its rows are written by the same statement
 *   that inserts into token_usage, and only when that insert was new, so both agree.
 * - Retention: rows older than 48 h are deleted. The second policy lets the runner delete, and only
 *   delete, any user's expired rows; it grants no read.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"

export default Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  yield* sql`
    CREATE TABLE IF NOT EXISTS mana_ai.token_usage (
      user_id text NOT NULL,
      agent_id text,
      mission_id text NOT NULL,
      iteration_id text NOT NULL,
      answer_key text NOT NULL,
      tokens integer NOT NULL CHECK (tokens >= 0),
      at timestamptz NOT NULL,
      PRIMARY KEY (user_id, answer_key)
    )`
  // The per-agent window sum, and the per-user one (and the per-user prune).
  yield* sql`
    CREATE INDEX IF NOT EXISTS token_usage_agent_at_idx ON mana_ai.token_usage (user_id, agent_id, at)`
  yield* sql`
    CREATE INDEX IF NOT EXISTS token_usage_user_at_idx ON mana_ai.token_usage (user_id, at)`
  yield* sql`ALTER TABLE mana_ai.token_usage ENABLE ROW LEVEL SECURITY`
  yield* sql`ALTER TABLE mana_ai.token_usage FORCE ROW LEVEL SECURITY`
  yield* sql`DROP POLICY IF EXISTS token_usage_user_scope ON mana_ai.token_usage`
  yield* sql`
    CREATE POLICY token_usage_user_scope ON mana_ai.token_usage
      USING (user_id = current_setting('app.current_user_id', true))
      WITH CHECK (user_id = current_setting('app.current_user_id', true))`
  // Retention across users without a cross-user read: DELETE only, only past 48 h (server time).
  yield* sql`DROP POLICY IF EXISTS token_usage_prune_expired ON mana_ai.token_usage`
  yield* sql`
    CREATE POLICY token_usage_prune_expired ON mana_ai.token_usage
      FOR DELETE
      USING (at < now() - interval '48 hours')`

  yield* sql`
    CREATE TABLE IF NOT EXISTS mana_ai.token_usage_process (
      at timestamptz NOT NULL,
      tokens integer NOT NULL CHECK (tokens >= 0)
    )`
  yield* sql`
    CREATE INDEX IF NOT EXISTS token_usage_process_at_idx ON mana_ai.token_usage_process (at)`
})
