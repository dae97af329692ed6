/**
 * mana_ai.decrypt_audit (SPEC §15): one row per input tried under a Mission Grant, written in the
 * same RLS-scoped transaction that read the record, so no read is used without its row; listed
 * newest first for GET /internal/audit/:userId.
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import { withUserScope } from "./withUserScope.js"

export type AuditStatus = "ok" | "failed" | "scope-violation"

export interface AuditEntry {
  readonly missionId: string
  readonly iterationId: string
  readonly tableName: string
  readonly recordId: string
  readonly status: AuditStatus
  /** Why (failed, scope-violation); null for ok. Never a value of the record. */
  readonly reason: string | null
}

/** Inside the caller's withUserScope(userId): the policy's WITH CHECK refuses any other user's row. */
export const insertAuditRows = (
  sql: SqlClient.SqlClient,
  userId: string,
  entries: ReadonlyArray<AuditEntry>,
): Effect.Effect<void, SqlError> =>
  entries.length === 0
    ? Effect.void
    : sql`INSERT INTO mana_ai.decrypt_audit ${sql.insert(
        entries.map((e) => ({
          user_id: userId,
          mission_id: e.missionId,
          iteration_id: e.iterationId,
          table_name: e.tableName,
          record_id: e.recordId,
          status: e.status,
          reason: e.reason,
        })),
      )}`.pipe(Effect.asVoid)

export const AuditRow = Schema.Struct({
  id: Schema.NumberFromString,
  missionId: Schema.String,
  iterationId: Schema.String,
  tableName: Schema.String,
  recordId: Schema.String,
  status: Schema.Literal("ok", "failed", "scope-violation"),
  reason: Schema.NullOr(Schema.String),
  at: Schema.String,
})
export type AuditRow = typeof AuditRow.Type

export const AUDIT_LIMIT_DEFAULT = 200
export const AUDIT_LIMIT_MAX = 1000

export interface AuditQuery {
  readonly missionId?: string | undefined
  readonly limit: number
}

const decodeRows = Schema.decodeUnknown(Schema.Array(AuditRow))

/** A user's audit rows, newest first, under that user's RLS scope. */
export const readAudit = (userId: string, query: AuditQuery): Effect.Effect<ReadonlyArray<AuditRow>, SqlError, SqlClient.SqlClient> =>
  withUserScope(userId, (sql) =>
    sql`
      SELECT id::text AS id, mission_id AS "missionId", iteration_id AS "iterationId", table_name AS "tableName",
             record_id AS "recordId", status, reason,
             to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS at
      FROM mana_ai.decrypt_audit
      WHERE user_id = ${userId} ${query.missionId === undefined ? sql`` : sql`AND mission_id = ${query.missionId}`}
      ORDER BY at DESC, id DESC
      LIMIT ${query.limit}`.pipe(Effect.flatMap((rows) => Effect.orDie(decodeRows(rows)))),
  ).pipe(Effect.withSpan("DecryptAudit.read"))
