import { SqlClient } from "@effect/sql"
import { it } from "@effect/vitest"
import { Effect, Either, Layer, Metric } from "effect"
import { expect } from "vitest"
import { InputResolvers, makeInputResolvers, shippedResolvers } from "../../src/services/InputResolvers.js"
import { inputsSkippedTotal } from "../../src/services/metrics.js"
import { withUserScope } from "../../src/services/withUserScope.js"
import { RunnerSqlLive, TestDatabase, TestDatabaseLive } from "../support/TestDatabase.js"

const Db = Layer.provideMerge(RunnerSqlLive(4), TestDatabaseLive)
const L = Layer.provideMerge(InputResolvers.Default, Db)

let seq = 0
/** A change as the sync server writes it (as the owner), at a distinct created_at per call. */
const change = (row: {
  user: string
  app?: string
  table?: string
  id: string
  op?: "insert" | "update" | "delete"
  data?: unknown
  fieldTimestamps?: unknown
}) =>
  Effect.flatMap(TestDatabase, (db) =>
    Effect.promise(() =>
      db.ownerQuery(
        `INSERT INTO sync_changes (app_id, table_name, record_id, user_id, op, data, ${db.generation}, client_id, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'test-device', now() + make_interval(secs => $8))`,
        [
          row.app ?? "companion",
          row.table ?? "companionGoals",
          row.id,
          row.user,
          row.op ?? "insert",
          row.data === undefined ? null : JSON.stringify(row.data),
          JSON.stringify(row.fieldTimestamps ?? {}),
          ++seq,
        ],
      ),
    ),
  )

const skipped = (reason: string) =>
  Effect.map(Metric.value(Metric.tagged(inputsSkippedTotal, "reason", reason)), (s) => s.count)

const goal = (id: string) => ({ module: "goals", table: "companionGoals", id })

it.layer(L, { timeout: 60_000 })("InputResolvers (goals)", (it) => {
  it.effect("a goal is rendered with its title and a progress line from the replayed record", () =>
    Effect.gen(function* () {
      yield* change({ user: "ann", id: "g-run", data: { title: "Run 5k", currentValue: 1, target: { value: 10, unit: "km" }, period: "week" } })
      yield* change({ user: "ann", id: "g-run", op: "update", data: { currentValue: 3 } })
      const resolvers = yield* InputResolvers
      const out = yield* resolvers.resolve("ann", [goal("g-run")])
      expect(out).toEqual([
        { id: "g-run", module: "goals", table: "companionGoals", title: "Run 5k", content: "Progress: 3 / 10 per week" },
      ])
    }))

  it.effect("several inputs of one mission resolve in order, each from its own table", () =>
    Effect.gen(function* () {
      yield* change({ user: "ann", id: "g-a", data: { title: "Read", currentValue: 2, target: { value: 4 }, period: "month" } })
      yield* change({ user: "ann", table: "companionHabits", id: "g-a", data: { title: "Habit with the same id", currentValue: 5, target: { value: 7 }, period: "daily" } })
      const out = yield* Effect.flatMap(InputResolvers, (r) =>
        r.resolve("ann", [goal("g-a"), { module: "goals", table: "companionHabits", id: "g-a" }]),
      )
      expect(out.map((o) => [o.table, o.title, o.content])).toEqual([
        ["companionGoals", "Read", "Progress: 2 / 4 per month"],
        ["companionHabits", "Habit with the same id", "Progress: 5 / 7 per day"],
      ])
    }))

  it.effect("a value starting enc:1: never reaches the result: title becomes [encrypted], others are dropped", () =>
    Effect.gen(function* () {
      yield* change({
        user: "ann",
        id: "g-secret",
        data: { title: "enc:1:QUJDREVG", currentValue: "enc:1:MTI=", target: { value: 10 }, period: "enc:1:d2Vlaw==" },
      })
      yield* change({ user: "ann", id: "g-secret-2", data: { title: "Plain", currentValue: 2, target: { value: "enc:1:OTk=" }, period: "week" } })
      const out = yield* Effect.flatMap(InputResolvers, (r) => r.resolve("ann", [goal("g-secret"), goal("g-secret-2")]))
      expect(JSON.stringify(out)).not.toContain("enc:1:")
      expect(out).toEqual([
        { id: "g-secret", module: "goals", table: "companionGoals", title: "[encrypted]", content: "Progress: ? / 10" },
        { id: "g-secret-2", module: "goals", table: "companionGoals", title: "Plain", content: "Progress: 2 (no target) per week" },
      ])
    }))

  it.effect("a resolver added by a developer cannot leak ciphertext either: the service scrubs what it renders", () =>
    Effect.gen(function* () {
      yield* change({ user: "ann", app: "notes", table: "notes", id: "n1", data: { title: "enc:1:AAAA", body: "see enc:1:BBBB here" } })
      const leaky = yield* makeInputResolvers({
        notes: {
          appId: "notes",
          render: (input, record) =>
            Either.right({ ...input, title: String(record.title), content: String(record.body) }),
        },
      })
      const out = yield* leaky.resolve("ann", [{ module: "notes", table: "notes", id: "n1" }])
      expect(out).toEqual([{ id: "n1", module: "notes", table: "notes", title: "[encrypted]", content: "see [encrypted] here" }])
    }))

  it.effect("missing, deleted (op delete or deletedAt) and unreadable records and unknown modules are left out, counted by reason", () =>
    Effect.gen(function* () {
      yield* change({ user: "ann", id: "g-keep", data: { title: "Keep", currentValue: 1, target: { value: 2 }, period: "day" } })
      yield* change({ user: "ann", id: "g-del", data: { title: "Gone", currentValue: 1, target: { value: 2 } } })
      yield* change({ user: "ann", id: "g-del", op: "delete" })
      yield* change({ user: "ann", id: "g-soft", data: { title: "Soft", currentValue: 1, target: { value: 2 } } })
      yield* change({ user: "ann", id: "g-soft", op: "update", data: { deletedAt: "2026-01-01T00:00:00Z" } })
      yield* change({ user: "ann", id: "g-empty", data: { note: "nothing a goal shows" } })
      yield* change({ user: "ann", id: "g-garbage", data: [1, 2, 3] })
      const before = yield* Effect.all({
        missing: skipped("missing"),
        deleted: skipped("deleted"),
        unreadable: skipped("unreadable"),
        noResolver: skipped("no-resolver"),
      })
      const out = yield* Effect.flatMap(InputResolvers, (r) =>
        r.resolve("ann", [
          goal("g-nope"),
          goal("g-del"),
          { module: "kontext", table: "kontextDocs", id: "k1" },
          goal("g-keep"),
          goal("g-soft"),
          goal("g-empty"),
          goal("g-garbage"),
        ]),
      )
      expect(out.map((o) => o.id)).toEqual(["g-keep"])
      const after = yield* Effect.all({
        missing: skipped("missing"),
        deleted: skipped("deleted"),
        unreadable: skipped("unreadable"),
        noResolver: skipped("no-resolver"),
      })
      expect({
        missing: after.missing - before.missing,
        deleted: after.deleted - before.deleted,
        unreadable: after.unreadable - before.unreadable,
        noResolver: after.noResolver - before.noResolver,
      }).toEqual({ missing: 1, deleted: 2, unreadable: 2, noResolver: 1 })
    }))

  it.effect("a mission with no inputs (or none with a resolver) opens no transaction and resolves to nothing", () =>
    Effect.gen(function* () {
      // The real client, watched: every transaction and every statement it is asked for is counted.
      const real = yield* SqlClient.SqlClient
      const used = { transactions: 0, statements: 0 }
      const watched = new Proxy(real, {
        apply: (target, self, args) => {
          used.statements++
          return Reflect.apply(target as never, self, args)
        },
        get: (target, property, receiver) => {
          const value = Reflect.get(target, property, receiver)
          if (property !== "withTransaction") return value
          return (effect: Effect.Effect<unknown, unknown, unknown>) => {
            used.transactions++
            return (value as (e: typeof effect) => typeof effect).call(target, effect)
          }
        },
      })
      const r = yield* makeInputResolvers(shippedResolvers).pipe(Effect.provideService(SqlClient.SqlClient, watched))
      expect(yield* r.resolve("ann", [])).toEqual([])
      expect(yield* r.resolve("ann", [{ module: "unknown", table: "t", id: "x" }])).toEqual([])
      expect(used).toEqual({ transactions: 0, statements: 0 })
      // The watch sees a resolver that does read: one transaction for the mission's inputs.
      expect(yield* r.resolve("ann", [goal("no-such-goal")])).toEqual([])
      expect(used.transactions).toBe(1)
      expect(used.statements).toBeGreaterThan(0)
    }))

  it.effect("user A's goal is invisible inside user B's scope, even under the same record id", () =>
    Effect.gen(function* () {
      yield* change({ user: "alice", id: "shared-id", data: { title: "Alice's secret goal", currentValue: 9, target: { value: 9 } } })
      yield* change({ user: "alice", id: "only-alice", data: { title: "Alice only", currentValue: 1, target: { value: 2 } } })
      yield* change({ user: "bob", id: "shared-id", data: { title: "Bob's goal", currentValue: 1, target: { value: 3 }, period: "week" } })
      const r = yield* InputResolvers
      const bob = yield* r.resolve("bob", [goal("shared-id"), goal("only-alice")])
      expect(bob).toEqual([
        { id: "shared-id", module: "goals", table: "companionGoals", title: "Bob's goal", content: "Progress: 1 / 3 per week" },
      ])
      const alice = yield* r.resolve("alice", [goal("shared-id"), goal("only-alice")])
      expect(alice.map((a) => a.title)).toEqual(["Alice's secret goal", "Alice only"])
    }))

  it.effect("the RLS scope is real: inside bob's scope no alice row is visible and inserting one for alice is refused", () =>
    Effect.gen(function* () {
      yield* change({ user: "alice", id: "rls-probe", data: { title: "probe" } })
      const refused = yield* withUserScope("bob", (sql) =>
        Effect.either(
          sql`INSERT INTO sync_changes (app_id, table_name, record_id, user_id, op, data, client_id)
              VALUES ('companion', 'companionGoals', 'forged', 'alice', 'insert', '{"title":"forged"}', 'x')`,
        ),
      ).pipe(Effect.either)
      // The WITH CHECK policy refuses the row; COMMIT of the aborted transaction then rolls back quietly.
      expect(Either.isRight(refused) && Either.isLeft(refused.right)).toBe(true)
      if (Either.isRight(refused) && Either.isLeft(refused.right)) {
        expect(String((refused.right.left.cause as Error).message)).toMatch(/row-level security/)
      }
      const visible = yield* withUserScope("bob", (sql) =>
        sql<{ n: number }>`SELECT count(*)::int AS n FROM sync_changes WHERE user_id = 'alice' AND app_id = 'companion'`,
      )
      expect(visible[0]?.n).toBe(0)
      const sql = yield* SqlClient.SqlClient
      const who = yield* sql<{ su: boolean; br: boolean }>`
        SELECT rolsuper AS su, rolbypassrls AS br FROM pg_roles WHERE rolname = current_user`
      expect(who[0]).toEqual({ su: false, br: false })
      const db = yield* TestDatabase
      const forged = yield* Effect.promise(() =>
        db.ownerQuery("SELECT count(*)::int AS n FROM sync_changes WHERE record_id = 'forged'"),
      )
      expect(forged[0]?.n).toBe(0)
    }))
})
