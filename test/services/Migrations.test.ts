import { SqlClient } from "@effect/sql"
import { it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { expect } from "vitest"
import { PgMigrator } from "@effect/sql-pg"
import { migrations, runMigrations } from "../../src/services/Migrations.js"
import { RunnerSqlLive, TestDatabase, TestDatabaseLive } from "../support/TestDatabase.js"

const tablesIn = (schema: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql<{ name: string }>`
      SELECT c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = ${schema} AND c.relkind = 'r' ORDER BY 1`.pipe(Effect.map((rows) => rows.map((r) => r.name))),
  )

const EXPECTED_TABLES = [
  "actor_quarantines",
  "applied_changes",
  "applied_records",
  "cluster_claim_owners",
  "cluster_user_leases",
  "decrypt_audit",
  "discovery_cursor",
  "migrations",
  "mission_snapshots",
  "run_claims",
  "snapshot_shards",
  "token_usage",
  "token_usage_process",
]

it.layer(TestDatabaseLive, { timeout: 120_000 })("migrations, two runners starting at once", (it) => {
  it.effect("both succeed, the migration is applied once and there is one set of tables", () =>
    Effect.gen(function* () {
      // Two separate pools, as two runner processes would have, started together on a fresh database.
      const [a, b] = yield* Effect.all(
        [Effect.provide(runMigrations, RunnerSqlLive(2)), Effect.provide(runMigrations, RunnerSqlLive(2))],
        { concurrency: "unbounded" },
      )
      expect([...a, ...b].map(([id, name]) => `${id}_${name}`)).toEqual(["1_mission_store", "2_decrypt_audit", "3_token_usage", "4_actor_quarantines", "5_cluster", "6_applied_changes_by_time", "7_applied_records"])
      const db = yield* TestDatabase
      const rows = yield* Effect.promise(() => db.ownerQuery("SELECT migration_id FROM mana_ai.migrations ORDER BY 1"))
      expect(rows).toEqual([{ migration_id: 1 }, { migration_id: 2 }, { migration_id: 3 }, { migration_id: 4 }, { migration_id: 5 }, { migration_id: 6 }, { migration_id: 7 }])
      expect(yield* Effect.provide(tablesIn("mana_ai"), RunnerSqlLive(1))).toEqual(EXPECTED_TABLES)
    }),
  )
})

it.layer(Layer.provideMerge(RunnerSqlLive(2), TestDatabaseLive), { timeout: 120_000 })("migrations on a cluster database from before 0005", (it) => {
  it.effect("the table and index cluster start used to create are kept and completed", () =>
    Effect.gen(function* () {
      const sql = yield* SqlClient.SqlClient
      // As the earlier release left it: 0001–0004 applied, then cluster start created its table, index and a row.
      yield* sql`
        CREATE TABLE mana_ai.migrations (
          migration_id integer PRIMARY KEY, created_at timestamp with time zone NOT NULL DEFAULT now(), name text NOT NULL)`
      const { "0005_cluster": _, "0006_applied_changes_by_time": _6, "0007_applied_records": _7, ...before } = migrations
      const applied = yield* PgMigrator.make({})({ loader: PgMigrator.fromRecord(before), table: "mana_ai.migrations" })
      expect(applied.length).toBe(4)
      yield* sql`
        CREATE TABLE mana_ai.cluster_claim_owners (
          owner text PRIMARY KEY, pid integer NOT NULL, backend_start timestamptz NOT NULL,
          registered_at timestamptz NOT NULL DEFAULT now())`
      yield* sql`CREATE INDEX mission_snapshots_updated_idx ON mana_ai.mission_snapshots (updated_at)`
      yield* sql`INSERT INTO mana_ai.cluster_claim_owners (owner, pid, backend_start) VALUES ('old', 1, now())`
      const rest = yield* runMigrations
      expect(rest.map(([id, name]) => `${id}_${name}`)).toEqual(["5_cluster", "6_applied_changes_by_time", "7_applied_records"])
      const columns = yield* sql<{ name: string }>`
        SELECT column_name AS name FROM information_schema.columns
        WHERE table_schema = 'mana_ai' AND table_name = 'cluster_claim_owners' ORDER BY ordinal_position`
      expect(columns.map((c) => c.name)).toEqual(["owner", "pid", "backend_start", "registered_at", "runner_host", "runner_port"])
      expect(yield* sql`SELECT owner FROM mana_ai.cluster_claim_owners`).toEqual([{ owner: "old" }])
      const shard = yield* sql<{ name: string }>`
        SELECT column_name AS name FROM information_schema.columns
        WHERE table_schema = 'mana_ai' AND table_name = 'mission_snapshots' AND column_name = 'shard'`
      expect(shard).toEqual([{ name: "shard" }])
      expect(yield* tablesIn("mana_ai")).toEqual(EXPECTED_TABLES)
    }),
  )
})

it.layer(Layer.provideMerge(RunnerSqlLive(2), TestDatabaseLive), { timeout: 120_000 })("migrations on a database from before 0006", (it) => {
  it.effect("applied_changes keeps its rows and is keyed by (created_at, change_id), with no created_at index of its own", () =>
    Effect.gen(function* () {
      const sql = yield* SqlClient.SqlClient
      yield* sql`
        CREATE TABLE mana_ai.migrations (
          migration_id integer PRIMARY KEY, created_at timestamp with time zone NOT NULL DEFAULT now(), name text NOT NULL)`
      const { "0006_applied_changes_by_time": _, "0007_applied_records": _7, ...before } = migrations
      const applied = yield* PgMigrator.make({})({ loader: PgMigrator.fromRecord(before), table: "mana_ai.migrations" })
      expect(applied.length).toBe(5)
      yield* sql`
        INSERT INTO mana_ai.applied_changes (change_id, created_at)
        VALUES ('00000000-0000-4000-8000-000000000001', '2026-11-30T10:00:00Z'), ('00000000-0000-4000-8000-000000000002', '2026-11-30T10:00:00Z')`
      const rest = yield* runMigrations
      expect(rest.map(([id, name]) => `${id}_${name}`)).toEqual(["6_applied_changes_by_time", "7_applied_records"])
      expect(yield* sql`SELECT count(*)::int AS n FROM mana_ai.applied_changes`).toEqual([{ n: 2 }])
      const key = yield* sql<{ column: string }>`
        SELECT a.attname AS column
        FROM pg_index i JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n) ON true
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
        WHERE i.indrelid = 'mana_ai.applied_changes'::regclass AND i.indisprimary ORDER BY k.n`
      expect(key.map((k) => k.column)).toEqual(["created_at", "change_id"])
      const indexes = yield* sql<{ name: string }>`
        SELECT indexname AS name FROM pg_indexes WHERE schemaname = 'mana_ai' AND tablename = 'applied_changes' ORDER BY 1`
      expect(indexes.map((i) => i.name)).toEqual(["applied_changes_pkey"])
      // 0007: the marks move to applied_records, unlogged (a cache; see the migration).
      expect(yield* sql`SELECT relpersistence AS p FROM pg_class WHERE oid = 'mana_ai.applied_records'::regclass`).toEqual([{ p: "u" }])
    }),
  )
})

it.layer(Layer.provideMerge(RunnerSqlLive(2), TestDatabaseLive), { timeout: 120_000 })("migrations", (it) => {
  it.effect("a second run applies nothing and changes nothing", () =>
    Effect.gen(function* () {
      const first = yield* runMigrations
      expect(first.length).toBe(7)
      const again = yield* runMigrations
      expect(again).toEqual([])
      expect(yield* tablesIn("mana_ai")).toEqual(EXPECTED_TABLES)
    }),
  )

  it.effect("the runner role cannot create a schema, and the migrations need not", () =>
    Effect.gen(function* () {
      const sql = yield* SqlClient.SqlClient
      const created = yield* Effect.either(sql`CREATE SCHEMA mana_ai_other`)
      expect(created._tag).toBe("Left")
      const role = yield* sql<{ su: boolean; br: boolean }>`
        SELECT rolsuper AS su, rolbypassrls AS br FROM pg_roles WHERE rolname = current_user`
      expect(role).toEqual([{ su: false, br: false }])
      // Nothing of the runner's landed outside mana_ai.
      expect(yield* tablesIn("public")).toEqual(["sync_changes"])
    }),
  )
})
