/**
 * Today's sync server lets members of a shared space read its rows (policy
 * sync_changes_space_member_read, SPEC §2). The runner's per-user scope sets the space list to '',
 * so a row another user wrote into a space never reaches this user's prompt or write-back, even
 * when the connection's role names that space by default (SPEC §13). Today's generation only: the
 * seed's table has neither space_id nor the policy.
 */
import { SqlClient } from "@effect/sql"
import { PgClient } from "@effect/sql-pg"
import { it } from "@effect/vitest"
import { Context, Effect, Layer, TestClock } from "effect"
import { expect } from "vitest"
import { RunnerConfig } from "../../src/services/AppConfig.js"
import { EventLogSchema } from "../../src/services/EventLogSchema.js"
import { InputResolvers } from "../../src/services/InputResolvers.js"
import { WriteBack } from "../../src/services/WriteBack.js"
import { withUserScope } from "../../src/services/withUserScope.js"
import { insertChange, missionData, runnerRows } from "../support/eventLogRows.js"
import { TestDatabase, testDatabaseLayer } from "../support/TestDatabase.js"

const SPACE = "space-shared-1"

const owner = (text: string, params?: ReadonlyArray<unknown>) =>
  Effect.flatMap(TestDatabase, (db) => Effect.promise(() => db.ownerQuery(text, params)))

/** As the sync server stores a member's change in a shared space. */
const insertInSpace = (user: string, app: string, table: string, id: string, data: unknown) =>
  owner(
    `INSERT INTO sync_changes (app_id, table_name, record_id, user_id, op, data, field_meta, client_id, created_at, space_id)
     VALUES ($1, $2, $3, $4, 'insert', $5::jsonb, '{}'::jsonb, 'bob-phone', '2026-03-01T00:00:01Z', $6)`,
    [app, table, id, user, JSON.stringify(data), SPACE],
  )

/** The runner role's connections name the space by default: what a careless operator (or the sync server's pooling) might leave. */
const nameSpaceForRunner = Effect.gen(function* () {
  const db = yield* TestDatabase
  if (db.kind === "server") {
    const [{ name }] = (yield* owner("SELECT current_database() AS name")) as [{ name: string }]
    yield* owner(`ALTER ROLE ${db.runnerRole} IN DATABASE ${name} SET app.current_user_space_ids = '${SPACE}'`)
  } else {
    // PGlite: one shared session; a session-level setting is what every client then sees.
    yield* owner(`SELECT set_config('app.current_user_space_ids', '${SPACE}', false)`)
  }
})

// Built after the role default is set, so every connection starts with it.
const runnerPool = Effect.flatMap(TestDatabase, (db) =>
  Layer.build(EventLogSchema.Default.pipe(Layer.provideMerge(PgClient.layer({ url: db.runnerUrl, maxConnections: 3 })), Layer.orDie)),
)

it.layer(testDatabaseLayer({ generation: "field_meta" }), { timeout: 60_000 })("shared spaces on today's sync_changes", (it) => {
  it.scoped("another user's row in a space the role names is visible without the scope's '' and never inside it, nor in a prompt or write-back", () =>
    Effect.gen(function* () {
      // bob's goal and a forged update of ann's mission id, both in the shared space.
      yield* insertChange({ user: "ann", id: "ann-m", data: missionData({ inputs: [{ module: "goals", table: "companionGoals", id: "g1" }] }), createdAt: "2026-03-01T00:00:00Z" })
      yield* insertInSpace("bob", "companion", "companionGoals", "g1", { title: "Bob's private goal", currentValue: 1 })
      yield* insertInSpace("bob", "ai", "aiMissions", "ann-m", { iterations: [{ id: "bobs", startedAt: "x", plan: [], overallStatus: "approved" }] })
      yield* nameSpaceForRunner
      const context = yield* runnerPool
      const sql = Context.get(context, SqlClient.SqlClient)

      // The policy is in place and would grant it: scoped to ann by user id alone, bob's goal shows.
      const unguarded = yield* sql.withTransaction(
        Effect.zipRight(
          sql`SELECT set_config('app.current_user_id', 'ann', true)`,
          sql<{ n: number }>`SELECT count(*)::int AS n FROM sync_changes WHERE app_id = 'companion'`,
        ),
      )
      expect(unguarded).toEqual([{ n: 1 }])
      // The runner's scope: nothing of the space.
      const scoped = yield* withUserScope("ann", (s) =>
        s<{ n: number }>`SELECT count(*)::int AS n FROM sync_changes WHERE space_id IS NOT NULL AND app_id = 'companion'`,
      ).pipe(Effect.provideService(SqlClient.SqlClient, sql))
      expect(scoped).toEqual([{ n: 0 }])

      const services = yield* Layer.build(
        Layer.mergeAll(InputResolvers.Default, WriteBack.Default).pipe(
          Layer.provide(Layer.mergeAll(Layer.succeedContext(context), RunnerConfig.test())),
        ),
      )
      const resolved = yield* Context.get(services, InputResolvers).resolve("ann", [{ module: "goals", table: "companionGoals", id: "g1" }])
      expect(resolved).toEqual([])

      yield* TestClock.setTime(Date.parse("2026-03-02T08:00:30.000Z"))
      const iteration = { id: "it-1", startedAt: "2026-03-02T08:00:01.000Z", plan: [], overallStatus: "approved" as const, source: "server" as const, summary: "nothing" }
      expect((yield* Context.get(services, WriteBack).append({ userId: "ann", missionId: "ann-m", iteration }))._tag).toBe("Written")
      const [row] = yield* runnerRows("ann", "ann-m")
      expect((row!.data as { iterations: Array<{ id: string }> }).iterations.map((i) => i.id)).toEqual(["it-1"])
    }))
})
