/**
 * The one way per-user SQL runs (SPEC §2, §7): a transaction whose first statement scopes RLS to
 * the user with a transaction-local setting, so a pooled connection never carries it further.
 */
import { SqlClient } from "@effect/sql"
import type { SqlError } from "@effect/sql/SqlError"
import { Effect } from "effect"

export const withUserScope = <A, E, R>(
  userId: string,
  body: (sql: SqlClient.SqlClient) => Effect.Effect<A, E, R>,
): Effect.Effect<A, E | SqlError, R | SqlClient.SqlClient> =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql.withTransaction(
      Effect.zipRight(sql`SELECT set_config('app.current_user_id', ${userId}, true)`, body(sql)),
    ),
  )
