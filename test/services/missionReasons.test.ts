/**
 * One bad mission record, one reason everywhere: what discovery logs and stores
 * (MissionStore), what GET /internal/missions shows (readUserMissions, the backend's `missions`)
 * and why a run skips it (readCurrentMission) are the same sentence of missionValidity. Real
 * Postgres or PGlite, as the runner role.
 */
import { it } from "@effect/vitest"
import { Effect, Either, HashMap, Layer, Logger } from "effect"
import { expect } from "vitest"
import { missionValidity } from "../../src/domain/missionValidity.js"
import { RunnerConfig } from "../../src/services/AppConfig.js"
import { readCurrentMission } from "../../src/services/currentMission.js"
import { MigrationsLive } from "../../src/services/Migrations.js"
import { MissionStore } from "../../src/services/MissionStore.js"
import { readUserMissions } from "../../src/services/userMissions.js"
import { withUserScope } from "../../src/services/withUserScope.js"
import { insertChanges, missionFields, missionInsertRow } from "../support/seed.js"
import { RunnerSqlLive, TestDatabaseLive } from "../support/TestDatabase.js"

const Db = Layer.provideMerge(RunnerSqlLive(4), TestDatabaseLive)
const Migrated = Layer.provideMerge(MigrationsLive, Layer.merge(Db, RunnerConfig.test()))
const StoreLive = Layer.provideMerge(MissionStore.Default, Migrated)

const USER = "u-reasons"

/** Records the runner must skip, each for a different field. */
const bad: ReadonlyArray<readonly [missionId: string, fields: Record<string, unknown>]> = [
  ["wrong-type", { title: 5 }],
  ["bad-state", { state: "sleeping" }],
  ["bad-iterations", { iterations: "none" }],
  ["bad-next", { nextRunAt: "next tuesday-ish" }],
  ["bad-interval", { cadence: { kind: "interval", everyMinutes: 0 } }],
  ["bad-cron", { cadence: { kind: "cron", expression: "61 * * * *" } }],
  ["bad-zone", { timezone: "Mars/Olympus_Mons" }],
]

it.layer(StoreLive, { timeout: 120_000 })("one reason for a bad mission", (it) => {
  it.effect("the discovery log, the stored snapshot, /internal/missions and the run's pre-check give the same reason", () =>
    Effect.gen(function* () {
      const { defaultTimezone } = yield* RunnerConfig
      yield* insertChanges([missionInsertRow(USER, "good"), ...bad.map(([id, fields]) => missionInsertRow(USER, id, fields))])

      const logged = new Map<string, unknown>()
      const capture = Logger.make(({ message, annotations }) => {
        if (!JSON.stringify(message).includes("Mission skipped: malformed")) return
        const a = Object.fromEntries(HashMap.toEntries(annotations))
        if (a.userId === USER) logged.set(String(a.missionId), a.reason)
      })
      const refreshed = yield* Effect.flatMap(MissionStore, (store) => store.refresh).pipe(Effect.provide(Logger.add(capture)))
      const stored = new Map(
        refreshed.changed.filter((s) => s.userId === USER).map((s) => [s.missionId, Either.getLeft(s.decoded).pipe((o) => (o._tag === "Some" ? o.value : null))]),
      )
      const shown = new Map((yield* readUserMissions(USER, defaultTimezone)).map((m) => [m.missionId, m.malformed]))

      expect(shown.get("good")).toBeNull()
      expect(stored.get("good")).toBeNull()
      expect(logged.has("good")).toBe(false)
      for (const [missionId, fields] of bad) {
        const expected = Either.getLeft(missionValidity({ ...missionFields(fields), id: missionId }, defaultTimezone))
        expect(expected._tag, missionId).toBe("Some")
        const reason = expected._tag === "Some" ? expected.value : ""
        const run = yield* withUserScope(USER, (sql) => readCurrentMission(sql, USER, missionId, "it-1", defaultTimezone))
        expect({ missionId, logged: logged.get(missionId), stored: stored.get(missionId), shown: shown.get(missionId), run }).toEqual({
          missionId,
          logged: reason,
          stored: reason,
          shown: reason,
          run: { _tag: "Skip", reason: "malformed", detail: reason },
        })
      }
    }),
  )
})
