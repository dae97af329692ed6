/**
 * The mission as it stands now in the event log, replayed inside the caller's RLS scope, and whether
 * a run for a given iteration id may still be appended to it. Shared by the write-back (the decisive
 * check, inside the write transaction) and the runner (a cheap check before spending an LLM call).
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import type * as Statement from "@effect/sql/Statement"
import type { SqlError } from "@effect/sql/SqlError"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import { AGENTS_APP_ID, AGENTS_TABLE, type AgentResolution, missionAgentId, resolveAgent } from "../domain/agent.js"
import { type CadenceError, nextRunAt } from "../domain/cadence.js"
import { MISSIONS_APP_ID, MISSIONS_TABLE, type Mission } from "../domain/mission.js"
import { missionValidity } from "../domain/missionValidity.js"
import { type RecordState, isApplicable, isLive, parseInstant, replayOrdered } from "../domain/replay.js"
import type { SyncChange, SyncGeneration } from "../domain/eventLog.js"
import { EventLogSchema } from "./EventLogSchema.js"
import { sqlShapes } from "./sqlShapes.js"
import {
  type RecordRef,
  type RecordRows,
  groupRecordRows,
  readRecordRows,
  recordRefKey,
  recordRefsWhere,
  syncChangeColumns,
} from "./recordRows.js"

export type AppendSkipReason = "not-found" | "deleted" | "not-active" | "already-written" | "malformed"

export type CurrentMission =
  | {
      readonly _tag: "Appendable"
      readonly state: RecordState
      readonly record: Readonly<Record<string, unknown>>
      readonly mission: Mission
      /**
       * The row whose `iterations` the record holds (replay keeps that row's value itself); undefined
       * when the record has none, or when the caller did not say (the write-back then sends them).
       */
      readonly iterationsFrom?: string
    }
  | { readonly _tag: "Skip"; readonly reason: AppendSkipReason; readonly detail: string }

/** Decides from a replayed state; pure, so the write-back and the pre-check cannot disagree. */
const judgeMission = (
  rowCount: number,
  state: RecordState,
  iterationId: string,
  defaultTimezone: string,
): CurrentMission => {
  if (rowCount === 0) return { _tag: "Skip", reason: "not-found", detail: "the mission has no rows in the event log" }
  const record = state.record
  if (record === null) return { _tag: "Skip", reason: "deleted", detail: "the mission is deleted" }
  if (!isLive(state)) return { _tag: "Skip", reason: "deleted", detail: "the mission has deletedAt set" }
  // The rule discovery judges by, so a run skips a mission for the reason the store logged.
  const valid = missionValidity(record, defaultTimezone)
  if (Either.isLeft(valid)) return { _tag: "Skip", reason: "malformed", detail: valid.left }
  const mission = valid.right.mission
  if (mission.iterations.some((it) => it.id === iterationId)) {
    return { _tag: "Skip", reason: "already-written", detail: `the mission already holds iteration ${iterationId}` }
  }
  if (mission.state !== "active") {
    return { _tag: "Skip", reason: "not-active", detail: `the mission is ${mission.state}` }
  }
  return { _tag: "Appendable", state, record, mission }
}

/** Judges one mission from its rows as readRecordRows / groupRecordRows give them. */
const judgeRows = (found: RecordRows | undefined, iterationId: string, defaultTimezone: string): CurrentMission => {
  const rows = found?.rows ?? []
  if (rows.length === 0 && (found?.undecodable ?? 0) > 0) {
    return { _tag: "Skip", reason: "malformed", detail: "the mission's rows do not decode" }
  }
  if (rows.length > 0 && !rows.some(isApplicable)) {
    return { _tag: "Skip", reason: "malformed", detail: "the mission's rows carry no record data" }
  }
  const current = judgeMission(rows.length, replayOrdered(rows), iterationId, defaultTimezone)
  if (current._tag !== "Appendable" || !Object.hasOwn(current.record, "iterations")) return current
  // Replay stores the winning row's own value, so the row is found by identity.
  const held = current.record.iterations
  for (let i = rows.length - 1; i >= 0; i--) {
    const data = rows[i]!.data
    if (typeof data === "object" && data !== null && (data as { iterations?: unknown }).iterations === held) {
      return { ...current, iterationsFrom: rows[i]!.id }
    }
  }
  return current
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
  return Effect.map(readRecordRows(sql, userId, [ref]), (byRef) =>
    judgeRows(byRef.get(recordRefKey(ref)), iterationId, defaultTimezone),
  )
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

/**
 * An ISO instant as `Date#toISOString` writes it (years 1000–9999, a valid date): for these, text
 * order is instant order, and parseInstant reads exactly that instant. A day past its month's end
 * is ruled out without a cast that could fail.
 */
const TO_ISO_STRING = "^[1-9][0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9][.][0-9]{3}Z$"

/**
 * `rows` (syncChangeColumns) with `dominated`: true for a mission row whose `iterations` can never be
 * the replayed value, so it need not be sent (issue 16: each runner row carries the whole list, so the
 * bytes of a mission's rows grew with the square of its runs). Replay keeps, per field, the value of
 * the row with the greatest (time, log position) since the record's last delete; a row is dominated
 * when another row since the same delete holds `iterations` with a greater (time, position), both
 * times in toISOString's form (every runner row's are; any other row is never dominated nor dominates).
 * `rows` must have syncChangeColumns' columns (user_id among them: rows of several users may come).
 */
export const withDominatedIterations = (sql: SqlClient.SqlClient, rows: Statement.Fragment) => sql`
  SELECT r.*, coalesce(r.candidate AND r.id <> first_value(r.id) OVER (
           PARTITION BY r.user_id, r.app_id, r.table_name, r.record_id, r.since_delete, r.candidate
           ORDER BY r.iterations_at COLLATE "C" DESC, r.created_at DESC, r.id DESC), false) AS dominated
  FROM (
    SELECT q.*,
           count(*) FILTER (WHERE q.op = 'delete') OVER (
             PARTITION BY q.user_id, q.app_id, q.table_name, q.record_id ORDER BY q.created_at, q.id) AS since_delete,
           q.field_timestamps->>'iterations' AS iterations_at,
           coalesce(q.app_id = ${MISSIONS_APP_ID} AND q.table_name = ${MISSIONS_TABLE} AND q.op <> 'delete'
             AND jsonb_typeof(q.data) = 'object' AND q.data->'iterations' IS NOT NULL
             AND jsonb_typeof(q.field_timestamps) = 'object' AND jsonb_typeof(q.field_timestamps->'iterations') = 'string'
             AND CASE WHEN q.field_timestamps->>'iterations' ~ ${TO_ISO_STRING}
                   THEN substr(q.field_timestamps->>'iterations', 9, 2)::int <= extract(day FROM
                          (substr(q.field_timestamps->>'iterations', 1, 8) || '01')::date + interval '1 month' - interval '1 day')
                   ELSE false END, false) AS candidate
    FROM (${rows}) q
  ) r`

/** `rows` (syncChangeColumns) in replay order, each mission row's `iterations` left out where it is dominated (above). */
export const replayRowsWithoutDominated = (sql: SqlClient.SqlClient, rows: Statement.Fragment) => sql<Record<string, unknown>>`
    SELECT id, app_id, table_name, record_id, user_id, op,
           CASE WHEN dominated THEN data - 'iterations' ELSE data END AS data, field_timestamps, created_at
    FROM (${withDominatedIterations(sql, rows)}) x
    ORDER BY created_at, id`

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
  /**
   * The write-back's actor agent (`actorAgent`) as these rows give it, and how many rows of the
   * agent's record they are (undecodable ones too): the same count later means the same agent.
   * Absent when the mission is not appendable.
   */
  readonly actor?: ActorAgentBasis
  /** The rows of the records asked for with `also` (e.g. the mission's inputs), each one present. */
  readonly records?: ReadonlyMap<string, RecordRows>
}

/** The agent a write-back names in its actor (SPEC §6, §14), with the rows of the record it comes from. */
export interface ActorAgentBasis {
  readonly agent: ActorAgent | null
  /** The mission's agentId (undefined: none, the legacy principal) and its record's row count. */
  readonly agentId: string | undefined
  readonly agentRows: number
}

export interface ActorAgent {
  readonly id: string
  readonly name: string
}

const CIPHERTEXT_PREFIX = "enc:1:"

/**
 * The mission's agent as the write-back's actor names it (SPEC §14): a live `ai/agents` record of the
 * same user (its rows in replay order); null (the legacy path) when there is no such agent. An
 * unreadable name (empty, ciphertext) is shown as "Mana".
 */
export const actorAgent = (agentId: string | undefined, rows: ReadonlyArray<SyncChange>): ActorAgent | null => {
  if (agentId === undefined) return null
  const state = replayOrdered(rows)
  if (state.record === null || !isLive(state)) return null
  const name = state.record.name
  const readable = typeof name === "string" && name.trim() !== "" && !name.startsWith(CIPHERTEXT_PREFIX)
  return { id: agentId, name: readable ? name : "Mana" }
}

/**
 * The rows the run's pre-check replays: the mission's, its agents', and those of `also`, in replay
 * order, each mission row's `iterations` left out where another row's wins it anyway.
 *
 * One branch per record, each a lookup the record index (`table_name, record_id`) answers, joined by
 * UNION ALL: the statement is prepared once per connection (pipelinedTransaction.ts) and Postgres
 * plans it once, generically, so its plan must not depend on the values. The user and app conditions
 * are written `(…) IS TRUE` to keep them off the index: as plain equalities, the generic plan of the
 * same read written with ORs read the user's whole history through the user index
 * (`sync_changes_user_app_table_created_idx`), right on average and wrong for a user with a long one.
 * A ref of `also` that names the mission is left out (its branch is the first), one that names an
 * agent of the mission keeps out that agent's rows, so no row comes twice. The run sends it after
 * `SET LOCAL plan_cache_mode = force_generic_plan` (MissionRunner.ts): left to choose (`auto`),
 * Postgres kept planning it for each run's values, and planned each time this shape costs more than
 * the one below.
 */
const runReadByRecord = (
  sql: SqlClient.SqlClient,
  timeColumn: SyncGeneration,
  userId: string,
  missionId: string,
  also: ReadonlyArray<RecordRef>,
) => runReadByRecordOf(sql, timeColumn, userId, missionId, runReadBranches(missionId, also))

/**
 * The refs of `also` that get a branch of their own: not the mission (its branch is the first), each
 * once, and whether it names an agent (its branch then keeps out the mission's agents' rows).
 */
const runReadBranches = (missionId: string, also: ReadonlyArray<RecordRef>): ReadonlyArray<RecordRef & { readonly agent: boolean }> => {
  const missionKey = recordRefKey({ appId: MISSIONS_APP_ID, table: MISSIONS_TABLE, recordId: missionId })
  const seen = new Set<string>([missionKey])
  return also.flatMap((ref) => {
    const key = recordRefKey(ref)
    if (seen.has(key)) return []
    seen.add(key)
    return [{ ...ref, agent: ref.appId === AGENTS_APP_ID && ref.table === AGENTS_TABLE }]
  })
}

/** `runReadByRecord`'s statement; the ids are parameters only, `agent` decides a branch's text (sqlShapes.ts). */
const runReadByRecordOf = (
  sql: SqlClient.SqlClient,
  timeColumn: SyncGeneration,
  userId: unknown,
  missionId: unknown,
  branches: ReadonlyArray<{ readonly appId: unknown; readonly table: unknown; readonly recordId: unknown; readonly agent: boolean }>,
) => {
  const agentIds = sql`ARRAY(
          SELECT m.data->>'agentId' FROM sync_changes m
          WHERE m.table_name = ${MISSIONS_TABLE} AND m.record_id = ${missionId}
            AND (m.user_id = ${userId} AND m.app_id = ${MISSIONS_APP_ID}) IS TRUE AND m.data->>'agentId' IS NOT NULL)`
  const alsoBranches = branches.map(
    (ref) => sql`
      UNION ALL
      SELECT ${syncChangeColumns(sql, timeColumn)} FROM sync_changes
      WHERE table_name = ${ref.table} AND record_id = ${ref.recordId} AND (user_id = ${userId} AND app_id = ${ref.appId}) IS TRUE${
        ref.agent ? sql` AND record_id <> ALL (${agentIds})` : sql``
      }`,
  )
  return replayRowsWithoutDominated(
    sql,
    sql`
      SELECT ${syncChangeColumns(sql, timeColumn)} FROM sync_changes
      WHERE table_name = ${MISSIONS_TABLE} AND record_id = ${missionId} AND (user_id = ${userId} AND app_id = ${MISSIONS_APP_ID}) IS TRUE
      UNION ALL
      SELECT ${syncChangeColumns(sql, timeColumn)} FROM sync_changes
      WHERE table_name = ${AGENTS_TABLE} AND record_id = ANY (${agentIds}) AND (user_id = ${userId} AND app_id = ${AGENTS_APP_ID}) IS TRUE${
        alsoBranches.length === 0 ? sql`` : sql.join("", false)(alsoBranches)
      }`,
  )
}

/**
 * `runReadQuery`'s prepared shape built once per shape (sqlShapes.ts: which refs of `also` get a
 * branch and which of those name an agent), for the run's pre-check: `(userId, missionId, also)`.
 */
export const runReadShapes = (sql: SqlClient.SqlClient, timeColumn: SyncGeneration) => {
  const shaped = sqlShapes(
    (agents: ReadonlyArray<boolean>) => agents.map((a) => (a ? "a" : "r")).join(""),
    (agents: ReadonlyArray<boolean>, v: Record<string, unknown>) =>
      runReadByRecordOf(
        sql,
        timeColumn,
        v.userId,
        v.missionId,
        agents.map((agent, i) => ({ appId: v[`app${i}`], table: v[`table${i}`], recordId: v[`record${i}`], agent })),
      ),
  )
  return (userId: string, missionId: string, also: ReadonlyArray<RecordRef>) => {
    const branches = runReadBranches(missionId, also)
    const values: Record<string, unknown> = { userId, missionId }
    for (const [i, ref] of branches.entries()) {
      values[`app${i}`] = ref.appId
      values[`table${i}`] = ref.table
      values[`record${i}`] = ref.recordId
    }
    return shaped(
      branches.map((ref) => ref.agent),
      values,
    )
  }
}

/** The same rows in one condition of ORs: cheaper to plan for its values, so the shape for an unprepared statement. */
const runReadByOr = (
  sql: SqlClient.SqlClient,
  timeColumn: SyncGeneration,
  userId: string,
  missionId: string,
  also: ReadonlyArray<RecordRef>,
) =>
  replayRowsWithoutDominated(
    sql,
    sql`
      SELECT ${syncChangeColumns(sql, timeColumn)}
      FROM sync_changes
      WHERE user_id = ${userId} AND (
        (app_id = ${MISSIONS_APP_ID} AND table_name = ${MISSIONS_TABLE} AND record_id = ${missionId})
        OR (app_id = ${AGENTS_APP_ID} AND table_name = ${AGENTS_TABLE} AND record_id IN (
          SELECT m.data->>'agentId' FROM sync_changes m
          WHERE m.user_id = ${userId} AND m.app_id = ${MISSIONS_APP_ID} AND m.table_name = ${MISSIONS_TABLE}
            AND m.record_id = ${missionId} AND m.data->>'agentId' IS NOT NULL))${also.length === 0 ? sql`` : sql` OR ${recordRefsWhere(sql, also)}`})`,
  )

/**
 * The rows the run's pre-check replays (see `runReadByRecord`): `prepared` (the statement is prepared
 * once per connection, DB_PREPARED_STATEMENTS) gives the shape whose generic plan is right for every
 * user, otherwise the one cheaper to plan each time. Both give the same rows (runReadHistory.test.ts).
 */
export const runReadQuery = (
  sql: SqlClient.SqlClient,
  timeColumn: SyncGeneration,
  userId: string,
  missionId: string,
  also: ReadonlyArray<RecordRef>,
  shape: "prepared" | "planned-each-time" = "prepared",
) => (shape === "prepared" ? runReadByRecord : runReadByOr)(sql, timeColumn, userId, missionId, also)

/**
 * Judges the rows of `runReadQuery`: the mission as it stands, its agent, and the records of `also`
 * (every one present in `records`, with no rows when it has none, as readRecordRows gives them).
 */
export const judgeRunRead = (
  raw: ReadonlyArray<Record<string, unknown>>,
  missionId: string,
  iterationId: string,
  defaultTimezone: string,
  also: ReadonlyArray<RecordRef> = [],
): CurrentMissionWithAgent => {
  const byRef = groupRecordRows(raw, new Map(also.map((ref) => [recordRefKey(ref), { rows: [], undecodable: 0 }])))
  const records = also.length === 0 ? undefined : new Map(also.map((ref) => [recordRefKey(ref), byRef.get(recordRefKey(ref))!]))
  const missionRef = { appId: MISSIONS_APP_ID, table: MISSIONS_TABLE, recordId: missionId }
  const found = byRef.get(recordRefKey(missionRef))
  const seen = (found?.rows.length ?? 0) + (found?.undecodable ?? 0)
  const current = judgeRows(found, iterationId, defaultTimezone)
  if (current._tag !== "Appendable") return { current, agent: { _tag: "Legacy" }, missionRows: seen, ...(records === undefined ? {} : { records }) }
  const agentId = missionAgentId(current.record)
  const agentFound = agentId === undefined ? undefined : byRef.get(recordRefKey({ appId: AGENTS_APP_ID, table: AGENTS_TABLE, recordId: agentId }))
  const rows = agentFound?.rows ?? []
  // Never written, or deleted in the log: the legacy path (resolveAgent treats null as absent).
  const agentRecord = rows.length === 0 ? undefined : replayOrdered(rows).record
  // The write-back names the decoded mission's agentId (WriteBack's readAgent does the same).
  const actorId = current.mission.agentId
  const actorFound = actorId === undefined ? undefined : byRef.get(recordRefKey({ appId: AGENTS_APP_ID, table: AGENTS_TABLE, recordId: actorId }))
  const actor: ActorAgentBasis = {
    agent: actorAgent(actorId, actorFound?.rows ?? []),
    agentId: actorId,
    agentRows: (actorFound?.rows.length ?? 0) + (actorFound?.undecodable ?? 0),
  }
  return {
    current,
    agent: resolveAgent(agentId, agentRecord),
    missionRows: seen,
    actor,
    ...(records === undefined ? {} : { records }),
  }
}

/**
 * `readCurrentMission` plus the mission's agent, in one query (the run's pre-check, inside
 * withUserScope(userId)): the mission's rows and the rows of every agent any of its rows names
 * (`data->>'agentId'`), so the agent costs no extra round trip. The replayed mission's own
 * `agentId` picks the agent; RLS keeps it to the same user. `also`: more records read in the same
 * query (the run's inputs as the snapshot names them, issue 16), returned in `records`.
 */
export const readCurrentMissionWithAgent = (
  sql: SqlClient.SqlClient,
  userId: string,
  missionId: string,
  iterationId: string,
  defaultTimezone: string,
  also: ReadonlyArray<RecordRef> = [],
): Effect.Effect<CurrentMissionWithAgent, SqlError, EventLogSchema> =>
  Effect.flatMap(EventLogSchema, ({ timeColumn }) =>
    Effect.map(runReadQuery(sql, timeColumn, userId, missionId, also), (raw) => judgeRunRead(raw, missionId, iterationId, defaultTimezone, also)),
  )
