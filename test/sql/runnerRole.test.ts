/**
 * sql/runner-role.sql: afterwards the runner role (NOSUPERUSER, NOBYPASSRLS) can do all the runner
 * needs and nothing more (SPEC §7). Runs as that role, on the real server in CI and on PGlite locally.
 */
import { SqlClient } from "@effect/sql"
import { it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { expect } from "vitest"
import { renderPsqlScript, sqlFile } from "../../src/layers/psqlScript.js"
import { RunnerSqlLive, TestDatabase, TestDatabaseLive } from "../support/TestDatabase.js"

const Env = Layer.provideMerge(RunnerSqlLive(4), TestDatabaseLive)

const insertAs = (scope: string, userId: string, app = "companion", table = "companionGoals") =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql.withTransaction(
      Effect.gen(function* () {
        yield* sql`SELECT set_config('app.current_user_id', ${scope}, true)`
        yield* sql`INSERT INTO sync_changes (app_id, table_name, record_id, user_id, op, data, client_id)
                   VALUES (${app}, ${table}, 'r1', ${userId}, 'insert', ${JSON.stringify({ title: `of ${userId}` })}::jsonb, 'test')`
      }),
    ),
  )

const countVisible = (scope: string | null, app?: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql.withTransaction(
      Effect.gen(function* () {
        if (scope !== null) yield* sql`SELECT set_config('app.current_user_id', ${scope}, true)`
        const rows = app
          ? yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM sync_changes WHERE app_id = ${app}`
          : yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM sync_changes`
        return rows[0]!.n
      }),
    ),
  )

it.layer(Env, { timeout: 60_000 })("runner role after sql/runner-role.sql", (it) => {
  it.effect("connects as a role with neither SUPERUSER nor BYPASSRLS", () =>
    Effect.gen(function* () {
      const sql = yield* SqlClient.SqlClient
      const db = yield* TestDatabase
      const [me] = yield* sql<{ user: string; su: boolean; bypass: boolean }>`
        SELECT current_user AS user, rolsuper AS su, rolbypassrls AS bypass FROM pg_roles WHERE rolname = current_user`
      expect(me).toEqual({ user: db.runnerRole, su: false, bypass: false })
    }))

  it.effect("writes only inside its per-user scope: an insert for another user is refused by Postgres", () =>
    Effect.gen(function* () {
      yield* insertAs("alice", "alice")
      const refused = yield* Effect.either(insertAs("bob", "alice"))
      expect(refused._tag).toBe("Left")
      const unscoped = yield* Effect.either(
        Effect.flatMap(SqlClient.SqlClient, (sql) =>
          sql`INSERT INTO sync_changes (app_id, table_name, record_id, user_id, op, data, client_id)
              VALUES ('companion', 'companionGoals', 'x', 'alice', 'insert', '{}'::jsonb, 'test')`),
      )
      expect(unscoped._tag).toBe("Left")
    }))

  it.effect("reads other users' non-mission rows only inside their scope", () =>
    Effect.gen(function* () {
      yield* insertAs("carol", "carol")
      expect(yield* countVisible("carol", "companion")).toBe(1)
      expect(yield* countVisible("bob", "companion")).toBe(0)
      expect(yield* countVisible(null, "companion")).toBe(0)
    }))

  it.effect("reads mission rows of every user (discovery's one narrow path)", () =>
    Effect.gen(function* () {
      yield* insertAs("u1", "u1", "ai", "aiMissions")
      yield* insertAs("u2", "u2", "ai", "aiMissions")
      expect(yield* countVisible(null, "ai")).toBe(2)
      expect(yield* countVisible("someone-else", "ai")).toBe(2)
    }))

  it.effect("reads agent rows of every user (the same path); other tables of app ai stay per user", () =>
    Effect.gen(function* () {
      const countAi = (scope: string | null, table: string) =>
        Effect.flatMap(SqlClient.SqlClient, (sql) =>
          sql.withTransaction(
            Effect.gen(function* () {
              if (scope !== null) yield* sql`SELECT set_config('app.current_user_id', ${scope}, true)`
              const rows = yield* sql<{ n: number }>`
                SELECT count(*)::int AS n FROM sync_changes WHERE app_id = 'ai' AND table_name = ${table}`
              return rows[0]!.n
            }),
          ),
        )
      yield* insertAs("a1", "a1", "ai", "agents")
      yield* insertAs("a2", "a2", "ai", "agents")
      yield* insertAs("a1", "a1", "ai", "aiTemplates")
      expect(yield* countAi(null, "agents")).toBe(2)
      expect(yield* countAi("someone-else", "agents")).toBe(2)
      expect(yield* countAi(null, "aiTemplates")).toBe(0)
      expect(yield* countAi("a1", "aiTemplates")).toBe(1)
      // Reading is all the path gives: an agent row for another user is still refused.
      expect((yield* Effect.either(insertAs("a1", "a2", "ai", "agents")))._tag).toBe("Left")
    }))

  it.effect("can neither update nor delete a change, nor alter sync_changes", () =>
    Effect.gen(function* () {
      const sql = yield* SqlClient.SqlClient
      yield* insertAs("dave", "dave")
      const attempts = [
        sql.withTransaction(
          Effect.zipRight(
            sql`SELECT set_config('app.current_user_id', 'dave', true)`,
            sql`UPDATE sync_changes SET data = '{}'::jsonb WHERE user_id = 'dave'`,
          ),
        ),
        sql.withTransaction(
          Effect.zipRight(
            sql`SELECT set_config('app.current_user_id', 'dave', true)`,
            sql`DELETE FROM sync_changes WHERE user_id = 'dave'`,
          ),
        ),
        sql`ALTER TABLE sync_changes ADD COLUMN nope int`,
        sql`ALTER TABLE sync_changes DISABLE ROW LEVEL SECURITY`,
        sql`DROP POLICY sync_changes_user_isolation ON sync_changes`,
      ]
      for (const attempt of attempts) {
        expect((yield* Effect.either(attempt))._tag).toBe("Left")
      }
      expect(yield* countVisible("dave", "companion")).toBe(1)
    }))

  it.effect("owns schema mana_ai and can create tables there, but cannot create schemas", () =>
    Effect.gen(function* () {
      const sql = yield* SqlClient.SqlClient
      yield* sql`CREATE TABLE IF NOT EXISTS mana_ai.role_probe (x int)`
      yield* sql`DROP TABLE mana_ai.role_probe`
      expect((yield* Effect.either(sql`CREATE SCHEMA not_allowed`))._tag).toBe("Left")
      expect((yield* Effect.either(sql`CREATE TABLE public.not_allowed (x int)`))._tag).toBe("Left")
    }))

  it.effect("the grant is idempotent on this generation: applying it twice more changes nothing and keeps the rights", () =>
    Effect.gen(function* () {
      const db = yield* TestDatabase
      yield* insertAs("erin", "erin", "ai", "aiMissions")
      const missionsBefore = yield* countVisible(null, "ai")
      expect(missionsBefore).toBeGreaterThanOrEqual(1)
      const script = renderPsqlScript(sqlFile("runner-role.sql"), { runner_role: db.runnerRole })
      yield* Effect.promise(() => db.ownerQuery(script))
      yield* Effect.promise(() => db.ownerQuery(script))
      const policies = yield* Effect.promise(() =>
        db.ownerQuery("SELECT policyname FROM pg_policies WHERE tablename = 'sync_changes' ORDER BY policyname"),
      )
      // Today's sync server adds its read-only space policy; the grant leaves it as it is.
      expect(policies.map((p) => p.policyname)).toEqual(
        db.generation === "field_meta"
          ? ["mana_ai_runner_read_agents", "mana_ai_runner_read_missions", "sync_changes_space_member_read", "sync_changes_user_isolation"]
          : ["mana_ai_runner_read_agents", "mana_ai_runner_read_missions", "sync_changes_user_isolation"],
      )
      const indexes = yield* Effect.promise(() =>
        db.ownerQuery("SELECT indexname FROM pg_indexes WHERE tablename = 'sync_changes' ORDER BY indexname"),
      )
      expect(indexes.map((i) => i.indexname)).toEqual([
        "sync_changes_ai_agents_created_idx",
        "sync_changes_ai_missions_created_idx",
        "sync_changes_pkey",
        "sync_changes_table_record_created_idx",
        "sync_changes_user_app_created_idx",
        "sync_changes_user_app_table_created_idx",
        ...(db.generation === "field_meta" ? ["sync_changes_user_space_app_created_idx"] : []),
      ])
      // The narrow read path still shows every user's mission rows, and only those.
      expect(yield* countVisible(null, "ai")).toBe(missionsBefore)
      expect(yield* countVisible(null, "companion")).toBe(0)
      // The rights after it are exactly the rights before: mission rows of every user, nothing else outside a scope.
      const before = yield* countVisible(null, "ai")
      yield* insertAs("idem-1", "idem-1", "ai", "aiMissions")
      yield* insertAs("idem-2", "idem-2", "ai", "aiMissions")
      yield* insertAs("idem-1", "idem-1")
      expect(yield* countVisible(null, "ai")).toBe(before + 2)
      expect(yield* countVisible("idem-2", "companion")).toBe(0)
      expect(yield* countVisible("idem-1", "companion")).toBe(1)
    }))
})
