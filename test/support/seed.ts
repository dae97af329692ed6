/**
 * Seeding sync_changes as the sync server does: as the owner (one statement, so one transaction whose
 * rows share now()), or as the runner role inside a per-user RLS scope. Mission rows by default.
 */
import { SqlClient } from "@effect/sql"
import type { SqlError } from "@effect/sql/SqlError"
import { Effect } from "effect"
import { MISSIONS_APP_ID, MISSIONS_TABLE } from "../../src/domain/mission.js"
import { EventLogSchema } from "../../src/services/EventLogSchema.js"
import { TestDatabase } from "./TestDatabase.js"

export interface Change {
  readonly userId: string
  readonly recordId: string
  readonly op?: "insert" | "update" | "delete"
  /** Any JSON value (non-objects too, to seed malformed rows); undefined → SQL NULL. */
  readonly data?: unknown
  readonly fieldTimestamps?: unknown
  readonly appId?: string
  readonly table?: string
  readonly clientId?: string
  /** An exact timestamptz literal (e.g. "2026-03-01 10:00:00.123456+00"); default: the transaction's now(). */
  readonly createdAt?: string
}

/** A complete, valid, active mission record as the app writes it on insert (due since 2026-03-02 08:00Z). */
export const missionFields = (overrides: Record<string, unknown> = {}): Record<string, unknown> => ({
  title: "Get fit",
  objective: "Run a 10k by summer",
  conceptMarkdown: "Small steps, three times a week.",
  state: "active",
  nextRunAt: "2026-03-02T08:00:00.000Z",
  inputs: [],
  cadence: { kind: "interval", everyMinutes: 60 },
  iterations: [],
  createdAt: "2026-03-01T00:00:00.000Z",
  updatedAt: "2026-03-01T00:00:00.000Z",
  ...overrides,
})

/** The app creating a mission: `fields` override the valid defaults (set one to undefined to drop it). */
export const missionInsertRow = (userId: string, missionId: string, fields: Record<string, unknown> = {}): Change => ({
  userId,
  recordId: missionId,
  op: "insert",
  data: Object.fromEntries(Object.entries(missionFields(fields)).filter(([, v]) => v !== undefined)),
})

/** The app changing some fields of a mission (their field timestamps default to the row's created_at). */
export const missionUpdateRow = (
  userId: string,
  missionId: string,
  fields: Record<string, unknown>,
  fieldTimestamps?: Record<string, string>,
): Change => ({
  userId,
  recordId: missionId,
  op: "update",
  data: fields,
  ...(fieldTimestamps === undefined ? {} : { fieldTimestamps }),
})

export const missionDeleteRow = (userId: string, missionId: string): Change => ({ userId, recordId: missionId, op: "delete" })

const COLUMNS = 9
const values = (c: Change): Array<unknown> => [
  c.appId ?? MISSIONS_APP_ID,
  c.table ?? MISSIONS_TABLE,
  c.recordId,
  c.userId,
  c.op ?? "insert",
  c.data === undefined ? null : JSON.stringify(c.data),
  JSON.stringify(c.fieldTimestamps ?? {}),
  c.clientId ?? "browser-device",
  c.createdAt ?? null,
]

/**
 * Inserts the changes as the owner in ONE statement (one transaction: rows without createdAt share
 * its now()). Returns the new ids in the given order.
 */
export const insertChanges = (changes: ReadonlyArray<Change>): Effect.Effect<ReadonlyArray<string>, never, TestDatabase> =>
  Effect.flatMap(TestDatabase, (db) =>
    Effect.promise(async () => {
      // The per-field time column of the database's generation (SPEC §13); a fixed name, never input.
      const times = db.generation
      if (changes.length === 0) return []
      const tuples = changes.map((_, i) => {
        const p = (k: number) => `$${i * COLUMNS + k}`
        return `(gen_random_uuid(), ${p(1)}, ${p(2)}, ${p(3)}, ${p(4)}, ${p(5)}, ${p(6)}::jsonb, ${p(7)}::jsonb, ${p(8)}, coalesce(${p(9)}::timestamptz, now()), ${i})`
      })
      // input is referenced twice, so Postgres materialises it: the ids returned are the ids inserted.
      const rows = await db.ownerQuery(
        `WITH input (id, app_id, table_name, record_id, user_id, op, data, field_timestamps, client_id, created_at, ord) AS (
           VALUES ${tuples.join(", ")}
         ), inserted AS (
           INSERT INTO sync_changes (id, app_id, table_name, record_id, user_id, op, data, ${times}, client_id, created_at)
           SELECT id, app_id, table_name, record_id, user_id, op, data, field_timestamps, client_id, created_at FROM input
           RETURNING id
         )
         SELECT input.id::text AS id FROM input JOIN inserted USING (id) ORDER BY input.ord`,
        changes.flatMap(values),
      )
      return rows.map((r) => String(r.id))
    }),
  )

/**
 * Inserts one user's changes as the runner role would write them for that user: one transaction
 * scoped with set_config('app.current_user_id', …, true). Rows share that transaction's now().
 */
export const insertChangesAsUser = (
  userId: string,
  changes: ReadonlyArray<Change>,
): Effect.Effect<ReadonlyArray<string>, SqlError, SqlClient.SqlClient | EventLogSchema> =>
  Effect.flatMap(Effect.zip(SqlClient.SqlClient, EventLogSchema), ([sql, { timeColumn }]) =>
    sql.withTransaction(
      Effect.gen(function* () {
        yield* sql`SELECT set_config('app.current_user_id', ${userId}, true)`
        const ids: Array<string> = []
        for (const c of changes) {
          const [appId, table, recordId, user, op, data, fieldTimestamps, clientId, createdAt] = values(c) as Array<string | null>
          const rows = yield* sql<{ id: string }>`
            INSERT INTO sync_changes (app_id, table_name, record_id, user_id, op, data, ${sql(timeColumn)}, client_id, created_at)
            VALUES (${appId}, ${table}, ${recordId}, ${user}, ${op}, ${data}::jsonb, ${fieldTimestamps}::jsonb, ${clientId},
                    coalesce(${createdAt}::timestamptz, now()))
            RETURNING id::text AS id`
          ids.push(rows[0]!.id)
        }
        return ids
      }),
    ),
  )

/**
 * Bulk history as the owner, for cost tests: `count` rows spread over `users` users, one in `missionEvery`
 * a mission update (a whole paused mission; the rest todo rows), created one second apart ending
 * `endingSecondsAgo` before now.
 */
export const seedHistory = (options: {
  readonly count: number
  readonly users?: number
  readonly missionEvery?: number
  readonly endingSecondsAgo?: number
}): Effect.Effect<void, never, TestDatabase> =>
  Effect.flatMap(TestDatabase, (db) =>
    Effect.promise(async () => {
      await db.ownerQuery(
        `INSERT INTO sync_changes (app_id, table_name, record_id, user_id, op, data, client_id, created_at)
         SELECT CASE WHEN g % $3 = 0 THEN $5 ELSE 'todo' END,
                CASE WHEN g % $3 = 0 THEN $6 ELSE 'tasks' END,
                'history-' || (g % 97), 'history-user-' || (g % $2), 'update', $7::jsonb, 'browser-device',
                now() - make_interval(secs => $4 + ($1 - g))
         FROM generate_series(1, $1::int) AS g`,
        [options.count, options.users ?? 50, options.missionEvery ?? 4, options.endingSecondsAgo ?? 3600, MISSIONS_APP_ID, MISSIONS_TABLE,
         JSON.stringify(missionFields({ state: "paused" }))],
      )
      await db.ownerQuery("ANALYZE sync_changes")
    }),
  )
