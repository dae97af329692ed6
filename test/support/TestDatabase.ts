/**
 * The database a test file runs against, as production runs: the runner connects as a role with
 * neither SUPERUSER nor BYPASSRLS, prepared only by sql/runner-role.sql.
 *
 * - TEST_DATABASE_URL set (CI): an owner's URL on a real server. Each layer instance creates its own
 *   database and login role, and drops both when its scope closes.
 * - unset (a fresh machine): embedded PGlite behind its socket server, acting as the runner role.
 *
 * The generation of sync_changes (SPEC §13) is today's (field_meta) unless TEST_SYNC_GENERATION names
 * the seed's (field_timestamps); vitest.config.ts runs the generation-sensitive files once per generation.
 */
import { PgClient } from "@effect/sql-pg"
import { Context, Effect, Layer, type Redacted, type Scope } from "effect"
import { type SyncGeneration, SYNC_GENERATIONS } from "../../src/domain/eventLog.js"
import { makeEmbeddedPostgres } from "../../src/layers/EmbeddedPostgres.js"
import { EventLogSchemaLive } from "../../src/services/EventLogSchema.js"
import { provisionServerDatabase } from "./provisionServerDatabase.js"

export interface TestDatabaseShape {
  readonly kind: "server" | "pglite"
  /** The generation of sync_changes this database holds; its per-field time column has the same name. */
  readonly generation: SyncGeneration
  readonly runnerRole: string
  readonly runnerUrl: Redacted.Redacted<string>
  /** Run SQL as the database owner (the sync server's side), outside any RLS scope. */
  readonly ownerQuery: (text: string, params?: ReadonlyArray<unknown>) => Promise<ReadonlyArray<Record<string, unknown>>>
}

export class TestDatabase extends Context.Tag("test/TestDatabase")<TestDatabase, TestDatabaseShape>() {}

/** The generation the suite runs on: TEST_SYNC_GENERATION, or today's. */
export const testGeneration = (): SyncGeneration => {
  const wanted = process.env.TEST_SYNC_GENERATION
  if (wanted === undefined || wanted === "") return "field_meta"
  const found = SYNC_GENERATIONS.find((g) => g === wanted)
  if (found === undefined) throw new Error(`TEST_SYNC_GENERATION must be one of ${SYNC_GENERATIONS.join(", ")}, not ${wanted}`)
  return found
}

const serverDatabase = (ownerUrl: string, generation: SyncGeneration) =>
  Effect.map(provisionServerDatabase(ownerUrl, { prefix: "mana_ai_test", ownerPoolMax: 2, generation }), (db) => ({
    kind: "server" as const,
    generation,
    runnerRole: db.runnerRole,
    runnerUrl: db.runnerUrl,
    ownerQuery: async (text: string, params?: ReadonlyArray<unknown>) =>
      (await db.owner.query(text, params as Array<unknown>)).rows,
  }))

const pgliteDatabase = (generation: SyncGeneration) =>
  Effect.gen(function* () {
    const embedded = yield* makeEmbeddedPostgres({ maxConnections: 24, generation }).pipe(Effect.orDie)
    const role = embedded.runnerRole
    return {
      kind: "pglite" as const,
      generation,
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

/** A test database of the given generation (default: testGeneration()). */
export const testDatabaseLayer = (options: { readonly generation?: SyncGeneration } = {}): Layer.Layer<TestDatabase> =>
  Layer.scoped(
    TestDatabase,
    Effect.suspend((): Effect.Effect<TestDatabaseShape, never, Scope.Scope> => {
      const url = process.env.TEST_DATABASE_URL
      const generation = options.generation ?? testGeneration()
      return url ? serverDatabase(url, generation) : pgliteDatabase(generation)
    }),
  )

export const TestDatabaseLive: Layer.Layer<TestDatabase> = testDatabaseLayer()

/**
 * The runner's own connection pool (SqlClient + PgClient), as the runner role, with the event log's
 * generation detected from the catalog as the process does at start (EventLogSchema).
 */
export const RunnerSqlLive = (maxConnections = 8) =>
  EventLogSchemaLive.pipe(
    Layer.provideMerge(
      Layer.unwrapEffect(Effect.map(TestDatabase, (db) => PgClient.layer({ url: db.runnerUrl, maxConnections }))),
    ),
    Layer.orDie,
  )
