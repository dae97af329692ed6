/**
 * Writing and reading event-log rows as the sync server (the owner) does, for tests of the run
 * pipeline: insert a change at a chosen created_at, build a mission record, replay what is stored.
 */
import { Effect } from "effect"
import { MISSIONS_APP_ID, MISSIONS_TABLE } from "../../src/domain/mission.js"
import { type RecordState, replayOrdered } from "../../src/domain/replay.js"
import { missionFields } from "./seed.js"
import { TestDatabase } from "./TestDatabase.js"

export interface ChangeRow {
  readonly user: string
  readonly app?: string
  readonly table?: string
  readonly id: string
  readonly op?: "insert" | "update" | "delete"
  readonly data?: unknown
  readonly fieldTimestamps?: unknown
  /** Default: the server's now(). */
  readonly createdAt?: string
  readonly clientId?: string
}

export const insertChange = (row: ChangeRow) =>
  Effect.flatMap(TestDatabase, (db) =>
    Effect.promise(() =>
      db.ownerQuery(
        `INSERT INTO sync_changes (app_id, table_name, record_id, user_id, op, data, ${db.generation}, client_id, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, coalesce($9::timestamptz, now()))`,
        [
          row.app ?? MISSIONS_APP_ID,
          row.table ?? MISSIONS_TABLE,
          row.id,
          row.user,
          row.op ?? "insert",
          row.data === undefined ? null : JSON.stringify(row.data),
          JSON.stringify(row.fieldTimestamps ?? {}),
          row.clientId ?? "browser-device",
          row.createdAt ?? null,
        ],
      ),
    ),
  )

/** A complete, valid mission record as the app writes it on insert (the seeding helpers' defaults). */
export const missionData = missionFields

export interface StoredRow {
  readonly id: string
  readonly app_id: string
  readonly table_name: string
  readonly record_id: string
  readonly user_id: string
  readonly op: "insert" | "update" | "delete"
  readonly data: unknown
  /** The per-field time column of the database's generation (field_meta or field_timestamps), under this name. */
  readonly field_timestamps: unknown
  readonly client_id: string
  readonly created_at: Date
  readonly schema_version: number
  readonly actor: unknown
  /** Today's generation only (null in the seed's, which has no such column). */
  readonly origin: string | null
  readonly space_id: string | null
}

/** Every row of one mission (all four key columns), in replay order, read as the owner. */
export const missionRows = (user: string, missionId: string) =>
  Effect.flatMap(TestDatabase, (db) =>
    Effect.promise(
      async () =>
        (await db.ownerQuery(
          `SELECT id::text AS id, app_id, table_name, record_id, user_id, op, data, ${db.generation} AS field_timestamps,
                  client_id, created_at, schema_version, actor,
                  ${db.generation === "field_meta" ? "origin, space_id" : "NULL::text AS origin, NULL::text AS space_id"}
           FROM sync_changes WHERE user_id = $1 AND app_id = $2 AND table_name = $3 AND record_id = $4
           ORDER BY created_at, id`,
          [user, MISSIONS_APP_ID, MISSIONS_TABLE, missionId],
        )) as unknown as ReadonlyArray<StoredRow>,
    ),
  )

/** The rows the runner appended to one mission. */
export const runnerRows = (user: string, missionId: string) =>
  Effect.map(missionRows(user, missionId), (rows) => rows.filter((r) => r.client_id === "mana-ai-runner"))

/** The mission as a device would see it after syncing everything stored. */
export const replayedMission = (user: string, missionId: string): Effect.Effect<RecordState, never, TestDatabase> =>
  Effect.map(missionRows(user, missionId), (rows) => replayOrdered(rows))
