/**
 * The Postgres connection pool (SPEC §7, §10): `@effect/sql-pg`'s PgClient as the runner's role,
 * retried with backoff while the server is not yet reachable at start, logged without secrets.
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import * as PgClient from "@effect/sql-pg/PgClient"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import * as Schedule from "effect/Schedule"

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

/** SqlClient + PgClient on `url` with at most `poolMax` connections; retries the first connect on SqlError. */
export const databaseLayerFromUrl = (
  url: Redacted.Redacted<string>,
  poolMax: number,
  options: { readonly retryFor?: Duration.DurationInput } = {},
): Layer.Layer<PgClient.PgClient | SqlClient.SqlClient, SqlError> => {
  const where = describeDatabaseUrl(url)
  const attempt = PgClient.layer({
    url,
    maxConnections: poolMax,
    applicationName: "mana-ai",
    connectTimeout: Duration.seconds(10),
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
