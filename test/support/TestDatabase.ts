/**
 * The database a test file runs against, as production runs: the runner connects as a role with
 * neither SUPERUSER nor BYPASSRLS, prepared only by sql/runner-role.sql.
 *
 * - TEST_DATABASE_URL set (CI): an owner's URL on a real server. Each layer instance creates its own
 *   database and login role, and drops both when its scope closes.
 * - unset (a fresh machine): embedded PGlite behind its socket server, acting as the runner role.
 */
import { PgClient } from "@effect/sql-pg"
import { Context, Effect, Layer, Redacted, type Scope } from "effect"
import pg from "pg"
import { makeEmbeddedPostgres } from "../../src/layers/EmbeddedPostgres.js"
import { renderPsqlScript, sqlFile } from "../../src/layers/psqlScript.js"

export interface TestDatabaseShape {
  readonly kind: "server" | "pglite"
  readonly runnerRole: string
  readonly runnerUrl: Redacted.Redacted<string>
  /** Run SQL as the database owner (the sync server's side), outside any RLS scope. */
  readonly ownerQuery: (text: string, params?: ReadonlyArray<unknown>) => Promise<ReadonlyArray<Record<string, unknown>>>
}

export class TestDatabase extends Context.Tag("test/TestDatabase")<TestDatabase, TestDatabaseShape>() {}

const suffix = () => `${Date.now().toString(36)}_${Math.random().toString(36).slice(2, 8)}`

const serverDatabase = (ownerUrl: string) =>
  Effect.gen(function* () {
    const name = `mana_ai_test_${suffix()}`
    const role = `mana_ai_runner_${suffix()}`
    const password = `pw_${suffix()}`
    const admin = new pg.Client({ connectionString: ownerUrl })
    yield* Effect.acquireRelease(
      Effect.promise(async () => {
        await admin.connect()
        await admin.query(`CREATE DATABASE ${name}`)
        await admin.query(`CREATE ROLE ${role} LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD '${password}'`)
      }),
      () =>
        Effect.promise(async () => {
          await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
          await admin.query(`DROP ROLE IF EXISTS ${role}`)
          await admin.end()
        }).pipe(Effect.ignore),
    )
    const dbUrl = new URL(ownerUrl)
    dbUrl.pathname = `/${name}`
    const owner = new pg.Pool({ connectionString: dbUrl.toString(), max: 2 })
    // pool.end() resolves before its idle clients have closed, so the DROP … WITH (FORCE) below can
    // terminate one of them; the pool re-emits that as 'error', which would crash the test run.
    owner.on("error", () => {})
    yield* Effect.addFinalizer(() => Effect.promise(() => owner.end()).pipe(Effect.ignore))
    yield* Effect.promise(async () => {
      await owner.query(sqlFile("sync-changes.sql"))
      await owner.query(renderPsqlScript(sqlFile("runner-role.sql"), { runner_role: role }))
    })
    const runnerUrl = new URL(dbUrl.toString())
    runnerUrl.username = role
    runnerUrl.password = password
    return {
      kind: "server" as const,
      runnerRole: role,
      runnerUrl: Redacted.make(runnerUrl.toString()),
      ownerQuery: async (text: string, params?: ReadonlyArray<unknown>) =>
        (await owner.query(text, params as Array<unknown>)).rows,
    }
  })

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
