/**
 * One user's missions replayed from the event log as they stand now (GET /internal/missions/:userId),
 * read inside that user's RLS scope. Fresh rather than from the discovery snapshots, so an operator
 * sees an iteration the moment it is written, also with TICK_ENABLED=false (no discovery loop).
 */
import type { SqlClient } from "@effect/sql"
import type { SqlError } from "@effect/sql/SqlError"
import { Effect, Either, ParseResult, Schema } from "effect"
import { SyncChange } from "../domain/eventLog.js"
import { MISSIONS_APP_ID, MISSIONS_TABLE, Mission } from "../domain/mission.js"
import { isLive, replayOrdered } from "../domain/replay.js"
import { EventLogSchema } from "./EventLogSchema.js"
import { withUserScope } from "./withUserScope.js"

export interface UserMission {
  readonly missionId: string
  /** The replayed record with every field, unknown ones and iterations included. */
  readonly record: Readonly<Record<string, unknown>>
  /** Why the runner skips it (does not decode as a mission), or null. */
  readonly malformed: string | null
}

const decodeRow = Schema.decodeUnknownEither(SyncChange)
const decodeMission = Schema.decodeUnknownEither(Mission)

/** Live (not deleted) missions of `userId`, ordered by id. */
export const readUserMissions = (
  userId: string,
): Effect.Effect<ReadonlyArray<UserMission>, SqlError, SqlClient.SqlClient | EventLogSchema> =>
  withUserScope(userId, (sql) =>
    Effect.flatMap(EventLogSchema, ({ timeColumn }) => sql<Record<string, unknown>>`
      SELECT id::text AS id, app_id, table_name, record_id, user_id, op, data, ${sql(timeColumn)} AS field_timestamps,
             created_at
      FROM sync_changes
      WHERE user_id = ${userId} AND app_id = ${MISSIONS_APP_ID} AND table_name = ${MISSIONS_TABLE}
      ORDER BY created_at, id`),
  ).pipe(
    Effect.map((raw) => {
      const byMission = new Map<string, Array<SyncChange>>()
      for (const row of raw) {
        const decoded = decodeRow(row)
        if (Either.isLeft(decoded)) continue
        const rows = byMission.get(decoded.right.record_id)
        if (rows === undefined) byMission.set(decoded.right.record_id, [decoded.right])
        else rows.push(decoded.right)
      }
      const missions: Array<UserMission> = []
      for (const [missionId, rows] of [...byMission].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
        const state = replayOrdered(rows)
        if (state.record === null || !isLive(state)) continue
        const mission = decodeMission(state.record)
        missions.push({
          missionId,
          record: state.record,
          malformed: Either.isLeft(mission) ? ParseResult.TreeFormatter.formatErrorSync(mission.left) : null,
        })
      }
      return missions
    }),
    Effect.withSpan("userMissions.read", { attributes: { userId } }),
  )
