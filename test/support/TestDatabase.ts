/**
 * The database a test file runs against, as production runs: the runner connects as a role with
 * neither SUPERUSER nor BYPASSRLS, prepared only by sql/runner-role.sql.
 *
 * - TEST_DATABASE_URL set (CI): an owner's URL on a real server. Each layer instance creates its own
 *   database and login role, and drops both when its scope closes.
 * - unset (a fresh machine): embedded PGlite behind its socket server, acting as the runner role.
 */
import { PgClient } from "@effect/sql-pg"
import { Context, Effect, Layer, type Redacted, type Scope } from "effect"
import { makeEmbeddedPostgres } from "../../src/layers/EmbeddedPostgres.js"
import { provisionServerDatabase } from "./provisionServerDatabase.js"

export interface TestDatabaseShape {
  readonly kind: "server" | "pglite"
  readonly runnerRole: string
  readonly runnerUrl: Redacted.Redacted<string>
  /** Run SQL as the database owner (the sync server's side), outside any RLS scope. */
  readonly ownerQuery: (text: string, params?: ReadonlyArray<unknown>) => Promise<ReadonlyArray<Record<string, unknown>>>
}

export class TestDatabase extends Context.Tag("test/TestDatabase")<TestDatabase, TestDatabaseShape>() {}

const serverDatabase = (ownerUrl: string) =>
  Effect.map(provisionServerDatabase(ownerUrl, { prefix: "mana_ai_test", ownerPoolMax: 2 }), (db) => ({
    kind: "server" as const,
    runnerRole: db.runnerRole,
    runnerUrl: db.runnerUrl,
    ownerQuery: async (text: string, params?: ReadonlyArray<unknown>) =>
      (await db.owner.query(text, params as Array<unknown>)).rows,
  }))

const pgliteDatabase = Effect.gen(function* () {
  const embedded = yield* makeEmbeddedPostgres({ maxConnections: 24 }).pipe(Effect.orDie)
  const role = embedded.runnerRole
  return {
    kind: "pglite" as const,
    runnerRole: role,
    runnerUrl: embedded.url,
    ownerQuery: async (text: string, params?: ReadonlyArray<unknown>) => {
      // One shared backend: act as the owner for this statement only.
      await embedded.db.exec("RESET ROLE")
      try {
        if (params === undefined || params.length === 0) {
          // exec runs multi-statement scripts (query would refuse them); the last result's rows are returned.
          const results = await embedded.db.exec(text)
          return (results.at(-1)?.rows ?? []) as ReadonlyArray<Record<string, unknown>>
        }
        return (await embedded.db.query<Record<string, unknown>>(text, params as Array<unknown>)).rows
      } finally {
        await embedded.db.exec(`SET ROLE ${role}`)
      }
    },
  }
})

export const TestDatabaseLive: Layer.Layer<TestDatabase> = Layer.scoped(
  TestDatabase,
  Effect.suspend((): Effect.Effect<TestDatabaseShape, never, Scope.Scope> => {
    const url = process.env.TEST_DATABASE_URL
    return url ? serverDatabase(url) : pgliteDatabase
  }),
)

/** The runner's own connection pool (SqlClient + PgClient), as the runner role. */
export const RunnerSqlLive = (maxConnections = 8) =>
  Layer.unwrapEffect(
    Effect.map(TestDatabase, (db) => PgClient.layer({ url: db.runnerUrl, maxConnections })),
  )
