/**
 * One user's missions replayed from the event log as they stand now (GET /internal/missions/:userId),
 * read inside that user's RLS scope. Fresh rather than from the discovery snapshots, so an operator
 * sees an iteration the moment it is written, also with TICK_ENABLED=false (no discovery loop).
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import { MISSIONS_APP_ID, MISSIONS_TABLE } from "../domain/mission.js"
import { missionValidity } from "../domain/missionValidity.js"
import { isLive, replayOrdered } from "../domain/replay.js"
import { replayRowsWithoutDominated } from "./currentMission.js"
import { EventLogSchema } from "./EventLogSchema.js"
import { groupRecordRows, syncChangeColumns } from "./recordRows.js"
import { withUserScope } from "./withUserScope.js"

export interface UserMission {
  readonly missionId: string
  /** The replayed record with every field, unknown ones and iterations included. */
  readonly record: Readonly<Record<string, unknown>>
  /** Why the runner skips it (missionValidity's reason, as discovery logs it), or null. */
  readonly malformed: string | null
}

/** Live (not deleted) missions of `userId`, ordered by id; judged by the rule discovery uses (`defaultTimezone` for missions without one). */
export const readUserMissions = (
  userId: string,
  defaultTimezone: string,
): Effect.Effect<ReadonlyArray<UserMission>, SqlError, SqlClient.SqlClient | EventLogSchema> =>
  withUserScope(userId, (sql) =>
    // Each mission row's iterations only where they win (every runner row carries the whole list).
    Effect.flatMap(EventLogSchema, ({ timeColumn }) =>
      replayRowsWithoutDominated(
        sql,
        sql`
        SELECT ${syncChangeColumns(sql, timeColumn)}
        FROM sync_changes
        WHERE user_id = ${userId} AND app_id = ${MISSIONS_APP_ID} AND table_name = ${MISSIONS_TABLE}`,
      )),
  ).pipe(
    Effect.map((raw) => {
      const missions: Array<UserMission> = []
      for (const { rows } of groupRecordRows(raw).values()) {
        const state = replayOrdered(rows)
        if (state.record === null || !isLive(state)) continue
        const valid = missionValidity(state.record, defaultTimezone)
        missions.push({ missionId: rows[0]!.record_id, record: state.record, malformed: Either.isLeft(valid) ? valid.left : null })
      }
      return missions.sort((a, b) => (a.missionId < b.missionId ? -1 : a.missionId > b.missionId ? 1 : 0))
    }),
    Effect.withSpan("userMissions.read", { attributes: { userId } }),
  )
