/**
 * Embedded Postgres (SPEC §11): PGlite served on a loopback port through pglite-socket, so the
 * runner uses the same `@effect/sql-pg` path as against a real server.
 *
 * pglite-socket ignores the user in the URL and shares session state between clients, and the
 * backend's own user is a superuser that bypasses RLS. So after the owner's setup we `SET ROLE`
 * the single backend to the runner role: every client then acts as NOSUPERUSER NOBYPASSRLS.
 */
import { PGlite } from "@electric-sql/pglite"
import { PGLiteSocketServer } from "@electric-sql/pglite-socket"
import { Data, Effect, Redacted, type Scope } from "effect"
import { renderPsqlScript, sqlFile } from "./psqlScript.js"

export class EmbeddedPostgresError extends Data.TaggedError("EmbeddedPostgresError")<{
  readonly message: string
  readonly cause?: unknown
}> {}

export interface EmbeddedPostgresOptions {
  /** Directory to persist into; undefined = in memory. */
  readonly dataDir?: string | undefined
  readonly runnerRole?: string
  /** Client connections the socket server accepts (pool size plus a few for psql). */
  readonly maxConnections: number
  readonly port?: number
}

export interface EmbeddedPostgres {
  readonly url: Redacted.Redacted<string>
  /** The URL without secrets, for printing (PGlite needs no password). */
  readonly displayUrl: string
  readonly db: PGlite
  readonly runnerRole: string
}

export const DEFAULT_RUNNER_ROLE = "mana_ai_runner"

const tryPromise = <A>(message: string, f: () => Promise<A>) =>
  Effect.tryPromise({ try: f, catch: (cause) => new EmbeddedPostgresError({ message, cause }) })

export const makeEmbeddedPostgres = (
  options: EmbeddedPostgresOptions,
): Effect.Effect<EmbeddedPostgres, EmbeddedPostgresError, Scope.Scope> =>
  Effect.gen(function* () {
    const runnerRole = options.runnerRole ?? DEFAULT_RUNNER_ROLE
    const db = yield* Effect.acquireRelease(
      tryPromise("could not open PGlite", () => PGlite.create(options.dataDir ?? "memory://")),
      (db) => Effect.promise(() => db.close()).pipe(Effect.ignore),
    )
    yield* tryPromise("could not prepare the embedded database", async () => {
      await db.exec(sqlFile("sync-changes.sql"))
      const exists = await db.query("SELECT 1 FROM pg_roles WHERE rolname = $1", [runnerRole])
      if (exists.rows.length === 0) {
        await db.exec(`CREATE ROLE "${runnerRole.replaceAll('"', '""')}" NOLOGIN NOSUPERUSER NOBYPASSRLS`)
      }
      await db.exec(renderPsqlScript(sqlFile("runner-role.sql"), { runner_role: runnerRole }))
      await db.exec(`SET ROLE "${runnerRole.replaceAll('"', '""')}"`)
    })
    const server = yield* Effect.acquireRelease(
      Effect.gen(function* () {
        const server = new PGLiteSocketServer({
          db,
          host: "127.0.0.1",
          port: options.port ?? 0,
          maxConnections: options.maxConnections,
        })
        yield* tryPromise("could not start the PGlite socket server", () => server.start())
        return server
      }),
      (server) => Effect.promise(() => server.stop()).pipe(Effect.ignore),
    )
    const conn = server.getServerConn() // "127.0.0.1:port"
    const displayUrl = `postgres://${runnerRole}@${conn}/postgres?sslmode=disable`
    return { url: Redacted.make(displayUrl), displayUrl, db, runnerRole }
  })
