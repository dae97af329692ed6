/**
 * The one way per-user SQL runs (SPEC §2, §7): a transaction whose first statement scopes RLS to
 * the user with a transaction-local setting, so a pooled connection never carries it further. On
 * today's sync server a second, read-only policy lets members of a shared space read its rows
 * (SPEC §13): the space list is set to '' so that policy grants nothing, whatever a pooled
 * connection or a server default might hold.
 */
import { SqlClient } from "@effect/sql"
import { SqlError } from "@effect/sql/SqlError"
import { Effect, Option } from "effect"

/**
 * @effect/sql's withTransaction turns a failed COMMIT or ROLLBACK into a defect (Effect.orDie). Both
 * fail only when the connection is gone (terminated, cut, server down): an SqlError like any other,
 * which callers retry, not a bug that crashes an actor. A lost COMMIT may still have committed, so
 * callers must be idempotent (the write-back is: it checks the iteration id under its lock).
 */
export const transactionLossAsError = <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E | SqlError, R> =>
  Effect.catchSomeDefect(self, (defect) => (defect instanceof SqlError ? Option.some(Effect.fail(defect)) : Option.none()))

export const withUserScope = <A, E, R>(
  userId: string,
  body: (sql: SqlClient.SqlClient) => Effect.Effect<A, E, R>,
): Effect.Effect<A, E | SqlError, R | SqlClient.SqlClient> =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql.withTransaction(
      Effect.zipRight(
        sql`SELECT set_config('app.current_user_id', ${userId}, true), set_config('app.current_user_space_ids', '', true)`,
        body(sql),
      ),
    ).pipe(transactionLossAsError),
  )
