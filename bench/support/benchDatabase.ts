/**
 * The benchmark's own database on the local server, as production runs: created by the owner
 * (postgres://postgres@127.0.0.1:5432/postgres), prepared with sql/sync-changes.sql and
 * sql/runner-role.sql for a fresh NOSUPERUSER NOBYPASSRLS login role, and dropped with that role
 * when the scope closes (test/support/provisionServerDatabase.ts, shared with the tests).
 */
import { Effect, type Redacted, type Scope } from "effect"
import type pg from "pg"
import { provisionServerDatabase } from "../../test/support/provisionServerDatabase.js"

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

const isLoopback = (url: URL) => ["127.0.0.1", "localhost", "[::1]"].includes(url.hostname)

export const makeBenchDatabase = (ownerUrl: string): Effect.Effect<BenchDatabase, never, Scope.Scope> =>
  Effect.gen(function* () {
    const base = new URL(ownerUrl)
    // The bench only ever talks to the machine it runs on.
    if (!isLoopback(base)) return yield* Effect.dieMessage(`bench: refusing a non-loopback database host ${base.hostname}`)
    const db = yield* provisionServerDatabase(ownerUrl, { prefix: "mana_ai_bench", ownerPoolMax: 4 })
    return {
      ...db,
      ownerQuery: (text, params) =>
        Effect.promise(async () => (await db.owner.query(text, params as Array<unknown> | undefined)).rows),
    }
  })
