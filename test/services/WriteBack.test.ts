import { SqlClient } from "@effect/sql"
import { it } from "@effect/vitest"
import { Context, Effect, Exit, Fiber, Layer, TestClock, TestServices } from "effect"
import { expect } from "vitest"
import type { Iteration } from "../../src/domain/mission.js"
import { RunnerConfig } from "../../src/services/AppConfig.js"
import { WriteBack, type WriteBasis, makeWriteBack } from "../../src/services/WriteBack.js"
import { readCurrentMissionWithAgent } from "../../src/services/currentMission.js"
import { withUserScope } from "../../src/services/withUserScope.js"
import { insertChange, missionData, replayedMission, runnerRows } from "../support/eventLogRows.js"
import { RunnerSqlLive, TestDatabase, TestDatabaseLive } from "../support/TestDatabase.js"

const Db = Layer.provideMerge(RunnerSqlLive(6), TestDatabaseLive)
// Missions without a timezone fall back to this, so the nextRunAt table proves the default is used.
const Config = RunnerConfig.test({ defaultTimezone: "Europe/Berlin" })
const L = Layer.provideMerge(WriteBack.Default, Layer.merge(Db, Config))

const T0 = "2026-03-01T00:00:00.000Z"
const WRITE_AT = "2026-03-02T08:00:30.000Z"

let n = 0
const fresh = (prefix: string) => `${prefix}-${++n}-${Math.random().toString(36).slice(2, 8)}`

const serverIteration = (id: string, steps = 2): Iteration => ({
  id,
  startedAt: "2026-03-02T08:00:01.000Z",
  finishedAt: "2026-03-02T08:00:20.000Z",
  plan: Array.from({ length: steps }, (_, i) => ({
    id: `${id}-${i}`,
    summary: `Step ${i} — it moves the goal forward`,
    intent: { kind: "toolCall" as const, toolName: "create_task", params: { title: `Task ${i}` } },
    status: "planned" as const,
  })),
  summary: "Two small tasks",
  overallStatus: steps === 0 ? "approved" : "awaiting-review",
  source: "server",
})

/** A mission inserted by a device at T0 (so every field's time is T0). */
const seedMission = (user: string, overrides: Record<string, unknown> = {}) =>
  Effect.gen(function* () {
    const id = fresh("m")
    yield* insertChange({ user, id, data: missionData(overrides), createdAt: T0 })
    return id
  })

const appendAt = (at: string, user: string, missionId: string, iteration: Iteration) =>
  Effect.gen(function* () {
    yield* TestClock.setTime(Date.parse(at))
    return yield* Effect.flatMap(WriteBack, (wb) => wb.append({ userId: user, missionId, iteration }))
  })

it.layer(L, { timeout: 120_000 })("WriteBack", (it) => {
  it.effect("the appended row has exactly the SPEC §6 shape", () =>
    Effect.gen(function* () {
      const browserIteration = {
        id: "browser-it-1",
        startedAt: "2026-03-01T10:00:00.000Z",
        plan: [],
        overallStatus: "rejected",
        source: "browser",
        userFeedback: "too much",
        appOnlyKey: { kept: true },
      }
      const missionId = yield* seedMission("ann", { iterations: [browserIteration] })
      const iteration = serverIteration("9c1e5f0a-1111-4222-8333-444455556666", 3)
      const result = yield* appendAt(WRITE_AT, "ann", missionId, iteration)
      expect(result).toEqual({
        _tag: "Written",
        iterationId: iteration.id,
        nextRunAt: "2026-03-02T09:00:00.000Z",
        writtenAt: WRITE_AT,
      })
      const rows = yield* runnerRows("ann", missionId)
      expect(rows).toHaveLength(1)
      const row = rows[0]!
      const today = (yield* TestDatabase).generation === "field_meta"
      // missionRows reads the generation's time column as field_timestamps, and origin/space_id as null on the seed's.
      expect(Object.keys(row).sort()).toEqual(
        ["actor", "app_id", "client_id", "created_at", "data", "field_timestamps", "id", "op", "origin", "record_id", "schema_version", "space_id", "table_name", "user_id"],
      )
      expect(row.id).toMatch(/^[0-9a-f-]{36}$/)
      expect(row.created_at).toBeInstanceOf(Date)
      expect({ ...row, id: undefined, created_at: undefined }).toEqual({
        id: undefined,
        created_at: undefined,
        app_id: "ai",
        table_name: "aiMissions",
        record_id: missionId,
        user_id: "ann",
        op: "update",
        data: { iterations: [browserIteration, iteration], nextRunAt: "2026-03-02T09:00:00.000Z" },
        field_timestamps: { iterations: WRITE_AT, nextRunAt: WRITE_AT },
        client_id: "mana-ai-runner",
        schema_version: 1,
        // SPEC §6: today's generation carries the app's AI actor and origin 'agent'; the seed's the system actor.
        actor: today
          ? {
              kind: "ai",
              principalId: "legacy:ai-default",
              displayName: "Mana",
              missionId,
              iterationId: "9c1e5f0a-1111-4222-8333-444455556666",
              rationale: "Two small tasks",
            }
          : { kind: "system", source: "mission-runner" },
        origin: today ? "agent" : null,
        space_id: null,
      })
      const data = row.data as { iterations: Array<Record<string, unknown>> }
      const written = data.iterations[1]!
      expect(Object.keys(written).sort()).toEqual(["finishedAt", "id", "overallStatus", "plan", "source", "startedAt", "summary"])
      const plan = written.plan as Array<Record<string, unknown>>
      expect(plan.map((s) => s.id)).toEqual([`${iteration.id}-0`, `${iteration.id}-1`, `${iteration.id}-2`])
      for (const step of plan) expect(Object.keys(step).sort()).toEqual(["id", "intent", "status", "summary"])
    }))

  it.effect("a second append of the same iteration id writes nothing", () =>
    Effect.gen(function* () {
      const missionId = yield* seedMission("ann")
      const iteration = serverIteration(fresh("it"))
      const first = yield* appendAt(WRITE_AT, "ann", missionId, iteration)
      const again = yield* appendAt("2026-03-02T08:05:00.000Z", "ann", missionId, iteration)
      expect(first._tag).toBe("Written")
      expect(again).toEqual({ _tag: "Skipped", reason: "already-written" })
      expect(yield* runnerRows("ann", missionId)).toHaveLength(1)
    }))

  it.effect("a mission paused, deleted, soft-deleted, missing or malformed by the time of the write gets no row", () =>
    Effect.gen(function* () {
      const at = "2026-03-02T08:00:05.000Z"
      const paused = yield* seedMission("ann")
      yield* insertChange({ user: "ann", id: paused, op: "update", data: { state: "paused" }, fieldTimestamps: { state: at }, createdAt: at })
      const done = yield* seedMission("ann")
      yield* insertChange({ user: "ann", id: done, op: "update", data: { state: "done" }, createdAt: at })
      const deleted = yield* seedMission("ann")
      yield* insertChange({ user: "ann", id: deleted, op: "delete", createdAt: at })
      const softDeleted = yield* seedMission("ann")
      yield* insertChange({ user: "ann", id: softDeleted, op: "update", data: { deletedAt: at }, createdAt: at })
      const badIterations = yield* seedMission("ann")
      yield* insertChange({ user: "ann", id: badIterations, op: "update", data: { iterations: "oops" }, createdAt: at })
      const badCadence = yield* seedMission("ann", { cadence: { kind: "hourly" } })
      const badCron = yield* seedMission("ann", { cadence: { kind: "cron", expression: "61 * * * *" } })
      const badZone = yield* seedMission("ann", { cadence: { kind: "daily", atHour: 8, atMinute: 0 }, timezone: "Mars/Olympus_Mons" })
      const otherUsers = yield* seedMission("bob")
      const cases: ReadonlyArray<readonly [string, string]> = [
        [paused, "not-active"],
        [done, "not-active"],
        [deleted, "deleted"],
        [softDeleted, "deleted"],
        [badIterations, "malformed"],
        [badCadence, "malformed"],
        [badCron, "malformed"],
        [badZone, "malformed"],
        ["no-such-mission", "not-found"],
        // ann's scope cannot see (nor write) bob's mission.
        [otherUsers, "not-found"],
      ]
      for (const [missionId, reason] of cases) {
        const result = yield* appendAt(WRITE_AT, "ann", missionId, serverIteration(fresh("it")))
        expect([missionId, result]).toEqual([missionId, { _tag: "Skipped", reason }])
        expect(yield* runnerRows("ann", missionId)).toHaveLength(0)
      }
      expect(yield* runnerRows("bob", otherUsers)).toHaveLength(0)
    }))

  it.effect("a user's edit made after the runner's snapshot is kept: the row carries only iterations and nextRunAt, appended to the current list", () =>
    Effect.gen(function* () {
      const missionId = yield* seedMission("ann", { customField: { nested: [1, 2] }, futureFlag: true })
      // The runner took its snapshot (iterations: []) and went to the LLM; meanwhile the browser edits
      // the title and appends its own iteration.
      const browserIteration = {
        id: "browser-meanwhile",
        startedAt: "2026-03-02T08:00:09.000Z",
        plan: [],
        overallStatus: "approved",
        source: "browser",
      }
      const at = "2026-03-02T08:00:10.000Z"
      yield* insertChange({
        user: "ann",
        id: missionId,
        op: "update",
        data: { title: "Get fit (edited)", iterations: [browserIteration], updatedAt: at },
        fieldTimestamps: { title: at, iterations: at, updatedAt: at },
        createdAt: at,
      })
      const iteration = serverIteration(fresh("it"))
      const result = yield* appendAt(WRITE_AT, "ann", missionId, iteration)
      expect(result._tag).toBe("Written")
      const [row] = yield* runnerRows("ann", missionId)
      expect(Object.keys(row!.data as object).sort()).toEqual(["iterations", "nextRunAt"])
      const state = yield* replayedMission("ann", missionId)
      expect(state.record).toEqual({
        ...missionData({ customField: { nested: [1, 2] }, futureFlag: true }),
        id: missionId,
        title: "Get fit (edited)",
        updatedAt: at,
        iterations: [browserIteration, iteration],
        nextRunAt: "2026-03-02T09:00:00.000Z",
      })
    }))

  it.effect("nextRunAt follows the cadence strictly after the write time, in the mission's zone or the default one; manual → null that wins", () =>
    Effect.gen(function* () {
      // 2026-03-02 is a Monday; Berlin is UTC+1 and New York UTC−5 then; Berlin springs forward on 2026-03-29.
      const cases: ReadonlyArray<{ cadence: unknown; timezone?: string; nextRunAt?: string | null; at?: string; expected: string | null }> = [
        { cadence: { kind: "interval", everyMinutes: 60 }, expected: "2026-03-02T09:00:00.000Z" },
        // Slots missed while down are skipped, not caught up: 05:00 + 5 × 45 min.
        { cadence: { kind: "interval", everyMinutes: 45 }, nextRunAt: "2026-03-02T05:00:00.000Z", expected: "2026-03-02T08:45:00.000Z" },
        { cadence: { kind: "interval", everyMinutes: 30 }, nextRunAt: null, expected: "2026-03-02T08:30:30.000Z" },
        { cadence: { kind: "daily", atHour: 7, atMinute: 30 }, expected: "2026-03-03T06:30:00.000Z" },
        { cadence: { kind: "daily", atHour: 9, atMinute: 15 }, timezone: "UTC", expected: "2026-03-02T09:15:00.000Z" },
        { cadence: { kind: "weekly", dayOfWeek: 3, atHour: 18 }, timezone: "America/New_York", expected: "2026-03-04T23:00:00.000Z" },
        { cadence: { kind: "cron", expression: "*/20 * * * *" }, timezone: "UTC", expected: "2026-03-02T08:20:00.000Z" },
        { cadence: { kind: "daily", atHour: 2, atMinute: 30 }, at: "2026-03-28T12:00:00.000Z", expected: "2026-03-29T01:00:00.000Z" },
        { cadence: { kind: "manual" }, expected: null },
      ]
      for (const c of cases) {
        const missionId = yield* seedMission("ann", {
          cadence: c.cadence,
          ...(c.timezone === undefined ? {} : { timezone: c.timezone }),
          ...(c.nextRunAt === undefined ? {} : { nextRunAt: c.nextRunAt }),
        })
        const at = c.at ?? WRITE_AT
        const result = yield* appendAt(at, "ann", missionId, serverIteration(fresh("it")))
        expect([c.cadence, result]).toEqual([c.cadence, { _tag: "Written", iterationId: expect.any(String), nextRunAt: c.expected, writtenAt: at }])
        const [row] = yield* runnerRows("ann", missionId)
        expect(row!.data).toMatchObject({ nextRunAt: c.expected })
        expect(row!.field_timestamps).toEqual({ iterations: at, nextRunAt: at })
        // What a device sees after syncing: the write-back's value, a null included.
        expect((yield* replayedMission("ann", missionId)).record?.nextRunAt).toBe(c.expected)
      }
    }))

  it.effect("an append is not lost to a device whose clock ran ahead: the stamp moves past the newest one, nextRunAt strictly after it", () =>
    Effect.gen(function* () {
      const missionId = yield* seedMission("ann")
      const ahead = "2026-03-02T09:30:00.000Z"
      yield* insertChange({
        user: "ann",
        id: missionId,
        op: "update",
        data: { iterations: [{ id: "from-the-future", startedAt: ahead, plan: [], overallStatus: "approved" }] },
        fieldTimestamps: { iterations: ahead },
        createdAt: "2026-03-02T08:00:10.000Z",
      })
      const iteration = serverIteration(fresh("it"))
      const result = yield* appendAt(WRITE_AT, "ann", missionId, iteration)
      // The stamp moves past the device's, and the next hourly slot is the first one after that stamp
      // (09:00 would be before the write time the row carries: SPEC §6).
      expect(result).toMatchObject({ _tag: "Written", writtenAt: "2026-03-02T09:30:00.001Z", nextRunAt: "2026-03-02T10:00:00.000Z" })
      const state = yield* replayedMission("ann", missionId)
      const iterations = state.record?.iterations as Array<{ id: string }>
      expect(iterations.map((i) => i.id)).toEqual(["from-the-future", iteration.id])
      expect(state.record?.nextRunAt).toBe("2026-03-02T10:00:00.000Z")
    }))

  it.scoped("20 concurrent appends of one iteration id from two pools write exactly one row; distinct ids all survive", () =>
    Effect.gen(function* () {
      const other = yield* Layer.build(RunnerSqlLive(6))
      const wbA = yield* WriteBack
      const wbB = yield* makeWriteBack.pipe(Effect.provideService(SqlClient.SqlClient, Context.get(other, SqlClient.SqlClient)))
      yield* TestClock.setTime(Date.parse(WRITE_AT))

      const missionId = yield* seedMission("ann")
      const iteration = serverIteration(fresh("it"))
      const results = yield* Effect.all(
        Array.from({ length: 20 }, (_, i) => (i % 2 === 0 ? wbA : wbB).append({ userId: "ann", missionId, iteration })),
        { concurrency: "unbounded" },
      )
      expect(results.filter((r) => r._tag === "Written")).toHaveLength(1)
      expect(results.filter((r) => r._tag === "Skipped" && r.reason === "already-written")).toHaveLength(19)
      expect(yield* runnerRows("ann", missionId)).toHaveLength(1)

      // Different scheduled runs at the same instant: serialised, each appended to the one before.
      const busy = yield* seedMission("ann")
      const ids = Array.from({ length: 12 }, () => fresh("run"))
      const written = yield* Effect.all(
        ids.map((id, i) => (i % 2 === 0 ? wbA : wbB).append({ userId: "ann", missionId: busy, iteration: serverIteration(id) })),
        { concurrency: "unbounded" },
      )
      expect(written.every((r) => r._tag === "Written")).toBe(true)
      const final = (yield* replayedMission("ann", busy)).record?.iterations as Array<{ id: string }>
      expect(final.map((i) => i.id).sort()).toEqual([...ids].sort())
    }))

  it.effect("an append interrupted at any point commits whole or not at all, and leaves no held lock or broken pool", () =>
    TestServices.provideLive(
      Effect.gen(function* () {
        const wb = yield* WriteBack
        const db = yield* TestDatabase
        const missionId = yield* seedMission("ann")
        const finished: Array<string> = []
        // PGlite's socket server runs one transaction at a time, so node-postgres' cancel request waits out
        // its 5 s timeout there: fewer rounds, same property.
        const rounds = db.kind === "pglite" ? 5 : 30
        for (let i = 0; i < rounds; i++) {
          const id = fresh("cut")
          const fiber = yield* Effect.fork(wb.append({ userId: "ann", missionId, iteration: serverIteration(id) }))
          yield* Effect.sleep(`${(i * 7) % 16} millis`)
          const exit = yield* Fiber.interrupt(fiber)
          if (Exit.isSuccess(exit)) {
            expect(exit.value._tag).toBe("Written")
            finished.push(id)
          } else expect(Exit.isInterrupted(exit)).toBe(true)
        }
        // The lock and the pool are free: a normal append completes promptly.
        const last = serverIteration(fresh("after"))
        const after = yield* wb.append({ userId: "ann", missionId, iteration: last }).pipe(Effect.timeout("10 seconds"))
        expect(after._tag).toBe("Written")
        // Every committed row is whole: the iterations before it plus exactly one new one. An append that
        // returned is among them; an interrupted one either rolled back or had already committed.
        const appended = yield* runnerRows("ann", missionId)
        let before: Array<string> = []
        for (const row of appended) {
          const ids = (row.data as { iterations: Array<{ id: string }> }).iterations.map((i) => i.id)
          expect(ids.slice(0, -1)).toEqual(before)
          expect(before).not.toContain(ids.at(-1))
          before = ids
        }
        expect(before.at(-1)).toBe(last.id)
        for (const id of finished) expect(before).toContain(id)
        const replayed = (yield* replayedMission("ann", missionId)).record?.iterations as Array<{ id: string }>
        expect(replayed.map((i) => i.id)).toEqual(before)
        if (db.kind === "server") {
          // No pooled connection was handed back inside a transaction (a cancelled ROLLBACK would do that).
          const open = yield* Effect.promise(() =>
            db.ownerQuery(
              "SELECT count(*)::int AS n FROM pg_stat_activity WHERE usename = $1 AND state LIKE 'idle in transaction%'",
              [db.runnerRole],
            ),
          )
          expect(open[0]?.n).toBe(0)
        }
      }),
    ))
  it.effect("today's generation names the mission's live agent in the actor; a deleted or missing agent is the legacy principal; the rationale is cut at 200 characters", () =>
    Effect.gen(function* () {
      const today = (yield* TestDatabase).generation === "field_meta"
      yield* insertChange({ user: "ann", app: "ai", table: "agents", id: "agent-coach", data: { name: "Coach Kim", state: "active" }, createdAt: T0 })
      yield* insertChange({ user: "ann", app: "ai", table: "agents", id: "agent-gone", data: { name: "Gone", state: "active" }, createdAt: T0 })
      yield* insertChange({ user: "ann", app: "ai", table: "agents", id: "agent-gone", op: "delete", createdAt: "2026-03-01T01:00:00.000Z" })
      // Another user's agent of the same id is not ann's agent.
      yield* insertChange({ user: "bob", app: "ai", table: "agents", id: "agent-bobs", data: { name: "Bob's", state: "active" }, createdAt: T0 })
      const long = `${"é".repeat(150)}${"x".repeat(100)}`
      const cases = [
        { agentId: "agent-coach", principalId: "agent-coach", displayName: "Coach Kim" },
        { agentId: "agent-gone", principalId: "legacy:ai-default", displayName: "Mana" },
        { agentId: "agent-bobs", principalId: "legacy:ai-default", displayName: "Mana" },
        { agentId: undefined, principalId: "legacy:ai-default", displayName: "Mana" },
      ]
      for (const c of cases) {
        const missionId = yield* seedMission("ann", c.agentId === undefined ? {} : { agentId: c.agentId })
        const iteration = { ...serverIteration(fresh("it"), 1), summary: long }
        expect((yield* appendAt(WRITE_AT, "ann", missionId, iteration))._tag).toBe("Written")
        const [row] = yield* runnerRows("ann", missionId)
        if (!today) {
          expect(row!.actor).toEqual({ kind: "system", source: "mission-runner" })
          continue
        }
        expect(row!.actor).toEqual({
          kind: "ai",
          principalId: c.principalId,
          displayName: c.displayName,
          missionId,
          iterationId: iteration.id,
          rationale: `${"é".repeat(150)}${"x".repeat(50)}`,
        })
      }
    }))

  it.effect("a mission as today's app writes it (agentId, grant, unknown fields, timezone null, no iterations) is appended to; every field and the app's iteration keys survive", () =>
    Effect.gen(function* () {
      const grant = { wrappedKey: "AAAA", derivation: { version: "v1", missionId: "x", tables: [], recordIds: [] }, issuedAt: T0, expiresAt: "2027-01-01T00:00:00.000Z" }
      const missionId = yield* seedMission("ann", {
        agentId: "no-such-agent",
        grant,
        timezone: null,
        iterations: undefined,
        spaceNote: { kept: [1, 2] },
      })
      const first = serverIteration(fresh("it"), 1)
      expect(yield* appendAt(WRITE_AT, "ann", missionId, first)).toMatchObject({ _tag: "Written", nextRunAt: "2026-03-02T09:00:00.000Z" })

      // The app then adds its own running iteration with the fields only it writes.
      const appIteration = {
        id: "app-it",
        startedAt: "2026-03-02T08:10:00.000Z",
        plan: [],
        overallStatus: "failed",
        source: "browser",
        currentPhase: "staging-proposals",
        phaseStartedAt: "2026-03-02T08:10:01.000Z",
        phaseDetail: "staging 2/5",
        cancelRequested: true,
        errorDetails: { name: "Cancelled", message: "cancelled", phase: "staging-proposals", stack: "at x" },
      }
      const stored = (yield* replayedMission("ann", missionId)).record!.iterations as Array<unknown>
      yield* insertChange({
        user: "ann",
        id: missionId,
        op: "update",
        data: { iterations: [...stored, appIteration] },
        fieldTimestamps: { iterations: "2026-03-02T08:10:02.000Z" },
        createdAt: "2026-03-02T08:10:02.000Z",
      })
      const second = serverIteration(fresh("it"), 1)
      expect((yield* appendAt("2026-03-02T09:00:30.000Z", "ann", missionId, second))._tag).toBe("Written")

      const record = (yield* replayedMission("ann", missionId)).record!
      expect(record.agentId).toBe("no-such-agent")
      expect(record.grant).toEqual(grant)
      expect(record.spaceNote).toEqual({ kept: [1, 2] })
      expect(record.timezone).toBeNull()
      const iterations = record.iterations as Array<Record<string, unknown>>
      expect(iterations.map((i) => i.id)).toEqual([first.id, "app-it", second.id])
      expect(iterations[1]).toEqual(appIteration)
      for (const written of [iterations[0]!, iterations[2]!]) {
        expect(Object.keys(written).sort()).toEqual(["finishedAt", "id", "overallStatus", "plan", "source", "startedAt", "summary"])
      }
    }))

  // A run's pre-check hands its read to the write-back (issue 16): one statement when the mission's rows
  // are still the ones read, the full read under the lock otherwise.
  const basisOf = (user: string, missionId: string, iterationId: string) =>
    Effect.gen(function* () {
      const sql = yield* SqlClient.SqlClient
      const read = yield* withUserScope(user, (s) => readCurrentMissionWithAgent(s, user, missionId, iterationId, "UTC")).pipe(
        Effect.provideService(SqlClient.SqlClient, sql),
      )
      if (read.current._tag !== "Appendable") return yield* Effect.dieMessage(`not appendable: ${read.current.reason}`)
      return { current: read.current, missionRows: read.missionRows, actor: read.actor! } satisfies WriteBasis
    }).pipe(Effect.orDie)

  it.effect("an append on the pre-check's basis writes onto it when nothing was written since", () =>
    Effect.gen(function* () {
      const missionId = yield* seedMission("ann")
      const iteration = serverIteration(fresh("it"))
      const basis = yield* basisOf("ann", missionId, iteration.id)
      yield* TestClock.setTime(Date.parse(WRITE_AT))
      const result = yield* Effect.flatMap(WriteBack, (wb) => wb.append({ userId: "ann", missionId, iteration, basis }))
      expect(result).toMatchObject({ _tag: "Written", nextRunAt: "2026-03-02T09:00:00.000Z", writtenAt: WRITE_AT })
      const record = (yield* replayedMission("ann", missionId)).record!
      expect((record.iterations as Array<{ id: string }>).map((i) => i.id)).toEqual([iteration.id])
      expect(record.nextRunAt).toBe("2026-03-02T09:00:00.000Z")
    }))

  it.effect("a stale basis is not written onto: the user's pause and the user's own iteration written since the pre-check win", () =>
    Effect.gen(function* () {
      yield* TestClock.setTime(Date.parse(WRITE_AT))
      // Paused after the pre-check read it: the write-back sees the pause and writes nothing.
      const paused = yield* seedMission("ann")
      const first = serverIteration(fresh("it"))
      const stalePaused = yield* basisOf("ann", paused, first.id)
      yield* insertChange({
        user: "ann",
        id: paused,
        op: "update",
        data: { state: "paused" },
        fieldTimestamps: { state: "2026-03-02T08:00:10.000Z" },
        createdAt: "2026-03-02T08:00:10.000Z",
      })
      const skipped = yield* Effect.flatMap(WriteBack, (wb) => wb.append({ userId: "ann", missionId: paused, iteration: first, basis: stalePaused }))
      expect(skipped).toEqual({ _tag: "Skipped", reason: "not-active" })
      expect(yield* runnerRows("ann", paused)).toHaveLength(0)

      // The app added an iteration after the pre-check read: the append keeps it.
      const edited = yield* seedMission("ann")
      const second = serverIteration(fresh("it"))
      const staleEdited = yield* basisOf("ann", edited, second.id)
      const appIteration = { id: "app-it", startedAt: "2026-03-02T08:00:05.000Z", plan: [], overallStatus: "approved", source: "browser" }
      yield* insertChange({
        user: "ann",
        id: edited,
        op: "update",
        data: { iterations: [appIteration] },
        fieldTimestamps: { iterations: "2026-03-02T08:00:10.000Z" },
        // Committed late: its created_at sorts before rows the pre-check could have seen, and still counts.
        createdAt: "2026-03-01T00:00:00.500Z",
      })
      const written = yield* Effect.flatMap(WriteBack, (wb) => wb.append({ userId: "ann", missionId: edited, iteration: second, basis: staleEdited }))
      expect(written._tag).toBe("Written")
      const iterations = (yield* replayedMission("ann", edited)).record!.iterations as Array<{ id: string }>
      expect(iterations.map((i) => i.id)).toEqual(["app-it", second.id])
    }))

  it.effect("on a basis, the actor names the agent as it stands at the write: renamed or deleted since the pre-check, the record is read again", () =>
    Effect.gen(function* () {
      const today = (yield* TestDatabase).generation === "field_meta"
      const agentId = fresh("agent")
      yield* insertChange({ user: "ann", app: "ai", table: "agents", id: agentId, data: { name: "Coach Kim", state: "active" }, createdAt: T0 })
      const unchanged = yield* seedMission("ann", { agentId })
      const renamed = yield* seedMission("ann", { agentId })
      const iterations = [serverIteration(fresh("it")), serverIteration(fresh("it")), serverIteration(fresh("it"))] as const
      const basisUnchanged = yield* basisOf("ann", unchanged, iterations[0].id)
      const basisRenamed = yield* basisOf("ann", renamed, iterations[1].id)
      yield* TestClock.setTime(Date.parse(WRITE_AT))
      const append = (missionId: string, iteration: Iteration, basis: WriteBasis) =>
        Effect.flatMap(WriteBack, (wb) => wb.append({ userId: "ann", missionId, iteration, basis }))
      const nameIn = (missionId: string) => Effect.map(runnerRows("ann", missionId), (rows) => (rows[0]?.actor as { displayName?: string } | null)?.displayName)

      expect((yield* append(unchanged, iterations[0], basisUnchanged))._tag).toBe("Written")
      if (today) expect(yield* nameIn(unchanged)).toBe("Coach Kim")
      // Renamed after both pre-checks: the basis still holds the mission's rows, not the agent's.
      yield* insertChange({ user: "ann", app: "ai", table: "agents", id: agentId, op: "update", data: { name: "Coach Lee" }, createdAt: "2026-03-01T12:00:00.000Z" })
      expect((yield* append(renamed, iterations[1], basisRenamed))._tag).toBe("Written")
      if (today) expect(yield* nameIn(renamed)).toBe("Coach Lee")
      // Deleted after the pre-check: the legacy principal, as a write-back without a basis names it.
      const deleted = yield* seedMission("ann", { agentId })
      const basisDeleted = yield* basisOf("ann", deleted, iterations[2].id)
      yield* insertChange({ user: "ann", app: "ai", table: "agents", id: agentId, op: "delete", createdAt: "2026-03-01T13:00:00.000Z" })
      expect((yield* append(deleted, iterations[2], basisDeleted))._tag).toBe("Written")
      if (today) expect(yield* nameIn(deleted)).toBe("Mana")
    }))

  it.scoped("20 concurrent appends of one iteration id on one basis, from two pools, write exactly one row", () =>
    Effect.gen(function* () {
      const other = yield* Layer.build(RunnerSqlLive(6))
      const wbA = yield* WriteBack
      const wbB = yield* makeWriteBack.pipe(Effect.provideService(SqlClient.SqlClient, Context.get(other, SqlClient.SqlClient)))
      yield* TestClock.setTime(Date.parse(WRITE_AT))
      const missionId = yield* seedMission("ann")
      const iteration = serverIteration(fresh("it"))
      const basis = yield* basisOf("ann", missionId, iteration.id)
      const results = yield* Effect.all(
        Array.from({ length: 20 }, (_, i) => (i % 2 === 0 ? wbA : wbB).append({ userId: "ann", missionId, iteration, basis })),
        { concurrency: "unbounded" },
      )
      expect(results.filter((r) => r._tag === "Written")).toHaveLength(1)
      expect(results.filter((r) => r._tag === "Skipped" && r.reason === "already-written")).toHaveLength(19)
      expect(yield* runnerRows("ann", missionId)).toHaveLength(1)
    }))
})
