/**
 * The write-back folds the runner's own row into the mission's snapshot and marks it applied, so
 * discovery does not read and replay it (issue 16 item 1). Every check compares the stored snapshot
 * with a replay of every row the log holds, as a device would see it.
 */
import { SqlClient } from "@effect/sql"
import { it } from "@effect/vitest"
import { Deferred, Duration, Effect, Either, Fiber, Layer, Metric, TestClock } from "effect"
import { expect } from "vitest"
import type { Iteration } from "../../src/domain/mission.js"
import { isLive } from "../../src/domain/replay.js"
import { missionValidity } from "../../src/domain/missionValidity.js"
import { RunnerConfig } from "../../src/services/AppConfig.js"
import { MigrationsLive } from "../../src/services/Migrations.js"
import { MissionStore, REFRESH_LOCK_KEY, makeMissionStore } from "../../src/services/MissionStore.js"
import { discoveryReconciledTotal } from "../../src/services/metrics.js"
import { WriteBack, type WriteBasis } from "../../src/services/WriteBack.js"
import { readCurrentMissionWithAgent } from "../../src/services/currentMission.js"
import { withUserScope } from "../../src/services/withUserScope.js"
import { missionRows, replayedMission } from "../support/eventLogRows.js"
import { insertChanges, missionDeleteRow, missionInsertRow, missionUpdateRow } from "../support/seed.js"
import { RunnerSqlLive, TestDatabaseLive } from "../support/TestDatabase.js"

const onServer = process.env.TEST_DATABASE_URL !== undefined

const Db = Layer.provideMerge(RunnerSqlLive(8), TestDatabaseLive)
const Migrated = Layer.provideMerge(MigrationsLive, Layer.merge(Db, RunnerConfig.test()))
const L = Layer.provideMerge(Layer.merge(MissionStore.Default, WriteBack.Default), Migrated)

let n = 0
const fresh = (prefix: string) => `${prefix}-${++n}-${Math.random().toString(36).slice(2, 8)}`

const iteration = (id: string): Iteration => ({
  id,
  startedAt: new Date().toISOString(),
  finishedAt: new Date().toISOString(),
  plan: [
    {
      id: `${id}-0`,
      summary: "A task — it moves the goal forward",
      intent: { kind: "toolCall", toolName: "create_task", params: { title: "Task" } },
      status: "planned",
    },
  ],
  summary: "One task",
  overallStatus: "awaiting-review",
  source: "server",
})

const basisOf = (user: string, missionId: string, iterationId: string) =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const read = yield* withUserScope(user, (s) => readCurrentMissionWithAgent(s, user, missionId, iterationId, "UTC")).pipe(
      Effect.provideService(SqlClient.SqlClient, sql),
    )
    if (read.current._tag !== "Appendable") return yield* Effect.dieMessage(`not appendable: ${read.current.reason}`)
    return { current: read.current, missionRows: read.missionRows, actor: read.actor! } satisfies WriteBasis
  }).pipe(Effect.orDie)

const append = (user: string, missionId: string, it: Iteration, basis?: WriteBasis) =>
  Effect.gen(function* () {
    yield* TestClock.setTime(Date.now())
    return yield* Effect.flatMap(WriteBack, (wb) => wb.append({ userId: user, missionId, iteration: it, ...(basis ? { basis } : {}) }))
  })

const snapshotRow = (user: string, missionId: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql<Record<string, unknown>>`
      SELECT record, field_times, deleted, state, schedulable, malformed_reason, last_change_id::text AS last_id,
             to_char(next_run_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS next_run_at
      FROM mana_ai.mission_snapshots WHERE user_id = ${user} AND record_id = ${missionId}`,
  ).pipe(
    Effect.map((rows) => rows[0]),
    Effect.orDie,
  )

const appliedIds = Effect.flatMap(SqlClient.SqlClient, (sql) =>
  sql<{ id: string }>`SELECT unnest(change_ids)::text AS id FROM mana_ai.applied_records`,
).pipe(
  Effect.map((rows) => new Set(rows.map((r) => r.id))),
  Effect.orDie,
)

/** The snapshot is what a replay of every stored row gives, judged as discovery judges it. */
const expectSnapshotIsReplay = (user: string, missionId: string) =>
  Effect.gen(function* () {
    const replayed = yield* replayedMission(user, missionId)
    const rows = yield* missionRows(user, missionId)
    const snapshot = (yield* snapshotRow(user, missionId))!
    expect(snapshot.record).toEqual(replayed.record)
    expect(snapshot.field_times).toEqual(replayed.times)
    expect(snapshot.last_id).toBe(rows[rows.length - 1]!.id)
    const valid = missionValidity(replayed.record, "UTC")
    expect(Either.isRight(valid)).toBe(true)
    const mission = Either.getOrThrow(valid)
    expect(snapshot.deleted).toBe(!isLive(replayed))
    expect(snapshot.state).toBe(mission.mission.state)
    expect(snapshot.next_run_at).toBe(mission.nextRunAt)
    expect(snapshot.schedulable).toBe(mission.mission.state === "active" && mission.nextRunAt !== null)
    expect(snapshot.malformed_reason).toBeNull()
    return snapshot
  })

it.layer(L, { timeout: 120_000 })("WriteBack and the mission's snapshot", (it) => {
  it.effect("the runner's own row is folded into the snapshot and marked applied: discovery reads none of it, and its cursor moves past it", () =>
    Effect.gen(function* () {
      const store = yield* MissionStore
      const sql = yield* SqlClient.SqlClient
      yield* store.refresh
      const user = fresh("u")
      const missionId = fresh("m")
      yield* insertChanges([missionInsertRow(user, missionId)])
      expect((yield* store.refresh).rowsRead).toBe(1)

      // On the pre-check's basis (one statement), then on a fresh read (no basis).
      const first = iteration(fresh("it"))
      const written = yield* append(user, missionId, first, yield* basisOf(user, missionId, first.id))
      expect(written._tag).toBe("Written")
      const afterFirst = yield* expectSnapshotIsReplay(user, missionId)
      expect((afterFirst.record as { iterations: Array<{ id: string }> }).iterations.map((i) => i.id)).toEqual([first.id])
      const second = iteration(fresh("it"))
      expect((yield* append(user, missionId, second))._tag).toBe("Written")
      yield* expectSnapshotIsReplay(user, missionId)

      const own = (yield* missionRows(user, missionId)).filter((r) => r.client_id === "mana-ai-runner")
      expect(own).toHaveLength(2)
      const applied = yield* appliedIds
      for (const row of own) expect(applied.has(row.id)).toBe(true)

      const pass = yield* store.refresh
      expect(pass.rowsRead).toBe(0)
      expect(pass.changed).toEqual([])
      yield* expectSnapshotIsReplay(user, missionId)
      // The cursor moved past the runner's rows although the pass read none of them.
      const [cursor] = yield* sql<{ past: boolean }>`
        SELECT (SELECT created_at FROM mana_ai.discovery_cursor) >= ${own[1]!.created_at} AS past`
      expect(cursor!.past).toBe(true)
    }))

  it.effect("discovery leaves the stored iterations where they are: each pass's snapshot is still the replay of every row", () =>
    Effect.gen(function* () {
      const store = yield* MissionStore
      yield* store.refresh
      const user = fresh("u")
      const missionId = fresh("m")
      const stored = Effect.map(snapshotRow(user, missionId), (row) => (row?.record ?? null) as { iterations?: Array<{ id: string }> } | null)
      /** A pass after `rows`: the stored record and times are the replay of every row, and what it hands on has no iterations. */
      const passAfter = (rows: Parameters<typeof insertChanges>[0]) =>
        Effect.gen(function* () {
          yield* insertChanges(rows)
          const pass = yield* store.refresh
          const replayed = yield* replayedMission(user, missionId)
          const row = yield* snapshotRow(user, missionId)
          expect(row?.record ?? null).toEqual(replayed.record)
          expect(row?.field_times).toEqual(replayed.times)
          for (const snapshot of pass.changed) expect(snapshot.record === null || !Object.hasOwn(snapshot.record, "iterations")).toBe(true)
          for (const snapshot of pass.changed) if (snapshot.decoded._tag === "Right") expect(snapshot.decoded.right.iterations).toEqual([])
          return pass
        })

      yield* passAfter([missionInsertRow(user, missionId)])
      const it1 = iteration(fresh("it"))
      expect((yield* append(user, missionId, it1, yield* basisOf(user, missionId, it1.id)))._tag).toBe("Written")
      const it2 = iteration(fresh("it"))
      expect((yield* append(user, missionId, it2))._tag).toBe("Written")
      // A device's edit of other fields: the two iterations stay (not read, not written back by the pass).
      const renamed = yield* passAfter([missionUpdateRow(user, missionId, { title: "Renamed" })])
      expect(renamed.changed.map((c) => c.missionId)).toEqual([missionId])
      expect((yield* stored)?.iterations?.map((i) => i.id)).toEqual([it1.id, it2.id])
      // A device's iterations stamped before the runner's lose; its title still wins.
      yield* passAfter([
        missionUpdateRow(user, missionId, { title: "Again", iterations: [] }, { title: new Date().toISOString(), iterations: "2026-01-01T00:00:00.000Z" }),
      ])
      expect((yield* stored)?.iterations?.map((i) => i.id)).toEqual([it1.id, it2.id])
      // A device's newer iterations (the user's feedback on the first) replace them.
      yield* passAfter([missionUpdateRow(user, missionId, { iterations: [{ ...it1, userFeedback: "More like this" }] })])
      expect((yield* stored)?.iterations?.map((i) => i.id)).toEqual([it1.id])
      // Deleted and created again (two transactions), then one pass: nothing of the old record stays, its iterations included.
      yield* insertChanges([missionDeleteRow(user, missionId)])
      yield* passAfter([missionInsertRow(user, missionId, { title: "Anew", iterations: undefined })])
      const anew = yield* stored
      expect(anew === null ? null : Object.hasOwn(anew, "iterations")).toBe(false)
    }))

  it.effect("reconciliation replays a mission of many runs (each runner row holding the whole list) to its snapshot: nothing to correct", () =>
    Effect.gen(function* () {
      const store = yield* MissionStore
      const reconciling = yield* makeMissionStore({ reconcileInterval: Duration.zero })
      yield* store.refresh
      const user = fresh("u")
      const missionId = fresh("m")
      yield* insertChanges([missionInsertRow(user, missionId)])
      yield* store.refresh
      const ids: Array<string> = []
      for (let i = 0; i < 4; i++) {
        const it = iteration(fresh("it"))
        ids.push(it.id)
        expect((yield* append(user, missionId, it, yield* basisOf(user, missionId, it.id)))._tag).toBe("Written")
        if (i === 1) {
          // A device's edit between runs (its own fields only), applied by an ordinary pass.
          yield* insertChanges([missionUpdateRow(user, missionId, { title: `Renamed ${i}` })])
          yield* store.refresh
        }
      }
      const before = (yield* Metric.value(discoveryReconciledTotal)).count
      yield* reconciling.refresh
      expect((yield* Metric.value(discoveryReconciledTotal)).count - before).toBe(0)
      const snapshot = yield* expectSnapshotIsReplay(user, missionId)
      expect((snapshot.record as { iterations: Array<{ id: string }> }).iterations.map((i) => i.id)).toEqual(ids)
    }))

  it.effect("a device's edit committed between the run's read and its write-back, and one committed after it, still win by LWW", () =>
    Effect.gen(function* () {
      const store = yield* MissionStore
      const user = fresh("u")
      const missionId = fresh("m")
      yield* insertChanges([missionInsertRow(user, missionId)])
      yield* store.refresh
      const it1 = iteration(fresh("it"))
      const basis = yield* basisOf(user, missionId, it1.id)
      // After the run's read: the write-back finds a stale basis and reads again; the snapshot lacks this row.
      yield* insertChanges([missionUpdateRow(user, missionId, { title: "Renamed on the phone" })])
      expect((yield* append(user, missionId, it1, basis))._tag).toBe("Written")
      // After the write-back: a pause, and an iterations list stamped before the runner's (it loses).
      yield* insertChanges([
        missionUpdateRow(user, missionId, { state: "paused", iterations: [] }, { state: new Date().toISOString(), iterations: "2026-01-01T00:00:00.000Z" }),
      ])
      const pass = yield* store.refresh
      // The two device rows; the runner's row was already applied.
      expect(pass.rowsRead).toBe(2)
      const snapshot = yield* expectSnapshotIsReplay(user, missionId)
      const record = snapshot.record as { title: string; state: string; iterations: Array<{ id: string }> }
      expect([record.title, record.state, record.iterations.map((i) => i.id)]).toEqual(["Renamed on the phone", "paused", [it1.id]])
      expect(snapshot.schedulable).toBe(false)
    }))

  it.effect("a write-back that rolls back leaves the snapshot as it was and nothing marked applied", () =>
    Effect.gen(function* () {
      const store = yield* MissionStore
      const sql = yield* SqlClient.SqlClient
      const user = fresh("u")
      const missionId = fresh("m")
      yield* insertChanges([missionInsertRow(user, missionId)])
      yield* store.refresh
      const before = yield* snapshotRow(user, missionId)
      const appliedBefore = yield* appliedIds
      const it1 = iteration(fresh("it"))
      const exit = yield* sql
        .withTransaction(Effect.zipRight(append(user, missionId, it1), Effect.fail("rolled back" as const)))
        .pipe(Effect.exit)
      expect(exit._tag).toBe("Failure")
      expect(yield* missionRows(user, missionId)).toHaveLength(1)
      expect(yield* snapshotRow(user, missionId)).toEqual(before)
      expect(yield* appliedIds).toEqual(appliedBefore)
    }))

  it.scoped.skipIf(!onServer)("a write-back during a discovery pass does not wait for it and leaves its row to discovery", () =>
    Effect.gen(function* () {
      const store = yield* MissionStore
      const sql = yield* SqlClient.SqlClient
      const user = fresh("u")
      const missionId = fresh("m")
      yield* insertChanges([missionInsertRow(user, missionId)])
      yield* store.refresh
      const before = yield* snapshotRow(user, missionId)
      const held = yield* Deferred.make<void>()
      const release = yield* Deferred.make<void>()
      const pass = yield* sql
        .withTransaction(
          Effect.gen(function* () {
            yield* sql`SELECT pg_advisory_xact_lock(${REFRESH_LOCK_KEY}::bigint)`
            yield* Deferred.succeed(held, undefined)
            yield* Deferred.await(release)
          }),
        )
        .pipe(Effect.fork)
      yield* Deferred.await(held)
      // Completes while the pass holds its lock.
      expect((yield* append(user, missionId, iteration(fresh("it"))))._tag).toBe("Written")
      expect(yield* snapshotRow(user, missionId)).toEqual(before)
      const own = (yield* missionRows(user, missionId)).filter((r) => r.client_id === "mana-ai-runner")
      expect((yield* appliedIds).has(own[0]!.id)).toBe(false)
      yield* Deferred.succeed(release, undefined)
      yield* Fiber.join(pass)
      expect((yield* store.refresh).rowsRead).toBe(1)
      yield* expectSnapshotIsReplay(user, missionId)
    }))
})
