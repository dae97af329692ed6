/**
 * The mission as it stands now in the event log, replayed inside the caller's RLS scope, and whether
 * a run for a given iteration id may still be appended to it. Shared by the write-back (the decisive
 * check, inside the write transaction) and the runner (a cheap check before spending an LLM call).
 */
import type { SqlClient } from "@effect/sql"
import type { SqlError } from "@effect/sql/SqlError"
import { Effect, Either, ParseResult, Schema } from "effect"
import { type CadenceError, nextRunAt, validateCadence } from "../domain/cadence.js"
import { MISSIONS_APP_ID, MISSIONS_TABLE, Mission } from "../domain/mission.js"
import { type RecordState, isApplicable, isLive, parseInstant, replayOrdered } from "../domain/replay.js"
import { EventLogSchema } from "./EventLogSchema.js"
import { readRecordRows, recordRefKey } from "./recordRows.js"
import { AGENTS_APP_ID, AGENTS_TABLE, type AgentResolution, missionAgentId, resolveAgent } from "../domain/agent.js"
import { SyncChange } from "../domain/eventLog.js"

export type AppendSkipReason = "not-found" | "deleted" | "not-active" | "already-written" | "malformed"

export type CurrentMission =
  | { readonly _tag: "Appendable"; readonly state: RecordState; readonly record: Readonly<Record<string, unknown>>; readonly mission: Mission }
  | { readonly _tag: "Skip"; readonly reason: AppendSkipReason; readonly detail: string }

const decodeMission = Schema.decodeUnknownEither(Mission)

/** Decides from a replayed state; pure, so the write-back and the pre-check cannot disagree. */
export const judgeMission = (
  rowCount: number,
  state: RecordState,
  iterationId: string,
  defaultTimezone: string,
): CurrentMission => {
  if (rowCount === 0) return { _tag: "Skip", reason: "not-found", detail: "the mission has no rows in the event log" }
  const record = state.record
  if (record === null) return { _tag: "Skip", reason: "deleted", detail: "the mission is deleted" }
  if (!isLive(state)) return { _tag: "Skip", reason: "deleted", detail: "the mission has deletedAt set" }
  // A missing iterations field means none yet (SPEC §3).
  if (record.iterations !== undefined && !Array.isArray(record.iterations)) {
    return { _tag: "Skip", reason: "malformed", detail: "the mission's iterations is not an array" }
  }
  const decoded = decodeMission(record)
  if (Either.isLeft(decoded)) {
    return {
      _tag: "Skip",
      reason: "malformed",
      detail: `the mission does not decode: ${ParseResult.TreeFormatter.formatErrorSync(decoded.left)}`,
    }
  }
  const mission = decoded.right
  if (mission.iterations.some((it) => it.id === iterationId)) {
    return { _tag: "Skip", reason: "already-written", detail: `the mission already holds iteration ${iterationId}` }
  }
  if (mission.state !== "active") {
    return { _tag: "Skip", reason: "not-active", detail: `the mission is ${mission.state}` }
  }
  // A cadence that cannot be scheduled (bad zone, cron that never fires) would leave it due forever.
  const schedulable = validateCadence(mission.cadence, mission.timezone ?? defaultTimezone)
  if (Either.isLeft(schedulable)) {
    return { _tag: "Skip", reason: "malformed", detail: `the mission's cadence cannot be scheduled: ${schedulable.left.reason}` }
  }
  return { _tag: "Appendable", state, record, mission }
}

/** Reads and judges one mission; must run inside withUserScope(userId) (and inside the write lock to be decisive). */
export const readCurrentMission = (
  sql: SqlClient.SqlClient,
  userId: string,
  missionId: string,
  iterationId: string,
  defaultTimezone: string,
): Effect.Effect<CurrentMission, SqlError, EventLogSchema> => {
  const ref = { appId: MISSIONS_APP_ID, table: MISSIONS_TABLE, recordId: missionId }
  return Effect.map(readRecordRows(sql, userId, [ref]), (byRef) => {
    const found = byRef.get(recordRefKey(ref))
    const rows = found?.rows ?? []
    const undecodable = found?.undecodable ?? 0
    if (rows.length === 0 && undecodable > 0) {
      return { _tag: "Skip", reason: "malformed", detail: "the mission's rows do not decode" } as const
    }
    if (rows.length > 0 && !rows.some(isApplicable)) {
      return { _tag: "Skip", reason: "malformed", detail: "the mission's rows carry no record data" } as const
    }
    return judgeMission(rows.length, replayOrdered(rows), iterationId, defaultTimezone)
  })
}

/** The mission's next run strictly after `after`, in its own zone or the default one. */
export const nextRunFor = (
  mission: Mission,
  after: Date,
  defaultTimezone: string,
): Either.Either<Date | null, CadenceError> => {
  const previousMs = mission.nextRunAt === null ? undefined : parseInstant(mission.nextRunAt)
  return nextRunAt(mission.cadence, {
    after,
    previous: previousMs === undefined ? null : new Date(previousMs),
    timeZone: mission.timezone ?? defaultTimezone,
  })
}

/** The mission as it stands now and the agent it runs under (SPEC §14), read together. */
export interface CurrentMissionWithAgent {
  readonly current: CurrentMission
  /** Legacy when the mission is not appendable, names no agent, or its agent is absent or deleted. */
  readonly agent: AgentResolution
  /**
   * How many of the mission's rows the read saw (undecodable ones too). The log is append-only, so
   * the same count later, under the same scope, means the same rows: the write-back's basis check.
   */
  readonly missionRows: number
}

const decodeChange = Schema.decodeUnknownEither(SyncChange)

/**
 * `readCurrentMission` plus the mission's agent, in one query (the run's pre-check, inside
 * withUserScope(userId)): the mission's rows and the rows of every agent any of its rows names
 * (`data->>'agentId'`), so the agent costs no extra round trip. The replayed mission's own
 * `agentId` picks the agent; RLS keeps it to the same user.
 */
export const readCurrentMissionWithAgent = (
  sql: SqlClient.SqlClient,
  userId: string,
  missionId: string,
  iterationId: string,
  defaultTimezone: string,
): Effect.Effect<CurrentMissionWithAgent, SqlError, EventLogSchema> =>
  // The per-field time column of the event log's generation (SPEC §13), read as field_timestamps.
  Effect.flatMap(EventLogSchema, ({ timeColumn }) => sql`
    SELECT id::text AS id, app_id, table_name, record_id, user_id, op, data, ${sql(timeColumn)} AS field_timestamps, created_at
    FROM sync_changes
    WHERE user_id = ${userId} AND (
      (app_id = ${MISSIONS_APP_ID} AND table_name = ${MISSIONS_TABLE} AND record_id = ${missionId})
      OR (app_id = ${AGENTS_APP_ID} AND table_name = ${AGENTS_TABLE} AND record_id IN (
        SELECT m.data->>'agentId' FROM sync_changes m
        WHERE m.user_id = ${userId} AND m.app_id = ${MISSIONS_APP_ID} AND m.table_name = ${MISSIONS_TABLE}
          AND m.record_id = ${missionId} AND m.data->>'agentId' IS NOT NULL)))
    ORDER BY created_at, id`.pipe(
    Effect.map((raw): CurrentMissionWithAgent => {
      const missionRows: Array<SyncChange> = []
      const agentRows = new Map<string, Array<SyncChange>>()
      let undecodable = 0
      for (const row of raw) {
        const isMission = String(row.table_name) === MISSIONS_TABLE && String(row.app_id) === MISSIONS_APP_ID
        const decoded = decodeChange(row)
        if (Either.isLeft(decoded)) {
          if (isMission) undecodable++
          continue
        }
        if (isMission) missionRows.push(decoded.right)
        else {
          const list = agentRows.get(decoded.right.record_id)
          if (list === undefined) agentRows.set(decoded.right.record_id, [decoded.right])
          else list.push(decoded.right)
        }
      }
      const legacy: AgentResolution = { _tag: "Legacy" }
      const seen = missionRows.length + undecodable
      if (missionRows.length === 0 && undecodable > 0) {
        return { current: { _tag: "Skip", reason: "malformed", detail: "the mission's rows do not decode" }, agent: legacy, missionRows: seen }
      }
      if (missionRows.length > 0 && !missionRows.some(isApplicable)) {
        return { current: { _tag: "Skip", reason: "malformed", detail: "the mission's rows carry no record data" }, agent: legacy, missionRows: seen }
      }
      const current = judgeMission(missionRows.length, replayOrdered(missionRows), iterationId, defaultTimezone)
      if (current._tag !== "Appendable") return { current, agent: legacy, missionRows: seen }
      const agentId = missionAgentId(current.record)
      const rows = agentId === undefined ? [] : (agentRows.get(agentId) ?? [])
      // Never written, or deleted in the log: the legacy path (resolveAgent treats null as absent).
      const agentRecord = rows.length === 0 ? undefined : replayOrdered(rows).record
      return { current, agent: resolveAgent(agentId, agentRecord), missionRows: seen }
    }),
  ))
