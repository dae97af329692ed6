import { it } from "@effect/vitest"
import { SqlClient } from "@effect/sql"
import { Effect, Layer } from "effect"
import { expect } from "vitest"
import { RunnerSqlLive, TestDatabase, TestDatabaseLive } from "./TestDatabase.js"

const L = Layer.provideMerge(RunnerSqlLive(), TestDatabaseLive)

it.layer(L, { timeout: 60_000 })("spike", (it) => {
  it.effect("runner role cannot cross users", () =>
    Effect.gen(function* () {
      const sql = yield* SqlClient.SqlClient
      const db = yield* TestDatabase
      const who = yield* sql`SELECT current_user AS u, (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS su, (SELECT rolbypassrls FROM pg_roles WHERE rolname = current_user) AS br`
      console.log(db.kind, who)
      yield* sql.withTransaction(Effect.gen(function* () {
        yield* sql`SELECT set_config('app.current_user_id', 'alice', true)`
        yield* sql`INSERT INTO sync_changes (app_id, table_name, record_id, user_id, op, data, client_id) VALUES ('companion','companionGoals','g1','alice','insert','{"title":"x"}','c')`
      }))
      const r = yield* sql.withTransaction(Effect.gen(function* () {
        yield* sql`SELECT set_config('app.current_user_id', 'bob', true)`
        const seen = yield* sql`SELECT * FROM sync_changes`
        const ins = yield* Effect.either(sql`INSERT INTO sync_changes (app_id, table_name, record_id, user_id, op, data, client_id) VALUES ('companion','companionGoals','g1','alice','insert','{"title":"x"}','c')`)
        return { seen: seen.length, ins: ins._tag }
      }))
      console.log(r)
      expect(r).toEqual({ seen: 0, ins: "Left" })
      const schemas = yield* Effect.either(sql`CREATE SCHEMA nope`)
      expect(schemas._tag).toBe("Left")
      yield* sql`CREATE TABLE IF NOT EXISTS mana_ai.t (x int)`
    }))
})
