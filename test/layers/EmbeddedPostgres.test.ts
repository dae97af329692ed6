/**
 * pglite-socket queues each protocol message on its own and keeps one client's messages together
 * only inside a transaction. The extended protocol (Parse/Bind/Execute … Sync) outside one would
 * interleave between clients on the single backend: a Bind could meet another client's Parse.
 */
import { SqlClient } from "@effect/sql"
import type { SqlError } from "@effect/sql/SqlError"
import { PgClient } from "@effect/sql-pg"
import { expect, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { makeEmbeddedPostgres } from "../../src/layers/EmbeddedPostgres.js"

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
})
