/**
 * Users whose actor is quarantined, kept in mana_ai.actor_quarantines so a quarantine survives a
 * restart of the process and holds until an operator lifts it (POST /internal/actors/:userId/restart).
 * The runner's own bookkeeping, like run claims: no user's data, so no RLS scope.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import * as SqlSchema from "@effect/sql/SqlSchema"
import type { SqlError } from "@effect/sql/SqlError"
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"

export interface Quarantine {
  readonly userId: string
  readonly reason: string
}

export interface QuarantinesShape {
  readonly all: Effect.Effect<ReadonlyArray<Quarantine>, SqlError>
  /** Records (or re-records, with the new reason) a user's quarantine. */
  readonly hold: (quarantine: Quarantine) => Effect.Effect<void, SqlError>
  readonly lift: (userId: string) => Effect.Effect<void, SqlError>
}

const Row = Schema.Struct({ user_id: Schema.String, reason: Schema.String })

export class Quarantines extends Effect.Service<Quarantines>()("mana-ai/Quarantines", {
  effect: Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const rows = SqlSchema.findAll({
      Request: Schema.Void,
      Result: Row,
      execute: () => sql`SELECT user_id, reason FROM mana_ai.actor_quarantines ORDER BY user_id`,
    })
    const service: QuarantinesShape = {
      all: rows(undefined).pipe(
        Effect.map((found) => found.map((r) => ({ userId: r.user_id, reason: r.reason }))),
        // A row that does not decode is a defect of our own table, not bad input.
        Effect.catchTag("ParseError", (e) => Effect.die(e)),
      ),
      hold: ({ userId, reason }) =>
        sql`
          INSERT INTO mana_ai.actor_quarantines (user_id, reason) VALUES (${userId}, ${reason})
          ON CONFLICT (user_id) DO UPDATE SET reason = EXCLUDED.reason, quarantined_at = now()`.pipe(Effect.asVoid),
      lift: (userId) => sql`DELETE FROM mana_ai.actor_quarantines WHERE user_id = ${userId}`.pipe(Effect.asVoid),
    }
    return service
  }),
}) {}
