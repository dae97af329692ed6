/**
 * Reads the event-log rows of given records, to be replayed. Runs inside the caller's RLS scope
 * (withUserScope): a record is identified by all four key columns, and rows come in replay order
 * (replay them with replayOrdered: a Date holds milliseconds, created_at microseconds). The per-field
 * time column of the generation found (EventLogSchema) is read as `field_timestamps`.
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import type * as Statement from "@effect/sql/Statement"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Schema from "effect/Schema"
import { SyncChange, type SyncGeneration } from "../domain/eventLog.js"
import { EventLogSchema } from "./EventLogSchema.js"

export interface RecordRef {
  readonly appId: string
  readonly table: string
  readonly recordId: string
}

export const recordRefKey = (ref: RecordRef): string => JSON.stringify([ref.appId, ref.table, ref.recordId])

export interface RecordRows {
  /** Rows that decoded, in (created_at, id) order. */
  readonly rows: ReadonlyArray<SyncChange>
  /** Rows that did not decode as a sync_changes row (a column of an unexpected type). */
  readonly undecodable: number
}

const decodeSyncChange = Schema.decodeUnknownEither(SyncChange)

/**
 * SyncChange.decode for a row as pg gives it, checked by hand (issue 16: the Schema decode was a
 * visible share of a run's mission read); anything unusual goes through the Schema, which decides.
 */
const decodeRow = (row: Readonly<Record<string, unknown>>): Either.Either<SyncChange, unknown> => {
  const { id, app_id, table_name, record_id, user_id, op, data, field_timestamps, created_at } = row
  if (
    typeof id === "string" &&
    typeof app_id === "string" &&
    typeof table_name === "string" &&
    typeof record_id === "string" &&
    typeof user_id === "string" &&
    (op === "insert" || op === "update" || op === "delete") &&
    data !== undefined &&
    field_timestamps !== undefined &&
    created_at instanceof Date &&
    !Number.isNaN(created_at.getTime())
  ) {
    return Either.right({ id, app_id, table_name, record_id, user_id, op, data, field_timestamps, created_at })
  }
  return decodeSyncChange(row)
}

/**
 * The columns a SyncChange decodes from, the generation's per-field time column read as `field_timestamps`.
 * The run's read is built once per shape (sqlShapes.ts), so its identifier is escaped once there.
 */
export const syncChangeColumns = (sql: SqlClient.SqlClient, timeColumn: SyncGeneration): Statement.Fragment =>
  sql`id::text AS id, app_id, table_name, record_id, user_id, op, data, ${sql(timeColumn)} AS field_timestamps, created_at`

/**
 * Decodes raw sync_changes rows (selected with syncChangeColumns, in replay order) and groups them
 * by record (recordRefKey); a row that does not decode is counted against its record.
 */
export const groupRecordRows = (
  raw: ReadonlyArray<Record<string, unknown>>,
  into: Map<string, { rows: Array<SyncChange>; undecodable: number }> = new Map(),
): Map<string, RecordRows> => {
  for (const row of raw) {
    const key = recordRefKey({ appId: String(row.app_id), table: String(row.table_name), recordId: String(row.record_id) })
    let entry = into.get(key)
    if (entry === undefined) {
      entry = { rows: [], undecodable: 0 }
      into.set(key, entry)
    }
    const decoded = decodeRow(row)
    if (Either.isRight(decoded)) entry.rows.push(decoded.right)
    else entry.undecodable++
  }
  return into
}

/** `(… OR …)`: rows of any of `refs` (at least one). */
export const recordRefsWhere = (sql: SqlClient.SqlClient, refs: ReadonlyArray<RecordRef>) =>
  sql.or(refs.map((r) => sql`(app_id = ${r.appId} AND table_name = ${r.table} AND record_id = ${r.recordId})`))

/** One query for any number of records of one user; the map holds every requested ref, possibly with no rows. */
export const readRecordRows = (
  sql: SqlClient.SqlClient,
  userId: string,
  refs: ReadonlyArray<RecordRef>,
): Effect.Effect<ReadonlyMap<string, RecordRows>, SqlError, EventLogSchema> => {
  if (refs.length === 0) return Effect.succeed(new Map())
  const wanted = recordRefsWhere(sql, refs)
  return Effect.flatMap(EventLogSchema, ({ timeColumn }) => sql<Record<string, unknown>>`
    SELECT ${syncChangeColumns(sql, timeColumn)}
    FROM sync_changes
    WHERE user_id = ${userId} AND ${wanted}
    ORDER BY created_at, id`).pipe(
    Effect.map((raw) => groupRecordRows(raw, new Map(refs.map((ref) => [recordRefKey(ref), { rows: [], undecodable: 0 }])))),
  )
}
