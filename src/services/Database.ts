/**
 * The Postgres connection pool (SPEC §7, §10): `@effect/sql-pg`'s PgClient as the runner's role,
 * retried with backoff while the server is not yet reachable at start, logged without secrets.
 */
import * as Reactivity from "@effect/experimental/Reactivity"
import * as SqlClient from "@effect/sql/SqlClient"
import { SqlError } from "@effect/sql/SqlError"
import * as PgClient from "@effect/sql-pg/PgClient"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import * as Schedule from "effect/Schedule"
import Pg from "pg"
import { queueQueries } from "./clientQueryQueue.js"

/** `postgres://user@host:port/db` — never the password, never query parameters (they may hold one). */
export const describeDatabaseUrl = (url: Redacted.Redacted<string>): string => {
  try {
    const u = new URL(Redacted.value(url))
    const user = u.username ? `${decodeURIComponent(u.username)}@` : ""
    return `${u.protocol}//${user}${u.host}${u.pathname}`
  } catch {
    return "<unparseable database URL>"
  }
}

/** Connection attempts at start: exponential from 500 ms, capped at 5 s, for `retryFor` (about a minute). */
const startRetry = (retryFor: Duration.DurationInput) =>
  Schedule.exponential("500 millis").pipe(Schedule.either(Schedule.spaced("5 seconds")), Schedule.upTo(retryFor))

/** Postgres error class 28 (bad credentials) and 3D000 (no such database) will not heal by waiting. */
const isPermanent = (error: SqlError): boolean => {
  const code = (error.cause as { code?: unknown } | undefined)?.code
  return typeof code === "string" && (code.startsWith("28") || code === "3D000")
}

/** The error and its cause's message, enough to tell "refused" from "auth failed"; pg never puts the password there. */
const causeText = (error: SqlError): string => {
  const cause = error.cause
  const inner = cause instanceof Error ? cause.message : typeof cause === "string" ? cause : ""
  return inner ? `${error.message}: ${inner}` : error.message
}

/** The pg pools under the clients `pgClientLayer` built, so a run's transactions can take a connection directly. */
const pools = new WeakMap<SqlClient.SqlClient, { readonly pool: Pg.Pool; readonly preparedStatements: boolean }>()

/**
 * The pg pool under `sql` when `pgClientLayer` built it (the process's pool, `databaseLayerFromUrl`);
 * undefined for any other client. `pipelinedTransaction` takes its connection from it directly (issue 16).
 */
export const pgPoolOf = (sql: SqlClient.SqlClient): Pg.Pool | undefined => pools.get(sql)?.pool

/** Whether `pipelinedTransaction` may prepare statements on `sql`'s pool (`DB_PREPARED_STATEMENTS`). */
export const preparedStatementsOn = (sql: SqlClient.SqlClient): boolean => pools.get(sql)?.preparedStatements ?? false

export interface PgClientLayerOptions {
  readonly url: Redacted.Redacted<string>
  readonly maxConnections: number
  readonly applicationName?: string
  readonly connectTimeout?: Duration.DurationInput
  /** Named prepared statements for `pipelinedTransaction` (default true; `DB_PREPARED_STATEMENTS`). */
  readonly preparedStatements?: boolean
}

/**
 * `PgClient.layer` as `@effect/sql-pg` builds it (the same pool options, the first connection within the
 * connect timeout, the pool ended with the scope), on a pool this module keeps (`pgPoolOf`).
 */
export const pgClientLayer = (options: PgClientLayerOptions): Layer.Layer<PgClient.PgClient | SqlClient.SqlClient, SqlError> => {
  const connectTimeout = Duration.decode(options.connectTimeout ?? Duration.seconds(5))
  return Layer.scopedContext(
    Effect.gen(function* () {
      const pool = new Pg.Pool({
        connectionString: Redacted.value(options.url),
        max: options.maxConnections,
        connectionTimeoutMillis: Duration.toMillis(connectTimeout),
        application_name: options.applicationName ?? "@effect/sql-pg",
      })
      pool.on("error", () => {})
      // Statements sent before the previous one answered wait in our queue, not pg's (clientQueryQueue.ts).
      pool.on("connect", queueQueries)
      // As PgClient.make: the pool is ended with the scope once its first connection answered.
      yield* Effect.acquireRelease(
        Effect.tryPromise({
          try: () => pool.query("SELECT 1"),
          catch: (cause) => new SqlError({ cause, message: "PgClient: Failed to connect" }),
        }),
        () => Effect.promise(() => pool.end()).pipe(Effect.interruptible, Effect.timeoutOption(1000)),
      ).pipe(
        Effect.timeoutFail({
          duration: connectTimeout,
          onTimeout: () => new SqlError({ cause: new Error("Connection timed out"), message: "PgClient: Connection timed out" }),
        }),
      )
      const client = yield* PgClient.fromPool({ acquire: Effect.succeed(pool) })
      pools.set(client, { pool, preparedStatements: options.preparedStatements ?? true })
      return Context.make(PgClient.PgClient, client).pipe(Context.add(SqlClient.SqlClient, client))
    }),
  ).pipe(Layer.provide(Reactivity.layer))
}

/** SqlClient + PgClient on `url` with at most `poolMax` connections; retries the first connect on SqlError. */
export const databaseLayerFromUrl = (
  url: Redacted.Redacted<string>,
  poolMax: number,
  options: { readonly retryFor?: Duration.DurationInput; readonly preparedStatements?: boolean } = {},
): Layer.Layer<PgClient.PgClient | SqlClient.SqlClient, SqlError> => {
  const where = describeDatabaseUrl(url)
  const attempt = pgClientLayer({
    url,
    maxConnections: poolMax,
    applicationName: "mana-ai",
    connectTimeout: Duration.seconds(10),
    preparedStatements: options.preparedStatements ?? true,
  }).pipe(
    Layer.tapError((error) =>
      isPermanent(error)
        ? Effect.logError(`Postgres at ${where} refused the runner: ${causeText(error)}`)
        : Effect.logWarning(`Postgres at ${where} is not reachable yet: ${causeText(error)}`),
    ),
  )
  return Layer.unwrapEffect(
    Effect.as(
      Effect.logInfo(`Connecting to Postgres at ${where} (pool of ${poolMax})`),
      Layer.retry(attempt, startRetry(options.retryFor ?? "60 seconds").pipe(Schedule.whileInput((error: SqlError) => !isPermanent(error)))).pipe(
        Layer.tap(() => Effect.logInfo(`Connected to Postgres at ${where}`)),
      ),
    ),
  )
}
