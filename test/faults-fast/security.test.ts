/**
 * Security on the real database as the runner role (NOSUPERUSER NOBYPASSRLS, prepared only by
 * sql/runner-role.sql): Postgres itself refuses cross-user reads and writes, the pipeline cannot be
 * steered into another user's data (inputs, write-back), and hostile user and mission ids such as
 * `'; DROP TABLE sync_changes; --` go through discovery, planning and write-back as plain values.
 */
import { SqlClient } from "@effect/sql"
import { layer } from "@effect/vitest"
import { Effect, Either } from "effect"
import { expect } from "vitest"
import { MissionRunner } from "../../src/services/MissionRunner.js"
import { MissionStore } from "../../src/services/MissionStore.js"
import { WriteBack } from "../../src/services/WriteBack.js"
import { withUserScope } from "../../src/services/withUserScope.js"
import { audited } from "../support/auditedTest.js"
import { LlmStandIn, messagesOf } from "../support/LlmStandIn.js"
import { replayedMission, runnerRows } from "../support/eventLogRows.js"
import { missionOf, runnerRowCount, runnerStack, snapshotOf } from "../support/RunnerStack.js"
import { insertChanges, missionInsertRow } from "../support/seed.js"
import { TestDatabase } from "../support/TestDatabase.js"

const Stack = runnerStack({ missionTimeout: "8 seconds" })
const DUE = () => new Date(Date.now() - 60_000).toISOString()
const tally = { runs: 0, refused: 0, faults: {} as Record<string, number> }
const fault = (kind: string, n = 1) => {
  tally.faults[kind] = (tally.faults[kind] ?? 0) + n
}

/** The Postgres error code of a failed statement run as the runner role, or "ok". */
const asRunner = <A>(effect: Effect.Effect<A, unknown, SqlClient.SqlClient>) =>
  effect.pipe(
    Effect.as("ok"),
    Effect.catchAll((e) => Effect.succeed(String((e as { cause?: { code?: unknown } }).cause?.code ?? "no code"))),
  )

const ownerCount = (where: string, params: ReadonlyArray<unknown>) =>
  Effect.flatMap(TestDatabase, (db) =>
    Effect.promise(async () => Number((await db.ownerQuery(`SELECT count(*)::int AS n FROM sync_changes WHERE ${where}`, params))[0]?.n)),
  )

const goal = (user: string, id: string, title: string) => ({
  userId: user,
  recordId: id,
  appId: "companion",
  table: "companionGoals",
  op: "insert" as const,
  data: { title, currentValue: 3, target: { value: 10 }, period: "week" },
})

const HOSTILE = [
  "'; DROP TABLE sync_changes; --",
  "x'); DELETE FROM sync_changes WHERE ('1'='1",
  "%",
  "_",
  "\\'; SELECT pg_sleep(5); --",
  "$1",
  'robert"); DROP TABLE "mana_ai"."mission_snapshots"; --',
]

layer(Stack, { timeout: 180_000, excludeTestServices: true })("security", (it) => {
  // Every test ends with the audit of what it stored (no duplicate iteration) and records its figures.
  const check = <A, E, R>(body: Effect.Effect<A, E, R>) =>
    audited("security", () => ({ runs: tally.runs, rejected: tally.refused, faults: tally.faults }), body)

  it.effect("Postgres refuses the runner role's cross-user reads and writes", () =>
    check(Effect.gen(function* () {
      yield* insertChanges([goal("bob", "bob-goal", "Bob's private goal"), missionInsertRow("bob", "bob-m", { nextRunAt: DUE() })])
      const sql = yield* SqlClient.SqlClient
      // Scoped to alice: bob's goal is invisible (only mission rows are readable across users, by the grant).
      const seen = yield* withUserScope("alice", (s) => s<{ n: number }>`
        SELECT count(*)::int AS n FROM sync_changes WHERE user_id = 'bob' AND app_id = 'companion'`)
      expect(seen[0]?.n).toBe(0)
      // With no scope at all, nothing but mission rows either.
      const unscoped = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM sync_changes WHERE app_id = 'companion'`
      expect(unscoped[0]?.n).toBe(0)
      const insertFor = (rowUser: string) => (s: SqlClient.SqlClient) => s`
        INSERT INTO sync_changes (app_id, table_name, record_id, user_id, op, data, client_id)
        VALUES ('ai', 'aiMissions', 'bob-m', ${rowUser}, 'update', '{"state":"archived"}'::jsonb, 'mana-ai-runner')`
      const refusals = {
        "insert for bob, scoped to alice": yield* asRunner(withUserScope("alice", insertFor("bob"))),
        "insert for bob, unscoped": yield* asRunner(insertFor("bob")(sql)),
        "update bob's rows": yield* asRunner(sql`UPDATE sync_changes SET data = '{}'::jsonb WHERE user_id = 'bob'`),
        "delete bob's rows": yield* asRunner(sql`DELETE FROM sync_changes WHERE user_id = 'bob'`),
        "delete inside bob's own scope": yield* asRunner(withUserScope("bob", (s) => s`DELETE FROM sync_changes WHERE user_id = 'bob'`)),
        "truncate": yield* asRunner(sql`TRUNCATE sync_changes`),
        "drop the table": yield* asRunner(sql`DROP TABLE sync_changes`),
        "disable row security": yield* asRunner(sql`ALTER TABLE sync_changes DISABLE ROW LEVEL SECURITY`),
        "create a schema": yield* asRunner(sql`CREATE SCHEMA runner_owned`),
      }
      // 42501 insufficient_privilege (RLS WITH CHECK, missing grant); 42501/42P01-free: the table is never anyone's but the owner's.
      for (const [what, code] of Object.entries(refusals)) expect([what, code]).toEqual([what, "42501"])
      fault("security:cross-user-or-privileged-statement", Object.keys(refusals).length)
      tally.refused += Object.keys(refusals).length
      expect(yield* ownerCount("user_id = 'bob'", [])).toBe(2)
    })))

  it.effect("a scope for another user inside a user's transaction hands the transaction back as the outer user", () =>
    check(Effect.gen(function* () {
      yield* insertChanges([goal("erin", "erin-goal", "Erin's goal"), goal("frank", "frank-goal", "Frank's goal")])
      const goalsSeen = (s: SqlClient.SqlClient) =>
        s<{ user_id: string }>`SELECT DISTINCT user_id FROM sync_changes WHERE app_id = 'companion' AND user_id IN ('erin', 'frank')`
      const seen = yield* withUserScope("erin", (s) =>
        Effect.gen(function* () {
          const before = yield* goalsSeen(s)
          const inner = yield* withUserScope("frank", goalsSeen)
          // The inner scope failing must hand it back too.
          const failed = yield* withUserScope("frank", (t) => Effect.zipRight(goalsSeen(t), Effect.fail("inner failure" as const))).pipe(Effect.flip)
          const after = yield* goalsSeen(s)
          const setting = yield* s<{ u: string }>`SELECT current_setting('app.current_user_id') AS u`
          return { before, inner, failed, after, setting }
        }),
      )
      expect(seen).toEqual({
        before: [{ user_id: "erin" }],
        inner: [{ user_id: "frank" }],
        failed: "inner failure",
        after: [{ user_id: "erin" }],
        setting: [{ u: "erin" }],
      })
      fault("security:nested-cross-user-scope")
      tally.refused += 1
    })))

  it.effect("a mission whose input names another user's goal never sees it; a write-back for another user's mission writes nothing", () =>
    check(Effect.gen(function* () {
      const standIn = yield* LlmStandIn
      yield* standIn.reset
      yield* insertChanges([
        goal("carol", "carol-goal", "CAROL-SECRET-GOAL"),
        missionInsertRow("dave", "dave-m", {
          nextRunAt: DUE(),
          inputs: [{ module: "goals", table: "companionGoals", id: "carol-goal" }],
        }),
        missionInsertRow("carol", "carol-m", { nextRunAt: DUE() }),
      ])
      fault("security:cross-user-input")
      const runner = yield* MissionRunner
      const result = yield* Effect.either(runner.run({ userId: "dave", mission: missionOf(yield* snapshotOf("dave", "dave-m")) }))
      tally.runs++
      expect(Either.isRight(result) && result.right._tag).toBe("Written")
      const prompt = JSON.stringify(messagesOf((yield* standIn.requests)[0]))
      expect(prompt).not.toContain("CAROL-SECRET-GOAL")

      // The write-back's own guard: dave cannot append to carol's mission, not even by naming it.
      const carolMission = missionOf(yield* snapshotOf("carol", "carol-m"))
      const writeBack = yield* WriteBack
      const appended = yield* writeBack.append({
        userId: "dave",
        missionId: "carol-m",
        iteration: { id: "forged", startedAt: DUE(), plan: [], overallStatus: "approved", source: "server" },
      })
      expect(appended).toEqual({ _tag: "Skipped", reason: "not-found" })
      const forged = yield* Effect.either(runner.run({ userId: "dave", mission: carolMission }))
      tally.runs++
      expect(Either.isRight(forged) && forged.right._tag).toBe("Skipped")
      expect(yield* runnerRowCount("carol", "carol-m")).toBe(0)
      expect(yield* ownerCount("record_id = 'carol-m' AND user_id = 'dave'", [])).toBe(0)
      fault("security:cross-user-write-back", 2)
      tally.refused += 3
    })))

  it.effect("hostile user and mission ids go through discovery, planning and write-back as plain values", () =>
    check(Effect.gen(function* () {
      const standIn = yield* LlmStandIn
      yield* standIn.reset
      const before = yield* ownerCount("true", [])
      yield* insertChanges([
        ...HOSTILE.map((h, i) => missionInsertRow(h, `${h}#${i}`, { nextRunAt: DUE(), title: `Mission of ${h}` })),
        missionInsertRow("innocent", "innocent-m", { nextRunAt: DUE() }),
      ])
      fault("security:hostile-id", HOSTILE.length)
      const runner = yield* MissionRunner
      const store = yield* MissionStore
      for (const [i, h] of HOSTILE.entries()) {
        const result = yield* Effect.either(runner.run({ userId: h, mission: missionOf(yield* snapshotOf(h, `${h}#${i}`)) }))
        tally.runs++
        expect([h, Either.isRight(result) && result.right._tag]).toEqual([h, "Written"])
        const rows = yield* runnerRows(h, `${h}#${i}`)
        expect([h, rows.length, rows[0]?.user_id, rows[0]?.record_id]).toEqual([h, 1, h, `${h}#${i}`])
        // forUser matches exactly: "%" and "_" are not patterns.
        const own = yield* store.forUser(h)
        expect([h, own.map((s) => s.missionId)]).toEqual([h, [`${h}#${i}`]])
        expect((yield* replayedMission(h, `${h}#${i}`)).record?.title).toBe(`Mission of ${h}`)
      }
      // Nothing was dropped or deleted: every row is still there, plus one runner row per hostile mission.
      expect(yield* ownerCount("true", [])).toBe(before + HOSTILE.length + 1 + HOSTILE.length)
      expect(yield* runnerRowCount("innocent", "innocent-m")).toBe(0)
      const snapshots = yield* Effect.flatMap(TestDatabase, (db) =>
        Effect.promise(() => db.ownerQuery("SELECT count(*)::int AS n FROM mana_ai.mission_snapshots")),
      )
      expect(Number(snapshots[0]?.n)).toBeGreaterThan(HOSTILE.length)
    })))
})
