/**
 * The one way per-user SQL runs (SPEC §2, §7): a transaction whose first statement scopes RLS to
 * the user with a transaction-local setting, so a pooled connection never carries it further. On
 * today's sync server a second, read-only policy lets members of a shared space read its rows
 * (SPEC §13): the space list is set to '' so that policy grants nothing, whatever a pooled
 * connection or a server default might hold.
 *
 * A withUserScope for the same user inside another one joins it (no savepoint, no second
 * set_config): a run's claim, check and inputs are one transaction of few round trips (issue 16).
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type * as Statement from "@effect/sql/Statement"
import { SqlError } from "@effect/sql/SqlError"
import * as Effect from "effect/Effect"
import * as FiberRef from "effect/FiberRef"
import * as Option from "effect/Option"

/**
 * @effect/sql's withTransaction turns a failed COMMIT or ROLLBACK into a defect (Effect.orDie). Both
 * fail only when the connection is gone (terminated, cut, server down): an SqlError like any other,
 * which callers retry, not a bug that crashes an actor. A lost COMMIT may still have committed, so
 * callers must be idempotent (the write-back is: it checks the iteration id under its lock).
 */
export const transactionLossAsError = <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E | SqlError, R> =>
  Effect.catchSomeDefect(self, (defect) => (defect instanceof SqlError ? Option.some(Effect.fail(defect)) : Option.none()))

/** The user whose RLS scope the current fiber's transaction holds (null: none). */
const scopedUser = FiberRef.unsafeMake<string | null>(null)

/** More for the scoping statement to do, at no extra round trip. */
export interface ScopeStatement {
  /** A top-level WITH list (e.g. a data-modifying CTE), without the keyword. */
  readonly with?: Statement.Fragment
  /** More select-list items, each preceded by a comma. */
  readonly columns?: Statement.Fragment
}

/**
 * The scoping statement: the user's RLS scope for the rest of the transaction, plus `first`. Also the
 * first statement of a run's `pipelinedTransaction`s.
 */
export const scopeStatement = (sql: SqlClient.SqlClient, userId: string, first: ScopeStatement = {}) =>
  sql<Record<string, unknown>>`${first.with === undefined ? sql`` : sql`WITH ${first.with} `}SELECT set_config('app.current_user_id', ${userId}, true), set_config('app.current_user_space_ids', '', true)${first.columns ?? sql``}`

/**
 * withUserScope whose first statement also does `first` (a claim, a lock); the body gets that
 * statement's one row. Always a new transaction.
 */
export const withUserScopeFirst = <A, E, R>(
  userId: string,
  first: ScopeStatement,
  body: (row: Readonly<Record<string, unknown>>, sql: SqlClient.SqlClient) => Effect.Effect<A, E, R>,
): Effect.Effect<A, E | SqlError, R | SqlClient.SqlClient> =>
  Effect.flatMap(SqlClient.SqlClient, (sql) => {
    const scoped = sql
      .withTransaction(
        Effect.flatMap(
          scopeStatement(sql, userId, first),
          (rows) => body(rows[0] ?? {}, sql),
        ),
      )
      .pipe(transactionLossAsError, Effect.locally(scopedUser, userId))
    return Effect.flatMap(
      Effect.all([FiberRef.get(scopedUser), Effect.serviceOption(SqlClient.TransactionConnection)]),
      ([outer, connection]) =>
        // Inside another user's transaction the inner scope is a savepoint, and a released
        // savepoint keeps its transaction-local set_config: without this, the outer transaction
        // would go on as the inner user. Put the outer user's scope back, whatever the inner ended with.
        outer === null || outer === userId || Option.isNone(connection)
          ? scoped
          : Effect.onExit(scoped, () =>
              sql`SELECT set_config('app.current_user_id', ${outer}, true), set_config('app.current_user_space_ids', '', true)`.pipe(
                Effect.orDie,
              ),
            ),
    )
  })

/** An advisory lock taken in the scoping statement: `withUserScopeFirst(userId, advisoryLock(sql, key), …)`. */
export const advisoryLock = (sql: SqlClient.SqlClient, key: string): ScopeStatement => ({
  columns: sql`, pg_advisory_xact_lock(hashtextextended(${key}, 0))`,
})

export const withUserScope = <A, E, R>(
  userId: string,
  body: (sql: SqlClient.SqlClient) => Effect.Effect<A, E, R>,
): Effect.Effect<A, E | SqlError, R | SqlClient.SqlClient> =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    Effect.flatMap(
      Effect.all([FiberRef.get(scopedUser), Effect.serviceOption(SqlClient.TransactionConnection)]),
      ([current, connection]) =>
        // Already inside this user's scope (its transaction): join it.
        current === userId && Option.isSome(connection)
          ? body(sql)
          : withUserScopeFirst(userId, {}, (_row, s) => body(s)),
    ),
  )
