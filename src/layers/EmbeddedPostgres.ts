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
import { type SyncGeneration, generationOf } from "../domain/eventLog.js"
import { renderPsqlScript, sqlFile, syncChangesSql } from "./psqlScript.js"

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
  /** Which sync_changes to create (SPEC §13): today's (field_meta) unless a test asks for the seed's. */
  readonly generation?: SyncGeneration
}

export interface EmbeddedPostgres {
  readonly url: Redacted.Redacted<string>
  /** The URL without secrets, for printing (PGlite needs no password). */
  readonly displayUrl: string
  readonly db: PGlite
  readonly runnerRole: string
}

export const DEFAULT_RUNNER_ROLE = "mana_ai_runner"

/** Extended-protocol messages that leave a sequence open until the client's Sync: Parse, Bind, Describe, Execute, Close, Flush. */
const OPENS_SEQUENCE = new Set([0x50, 0x42, 0x44, 0x45, 0x43, 0x48])
const SYNC = 0x53

/**
 * pglite-socket queues every protocol message on its own and keeps one client's messages together
 * only while the backend is in a transaction. Outside one, a client's Parse…Bind…Execute…Sync could
 * interleave with another client's messages on the single backend (another's simple query drops the
 * unnamed statement: "unnamed prepared statement does not exist", or worse, a Bind meets another
 * client's Parse). Reporting "in a transaction" from a client's first extended message until its
 * Sync makes the socket server finish that client's sequence before it serves anyone else.
 */
export const serialiseExtendedProtocol = (db: PGlite): PGlite => {
  let sequenceOpen = false
  return new Proxy(db, {
    get(target, property, receiver) {
      if (property === "isInTransaction") return () => sequenceOpen || target.isInTransaction()
      if (property === "execProtocolRawStream") {
        return async (message: Uint8Array, options?: unknown) => {
          const type = message[0]
          try {
            return await target.execProtocolRawStream(message, options as never)
          } finally {
            if (type !== undefined && OPENS_SEQUENCE.has(type)) sequenceOpen = true
            else if (type === SYNC || type === 0x51 /* simple Query */ || type === 0x58 /* Terminate */) sequenceOpen = false
          }
        }
      }
      if (property === "exec") {
        // The socket server's ROLLBACK after a client vanished mid-sequence also ends the sequence.
        return (query: string, options?: unknown) => {
          sequenceOpen = false
          return target.exec(query, options as never)
        }
      }
      const value = Reflect.get(target, property, receiver)
      return typeof value === "function" ? value.bind(target) : value
    },
  })
}

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
      // A data directory from an earlier version holds the seed's table: keep serving what is there
      // (its DDL is idempotent); a new one gets the generation asked for, today's by default.
      const existing = await db.query<{ name: string }>(
        `SELECT attname::text AS name FROM pg_attribute
         WHERE attrelid = to_regclass('sync_changes') AND attnum > 0 AND NOT attisdropped
           AND attname IN ('field_meta', 'field_timestamps')`,
      )
      await db.exec(syncChangesSql(generationOf(existing.rows.map((r) => r.name)) ?? options.generation))
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
          db: serialiseExtendedProtocol(db),
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
