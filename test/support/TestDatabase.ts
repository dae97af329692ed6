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
import { Context, Effect, Layer, Option, Redacted, type Scope } from "effect"
import pg from "pg"
import { type SyncGeneration, SYNC_GENERATIONS } from "../../src/domain/eventLog.js"
import { makeEmbeddedPostgres } from "../../src/layers/EmbeddedPostgres.js"
import { pgClientLayer } from "../../src/services/Database.js"
import { EventLogSchema } from "../../src/services/EventLogSchema.js"
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

/**
 * The owner is a client of the socket server like the runner's pool, with its own connection: each
 * statement runs in a transaction that takes the owner's role only for itself (`SET LOCAL ROLE`), and
 * the server's queue serves no other client until it ends, so no runner statement ever runs as the owner.
 */
const pgliteDatabase = (generation: SyncGeneration) => Effect.gen(function* () {
  const embedded = yield* makeEmbeddedPostgres({ maxConnections: 24, ownerClient: true, generation }).pipe(Effect.orDie)
  const ownerUrl = Option.getOrThrow(embedded.ownerUrl)
  const owner = yield* Effect.acquireRelease(
    Effect.promise(async () => {
      const client = new pg.Client({ connectionString: Redacted.value(ownerUrl) })
      await client.connect()
      return client
    }),
    (client) => Effect.promise(() => client.end()).pipe(Effect.ignore),
  )
  // One statement of the owner's at a time on its one connection (BEGIN … COMMIT must not interleave).
  let last: Promise<unknown> = Promise.resolve()
  const ownerQuery = (text: string, params?: ReadonlyArray<unknown>): Promise<ReadonlyArray<Record<string, unknown>>> => {
    const run = async () => {
      await owner.query("BEGIN; SET LOCAL ROLE postgres")
      try {
        // Without parameters: the simple protocol, so multi-statement scripts run; the last result's rows count.
        const result =
          params === undefined || params.length === 0 ? await owner.query(text) : await owner.query(text, params as Array<unknown>)
        await owner.query("COMMIT")
        const last = Array.isArray(result) ? result.at(-1) : result
        return (last?.rows ?? []) as ReadonlyArray<Record<string, unknown>>
      } catch (error) {
        await owner.query("ROLLBACK")
        throw error
      }
    }
    const next = last.then(run, run)
    last = next.catch(() => undefined)
    return next
  }
  return { kind: "pglite" as const, generation, runnerRole: embedded.runnerRole, runnerUrl: embedded.url, ownerQuery }
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
 * generation detected from the catalog as the process does at start (EventLogSchema). Built as the
 * process builds it (`pgClientLayer`: pipelinedTransaction takes connections from its pool directly);
 * `plain: true` gives @effect/sql-pg's own `PgClient.layer` instead (pipelinedTransaction then goes
 * through `sql.reserve`).
 */
export const RunnerSqlLive = (maxConnections = 8, options: { readonly plain?: boolean; readonly preparedStatements?: boolean } = {}) =>
  EventLogSchema.Default.pipe(
    Layer.provideMerge(
      Layer.unwrapEffect(
        Effect.map(TestDatabase, (db) =>
          options.plain === true
            ? PgClient.layer({ url: db.runnerUrl, maxConnections })
            : pgClientLayer({ url: db.runnerUrl, maxConnections, ...(options.preparedStatements === undefined ? {} : { preparedStatements: options.preparedStatements }) }),
        ),
      ),
    ),
    Layer.orDie,
  )
