import { SqlClient } from "@effect/sql"
import { it } from "@effect/vitest"
import { Deferred, Duration, Effect, Either, Fiber, Layer, Metric, Option, TestClock, TestServices } from "effect"
import { expect } from "vitest"
import { RunnerConfig } from "../../src/services/AppConfig.js"
import { MigrationsLive } from "../../src/services/Migrations.js"
import {
  MissionStore,
  type MissionSnapshot,
  REFRESH_LOCK_KEY,
  RefreshKeeps,
  makeMissionStore,
  newMissionRowsQuery,
} from "../../src/services/MissionStore.js"
import { discoveryReconciledTotal, malformedRowsTotal, missionsSkippedTotal } from "../../src/services/metrics.js"
import {
  insertChanges,
  insertChangesAsUser,
  missionDeleteRow,
  missionFields,
  missionInsertRow,
  missionUpdateRow,
  seedHistory,
} from "../support/seed.js"
import { RunnerSqlLive, TestDatabase, TestDatabaseLive } from "../support/TestDatabase.js"

const onServer = process.env.TEST_DATABASE_URL !== undefined

const Db = Layer.provideMerge(RunnerSqlLive(8), TestDatabaseLive)
const Migrated = Layer.provideMerge(MigrationsLive, Layer.merge(Db, RunnerConfig.test()))
const StoreLive = Layer.provideMerge(MissionStore.Default, Migrated)

const one = (snapshots: ReadonlyArray<MissionSnapshot>, userId: string, missionId: string) => {
  const found = snapshots.filter((s) => s.userId === userId && s.missionId === missionId)
  expect(found.length).toBe(1)
  return found[0]!
}

const reason = (s: MissionSnapshot) => Either.match(s.decoded, { onLeft: (r) => r, onRight: () => "decodes" })

/** Refreshes until nothing new is left, so each test starts from a drained log. */
const drain = Effect.flatMap(MissionStore, (store) => store.refresh)

/** What a device holds for a mission inserted with the seed's defaults, then changed as `fields` say (written out, not replayed). */
/** A record as MissionSnapshot carries it: every field but `iterations`, which stay in the store. */
const expectedRecord = (missionId: string, fields: Record<string, unknown> = {}) => {
  const all: Record<string, unknown> = { ...missionFields(), ...fields, id: missionId }
  const { iterations: _, ...record } = all
  return record
}

const counter = (metric: typeof missionsSkippedTotal, reasonTag: string) =>
  Effect.map(Metric.value(Metric.tagged(metric, "reason", reasonTag)), (s) => s.count)

it.layer(StoreLive, { timeout: 120_000 })("MissionStore", (it) => {
  it.effect("refresh picks up inserts, updates and deletes, and a refresh with no new rows reads none", () =>
    Effect.gen(function* () {
      const store = yield* MissionStore
      yield* drain
      yield* insertChanges([missionInsertRow("u-crud", "m1"), missionInsertRow("u-crud", "m2", { title: "Read more" })])
      const first = yield* store.refresh
      expect(first.rowsRead).toBe(2)
      expect(one(first.changed, "u-crud", "m1").schedulable).toBe(true)
      expect(one(first.changed, "u-crud", "m2").record?.title).toBe("Read more")

      const idle = yield* store.refresh
      expect(idle).toEqual({ rowsRead: 0, changed: [] })

      yield* insertChanges([missionUpdateRow("u-crud", "m1", { title: "Get fitter", state: "paused" })])
      const updated = yield* store.refresh
      expect(updated.rowsRead).toBe(1)
      const m1 = one(updated.changed, "u-crud", "m1")
      expect(m1.record).toMatchObject({ id: "m1", title: "Get fitter", state: "paused", objective: "Run a 10k by summer" })
      expect(m1.schedulable).toBe(false)
      expect(Either.isRight(m1.decoded)).toBe(true)

      yield* insertChanges([missionDeleteRow("u-crud", "m1")])
      const deleted = yield* store.refresh
      expect(one(deleted.changed, "u-crud", "m1").record).toBeNull()
      expect((yield* store.forUser("u-crud")).map((s) => s.missionId)).toEqual(["m2"])

      // A soft delete (deletedAt set) counts as deleted too; a later insert starts m1 anew.
      yield* insertChanges([missionUpdateRow("u-crud", "m2", { deletedAt: "2026-03-03T00:00:00Z" }), missionInsertRow("u-crud", "m1")])
      yield* store.refresh
      const now = yield* store.forUser("u-crud")
      expect(now.map((s) => [s.missionId, s.record?.title])).toEqual([["m1", "Get fit"]])
      expect(yield* store.refresh).toEqual({ rowsRead: 0, changed: [] })
    }),
  )

  it.effect("rows sharing one created_at are all applied, across batch boundaries", () =>
    Effect.gen(function* () {
      yield* drain
      // A store reading two rows per batch: the shared created_at straddles every batch boundary.
      const small = yield* makeMissionStore({ batchSize: 2 })
      yield* insertChanges([
        missionInsertRow("u-tie", "a"),
        missionInsertRow("u-tie", "b"),
        missionInsertRow("u-tie", "c"),
        missionUpdateRow("u-tie", "a", { title: "A2" }),
        missionInsertRow("u-tie", "d"),
      ])
      const db = yield* TestDatabase
      const times = yield* Effect.promise(() =>
        db.ownerQuery("SELECT count(DISTINCT created_at)::int AS n FROM sync_changes WHERE user_id = 'u-tie'"),
      )
      expect(times).toEqual([{ n: 1 }])
      const result = yield* small.refresh
      expect(result.rowsRead).toBe(5)
      const store = yield* MissionStore
      const mine = yield* store.forUser("u-tie")
      expect(mine.map((s) => s.missionId)).toEqual(["a", "b", "c", "d"])
      // Same created_at: the id order decides (SPEC §2). Inserted first, the update's title wins; the
      // update first, it creates the record and the insert's fields, just as new, replace it (ties: later row).
      const order = yield* Effect.promise(() =>
        db.ownerQuery("SELECT op FROM sync_changes WHERE user_id = 'u-tie' AND record_id = 'a' ORDER BY created_at, id"),
      )
      const insertFirst = order[0]?.op === "insert"
      expect(one(mine, "u-tie", "a").record).toEqual(insertFirst ? expectedRecord("a", { title: "A2" }) : expectedRecord("a"))
      expect((yield* small.refresh).rowsRead).toBe(0)
    }),
  )

  it.effect("a row that appears with an earlier created_at than rows already applied is seen and replayed in order", () =>
    Effect.gen(function* () {
      const store = yield* MissionStore
      const db = yield* TestDatabase
      yield* drain
      yield* insertChanges([missionInsertRow("u-back", "m")])
      yield* store.refresh
      // Just after the insert: what a transaction that started then and commits only later would write.
      const [{ t }] = (yield* Effect.promise(() =>
        db.ownerQuery("SELECT (max(created_at) + interval '1 microsecond')::text AS t FROM sync_changes WHERE user_id = 'u-back'"),
      )) as [{ t: string }]
      yield* insertChanges([missionUpdateRow("u-back", "m", { title: "newer" })])
      yield* store.refresh
      yield* insertChanges([{ ...missionUpdateRow("u-back", "m", { title: "older", objective: "late objective" }), createdAt: t }])
      const late = yield* store.refresh
      expect(late.rowsRead).toBe(1)
      const record = one(late.changed, "u-back", "m").record
      expect(record).toEqual(expectedRecord("m", { title: "newer", objective: "late objective" }))
    }),
  )

  it.effect("applied marks lost (the unlogged table emptied by a crash) change no snapshot: the window's rows are read again and their records replayed", () =>
    Effect.gen(function* () {
      const store = yield* MissionStore
      const db = yield* TestDatabase
      yield* drain
      yield* insertChanges([missionInsertRow("u-lost", "m"), missionInsertRow("u-lost", "n", { title: "Other" })])
      yield* insertChanges([missionUpdateRow("u-lost", "m", { title: "second", state: "paused" })])
      yield* store.refresh
      const before = yield* store.forUser("u-lost")
      expect(before.map((s) => [s.missionId, s.record?.title, s.schedulable])).toEqual([["m", "second", false], ["n", "Other", true]])
      const marks = yield* Effect.promise(() => db.ownerQuery("SELECT coalesce(sum(cardinality(change_ids)), 0)::int AS n FROM mana_ai.applied_records"))
      expect(Number(marks[0]?.n)).toBeGreaterThanOrEqual(3)
      yield* Effect.promise(() => db.ownerQuery("DELETE FROM mana_ai.applied_records"))
      const again = yield* store.refresh
      // Every row of the window comes back, each record once, replayed to the same snapshot.
      expect(again.rowsRead).toBeGreaterThanOrEqual(3)
      expect(one(again.changed, "u-lost", "m").record).toEqual(expectedRecord("m", { title: "second", state: "paused" }))
      expect(yield* store.forUser("u-lost")).toEqual(before)
      // Marked again: the next refresh reads none of them.
      expect((yield* store.refresh).rowsRead).toBe(0)
    }),
  )

  it.effect("one lost mark, of a row tied with a later one: the record is replayed, not the row applied again on top", () =>
    Effect.gen(function* () {
      const store = yield* MissionStore
      const db = yield* TestDatabase
      yield* drain
      // One statement: the two rows share created_at, so each title's time ties and the id order decides.
      yield* insertChanges([missionInsertRow("u-tied", "m", { title: "one" }), missionUpdateRow("u-tied", "m", { title: "two" })])
      yield* store.refresh
      const rows = yield* Effect.promise(() =>
        db.ownerQuery("SELECT id::text AS id, data->>'title' AS title FROM sync_changes WHERE user_id = 'u-tied' ORDER BY created_at, id"),
      )
      const [first, last] = rows as Array<{ id: string; title: string }>
      expect((yield* store.forUser("u-tied"))[0]?.record?.title).toBe(last!.title)
      // The first row's mark lost: it comes back alone. Applied again on top it would win the tie.
      yield* Effect.promise(() => db.ownerQuery("UPDATE mana_ai.applied_records SET change_ids = array_remove(change_ids, $1::uuid)", [first!.id]))
      const again = yield* store.refresh
      expect(again.rowsRead).toBe(1)
      expect(one(again.changed, "u-tied", "m").record?.title).toBe(last!.title)
      expect((yield* store.forUser("u-tied"))[0]?.record?.title).toBe(last!.title)
    }),
  )

  it.effect("a row stamped in the future never moves the cursor past the database's now(): rows committed after it are still seen", () =>
    Effect.gen(function* () {
      const store = yield* MissionStore
      const sql = yield* SqlClient.SqlClient
      yield* drain
      const inAYear = new Date(Date.now() + 365 * 24 * 3600_000).toISOString()
      yield* insertChanges([{ ...missionInsertRow("u-future", "ahead"), createdAt: inAYear }])
      expect(one((yield* store.refresh).changed, "u-future", "ahead").record?.title).toBe("Get fit")
      const [cursor] = yield* sql<{ behind: boolean }>`SELECT created_at <= now() AS behind FROM mana_ai.discovery_cursor`
      expect(cursor).toEqual({ behind: true })
      // Committed after the future row, stamped now: inside the window the cursor kept.
      yield* insertChanges([missionInsertRow("u-future", "now")])
      const next = yield* store.refresh
      expect(next.rowsRead).toBe(1)
      expect(one(next.changed, "u-future", "now").schedulable).toBe(true)
      // The future row is not applied twice.
      expect((yield* store.refresh).rowsRead).toBe(0)
    }),
  )

  it.effect("a row older than the window, committed after the cursor passed it, is found by reconciliation and by nothing else", () =>
    Effect.gen(function* () {
      const incremental = yield* makeMissionStore({ reconcileInterval: Duration.days(1) })
      const reconciling = yield* makeMissionStore({ reconcileInterval: Duration.minutes(5) })
      yield* drain
      yield* insertChanges([missionInsertRow("u-missed", "m"), missionInsertRow("u-missed", "other")])
      yield* incremental.refresh
      // As a sync transaction open for an hour commits: its rows carry the hour-old start time.
      const hourAgo = new Date(Date.now() - 3600_000).toISOString()
      const reconciledBefore = (yield* Metric.value(discoveryReconciledTotal)).count
      // The device stamped its edit when it made it (just now); the row's created_at is the transaction's start.
      const justNow = new Date(Date.now() + 1000).toISOString()
      yield* insertChanges([
        { ...missionUpdateRow("u-missed", "m", { objective: "From the long transaction" }, { objective: justNow }), createdAt: hourAgo },
        { ...missionInsertRow("u-missed", "brand-new", { title: "Only in the long transaction" }), createdAt: hourAgo },
      ])
      expect(yield* incremental.refresh).toEqual({ rowsRead: 0, changed: [] })
      // Not yet due: the interval has not passed.
      expect((yield* reconciling.refresh).changed).toEqual([])
      yield* TestClock.adjust(Duration.minutes(5))
      const reconciled = yield* reconciling.refresh
      expect(reconciled.changed.map((s) => `${s.userId}/${s.missionId}`).sort()).toEqual(["u-missed/brand-new", "u-missed/m"])
      expect(one(reconciled.changed, "u-missed", "m").record?.objective).toBe("From the long transaction")
      expect(one(reconciled.changed, "u-missed", "brand-new").record?.title).toBe("Only in the long transaction")
      expect(one(reconciled.changed, "u-missed", "brand-new").schedulable).toBe(true)
      expect((yield* Metric.value(discoveryReconciledTotal)).count - reconciledBefore).toBe(2)
      // Corrected once: the next reconciliation finds nothing to change.
      yield* TestClock.adjust(Duration.minutes(5))
      expect((yield* reconciling.refresh).changed).toEqual([])
      const forUser = yield* reconciling.forUser("u-missed")
      expect(forUser.map((s) => s.missionId).sort()).toEqual(["brand-new", "m", "other"])
    }),
  )

  it.effect.skipIf(!onServer)("a real transaction open longer than the window: missed by the incremental path, applied by reconciliation", () =>
    Effect.gen(function* () {
      const sql = yield* SqlClient.SqlClient
      const incremental = yield* makeMissionStore({ lookback: Duration.seconds(1), reconcileInterval: Duration.days(1) })
      const reconciling = yield* makeMissionStore({ lookback: Duration.seconds(1), reconcileInterval: Duration.zero })
      yield* incremental.refresh
      const inserted = yield* Deferred.make<void>()
      const commit = yield* Deferred.make<void>()
      const slow = yield* sql
        .withTransaction(
          Effect.gen(function* () {
            yield* sql`SELECT set_config('app.current_user_id', 'u-longtx', true)`
            yield* sql`
              INSERT INTO sync_changes (app_id, table_name, record_id, user_id, op, data, client_id)
              VALUES ('ai', 'aiMissions', 'slow', 'u-longtx', 'insert', ${JSON.stringify(missionInsertRow("u-longtx", "slow").data)}::jsonb, 'phone')`
            yield* Deferred.succeed(inserted, undefined)
            yield* Deferred.await(commit)
          }),
        )
        .pipe(Effect.fork)
      yield* Deferred.await(inserted)
      // Longer than the one-second window, by a wide margin.
      yield* TestServices.provideLive(Effect.sleep("2500 millis"))
      yield* insertChangesAsUser("u-longtx", [missionInsertRow("u-longtx", "fast")])
      expect(one((yield* incremental.refresh).changed, "u-longtx", "fast").schedulable).toBe(true)
      yield* Deferred.succeed(commit, undefined)
      yield* Fiber.join(slow)
      expect((yield* incremental.refresh).changed.filter((s) => s.userId === "u-longtx")).toEqual([])
      expect((yield* incremental.forUser("u-longtx")).map((s) => s.missionId)).toEqual(["fast"])
      const reconciled = yield* reconciling.refresh
      expect(reconciled.changed.filter((s) => s.userId === "u-longtx").map((s) => s.missionId)).toEqual(["slow"])
      expect((yield* reconciling.forUser("u-longtx")).map((s) => s.missionId)).toEqual(["fast", "slow"])
    }),
  )

  it.effect.skipIf(!onServer)("a row whose transaction commits after a later one is seen (real concurrent transactions)", () =>
    Effect.gen(function* () {
      const store = yield* MissionStore
      const sql = yield* SqlClient.SqlClient
      yield* drain
      yield* insertChangesAsUser("u-late", [missionInsertRow("u-late", "m")])
      yield* store.refresh
      const inserted = yield* Deferred.make<void>()
      const commit = yield* Deferred.make<void>()
      // The sync server's slow transaction: its now() is taken here, it commits at the end.
      const slow = yield* sql
        .withTransaction(
          Effect.gen(function* () {
            yield* sql`SELECT set_config('app.current_user_id', 'u-late', true)`
            yield* sql`
              INSERT INTO sync_changes (app_id, table_name, record_id, user_id, op, data, client_id)
              VALUES ('ai', 'aiMissions', 'm', 'u-late', 'update', ${JSON.stringify({ title: "slow", objective: "slow objective" })}::jsonb, 'phone')`
            yield* Deferred.succeed(inserted, undefined)
            yield* Deferred.await(commit)
          }),
        )
        .pipe(Effect.fork)
      yield* Deferred.await(inserted)
      yield* insertChangesAsUser("u-late", [missionUpdateRow("u-late", "m", { title: "fast" })])
      const before = yield* store.refresh
      expect(before.rowsRead).toBe(1)
      expect(one(before.changed, "u-late", "m").record?.title).toBe("fast")
      yield* Deferred.succeed(commit, undefined)
      yield* Fiber.join(slow)
      const after = yield* store.refresh
      expect(after.rowsRead).toBe(1)
      const record = one(after.changed, "u-late", "m").record
      // The slow row is older: its title loses to "fast", its objective is new.
      expect(record).toEqual(expectedRecord("m", { title: "fast", objective: "slow objective" }))
    }),
  )

  it.scoped.skipIf(!onServer)("two refreshes at once (two pools) apply each new row once: the advisory lock serialises them", () =>
    Effect.gen(function* () {
      const sql = yield* SqlClient.SqlClient
      yield* drain
      const otherPool = yield* Layer.build(RunnerSqlLive(2))
      const first = yield* MissionStore
      const second = yield* makeMissionStore().pipe(Effect.provide(otherPool), Effect.provideService(RunnerConfig, RunnerConfig.defaults))
      yield* insertChanges(["a", "b", "c", "d", "e"].map((id) => missionInsertRow("u-lock", id)))
      // Hold the refresh lock, so both refreshes are under way before either may read.
      const held = yield* Deferred.make<void>()
      const release = yield* Deferred.make<void>()
      const holder = yield* sql
        .withTransaction(
          Effect.gen(function* () {
            yield* sql`SELECT pg_advisory_xact_lock(${REFRESH_LOCK_KEY}::bigint)`
            yield* Deferred.succeed(held, undefined)
            yield* Deferred.await(release)
          }),
        )
        .pipe(Effect.fork)
      yield* Deferred.await(held)
      const a = yield* Effect.fork(first.refresh)
      const b = yield* Effect.fork(second.refresh)
      // Both wait on the lock (a refresh without it would have read and returned by now).
      yield* TestServices.provideLive(Effect.sleep("500 millis"))
      expect([yield* Fiber.poll(a), yield* Fiber.poll(b)].map(Option.isNone)).toEqual([true, true])
      yield* Deferred.succeed(release, undefined)
      yield* Fiber.join(holder)
      const results = [yield* Fiber.join(a), yield* Fiber.join(b)]
      // One of them read all five rows, the other none: no row applied twice.
      expect(results.map((r) => r.rowsRead).sort()).toEqual([0, 5])
      expect(results.flatMap((r) => r.changed.map((s) => s.missionId)).sort()).toEqual(["a", "b", "c", "d", "e"])
    }),
  )

  it.effect("two users' missions with the same record_id stay separate", () =>
    Effect.gen(function* () {
      const store = yield* MissionStore
      yield* drain
      yield* insertChanges([missionInsertRow("u-a", "shared", { title: "A's" }), missionInsertRow("u-b", "shared", { title: "B's" })])
      yield* store.refresh
      yield* insertChanges([missionUpdateRow("u-a", "shared", { title: "A's, changed" }), missionDeleteRow("u-b", "shared")])
      yield* store.refresh
      expect((yield* store.forUser("u-a")).map((s) => s.record?.title)).toEqual(["A's, changed"])
      expect(yield* store.forUser("u-b")).toEqual([])
      yield* insertChanges([missionInsertRow("u-b", "shared", { title: "B's again" })])
      yield* store.refresh
      expect((yield* store.forUser("u-a")).map((s) => s.record?.title)).toEqual(["A's, changed"])
      expect((yield* store.forUser("u-b")).map((s) => s.record?.title)).toEqual(["B's again"])
    }),
  )

  it.effect("RefreshKeeps: changed holds only the kept users' snapshots, changedCount counts all, and every snapshot is stored", () =>
    Effect.gen(function* () {
      const store = yield* MissionStore
      yield* drain
      yield* insertChanges([
        missionInsertRow("u-keep", "m-1", { title: "kept" }),
        missionInsertRow("u-drop", "m-2", { title: "left out" }),
        missionInsertRow("u-drop", "m-3", { title: "left out too" }),
      ])
      const r = yield* Effect.locally(store.refresh, RefreshKeeps, (userId) => userId === "u-keep")
      expect(r.changed.map((s) => [s.userId, s.missionId])).toEqual([["u-keep", "m-1"]])
      expect(r.changedCount).toBe(3)
      expect((yield* store.forUser("u-drop")).map((s) => s.record?.title)).toEqual(["left out", "left out too"])
      // Outside the FiberRef's scope every user is kept again.
      yield* insertChanges([missionUpdateRow("u-drop", "m-2", { title: "changed" })])
      const next = yield* store.refresh
      expect(next).toEqual({ rowsRead: 1, changed: [expect.objectContaining({ userId: "u-drop", missionId: "m-2" })] })
    }),
  )

  it.effect("bad per-field times (not an object, or a value that is not an instant) are counted by reason and the row still applies with its created_at", () =>
    Effect.gen(function* () {
      const store = yield* MissionStore
      yield* drain
      const notObject = yield* counter(malformedRowsTotal, "field-times-not-object")
      const notInstant = yield* counter(malformedRowsTotal, "field-time-not-instant")
      // Inside the look-back window, one second apart.
      const at = (s: number) => new Date(Date.now() - 60_000 + s * 1000).toISOString()
      yield* insertChanges([
        { ...missionInsertRow("u-times", "a"), fieldTimestamps: "garbage", createdAt: at(0) },
        { ...missionInsertRow("u-times", "b"), fieldTimestamps: [1, 2], createdAt: at(0) },
        { ...missionUpdateRow("u-times", "a", { title: "New title" }), fieldTimestamps: { title: 7 }, createdAt: at(1) },
        // An older time wins nothing: proves the valid stamps are still honoured beside the bad ones.
        { ...missionUpdateRow("u-times", "b", { title: "Old title" }, { title: "2026-02-01T00:00:00Z" }), createdAt: at(2) },
      ])
      const result = yield* store.refresh
      expect((yield* counter(malformedRowsTotal, "field-times-not-object")) - notObject).toBe(2)
      expect((yield* counter(malformedRowsTotal, "field-time-not-instant")) - notInstant).toBe(1)
      expect(one(result.changed, "u-times", "a").record?.title).toBe("New title")
      expect(one(result.changed, "u-times", "a").schedulable).toBe(true)
      expect(one(result.changed, "u-times", "b").record?.title).toBe("Get fit")
    }),
  )

  it.effect("a mission row's data.id never renames the record: the snapshot's id is the record_id", () =>
    Effect.gen(function* () {
      const store = yield* MissionStore
      yield* drain
      yield* insertChanges([
        missionInsertRow("u-ids", "real-id", { id: "claimed-id" }),
        missionUpdateRow("u-ids", "real-id", { id: "another-id" }, { id: "2099-01-01T00:00:00Z" }),
      ])
      const result = yield* store.refresh
      const snapshot = one(result.changed, "u-ids", "real-id")
      expect(snapshot.record?.id).toBe("real-id")
      expect(Either.getOrThrow(snapshot.decoded).id).toBe("real-id")
      expect(result.changed.some((s) => s.missionId !== "real-id" && s.userId === "u-ids")).toBe(false)
    }),
  )

  it.effect("malformed missions are skipped with a reason naming the field and counted; the user's good mission stays", () =>
    Effect.gen(function* () {
      const store = yield* MissionStore
      yield* drain
      const skippedBefore = yield* counter(missionsSkippedTotal, "malformed")
      const rowsBefore = yield* counter(malformedRowsTotal, "data-not-object")
      yield* insertChanges([
        missionInsertRow("u-bad", "good"),
        missionInsertRow("u-bad", "wrong-type", { title: 5 }),
        missionInsertRow("u-bad", "bad-interval", { cadence: { kind: "interval", everyMinutes: 0 } }),
        missionInsertRow("u-bad", "bad-cron", { cadence: { kind: "cron", expression: "61 * * * *" } }),
        missionInsertRow("u-bad", "bad-zone", { timezone: "Mars/Olympus_Mons" }),
        missionInsertRow("u-bad", "bad-next", { nextRunAt: "next tuesday-ish" }),
        missionInsertRow("u-bad", "no-iterations", { iterations: "none" }),
        missionInsertRow("u-bad", "five-wrong", { title: 1, objective: 2, conceptMarkdown: 3, state: "x", inputs: "no" }),
        { userId: "u-bad", recordId: "not-object", op: "insert", data: "just text" },
      ])
      const result = yield* store.refresh
      const reasons = Object.fromEntries(result.changed.filter((s) => s.userId === "u-bad").map((s) => [s.missionId, reason(s)]))
      expect(reasons.good).toBe("decodes")
      expect(reasons["wrong-type"]).toMatch(/field title: expected string, actual 5/)
      expect(reasons["bad-interval"]).toMatch(/field cadence\.everyMinutes/)
      expect(reasons["bad-cron"]).toMatch(/field cadence: invalid cron expression/)
      expect(reasons["bad-zone"]).toMatch(/field timezone: "Mars\/Olympus_Mons"/)
      expect(reasons["bad-next"]).toMatch(/field nextRunAt/)
      expect(reasons["no-iterations"]).toMatch(/field iterations: expected an array, actual "none"/)
      expect(reasons["not-object"]).toMatch(/data that is not an object \(a string\)/)
      // At most three fields are named; the rest are counted.
      expect(reasons["five-wrong"]).toBe(
        "the mission does not decode: field title: expected string, actual 1; field objective: expected string, actual 2; " +
          "field conceptMarkdown: expected string, actual 3 (and 2 more)",
      )
      for (const s of result.changed.filter((s) => s.userId === "u-bad" && s.missionId !== "good")) {
        expect(s.schedulable).toBe(false)
      }
      expect(one(result.changed, "u-bad", "good").schedulable).toBe(true)
      expect((yield* counter(missionsSkippedTotal, "malformed")) - skippedBefore).toBe(8)
      expect((yield* counter(malformedRowsTotal, "data-not-object")) - rowsBefore).toBe(1)
      const due = yield* store.due(new Date("2026-03-02T09:00:00Z"))
      expect(due.filter((s) => s.userId === "u-bad").map((s) => s.missionId)).toEqual(["good"])

      // A bad update to a good mission is counted and not applied; the mission stays schedulable.
      yield* insertChanges([{ userId: "u-bad", recordId: "good", op: "update", data: [1, 2] }])
      const again = yield* store.refresh
      expect(one(again.changed, "u-bad", "good").schedulable).toBe(true)
      expect((yield* counter(malformedRowsTotal, "data-not-object")) - rowsBefore).toBe(2)
      // Fixing a malformed mission makes it schedulable.
      yield* insertChanges([missionUpdateRow("u-bad", "wrong-type", { title: "Fixed" })])
      const fixed = yield* store.refresh
      expect(one(fixed.changed, "u-bad", "wrong-type").schedulable).toBe(true)
    }),
  )

  it.effect("schedulable reads keyset pages in (user, mission) order: every schedulable snapshot once, none beyond the limit", () =>
    Effect.gen(function* () {
      const store = yield* MissionStore
      yield* drain
      yield* insertChanges([
        missionInsertRow("u-page-b", "m1"),
        missionInsertRow("u-page-a", "m3"),
        missionInsertRow("u-page-a", "m1"),
        missionInsertRow("u-page-b", "paused", { state: "paused" }),
        missionInsertRow("u-page-a", "m2"),
        missionInsertRow("u-page-c", "m1"),
      ])
      yield* store.refresh
      const everything = (yield* store.schedulable(undefined, 10_000)).map((s) => `${s.userId}/${s.missionId}`)
      const paged: Array<string> = []
      let after: { readonly userId: string; readonly missionId: string } | undefined
      for (;;) {
        const page = yield* store.schedulable(after, 2)
        expect(page.length).toBeLessThanOrEqual(2)
        paged.push(...page.map((s) => `${s.userId}/${s.missionId}`))
        const last = page[page.length - 1]
        if (last === undefined || page.length < 2) break
        after = { userId: last.userId, missionId: last.missionId }
      }
      expect(paged).toEqual(everything)
      expect(paged.filter((k) => k.startsWith("u-page-"))).toEqual([
        "u-page-a/m1",
        "u-page-a/m2",
        "u-page-a/m3",
        "u-page-b/m1",
        "u-page-c/m1",
      ])
    }),
  )

  it.effect("due(now) returns active, live missions whose nextRunAt has come", () =>
    Effect.gen(function* () {
      const store = yield* MissionStore
      yield* drain
      yield* insertChanges([
        missionInsertRow("u-due", "past", { nextRunAt: "2026-03-02T08:00:00Z" }),
        missionInsertRow("u-due", "exactly-now", { nextRunAt: "2026-03-02T09:00:00.000+00:00" }),
        missionInsertRow("u-due", "future", { nextRunAt: "2026-03-02T09:00:01Z" }),
        missionInsertRow("u-due", "paused", { state: "paused" }),
        missionInsertRow("u-due", "done", { state: "done" }),
        missionInsertRow("u-due", "unscheduled", { nextRunAt: null, cadence: { kind: "manual" } }),
        missionInsertRow("u-due", "no-next", { nextRunAt: undefined }),
        missionInsertRow("u-due", "deleted"),
        missionInsertRow("u-due", "soft-deleted", { deletedAt: "2026-03-01T12:00:00Z" }),
      ])
      yield* insertChanges([missionDeleteRow("u-due", "deleted")])
      yield* store.refresh
      const now = new Date("2026-03-02T09:00:00Z")
      const due = (yield* store.due(now)).filter((s) => s.userId === "u-due")
      expect(due.map((s) => s.missionId)).toEqual(["past", "exactly-now"])
      expect(due[0]!.nextRunAt?.toISOString()).toBe("2026-03-02T08:00:00.000Z")
      expect(Either.getOrThrow(due[0]!.decoded).title).toBe("Get fit")
      const schedulable = (yield* store.schedulable(undefined, 10_000)).filter((s) => s.userId === "u-due").map((s) => s.missionId)
      expect(schedulable.sort()).toEqual(["exactly-now", "future", "past"])
      // Once its nextRunAt moves on, it is no longer due.
      yield* insertChanges([missionUpdateRow("u-due", "past", { nextRunAt: "2026-03-02T10:00:00Z" })])
      yield* store.refresh
      expect((yield* store.due(now)).filter((s) => s.userId === "u-due").map((s) => s.missionId)).toEqual(["exactly-now"])
    }),
  )

  it.effect("a claim is exclusive between owners until it expires or is released", () =>
    Effect.gen(function* () {
      const store = yield* MissionStore
      const key = { userId: "u-claim", missionId: "m", iterationId: "it-1" }
      const ttl = Duration.minutes(5)
      expect(yield* store.claim(key, "runner-a", ttl)).toBe(true)
      expect(yield* store.claim(key, "runner-b", ttl)).toBe(false)
      expect(yield* store.claim(key, "runner-a", ttl)).toBe(true)
      // Another user's mission with the same ids is a different run.
      expect(yield* store.claim({ ...key, userId: "u-claim-2" }, "runner-b", ttl)).toBe(true)
      yield* TestClock.adjust(Duration.minutes(4))
      expect(yield* store.claim(key, "runner-b", ttl)).toBe(false)
      yield* TestClock.adjust(Duration.minutes(2))
      expect(yield* store.claim(key, "runner-b", ttl)).toBe(true)
      expect(yield* store.claim(key, "runner-a", ttl)).toBe(false)
      // Releasing someone else's claim does nothing; releasing one's own frees it.
      yield* store.releaseClaim(key, "runner-a")
      expect(yield* store.claim(key, "runner-a", ttl)).toBe(false)
      yield* store.releaseClaim(key, "runner-b")
      expect(yield* store.claim(key, "runner-a", ttl)).toBe(true)
    }),
  )
})

it.layer(StoreLive, { timeout: 180_000 })("MissionStore cost", (it) => {
  it.effect("a refresh with no new rows reads the partial index over the window, not the history (as the runner, under RLS)", () =>
    Effect.gen(function* () {
      const store = yield* MissionStore
      const sql = yield* SqlClient.SqlClient
      yield* seedHistory({ count: 20_000 })
      yield* insertChanges([missionInsertRow("u-cost", "m")])
      const first = yield* store.refresh
      expect(first.rowsRead).toBe(5_001)
      expect(yield* store.refresh).toEqual({ rowsRead: 0, changed: [] })
      // Rows older than the window get no mark: only the recent row's id is kept, in one record's mark.
      expect(yield* sql`SELECT count(*)::int AS n, sum(cardinality(change_ids))::int AS ids FROM mana_ai.applied_records`).toEqual([{ n: 1, ids: 1 }])

      const [{ at }] = (yield* sql<{ at: string }>`
        SELECT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS at FROM mana_ai.discovery_cursor`) as [
        { at: string },
      ]
      const query = newMissionRowsQuery(sql, {
        cursorAt: at,
        lookback: "120000000 microseconds",
        upTo: at,
        timeColumn: (yield* TestDatabase).generation,
      })
      const plan = (yield* sql<{ "QUERY PLAN": string }>`EXPLAIN ${query}`).map((r) => r["QUERY PLAN"]).join("\n")
      expect(plan).toMatch(/Index (Only )?Scan using sync_changes_ai_missions_created_idx|Bitmap Index Scan on sync_changes_ai_missions_created_idx/)
      expect(plan).not.toMatch(/Seq Scan on sync_changes/)
      const who = yield* sql<{ u: string }>`SELECT current_user AS u`
      expect(who[0]!.u).toBe((yield* TestDatabase).runnerRole)

      // And it really reads only the window: the rows the index scan returns are the few recent ones.
      const analyzed = (yield* sql<{ "QUERY PLAN": string }>`EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) ${query}`)
        .map((r) => r["QUERY PLAN"])
        .join("\n")
      const scanned = /sync_changes_ai_missions_created_idx on sync_changes s \(actual rows=(\d+)/.exec(analyzed)
      expect(scanned, analyzed).not.toBeNull()
      expect(Number(scanned![1])).toBeLessThanOrEqual(1)
    }),
  )
})
