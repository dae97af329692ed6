/**
 * pglite-socket queues each protocol message on its own and keeps one client's messages together
 * only inside a transaction. The extended protocol (Parse/Bind/Execute … Sync) outside one would
 * interleave between clients on the single backend: a Bind could meet another client's Parse.
 */
import { SqlClient } from "@effect/sql"
import type { SqlError } from "@effect/sql/SqlError"
import { PgClient } from "@effect/sql-pg"
import { describe, expect, it } from "@effect/vitest"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Effect, Layer, Option, Redacted } from "effect"
import pg from "pg"
import { makeEmbeddedPostgres, refusedStatement } from "../../src/layers/EmbeddedPostgres.js"
import { detectEventLogSchema } from "../../src/services/EventLogSchema.js"

const Pool = Layer.unwrapScoped(
  Effect.map(makeEmbeddedPostgres({ maxConnections: 12 }), (pg) => PgClient.layer({ url: pg.url, maxConnections: 8 })),
).pipe(Layer.orDie)

it.layer(Pool, { timeout: 60_000 })("embedded Postgres", (it) => {
  it.effect("concurrent parameterised statements from a pool each get their own answer", () =>
    Effect.gen(function* () {
      const sql = yield* SqlClient.SqlClient
      const results = yield* Effect.forEach(
        Array.from({ length: 300 }, (_, i) => i),
        (i): Effect.Effect<unknown, SqlError> =>
          i % 3 === 0
            ? sql<{ n: number }>`SELECT ${i}::int AS n`.pipe(Effect.map((rows) => rows[0]?.n))
            : i % 3 === 1
              ? sql<{ n: string }>`SELECT ${`s${i}`}::text AS n, ${i}::int AS m`.pipe(Effect.map((rows) => rows[0]?.n))
              : // BEGIN and COMMIT go as simple queries, which drop the backend's unnamed statement.
                sql.withTransaction(sql<{ n: number }>`SELECT ${i}::int AS n`).pipe(Effect.map((rows) => rows[0]?.n)),
        { concurrency: 32 },
      )
      expect(results).toEqual(Array.from({ length: 300 }, (_, i) => (i % 3 === 1 ? `s${i}` : i)))
    }))

  it.effect("creates today's generation of sync_changes (SPEC §13): field_meta, origin, space_id, the space policy and index", () =>
    Effect.gen(function* () {
      const sql = yield* SqlClient.SqlClient
      expect(yield* detectEventLogSchema).toEqual({ generation: "field_meta", timeColumn: "field_meta" })
      const columns = yield* sql<{ name: string }>`
        SELECT column_name AS name FROM information_schema.columns WHERE table_name = 'sync_changes' ORDER BY ordinal_position`
      expect(columns.map((c) => c.name)).toEqual([
        "id", "app_id", "table_name", "record_id", "user_id", "op", "data", "field_meta", "client_id", "created_at",
        "schema_version", "actor", "origin", "space_id",
      ])
      const policies = yield* sql<{ name: string }>`
        SELECT policyname AS name FROM pg_policies WHERE tablename = 'sync_changes' ORDER BY policyname`
      expect(policies.map((p) => p.name)).toEqual([
        "mana_ai_runner_read_agents", "mana_ai_runner_read_missions", "sync_changes_space_member_read", "sync_changes_user_isolation",
      ])
      const indexes = yield* sql<{ name: string }>`SELECT indexname AS name FROM pg_indexes WHERE tablename = 'sync_changes'`
      expect(indexes.map((i) => i.name)).toContain("sync_changes_user_space_app_created_idx")
    }))
})

it.effect("a data directory holding the seed's table keeps it: the start serves that generation instead of failing on today's DDL", () =>
  Effect.gen(function* () {
    const dir = mkdtempSync(join(tmpdir(), "mana-ai-pglite-"))
    yield* Effect.addFinalizer(() => Effect.sync(() => rmSync(dir, { recursive: true, force: true })))
    // An earlier version's embedded database: the seed's sync_changes.
    yield* Effect.scoped(makeEmbeddedPostgres({ dataDir: dir, maxConnections: 4, generation: "field_timestamps" }))
    const reopened = yield* makeEmbeddedPostgres({ dataDir: dir, maxConnections: 4 })
    const generation = yield* detectEventLogSchema.pipe(
      Effect.provide(PgClient.layer({ url: reopened.url, maxConnections: 2 })),
    )
    expect(generation.generation).toBe("field_timestamps")
  }).pipe(Effect.scoped, Effect.orDie),
  60_000,
)

// ---------------------------------------------------------------- the runner role holds (SPEC §11)

const ESCAPES = [
  "RESET ROLE",
  "SET ROLE postgres",
  "SET SESSION AUTHORIZATION postgres",
  "RESET ALL",
  "SET LOCAL ROLE postgres",
  'SET "role" TO postgres',
  "SET/**/ROLE postgres",
  "DISCARD ALL",
  "SELECT set_config('role', 'postgres', false)",
  "DO $$BEGIN EXECUTE 'RESET ' || 'RO' || 'LE'; END$$",
  "SELECT 1; RESET ROLE",
] as const

/** A psql-like client on the printed URL (the user in it is ignored by the socket server). */
const connect = (url: Redacted.Redacted<string>) =>
  Effect.acquireRelease(
    Effect.promise(async () => {
      const client = new pg.Client({ connectionString: Redacted.value(url) })
      await client.connect()
      return client
    }),
    (client) => Effect.promise(() => client.end()).pipe(Effect.ignore),
  )

const attempt = (client: pg.Client, text: string, values?: Array<unknown>) =>
  Effect.promise(() =>
    client.query(text, values).then(
      () => "ran",
      (e: Error) => e.message,
    ),
  )

const whoAndWhat = (client: pg.Client) =>
  Effect.promise(async () => ({
    role: (await client.query("SELECT current_user AS u")).rows[0]?.u,
    // The runner's narrow read path covers mission rows only: another user's note is invisible to it.
    notesVisible: (await client.query("SELECT count(*)::int AS n FROM sync_changes WHERE app_id = 'notes'")).rows[0]?.n,
  }))

it.scoped("no client on the embedded URL can leave the runner role, by any statement, for itself or anyone else", () =>
  Effect.gen(function* () {
    const embedded = yield* makeEmbeddedPostgres({ maxConnections: 6 }).pipe(Effect.orDie)
    const psql = yield* connect(embedded.url)
    const pool = yield* connect(embedded.url)
    yield* Effect.promise(() =>
      psql.query(`BEGIN; SELECT set_config('app.current_user_id', 'zoe', true);
        INSERT INTO sync_changes (app_id, table_name, record_id, user_id, op, data, client_id)
        VALUES ('notes', 'notes', 'n1', 'zoe', 'insert', '{"title":"private"}', 'device'); COMMIT`),
    )
    const runner = { role: embedded.runnerRole, notesVisible: 0 }
    expect(yield* whoAndWhat(psql)).toEqual(runner)
    for (const text of ESCAPES) {
      expect([text, yield* attempt(psql, text)]).toEqual([text, expect.stringContaining("refused")])
      expect([text, yield* whoAndWhat(psql)]).toEqual([text, runner])
      expect([text, yield* whoAndWhat(pool)]).toEqual([text, runner])
    }
    // The extended protocol (a parameterised statement) is looked at too.
    expect(yield* attempt(psql, "SELECT set_config($1, $2, false)", ["role", "postgres"])).toContain("refused")
    expect(yield* whoAndWhat(pool)).toEqual(runner)
    // The runner's own statements still run: its scoped set_config, ON CONFLICT … DO NOTHING.
    expect(yield* attempt(pool, "SELECT set_config('app.current_user_id', $1, false)", ["zoe"])).toBe("ran")
    expect(yield* attempt(pool, "CREATE TABLE IF NOT EXISTS mana_ai.probe (x int PRIMARY KEY)")).toBe("ran")
    expect(yield* attempt(pool, "INSERT INTO mana_ai.probe VALUES (1) ON CONFLICT (x) DO NOTHING")).toBe("ran")
  }),
  // A PGlite of its own: its start-up alone took over 30 s on a machine busy with two suites.
  180_000,
)

it.scoped("the owner's client acts as the owner only inside its own transaction, which no runner statement enters", () =>
  Effect.gen(function* () {
    const embedded = yield* makeEmbeddedPostgres({ maxConnections: 6, ownerClient: true }).pipe(Effect.orDie)
    expect(embedded.displayUrl).not.toContain("owner_")
    const owner = yield* connect(Option.getOrThrow(embedded.ownerUrl))
    const runner = yield* connect(embedded.url)
    // A runner transaction is open: the owner's statement waits for it instead of running inside it.
    yield* Effect.promise(() => runner.query("BEGIN"))
    let ownerDone = false
    const ownerWork = owner
      .query("BEGIN; SET LOCAL ROLE postgres; SELECT current_user AS u; COMMIT")
      .then((results) => {
        ownerDone = true
        return (results as unknown as Array<pg.QueryResult>)[2]?.rows[0]?.u
      })
    yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 300)))
    expect(ownerDone).toBe(false)
    expect((yield* Effect.promise(() => runner.query("SELECT current_user AS u"))).rows[0]?.u).toBe(embedded.runnerRole)
    yield* Effect.promise(() => runner.query("COMMIT"))
    expect(yield* Effect.promise(() => ownerWork)).toBe("postgres")
    // Its transaction over, the shared session is the runner's again.
    expect((yield* Effect.promise(() => runner.query("SELECT current_user AS u"))).rows[0]?.u).toBe(embedded.runnerRole)
  }),
  180_000,
)

describe("statements a non-owner client may not send", () => {
  it.each([
    ...ESCAPES,
    "select SET_CONFIG('ro' || 'le', 'postgres', false)",
    "SET U&\"\\0072ole\" TO postgres",
    "CREATE FUNCTION mana_ai.f() RETURNS void LANGUAGE sql AS E'SET R\\x4fLE postgres'",
    "CREATE FUNCTION mana_ai.f() RETURNS void LANGUAGE plpgsql AS $$BEGIN EXECUTE 'x'; END$$",
  ])("refuses %s", (text) => {
    expect(refusedStatement(text)).not.toBeNull()
  })

  it.each([
    "SELECT set_config('app.current_user_id', $1, true)",
    "INSERT INTO mana_ai.applied_changes (change_id) VALUES ($1) ON CONFLICT (change_id) DO NOTHING",
    "INSERT INTO t (a) VALUES (1) ON CONFLICT (a) DO UPDATE SET a = EXCLUDED.a",
    "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
    "SELECT count(*) FROM sync_changes WHERE op = 'delete'",
  ])("lets %s through", (text) => {
    expect(refusedStatement(text)).toBeNull()
  })
})
