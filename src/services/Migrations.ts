/**
 * Creates the runner's tables in schema mana_ai at start (SPEC §7) with `@effect/sql-pg`'s migrator.
 * The whole run holds a transaction-level advisory lock: the migrator creates its bookkeeping table
 * before it locks it, so two runners starting at once would otherwise race on that CREATE TABLE.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import * as PgMigrator from "@effect/sql-pg/PgMigrator"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import missionStore from "../migrations/0001_mission_store.js"
import decryptAudit from "../migrations/0002_decrypt_audit.js"
import tokenUsage from "../migrations/0003_token_usage.js"
import actorQuarantines from "../migrations/0004_actor_quarantines.js"
import cluster from "../migrations/0005_cluster.js"
import appliedChangesByTime from "../migrations/0006_applied_changes_by_time.js"
import appliedRecords from "../migrations/0007_applied_records.js"

/** Schema-qualified: the runner role may create tables only inside mana_ai. */
const MIGRATIONS_TABLE = "mana_ai.migrations"

/** pg_advisory_xact_lock key for the migration run: the bytes of "manamigr". */
const MIGRATION_LOCK_KEY = "7881696566318225266"

export const migrations = {
  "0001_mission_store": missionStore,
  "0002_decrypt_audit": decryptAudit,
  "0003_token_usage": tokenUsage,
  "0004_actor_quarantines": actorQuarantines,
  "0005_cluster": cluster,
  "0006_applied_changes_by_time": appliedChangesByTime,
  "0007_applied_records": appliedRecords,
}

// Migrator.make without a schema dump: PgMigrator.run's only extra is pg_dump, which needs FileSystem,
// Path and a CommandExecutor the service has no use for.
const migrate = PgMigrator.make({})({ loader: PgMigrator.fromRecord(migrations), table: MIGRATIONS_TABLE })

/** Runs pending migrations; returns the ones this call applied ([] when another runner got there first). */
export const runMigrations: Effect.Effect<
  ReadonlyArray<readonly [id: number, name: string]>,
  PgMigrator.MigrationError | SqlError,
  SqlClient.SqlClient
> = Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  const applied = yield* sql.withTransaction(
    Effect.gen(function* () {
      yield* sql`SELECT pg_advisory_xact_lock(${MIGRATION_LOCK_KEY}::bigint)`
      // The migrator probes its table with ::regclass and creates it on failure; inside our transaction
      // a failed probe would abort everything, so the table (the migrator's own shape) exists first.
      yield* sql`
        CREATE TABLE IF NOT EXISTS mana_ai.migrations (
          migration_id integer PRIMARY KEY,
          created_at timestamp with time zone NOT NULL DEFAULT now(),
          name text NOT NULL
        )`
      return yield* migrate
    }),
  )
  yield* applied.length > 0
    ? Effect.logInfo(`Migrations applied: ${applied.map(([id, name]) => `${id}_${name}`).join(", ")}`)
    : Effect.logInfo("Migrations: schema mana_ai is up to date")
  return applied
}).pipe(Effect.withSpan("Migrations.run"))

/** Builds once the tables exist; compose it before anything that reads mana_ai. */
export const MigrationsLive: Layer.Layer<never, PgMigrator.MigrationError | SqlError, SqlClient.SqlClient> =
  Layer.effectDiscard(runMigrations)
