/**
 * Embedded Postgres (SPEC §11): PGlite served on a loopback port through pglite-socket, so the
 * runner uses the same `@effect/sql-pg` path as against a real server.
 *
 * pglite-socket ignores the user in the URL and shares session state between clients, and the
 * backend's own user is a superuser that bypasses RLS. So after the owner's setup we `SET ROLE`
 * the single backend to the runner role: every client then acts as NOSUPERUSER NOBYPASSRLS.
 * Since the backend's session user is still a superuser, a client could leave that role (`RESET
 * ROLE`, `SET ROLE postgres`, …) for everyone at once: `guardClients` refuses every statement that
 * could, from every client but the owner's (tests only, see `ownerClient`).
 */
import { PGlite } from "@electric-sql/pglite"
import { PGLiteSocketServer } from "@electric-sql/pglite-socket"
import { randomBytes } from "node:crypto"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import type * as Scope from "effect/Scope"
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
  /**
   * Tests only: also accept one kind of client that may act as the database owner, identified by a
   * random user name in its startup message (`ownerUrl`, never printed). Its statements still go
   * through the socket server's queue, so they never run between another client's messages.
   */
  readonly ownerClient?: boolean
}

export interface EmbeddedPostgres {
  readonly url: Redacted.Redacted<string>
  /** The URL without secrets, for printing (PGlite needs no password). */
  readonly displayUrl: string
  readonly db: PGlite
  readonly runnerRole: string
  /** With `ownerClient`: the owner's URL (its user name is the secret); none otherwise. */
  readonly ownerUrl: Option.Option<Redacted.Redacted<string>>
}

const DEFAULT_RUNNER_ROLE = "mana_ai_runner"

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
const serialiseExtendedProtocol = (db: PGlite): PGlite => {
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

/** Statement separators as Postgres reads them: blanks and comments. */
const SEP = String.raw`(?:\s|/\*[\s\S]*?\*/|--[^\n]*(?:\n|$))*`

/**
 * What a client other than the owner may not send, and why: anything that could change the shared
 * session's role or authorisation, directly or through dynamic or escaped SQL (a conservative list:
 * the runner's own statements use none of it; `set_config` only on the runner's `app.` settings).
 */
const REFUSED: ReadonlyArray<readonly [RegExp, string]> = [
  [/\b(role|authorization|session_authorization)\b/i, "role or session authorization"],
  [new RegExp(String.raw`\breset${SEP}all\b`, "i"), "RESET ALL"],
  [/\bdiscard\b/i, "DISCARD"],
  [/set_config(?!\s*\(\s*'app\.)/i, "set_config outside the app.* settings"],
  [new RegExp(String.raw`\bdo${SEP}(\$|'|e'|u&|language\b)`, "i"), "DO block"],
  [/\bexecute\b/i, "dynamic SQL"],
  [/u&/i, "Unicode escapes"],
  [/(^|[^a-z0-9_])e'/i, "escape strings"],
]

/** Why a non-owner client's statement text is refused, or null when it may run. */
export const refusedStatement = (text: string): string | null => {
  for (const [pattern, reason] of REFUSED) if (pattern.test(text)) return reason
  return null
}

/**
 * What the backend runs instead of a refused statement: it fails at Parse time with an error that
 * says so ("relation … does not exist"). A constant, so no client text ever reaches the backend.
 */
const REFUSAL = 'SELECT * FROM "refused: no role or session changes on the embedded database"'

const encoder = new TextEncoder()
const decoder = new TextDecoder()

const cstringAt = (bytes: Uint8Array, offset: number): { readonly text: string; readonly next: number } => {
  let end = offset
  while (end < bytes.length && bytes[end] !== 0) end++
  return { text: decoder.decode(bytes.subarray(offset, end)), next: end + 1 }
}

const message = (type: number, body: ReadonlyArray<Uint8Array>): Uint8Array => {
  const length = 4 + body.reduce((n, b) => n + b.length, 0)
  const out = new Uint8Array(1 + length)
  out[0] = type
  new DataView(out.buffer).setInt32(1, length)
  let at = 5
  for (const b of body) {
    out.set(b, at)
    at += b.length
  }
  return out
}

const cstring = (text: string) => encoder.encode(`${text}\0`)
const PROTOCOL_3 = 196608
const QUERY = 0x51
const PARSE = 0x50
const FUNCTION_CALL = 0x46

/**
 * Looks at each client's messages before the single backend runs them: the startup message says
 * who the client is (the owner by its secret user name), and a Query, Parse or FunctionCall from
 * anyone else that could leave the runner role is replaced by a statement the backend refuses, so
 * the client gets an ordinary error and the shared session keeps the runner role.
 */
const guardClients = (server: PGLiteSocketServer, ownerUser: string | null): void => {
  const queue = (server as unknown as { queryQueue: { enqueue: (id: number, m: Uint8Array, onData: unknown) => Promise<number> } })
    .queryQueue
  const owners = new Set<number>()
  const enqueue = queue.enqueue.bind(queue)
  const guard = (handlerId: number, m: Uint8Array): Uint8Array => {
    if (m.length >= 8 && new DataView(m.buffer, m.byteOffset).getInt32(4) === PROTOCOL_3) {
      let at = 8
      while (at < m.length && m[at] !== 0) {
        const key = cstringAt(m, at)
        const value = cstringAt(m, key.next)
        if (key.text === "user" && ownerUser !== null && value.text === ownerUser) owners.add(handlerId)
        at = value.next
      }
      return m
    }
    if (owners.has(handlerId)) return m
    const type = m[0]
    if (type === FUNCTION_CALL) return message(QUERY, [cstring(REFUSAL)])
    if (type === QUERY) {
      return refusedStatement(cstringAt(m, 5).text) === null ? m : message(QUERY, [cstring(REFUSAL)])
    }
    if (type === PARSE) {
      const name = cstringAt(m, 5)
      const refused = refusedStatement(cstringAt(m, name.next).text) !== null
      return refused ? message(PARSE, [cstring(name.text), cstring(REFUSAL), new Uint8Array(2)]) : m
    }
    return m
  }
  queue.enqueue = (handlerId, m, onData) => enqueue(handlerId, guard(handlerId, m), onData)
}

const tryPromise = <A>(message: string, f: () => Promise<A>) =>
  Effect.tryPromise({ try: f, catch: (cause) => new EmbeddedPostgresError({ message, cause }) })

export const makeEmbeddedPostgres = (
  options: EmbeddedPostgresOptions,
): Effect.Effect<EmbeddedPostgres, EmbeddedPostgresError, Scope.Scope> =>
  Effect.gen(function* () {
    const runnerRole = options.runnerRole ?? DEFAULT_RUNNER_ROLE
    const ownerUser = options.ownerClient === true ? `owner_${randomBytes(16).toString("hex")}` : null
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
        guardClients(server, ownerUser)
        yield* tryPromise("could not start the PGlite socket server", () => server.start())
        return server
      }),
      (server) => Effect.promise(() => server.stop()).pipe(Effect.ignore),
    )
    const conn = server.getServerConn() // "127.0.0.1:port"
    const displayUrl = `postgres://${runnerRole}@${conn}/postgres?sslmode=disable`
    const ownerUrl =
      ownerUser === null ? Option.none() : Option.some(Redacted.make(`postgres://${ownerUser}@${conn}/postgres?sslmode=disable`))
    return { url: Redacted.make(displayUrl), displayUrl, db, runnerRole, ownerUrl }
  })
