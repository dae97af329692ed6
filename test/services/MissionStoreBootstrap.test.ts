/**
 * The first discovery of a history (one pass over every row) against the incremental path (the same
 * rows arriving in steps, late-committed ones among them) on the same rows: both must store the same
 * snapshots, and both the record a device gets by replaying the log row by row (SPEC §2). Runs on the
 * real server and on PGlite, on both generations of sync_changes (vitest.config.ts). And a pass's
 * statements take turns on its connection: pg is never handed one while another runs there.
 */
import { SqlClient } from "@effect/sql"
import { it } from "@effect/vitest"
import { Duration, Effect, Layer } from "effect"
import { expect } from "vitest"
import { type ReplayRow, isLive, replayOrdered } from "../../src/domain/replay.js"
import { RunnerConfig } from "../../src/services/AppConfig.js"
import { MigrationsLive } from "../../src/services/Migrations.js"
import { makeMissionStore } from "../../src/services/MissionStore.js"
import { watchPgHandOffs } from "../support/pgHandOffs.js"
import { type Change, insertChanges, missionFields } from "../support/seed.js"
import { RunnerSqlLive, TestDatabase, TestDatabaseLive } from "../support/TestDatabase.js"

const Db = Layer.provideMerge(RunnerSqlLive(8), TestDatabaseLive)
const Migrated = Layer.provideMerge(MigrationsLive, Layer.merge(Db, RunnerConfig.test()))

/** Every row below lies inside this window, so the incremental path sees the late ones. */
const LOOKBACK = Duration.hours(2)

interface StoredSnapshot {
  readonly user_id: string
  readonly record_id: string
  readonly record: unknown
  readonly field_times: unknown
  readonly last_at: string
  readonly last_id: string
  readonly deleted: boolean
  readonly state: string | null
  readonly next_run_at: string | null
  readonly schedulable: boolean
  readonly malformed_reason: string | null
}

const storedSnapshots = Effect.flatMap(
  SqlClient.SqlClient,
  (sql) => sql<StoredSnapshot>`
    SELECT user_id, record_id, record, field_times,
           to_char(last_created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS last_at,
           last_change_id::text AS last_id, deleted, state,
           to_char(next_run_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS next_run_at,
           schedulable, malformed_reason
    FROM mana_ai.mission_snapshots ORDER BY user_id, record_id`,
)

/** Every mission record replayed row by row from the log, read as the owner: the oracle. */
const replayedFromLog = Effect.flatMap(TestDatabase, (db) =>
  Effect.promise(async () => {
    const rows = (await db.ownerQuery(
      `SELECT id::text AS id, user_id, record_id, op, data, ${db.generation} AS field_timestamps, created_at,
              to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS at
       FROM sync_changes WHERE app_id = 'ai' AND table_name = 'aiMissions'
       ORDER BY user_id, record_id, created_at, id`,
    )) as unknown as ReadonlyArray<ReplayRow & { user_id: string; at: string }>
    const byRecord = new Map<string, Array<ReplayRow & { user_id: string; at: string }>>()
    for (const row of rows) {
      const key = `${row.user_id}/${row.record_id}`
      byRecord.set(key, [...(byRecord.get(key) ?? []), row])
    }
    return new Map(
      [...byRecord].map(([key, list]) => {
        const last = list[list.length - 1]!
        return [key, { state: replayOrdered(list), last_at: last.at, last_id: last.id, rows: list.length }] as const
      }),
    )
  }),
)

/** `ms` as created_at text, optionally with extra microseconds (a tie broken only below the millisecond). */
const at = (ms: number, micros = 0) => new Date(ms).toISOString().replace("Z", `${String(micros).padStart(3, "0")}Z`)

const change = (
  userId: string,
  recordId: string,
  op: Change["op"],
  data: unknown,
  createdAt: string,
  fieldTimestamps?: unknown,
): Change => ({ userId, recordId, op, data, createdAt, ...(fieldTimestamps === undefined ? {} : { fieldTimestamps }) }) as Change

/** Bulk rows for 60 records, 40 rows each, 10 rows per created_at, mixed ops and per-field times: more than one FETCH. */
const insertBulk = (from: number, to: number, baseMs: number, stepOffset: number) =>
  Effect.flatMap(TestDatabase, (db) =>
    Effect.promise(() =>
      db.ownerQuery(
        `INSERT INTO sync_changes (app_id, table_name, record_id, user_id, op, data, ${db.generation}, client_id, created_at)
         SELECT 'ai', 'aiMissions', 'bulk-' || (g % 60), 'u-bulk-' || ((g % 60) % 4),
                CASE WHEN g % 13 = 0 THEN 'delete' WHEN g < 60 THEN 'insert' ELSE 'update' END,
                CASE WHEN g % 13 = 0 THEN NULL
                     WHEN g < 60 THEN $1::jsonb || jsonb_build_object('title', 'Bulk ' || g)
                     WHEN g % 23 = 0 THEN to_jsonb('not an object'::text)
                     ELSE jsonb_build_object('title', 'T' || g, 'extra' || (g % 3), g,
                                             'deletedAt', CASE WHEN g % 17 = 0 THEN to_jsonb('2026-01-01T00:00:00Z'::text)
                                                               ELSE 'null'::jsonb END)
                END,
                CASE WHEN g % 5 = 0 THEN jsonb_build_object('title', to_char(($4::timestamptz + make_interval(secs => (g % 9) * 7))
                                                                    AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'))
                     WHEN g % 19 = 0 THEN '{"title": "not a time", "extra1": "2026-02-30T00:00:00Z"}'::jsonb
                     WHEN g % 29 = 0 THEN '[1, 2]'::jsonb
                     ELSE '{}'::jsonb END,
                'browser-device', $4::timestamptz + make_interval(secs => (g - $5) / 10)
         FROM generate_series($2::int, $3::int) AS g`,
        [JSON.stringify(missionFields()), from, to, new Date(baseMs).toISOString(), stepOffset],
      ),
    ),
  )

/**
 * The rows in steps through an incremental store, then the same rows by a first discovery in one pass
 * and by one read in parts. `incrementalSplitMinRows`: the incremental store's own threshold (1: every
 * incremental pass reads in parts too, late rows and the window's applied ids included).
 */
const sameSnapshotsEveryWay = (incrementalSplitMinRows?: number) =>
    Effect.gen(function* () {
      const sql = yield* SqlClient.SqlClient
      const db = yield* TestDatabase
      const [{ now }] = (yield* Effect.promise(() =>
        db.ownerQuery("SELECT (extract(epoch FROM now()) * 1000)::float8 AS now"),
      )) as unknown as [{ now: number }]
      const base = Math.floor(now) - 30 * 60_000
      const s = (seconds: number, micros = 0) => at(base + seconds * 1000, micros)

      // Each step arrives before the incremental store's next refresh.
      const steps: ReadonlyArray<ReadonlyArray<Change>> = [
        [
          change("u1", "a", "insert", missionFields({ title: "A" }), s(0)),
          // Same created_at as the insert: the uuid order decides between the two (as in the log).
          change("u1", "a", "update", { title: "A tie" }, s(0)),
          // An older per-field time loses to the value held; an offset time is an instant like any other.
          change("u1", "a", "update", { objective: "old objective" }, s(1), { objective: s(-100) }),
          change("u1", "a", "update", { conceptMarkdown: "offset" }, s(2), {
            conceptMarkdown: new Date(base + 3000).toISOString().replace("Z", "+00:00"),
          }),
          // Unknown fields are kept; a data field "id" cannot rename the record.
          change("u1", "a", "update", { color: "teal", id: "other" }, s(3)),
          change("u1", "b", "insert", missionFields({ title: "B" }), s(0)),
          change("u1", "b", "delete", null, s(4)),
          change("u1", "c", "insert", missionFields({ title: "C" }), s(1)),
          change("u1", "c", "update", { deletedAt: "2026-03-03T00:00:00Z" }, s(5)),
          // Data that is not an object: noted, not applied; a record that never came to be.
          change("u2", "d", "update", "oops", s(2)),
          change("u2", "never", "update", [1, 2], s(2)),
          // The same record id under two users.
          change("u2", "a", "insert", missionFields({ title: "A of u2", nextRunAt: "soon" }), s(3)),
        ],
        [
          // Re-insert after a delete: starts from the record id again.
          change("u1", "b", "insert", { title: "B again", state: "paused" }, s(10)),
          change("u1", "a", "update", { title: "A later" }, s(11), { title: "not a time" }),
          change("u1", "a", "update", { state: "paused" }, s(12), [1]),
          change("u2", "d", "insert", missionFields({ title: "D", timezone: "Mars/Olympus" }), s(12)),
          // Two rows a microsecond apart: only the exact created_at orders them.
          change("u1", "c", "update", { deletedAt: null, title: "C back" }, s(13, 1)),
          change("u1", "c", "update", { title: "C back 2" }, s(13, 2)),
        ],
        [
          // Committed late: created_at earlier than rows already applied.
          change("u1", "a", "update", { title: "A late", objective: "late objective" }, s(5)),
          change("u1", "b", "update", { title: "B late" }, s(6)),
          change("u1", "b", "update", { objective: "B late objective" }, s(10), { objective: s(20) }),
          change("u2", "a", "update", { nextRunAt: s(9000) }, s(1)),
          change("u2", "never", "update", null, s(1)),
        ],
      ]

      // The incremental path: a store refreshed after every step, writing two records per statement.
      const incremental = yield* makeMissionStore({
        lookback: LOOKBACK,
        batchSize: 2,
        ...(incrementalSplitMinRows === undefined ? {} : { splitMinRows: incrementalSplitMinRows }),
      })
      let rowsIncremental = 0
      for (const [i, step] of steps.entries()) {
        yield* insertChanges(step)
        if (i === 0) yield* insertBulk(1, 1300, base + 100_000, 0)
        if (i === 1) yield* insertBulk(1301, 2400, base + 100_000, 0)
        // Late bulk rows: created_at back among the first ones applied.
        if (i === 2) yield* insertBulk(2401, 2500, base + 100_000, 2400)
        rowsIncremental += (yield* incremental.refresh).rowsRead
      }
      const total = steps.reduce((n, step) => n + step.length, 0) + 2500
      expect(rowsIncremental).toBe(total)
      expect((yield* incremental.refresh).rowsRead).toBe(0)
      const afterIncremental = yield* storedSnapshots

      // The first discovery: the runner's tables emptied, a new store, one refresh over the whole log.
      yield* sql`TRUNCATE mana_ai.mission_snapshots, mana_ai.discovery_cursor, mana_ai.applied_records`
      const bootstrap = yield* makeMissionStore({ lookback: LOOKBACK })
      const first = yield* bootstrap.refresh
      expect(first.rowsRead).toBe(total)
      expect((yield* bootstrap.refresh).rowsRead).toBe(0)
      const afterBootstrap = yield* storedSnapshots

      expect(afterBootstrap.length).toBe(60 + 6)
      expect(afterBootstrap).toEqual(afterIncremental)

      // The same first discovery read in parts (what a pass of SPLIT_MIN_ROWS rows or more does): on the
      // server each part on a connection of its own; on PGlite (one session for every client) in one.
      yield* sql`TRUNCATE mana_ai.mission_snapshots, mana_ai.discovery_cursor, mana_ai.applied_records`
      const inParts = yield* makeMissionStore({ lookback: LOOKBACK, splitMinRows: 1 })
      const split = yield* inParts.refresh
      expect(split.rowsRead).toBe(total)
      expect(split.changed.length).toBe(first.changed.length)
      expect(split.parts).toBe(db.kind === "server" ? 2 : undefined)
      expect((yield* inParts.refresh).rowsRead).toBe(0)
      expect(yield* storedSnapshots).toEqual(afterIncremental)

      // And both are the row-by-row replay of the log.
      const oracle = yield* replayedFromLog
      expect(afterBootstrap.map((r) => `${r.user_id}/${r.record_id}`)).toEqual([...oracle.keys()])
      for (const snap of afterBootstrap) {
        const expected = oracle.get(`${snap.user_id}/${snap.record_id}`)!
        expect(snap.record, `${snap.user_id}/${snap.record_id}`).toEqual(expected.state.record)
        expect(snap.field_times).toEqual(expected.state.times)
        expect(snap.deleted).toBe(!isLive(expected.state))
        expect([snap.last_at, snap.last_id]).toEqual([expected.last_at, expected.last_id])
      }
      // The cases the rows were built for came out as the log says (not merely alike on both paths).
      const get = (u: string, r: string) => afterBootstrap.find((x) => x.user_id === u && x.record_id === r)!
      expect(get("u1", "a").record).toMatchObject({ id: "a", title: "A later", objective: "late objective", color: "teal" })
      // Deleted, then recreated by the late row (after the delete), then merged with the re-insert.
      expect(get("u1", "b").record).toMatchObject({ id: "b", title: "B again", state: "paused", objective: "B late objective" })
      expect(get("u1", "b").record).not.toHaveProperty("conceptMarkdown")
      expect(get("u1", "c")).toMatchObject({ deleted: false, record: { title: "C back 2", deletedAt: null } })
      expect(get("u2", "never")).toMatchObject({ deleted: true, record: null })
      expect(get("u2", "never").malformed_reason).toMatch(/not an object/)
      expect(get("u2", "d").malformed_reason).toMatch(/timezone/)
      // The late nextRunAt is older than the insert's: it loses, and "soon" still makes the mission malformed.
      expect(get("u2", "a")).toMatchObject({ schedulable: false, record: { title: "A of u2", nextRunAt: "soon" } })
      expect(get("u2", "a").malformed_reason).toMatch(/nextRunAt/)
      expect(afterBootstrap.filter((x) => x.deleted).length).toBeGreaterThan(1)
    })

it.layer(Migrated, { timeout: 240_000 })("MissionStore: first discovery in one pass", (it) => {
  it.effect("a history discovered in one pass stores the same snapshots as the same rows applied incrementally", () =>
    sameSnapshotsEveryWay(),
  )
})

it.layer(Migrated, { timeout: 240_000 })("MissionStore: every pass read in parts", (it) => {
  it.effect("incremental passes read in parts store the same snapshots as one pass", () => sameSnapshotsEveryWay(1))
})

/** How many statements reached a pg client still executing another (or with one waiting) while `effect` ran. */
const queuedBehindAnother = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.acquireUseRelease(
    Effect.sync(watchPgHandOffs),
    (seen) => Effect.map(effect, (result) => [result, seen.whileBusy] as const),
    (seen) => Effect.sync(seen.restore),
  )

it.layer(Migrated, { timeout: 240_000 })("MissionStore: a pass's statements on its connection", (it) => {
  it.effect("take turns: none is handed to pg while another runs, though the next page is fetched and a batch written meanwhile", () =>
    Effect.gen(function* () {
      const db = yield* TestDatabase
      // 2,500 records, one row each: three FETCH pages of 1,000, each page's writes under way beside the next FETCH.
      yield* Effect.promise(() =>
        db.ownerQuery(
          `INSERT INTO sync_changes (app_id, table_name, record_id, user_id, op, data, ${db.generation}, client_id, created_at)
           SELECT 'ai', 'aiMissions', 'turn-' || g, 'u-turn-' || (g % 50), 'insert', $1::jsonb, '{}'::jsonb, 'browser-device',
                  now() - interval '10 minutes' + make_interval(secs => g / 100.0)
           FROM generate_series(1, 2500) AS g`,
          [JSON.stringify(missionFields())],
        ),
      )
      const store = yield* makeMissionStore({ lookback: LOOKBACK, batchSize: 400 })
      const [pass, queued] = yield* queuedBehindAnother(store.refresh)
      expect(pass.rowsRead).toBe(2500)
      expect(queued).toBe(0)
      expect((yield* storedSnapshots).length).toBe(2500)
    }),
  )
})
