import { SqlClient } from "@effect/sql"
import { expect, it } from "@effect/vitest"
import { Effect, Either, Layer, Schema } from "effect"
import { Mission } from "../../src/domain/mission.js"
import { replay } from "../../src/domain/replay.js"
import { DEMO_CLIENT_ID, demoDueMissions, demoRecords, seedDemoWorkload } from "../../src/layers/demoWorkload.js"
import { RunnerSqlLive, TestDatabase, TestDatabaseLive } from "../support/TestDatabase.js"

const now = new Date("2026-03-02T08:00:00.000Z")

it("the demo has several users, every cadence kind, a goals input, and missions due now", () => {
  const records = demoRecords(now)
  const missions = records.filter((r) => r.table === "aiMissions")
  expect(new Set(missions.map((m) => m.userId)).size).toBeGreaterThanOrEqual(3)
  expect(new Set(missions.map((m) => (m.data.cadence as { kind: string }).kind))).toEqual(
    new Set(["manual", "interval", "daily", "weekly", "cron"]),
  )
  const withGoal = missions.find((m) => (m.data.inputs as ReadonlyArray<{ module: string }>).some((i) => i.module === "goals"))
  expect(withGoal).toBeDefined()
  expect(records.some((r) => r.appId === "companion" && r.table === "companionGoals" && r.userId === withGoal?.userId)).toBe(true)
  expect(demoDueMissions(now).length).toBeGreaterThanOrEqual(3)
  expect(missions.some((m) => m.data.state !== "active")).toBe(true)
  for (const m of missions) {
    const decoded = Schema.decodeUnknownEither(Mission)({ id: m.recordId, ...m.data })
    expect(Either.isRight(decoded), `${m.recordId}: ${Either.isLeft(decoded) ? decoded.left.message : ""}`).toBe(true)
  }
})

it.layer(Layer.provideMerge(RunnerSqlLive(4), TestDatabaseLive), { timeout: 60_000 })("seeding", (it) => {
  it.effect("writes every record once, per user under RLS, as the sync server would; a second seed writes nothing", () =>
    Effect.gen(function* () {
      const db = yield* TestDatabase
      const written = yield* seedDemoWorkload(now)
      expect(written).toBe(demoRecords(now).length)
      expect(yield* seedDemoWorkload(now)).toBe(0)

      const rows = yield* Effect.promise(() =>
        db.ownerQuery(
          `SELECT *, ${db.generation} AS field_timestamps FROM sync_changes WHERE client_id = $1 ORDER BY created_at, id`,
          [DEMO_CLIENT_ID],
        ),
      )
      expect(rows.length).toBe(demoRecords(now).length)
      for (const r of rows) {
        expect(r.op).toBe("insert")
        expect(Object.keys(r.field_timestamps as object).sort()).toEqual(Object.keys(r.data as object).sort())
      }
      // Replayed as the runner would, each mission decodes.
      const missionRows = rows.filter((r) => r.table_name === "aiMissions")
      for (const id of new Set(missionRows.map((r) => r.record_id as string))) {
        const state = replay(missionRows.filter((r) => r.record_id === id) as never)
        expect(Either.isRight(Schema.decodeUnknownEither(Mission)(state.record))).toBe(true)
      }

      // The goal is not readable across users: only inside its owner's scope.
      const sql = yield* SqlClient.SqlClient
      const unscoped = yield* sql`SELECT count(*)::int AS n FROM sync_changes WHERE app_id = 'companion'`
      expect(unscoped[0]?.n).toBe(0)
    }))
})
