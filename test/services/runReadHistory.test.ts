/**
 * The run's pre-check does not read every runner row's whole `iterations` list (issue 16: bytes grew
 * with the square of a mission's runs), and replays exactly what a replay of every stored row gives:
 * late rows, a device's list stamped in the future, deletes and re-creation, stamps that are not
 * toISOString's form or not a real date.
 */
import { SqlClient } from "@effect/sql"
import { it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { expect } from "vitest"
import { RUNNER_CLIENT_ID } from "../../src/domain/mission.js"
import { RunnerConfig } from "../../src/services/AppConfig.js"
import { EventLogSchema } from "../../src/services/EventLogSchema.js"
import { readCurrentMissionWithAgent, runReadQuery } from "../../src/services/currentMission.js"
import type { RecordRef } from "../../src/services/recordRows.js"
import { withUserScope } from "../../src/services/withUserScope.js"
import { replayedMission } from "../support/eventLogRows.js"
import { type Change, insertChanges, missionDeleteRow, missionInsertRow } from "../support/seed.js"
import { RunnerSqlLive, TestDatabaseLive } from "../support/TestDatabase.js"

const Db = Layer.provideMerge(RunnerSqlLive(4), TestDatabaseLive)
const L = Layer.merge(Db, RunnerConfig.test())

let n = 0
const fresh = (prefix: string) => `${prefix}-${++n}-${Math.random().toString(36).slice(2, 8)}`

const it_ = (id: string) => ({ id, startedAt: "2026-03-02T08:00:01.000Z", plan: [], overallStatus: "approved", source: "server" })

/** A runner row as WriteBack writes it: the whole list so far and nextRunAt, both stamped `at`. */
const runnerRow = (user: string, missionId: string, ids: ReadonlyArray<string>, at: string, createdAt: string): Change => ({
  userId: user,
  recordId: missionId,
  op: "update",
  data: { iterations: ids.map(it_), nextRunAt: "2026-03-02T08:00:00.000Z" },
  fieldTimestamps: { iterations: at, nextRunAt: at },
  clientId: RUNNER_CLIENT_ID,
  createdAt,
})

const deviceRow = (user: string, missionId: string, data: Record<string, unknown>, times: Record<string, string>, createdAt: string): Change => ({
  userId: user,
  recordId: missionId,
  op: "update",
  data,
  fieldTimestamps: times,
  createdAt,
})

const at = (minute: number) => `2026-03-01 10:${String(minute).padStart(2, "0")}:00+00`
const stamp = (minute: number) => `2026-03-01T10:${String(minute).padStart(2, "0")}:00.000Z`

/** The pre-check's replay and the rows it read, next to a replay of every stored row. */
const readBoth = (user: string, missionId: string) =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const { timeColumn } = yield* EventLogSchema
    const [read, raw] = yield* withUserScope(user, (s) =>
      Effect.all([readCurrentMissionWithAgent(s, user, missionId, "not-there", "UTC"), runReadQuery(s, timeColumn, user, missionId, [])]),
    ).pipe(Effect.provideService(SqlClient.SqlClient, sql), Effect.orDie)
    const full = yield* replayedMission(user, missionId)
    if (read.current._tag !== "Appendable") return yield* Effect.dieMessage(`not appendable: ${read.current.reason}`)
    expect(read.current.record).toEqual(full.record)
    expect(read.current.state.times).toEqual(full.times)
    const withList = raw.filter((r) => typeof r.data === "object" && r.data !== null && "iterations" in r.data).length
    return { read, rows: raw.length, withList, iterations: (full.record!.iterations as Array<{ id: string }>).map((i) => i.id) }
  })

it.layer(L, { timeout: 120_000 })("the run's read of a mission's history", (it) => {
  it.effect("of ten runner rows only the one that wins iterations is read with its list; the replay is the same", () =>
    Effect.gen(function* () {
      const user = fresh("u")
      const m = fresh("m")
      const ids: Array<string> = []
      const changes: Array<Change> = [{ ...missionInsertRow(user, m), createdAt: at(0) }]
      for (let i = 1; i <= 10; i++) {
        ids.push(`it-${i}`)
        changes.push(runnerRow(user, m, [...ids], stamp(i), at(i)))
      }
      yield* insertChanges(changes)
      const got = yield* readBoth(user, m)
      expect(got.iterations).toEqual(ids)
      expect(got.rows).toBe(11)
      // The insert (its list is stamped by created_at, not a candidate) and the newest runner row.
      expect(got.withList).toBe(2)
      expect(got.read.missionRows).toBe(11)
    }))

  it.effect("a runner row committed late (earlier position, newer stamp) still wins; a device list stamped in the future wins over all", () =>
    Effect.gen(function* () {
      const user = fresh("u")
      const m = fresh("m")
      yield* insertChanges([
        { ...missionInsertRow(user, m), createdAt: at(0) },
        runnerRow(user, m, ["a"], stamp(1), at(1)),
        // Position 2 but stamped 5: it wins over the row at position 3 stamped 3.
        runnerRow(user, m, ["a", "b"], stamp(5), at(2)),
        runnerRow(user, m, ["a", "c"], stamp(3), at(3)),
      ])
      expect((yield* readBoth(user, m)).iterations).toEqual(["a", "b"])
      yield* insertChanges([deviceRow(user, m, { iterations: [it_("device")] }, { iterations: "2099-01-01T00:00:00.000Z" }, at(4))])
      const got = yield* readBoth(user, m)
      expect(got.iterations).toEqual(["device"])
      expect(got.withList).toBe(2)
    }))

  it.effect("a delete starts the record anew: a list written before it dominates nothing after it", () =>
    Effect.gen(function* () {
      const user = fresh("u")
      const m = fresh("m")
      yield* insertChanges([
        { ...missionInsertRow(user, m), createdAt: at(0) },
        runnerRow(user, m, ["old"], "2099-06-01T00:00:00.000Z", at(1)),
        { ...missionDeleteRow(user, m), createdAt: at(2) },
        { ...missionInsertRow(user, m), createdAt: at(3) },
        runnerRow(user, m, ["new-1"], stamp(4), at(4)),
        runnerRow(user, m, ["new-1", "new-2"], stamp(5), at(5)),
      ])
      const got = yield* readBoth(user, m)
      expect(got.iterations).toEqual(["new-1", "new-2"])
    }))

  it.effect("stamps not in toISOString's form, or not a real date, neither dominate nor are dominated", () =>
    Effect.gen(function* () {
      const user = fresh("u")
      const m = fresh("m")
      yield* insertChanges([
        { ...missionInsertRow(user, m), createdAt: at(0) },
        runnerRow(user, m, ["a"], stamp(1), at(1)),
        // 30 February: not an instant, so this row takes its created_at (10:02), not 2099.
        deviceRow(user, m, { iterations: [it_("feb-30")] }, { iterations: "2099-02-30T00:00:00.000Z" }, at(2)),
        // An instant in another form (no milliseconds, an offset): it wins (2099), though not a candidate.
        deviceRow(user, m, { iterations: [it_("offset")] }, { iterations: "2099-01-01T01:00:00+01:00" }, at(3)),
        runnerRow(user, m, ["a", "b"], stamp(4), at(4)),
        runnerRow(user, m, ["a", "b", "c"], stamp(5), at(5)),
      ])
      const got = yield* readBoth(user, m)
      expect(got.iterations).toEqual(["offset"])
      // The insert, both device rows and the newest runner row.
      expect(got.withList).toBe(4)
    }))
})

it.layer(L, { timeout: 120_000 })("the run's read in both shapes", (it) => {
  /** Both shapes of the read in one scope, each row set ordered by change id. */
  const bothShapes = (user: string, missionId: string, also: ReadonlyArray<RecordRef>) =>
    Effect.gen(function* () {
      const sql = yield* SqlClient.SqlClient
      const { timeColumn } = yield* EventLogSchema
      const [byRecord, byOr] = yield* withUserScope(user, (s) =>
        Effect.all([
          runReadQuery(s, timeColumn, user, missionId, also, "prepared"),
          runReadQuery(s, timeColumn, user, missionId, also, "planned-each-time"),
        ]),
      ).pipe(Effect.provideService(SqlClient.SqlClient, sql), Effect.orDie)
      return { byRecord, byOr }
    })

  it.effect("the prepared shape (one branch per record) reads the rows the planned-each-time shape (ORs) reads, none twice", () =>
    Effect.gen(function* () {
      const user = fresh("u")
      const other = fresh("u-other")
      const m = fresh("m")
      const agent = fresh("agent")
      const otherAgent = fresh("agent-other")
      const goal = fresh("goal")
      const agentRow = (id: string, createdAt: string): Change => ({
        userId: user,
        recordId: id,
        appId: "ai",
        table: "agents",
        op: "insert",
        data: { name: "Coach", state: "active" },
        createdAt,
      })
      yield* insertChanges([
        { ...missionInsertRow(user, m, { agentId: agent }), createdAt: at(0) },
        runnerRow(user, m, ["it-1"], stamp(1), at(1)),
        runnerRow(user, m, ["it-1", "it-2"], stamp(2), at(2)),
        agentRow(agent, at(3)),
        agentRow(otherAgent, at(4)),
        { userId: user, recordId: goal, appId: "companion", table: "companionGoals", op: "insert", data: { title: "g" }, createdAt: at(5) },
        // Another user's rows of the same ids: never read.
        { ...missionInsertRow(other, m, { agentId: agent }), createdAt: at(6) },
        { ...agentRow(agent, at(7)), userId: other },
      ])
      const goalRef: RecordRef = { appId: "companion", table: "companionGoals", recordId: goal }
      const cases: ReadonlyArray<ReadonlyArray<RecordRef>> = [
        [],
        [goalRef],
        // The mission itself, its agent, another agent, a ref twice, a record with no rows.
        [goalRef, { appId: "ai", table: "aiMissions", recordId: m }, { appId: "ai", table: "agents", recordId: agent }, goalRef],
        [{ appId: "ai", table: "agents", recordId: otherAgent }, { appId: "companion", table: "companionGoals", recordId: fresh("none") }],
      ]
      for (const also of cases) {
        const { byRecord, byOr } = yield* bothShapes(user, m, also)
        expect(byRecord).toEqual(byOr)
        expect(new Set(byRecord.map((r) => r.id)).size).toBe(byRecord.length)
        expect(byRecord.every((r) => r.user_id === user)).toBe(true)
      }
      const withOther = yield* bothShapes(user, m, [{ appId: "ai", table: "agents", recordId: otherAgent }, goalRef])
      // The mission's 3 rows, its agent's, the other agent's and the goal's.
      expect(withOther.byRecord.map((r) => r.record_id)).toEqual([m, m, m, agent, otherAgent, goal])
    }))
})
