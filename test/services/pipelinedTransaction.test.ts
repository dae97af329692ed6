/**
 * pipelinedTransaction (issue 16): BEGIN and a run's statements in one round trip, then COMMIT. As
 * the runner role, on one pooled connection, so what a transaction leaves behind would show in the
 * next statement: the RLS scope set by the first statement holds for the others and ends with the
 * transaction; a failed statement or an interruption rolls back every statement before it.
 */
import { execFile } from "node:child_process"
import { fileURLToPath } from "node:url"
import { SqlClient } from "@effect/sql"
import Pg from "pg"
import { it } from "@effect/vitest"
import { Effect, Either, Layer, Redacted, TestServices } from "effect"
import { expect } from "vitest"
import { pipelinedTransaction } from "../../src/services/pipelinedTransaction.js"
import { scopeStatement } from "../../src/services/withUserScope.js"
import { insertChange } from "../support/eventLogRows.js"
import { BUN } from "../support/ManaProcess.js"
import { RunnerSqlLive, TestDatabase, TestDatabaseLive } from "../support/TestDatabase.js"

// Both ways to a connection: the process's pool taken directly (pgClientLayer), and `sql.reserve` on
// any other client (@effect/sql-pg's own layer).
const layers = [
  ["on the process's pool", Layer.provideMerge(RunnerSqlLive(1), TestDatabaseLive)],
  ["through sql.reserve", Layer.provideMerge(RunnerSqlLive(1, { plain: true }), TestDatabaseLive)],
] as const

let n = 0
const fresh = (prefix: string) => `${prefix}-${++n}-${Math.random().toString(36).slice(2, 8)}`

/** A goal row inserted as the runner, inside the user's scope (RLS checks the user). */
const insertGoal = (sql: SqlClient.SqlClient, generation: string, user: string, id: string) =>
  sql`INSERT INTO sync_changes (app_id, table_name, record_id, user_id, op, data, ${sql(generation)}, client_id)
      VALUES ('companion', 'companionGoals', ${id}, ${user}, 'insert', '{"title":"t"}'::jsonb, '{}'::jsonb, 'test')`

/** As the owner, past RLS: how many rows the record has. */
const rowsOf = (id: string) =>
  Effect.flatMap(TestDatabase, (db) =>
    Effect.promise(() => db.ownerQuery("SELECT count(*)::int AS n FROM sync_changes WHERE record_id = $1", [id])),
  ).pipe(Effect.map((rows) => Number(rows[0]?.n)))

for (const [way, L] of layers) it.layer(L, { timeout: 120_000 })(`pipelinedTransaction ${way}`, (it) => {
  it.effect("the scoping statement's RLS scope holds for the statements after it and ends with the transaction", () =>
    Effect.gen(function* () {
      const sql = yield* SqlClient.SqlClient
      const ann = fresh("goal-ann")
      const bob = fresh("goal-bob")
      yield* insertChange({ user: "ann", app: "companion", table: "companionGoals", id: ann, data: { title: "a" } })
      yield* insertChange({ user: "bob", app: "companion", table: "companionGoals", id: bob, data: { title: "b" } })
      const [scoped, seen, setting] = yield* pipelinedTransaction(sql, [
        scopeStatement(sql, "ann"),
        sql`SELECT record_id FROM sync_changes WHERE record_id IN (${ann}, ${bob})`,
        sql`SELECT current_setting('app.current_user_id', true) AS user_id`,
      ])
      expect(scoped).toHaveLength(1)
      expect(seen).toEqual([{ record_id: ann }])
      expect(setting).toEqual([{ user_id: "ann" }])
      // The same (only) connection, after the COMMIT: no scope, so no user's goals.
      expect(yield* sql`SELECT current_setting('app.current_user_id', true) AS user_id`).toEqual([{ user_id: "" }])
      expect(yield* sql`SELECT record_id FROM sync_changes WHERE record_id IN (${ann}, ${bob})`).toEqual([])
    }))

  it.effect("statements are committed together; a failing one rolls back those before it and leaves the connection usable", () =>
    Effect.gen(function* () {
      const sql = yield* SqlClient.SqlClient
      const { generation } = yield* TestDatabase
      const kept = fresh("goal-kept")
      const undone = fresh("goal-undone")
      yield* pipelinedTransaction(sql, [scopeStatement(sql, "ann"), insertGoal(sql, generation, "ann", kept)])
      expect(yield* rowsOf(kept)).toBe(1)
      const failed = yield* Effect.either(
        pipelinedTransaction(sql, [scopeStatement(sql, "ann"), insertGoal(sql, generation, "ann", undone), sql`SELECT 1 / 0`]),
      )
      expect(Either.isLeft(failed) && failed.left._tag).toBe("SqlError")
      expect(yield* rowsOf(undone)).toBe(0)
      // Not left in an aborted transaction: the next statement on the connection runs.
      expect(yield* sql`SELECT 1 AS one`).toEqual([{ one: 1 }])
      // RLS still checks what is inserted: another user's row fails the whole transaction.
      const other = yield* Effect.either(
        pipelinedTransaction(sql, [scopeStatement(sql, "ann"), insertGoal(sql, generation, "bob", fresh("goal-bob"))]),
      )
      expect(Either.isLeft(other)).toBe(true)
    }))

  it.effect("commitWithStatements: one round trip commits; a failing statement still rolls back those before it", () =>
    Effect.gen(function* () {
      const sql = yield* SqlClient.SqlClient
      const { generation } = yield* TestDatabase
      const kept = fresh("goal-one-trip")
      const undone = fresh("goal-one-trip-undone")
      // Every query pg's clients are handed meanwhile: the sequence, and no COMMIT after it.
      const handed: Array<string> = []
      const query = Pg.Client.prototype.query
      Pg.Client.prototype.query = function (this: Pg.Client, config: unknown, ...rest: Array<unknown>) {
        handed.push(typeof config === "string" ? config : "sequence")
        return (query as (...args: Array<unknown>) => unknown).call(this, config, ...rest)
      } as typeof query
      const [rows, failed] = yield* Effect.all([
        pipelinedTransaction(sql, [scopeStatement(sql, "ann"), insertGoal(sql, generation, "ann", kept), sql`SELECT 7 AS seven`], {
          commitWithStatements: true,
        }),
        Effect.either(
          pipelinedTransaction(sql, [scopeStatement(sql, "ann"), insertGoal(sql, generation, "ann", undone), sql`SELECT 1 / 0`], {
            commitWithStatements: true,
          }),
        ),
      ]).pipe(
        Effect.ensuring(
          Effect.sync(() => {
            Pg.Client.prototype.query = query
          }),
        ),
      )
      expect(rows.map((r) => r.length)).toEqual([1, 0, 1])
      expect(rows[2]).toEqual([{ seven: 7 }])
      expect(yield* rowsOf(kept)).toBe(1)
      expect(Either.isLeft(failed) && failed.left._tag).toBe("SqlError")
      expect(yield* rowsOf(undone)).toBe(0)
      // One query for the committed sequence; the failed one is followed by its ROLLBACK only.
      expect(handed).toEqual(["sequence", "sequence", "ROLLBACK"])
      // Nothing left open on the connection.
      expect(yield* sql`SELECT 1 AS one`).toEqual([{ one: 1 }])
    }))

  it.effect("interrupted while its statements run, it commits nothing", () =>
    Effect.gen(function* () {
      const sql = yield* SqlClient.SqlClient
      const { generation } = yield* TestDatabase
      const id = fresh("goal-interrupted")
      // Interrupted in real time (the live clock) while the server sleeps, after the insert.
      const result = yield* TestServices.provideLive(
        pipelinedTransaction(sql, [scopeStatement(sql, "ann"), insertGoal(sql, generation, "ann", id), sql`SELECT pg_sleep(1)`]).pipe(
          Effect.timeout("100 millis"),
          Effect.either,
        ),
      )
      expect(Either.isLeft(result) && result.left._tag).toBe("TimeoutException")
      expect(yield* rowsOf(id)).toBe(0)
      expect(yield* sql`SELECT 1 AS one`).toEqual([{ one: 1 }])
      expect(yield* rowsOf(id)).toBe(0)
    }))
})

// Named statements (issue 16: Postgres's parse and planning per run) only on the process's pool, whose
// connections are destroyed when a sequence that prepared a statement fails.
it.layer(Layer.provideMerge(RunnerSqlLive(1), TestDatabaseLive), { timeout: 120_000 })("pipelinedTransaction's prepared statements", (it) => {
  /** The names of the prepared statements on the backend whose text holds `marker`. */
  const preparedWith = (sql: SqlClient.SqlClient, marker: string) =>
    Effect.map(
      sql<{ name: string }>`SELECT name FROM pg_prepared_statements WHERE statement LIKE ${`%${marker}%`} ORDER BY name`,
      (rows) => rows.map((row) => (row.name.startsWith("mana_ai_") ? "named" : row.name)),
    )

  it.effect("each statement is prepared once per connection and bound by name after", () =>
    Effect.gen(function* () {
      const sql = yield* SqlClient.SqlClient
      const marker = fresh("m").replaceAll("-", "_")
      const twice = Effect.forEach([1, 2, 3], (i) =>
        pipelinedTransaction(sql, [
          scopeStatement(sql, "ann"),
          sql.unsafe(`SELECT $1::int AS i, '${marker}' AS marker`, [i]),
        ]),
      )
      const results = yield* twice
      expect(results.map((r) => r[1])).toEqual([1, 2, 3].map((i) => [{ i, marker }]))
      // One connection (pool of 1): the statement prepared once, run three times.
      expect(yield* preparedWith(sql, marker)).toEqual(["named"])
    }))

  it.effect("DB_PREPARED_STATEMENTS=false: nothing is prepared", () =>
    Effect.gen(function* () {
      const marker = fresh("m").replaceAll("-", "_")
      const unprepared = Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        for (const i of [1, 2, 3]) yield* pipelinedTransaction(sql, [sql.unsafe(`SELECT $1::int AS i, '${marker}' AS marker`, [i])])
        return yield* preparedWith(sql, marker)
      })
      const database = yield* TestDatabase
      expect(
        yield* unprepared.pipe(
          Effect.provide(RunnerSqlLive(1, { preparedStatements: false }).pipe(Layer.provide(Layer.succeed(TestDatabase, database)))),
        ),
      ).toEqual([])
    }))

  it.effect("a sequence that prepared statements and failed leaves no name the next transaction would miss", () =>
    Effect.gen(function* () {
      const sql = yield* SqlClient.SqlClient
      const marker = fresh("m").replaceAll("-", "_")
      const later = sql.unsafe(`SELECT 2 AS two, '${marker}' AS marker`)
      // The failing statement comes first: the backend skips the Parse of the one after it.
      const failed = yield* Effect.either(pipelinedTransaction(sql, [sql`SELECT 1 / 0`, later]))
      expect(Either.isLeft(failed) && failed.left._tag).toBe("SqlError")
      // Were its name kept for the connection, this Bind would name a statement the backend never parsed.
      const [rows] = yield* pipelinedTransaction(sql, [sql.unsafe(`SELECT 2 AS two, '${marker}' AS marker`)])
      expect(rows).toEqual([{ two: 2, marker }])
      expect(yield* sql`SELECT 1 AS one`).toEqual([{ one: 1 }])
    }))
})

// Two processes' runners on one server: on the embedded database (one backend for every client, SPEC
// §11) their prepared statements share one namespace, so each process's names must be its own. Each
// child's first connection is its first (serial 1), as in two runner processes, or a runner beside the
// tests' own pool; with the serial alone in the name the second to prepare failed on the first's name.
it.layer(TestDatabaseLive, { timeout: 120_000 })("pipelinedTransaction in two processes on one server", (it) => {
  const CHILD = fileURLToPath(new URL("../support/preparedStatementsChild.ts", import.meta.url))
  const runChild = (url: string, marker: string) =>
    new Promise<string>((resolve, reject) => {
      const args = JSON.stringify({ url, marker, rounds: 3, pauseMs: 150 })
      execFile(BUN, [CHILD, args], { timeout: 60_000 }, (error, stdout, stderr) => (error === null ? resolve(stdout) : reject(new Error(`${error.message}\n${stderr}`))))
    })

  it.effect("each process prepares and runs its own statements at once", () =>
    Effect.gen(function* () {
      const db = yield* TestDatabase
      const markers = [fresh("a"), fresh("b")].map((m) => m.replaceAll("-", "_"))
      const outputs = yield* Effect.promise(() => Promise.all(markers.map((marker) => runChild(Redacted.value(db.runnerUrl), marker))))
      outputs.forEach((output, k) => {
        const marker = markers[k]
        expect(JSON.parse(output)).toEqual({ results: [1, 2, 3].map((i) => [{ i, marker }]) })
      })
    }))
})
