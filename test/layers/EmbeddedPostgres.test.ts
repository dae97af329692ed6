/**
 * pglite-socket queues each protocol message on its own and keeps one client's messages together
 * only inside a transaction. The extended protocol (Parse/Bind/Execute … Sync) outside one would
 * interleave between clients on the single backend: a Bind could meet another client's Parse.
 */
import { SqlClient } from "@effect/sql"
import type { SqlError } from "@effect/sql/SqlError"
import { PgClient } from "@effect/sql-pg"
import { expect, it } from "@effect/vitest"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Effect, Layer } from "effect"
import { makeEmbeddedPostgres } from "../../src/layers/EmbeddedPostgres.js"
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
