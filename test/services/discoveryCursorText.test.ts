/**
 * The discovery cursor prints each row's created_at as a timestamp's text (cheaper than to_char per
 * row) and the store widens it to the exact UTC form every other statement uses: the two must agree
 * to the microsecond, whatever fraction digits Postgres drops and whatever the session's TimeZone. Runs on the real server and on PGlite.
 */
import { SqlClient } from "@effect/sql"
import { it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { expect } from "vitest"
import { RunnerConfig } from "../../src/services/AppConfig.js"
import { MigrationsLive } from "../../src/services/Migrations.js"
import { exactFromIsoText, newMissionRowsQuery } from "../../src/services/MissionStore.js"
import { insertChanges, missionFields } from "../support/seed.js"
import { RunnerSqlLive, TestDatabase, TestDatabaseLive } from "../support/TestDatabase.js"

const Db = Layer.provideMerge(RunnerSqlLive(2), TestDatabaseLive)
const Migrated = Layer.provideMerge(MigrationsLive, Layer.merge(Db, RunnerConfig.test()))

/** created_at values with every count of fraction digits, years at both ends of the fast form and beyond. */
const STAMPS = [
  "2026-11-30T21:55:23Z",
  "2026-11-30T21:55:23.1Z",
  "2026-11-30T21:55:23.12Z",
  "2026-11-30T21:55:23.123Z",
  "2026-11-30T21:55:23.1234Z",
  "2026-11-30T21:55:23.12345Z",
  "2026-11-30T21:55:23.123456Z",
  "2026-11-30T21:55:23.000001Z",
  "2026-11-30T23:59:59.99999+01:00",
  "1000-01-01T00:00:00Z",
  "0999-12-31T23:59:59.5Z",
  "9999-12-31T23:59:59.999999Z",
  "10000-01-01T00:00:00.25Z",
]

it.layer(Migrated, { timeout: 120_000 })("discovery cursor's created_at text", (it) => {
  it.effect("widens to exactUtc's text for every stamp, whatever the session's TimeZone", () =>
    Effect.gen(function* () {
      const sql = yield* SqlClient.SqlClient
      const db = yield* TestDatabase
      yield* insertChanges(STAMPS.map((createdAt, i) => ({
        userId: "u-stamps",
        recordId: `m-${i}`,
        op: "insert" as const,
        data: missionFields(),
        createdAt,
      })))
      const exact = new Map(
        (yield* sql<{ id: string; at: string }>`
          SELECT id::text AS id, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS at
          FROM sync_changes WHERE user_id = 'u-stamps'`).map((r) => [r.id, r.at]),
      )
      expect(exact.size).toBe(STAMPS.length)
      const sessions = [
        ["UTC", sql`SET LOCAL TimeZone = 'UTC'`],
        ["a zone 3.5 hours behind", sql`SET LOCAL TimeZone = 'America/St_Johns'`],
      ] as const
      for (const [zone, setZone] of sessions) {
        const rows = yield* sql.withTransaction(
          Effect.gen(function* () {
            // The pass sets DateStyle itself (ISO); the zone is the session's (the text is the UTC wall time).
            yield* sql`SET LOCAL DateStyle = 'ISO'`
            yield* setZone
            return yield* newMissionRowsQuery(sql, {
              cursorAt: "-infinity",
              lookback: "0 microseconds",
              upTo: "20000-01-01T00:00:00Z",
              timeColumn: db.generation,
            })
          }),
        )
        const widened = rows
          .filter((r) => r.user_id === "u-stamps")
          .flatMap((r) => (JSON.parse(String(r.rows)) as Array<[string, string, unknown, unknown, string]>))
          .map(([id, , , , text]) => [id, exactFromIsoText(text)] as const)
        expect(new Map(widened), zone).toEqual(exact)
      }
    }),
  )
})
