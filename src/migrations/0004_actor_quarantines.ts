/**
 * Quarantined users (SPEC §8): a quarantine holds until an operator lifts it, across restarts of the
 * process, so a poison mission is not replayed RESTART_MAX times after every deploy.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"

export default Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  yield* sql`
    CREATE TABLE IF NOT EXISTS mana_ai.actor_quarantines (
      user_id text PRIMARY KEY,
      reason text NOT NULL,
      quarantined_at timestamptz NOT NULL DEFAULT now()
    )`
})
