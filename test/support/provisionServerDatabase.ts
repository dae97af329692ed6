/**
 * A fresh database on a real Postgres server, prepared as production runs: created by the owner,
 * given sql/sync-changes.sql (or the seed's generation), and a new NOSUPERUSER NOBYPASSRLS login role prepared only by
 * sql/runner-role.sql. Both are dropped when the scope closes. Used by the tests and the bench.
 */
import { Effect, Redacted, type Scope } from "effect"
import pg from "pg"
import type { SyncGeneration } from "../../src/domain/eventLog.js"
import { renderPsqlScript, sqlFile, syncChangesSql } from "../../src/layers/psqlScript.js"

export interface ServerDatabase {
  readonly name: string
  readonly runnerRole: string
  /** The runner's URL (its role and password). */
  readonly runnerUrl: Redacted.Redacted<string>
  /** The owner's pool on that database (the sync server's side), outside any RLS scope. */
  readonly owner: pg.Pool
}

const suffix = () => `${Date.now().toString(36)}_${Math.random().toString(36).slice(2, 8)}`

export const provisionServerDatabase = (
  ownerUrl: string,
  options: { readonly prefix: string; readonly ownerPoolMax: number; readonly generation?: SyncGeneration },
): Effect.Effect<ServerDatabase, never, Scope.Scope> =>
  Effect.gen(function* () {
    const name = `${options.prefix}_${suffix()}`
    const role = `${options.prefix}_runner_${suffix()}`
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
    const owner = new pg.Pool({ connectionString: dbUrl.toString(), max: options.ownerPoolMax })
    // pool.end() resolves before its idle clients have closed, so the DROP … WITH (FORCE) above can
    // terminate one of them; the pool re-emits that as 'error', which would crash the process.
    owner.on("error", () => {})
    yield* Effect.addFinalizer(() => Effect.promise(() => owner.end()).pipe(Effect.ignore))
    yield* Effect.promise(async () => {
      await owner.query(syncChangesSql(options.generation))
      await owner.query(renderPsqlScript(sqlFile("runner-role.sql"), { runner_role: role }))
    })
    const runnerUrl = new URL(dbUrl.toString())
    runnerUrl.username = role
    runnerUrl.password = password
    return { name, runnerRole: role, runnerUrl: Redacted.make(runnerUrl.toString()), owner }
  })
