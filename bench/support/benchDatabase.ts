/**
 * The benchmark's own database on the local server, as production runs: created by the owner
 * (postgres://postgres@127.0.0.1:5432/postgres), prepared with sql/sync-changes.sql and
 * sql/runner-role.sql for a fresh NOSUPERUSER NOBYPASSRLS login role, and dropped with that role
 * when the scope closes. Mirrors test/support/TestDatabase.ts (server branch) with bench names.
 */
import { Effect, Redacted, type Scope } from "effect"
import pg from "pg"
import { renderPsqlScript, sqlFile } from "../../src/layers/psqlScript.js"

export const DEFAULT_OWNER_URL = "postgres://postgres@127.0.0.1:5432/postgres"

export interface BenchDatabase {
  readonly name: string
  readonly runnerRole: string
  /** The runner's URL (its role and password), for the real pool. */
  readonly runnerUrl: Redacted.Redacted<string>
  /** SQL as the database owner (the sync server's side), outside any RLS scope. */
  readonly owner: pg.Pool
  readonly ownerQuery: (text: string, params?: ReadonlyArray<unknown>) => Effect.Effect<ReadonlyArray<Record<string, unknown>>>
}

const suffix = () => `${Date.now().toString(36)}_${Math.random().toString(36).slice(2, 8)}`

const isLoopback = (url: URL) => ["127.0.0.1", "localhost", "[::1]"].includes(url.hostname)

export const makeBenchDatabase = (ownerUrl: string): Effect.Effect<BenchDatabase, never, Scope.Scope> =>
  Effect.gen(function* () {
    const base = new URL(ownerUrl)
    // The bench only ever talks to the machine it runs on.
    if (!isLoopback(base)) return yield* Effect.dieMessage(`bench: refusing a non-loopback database host ${base.hostname}`)
    const name = `mana_ai_bench_${suffix()}`
    const role = `mana_ai_bench_runner_${suffix()}`
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
    const owner = new pg.Pool({ connectionString: dbUrl.toString(), max: 4 })
    // An idle client cut off by the final DROP … WITH (FORCE) must not take the process down.
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
      name,
      runnerRole: role,
      runnerUrl: Redacted.make(runnerUrl.toString()),
      owner,
      ownerQuery: (text, params) =>
        Effect.promise(async () => (await owner.query(text, params as Array<unknown> | undefined)).rows),
    }
  })
