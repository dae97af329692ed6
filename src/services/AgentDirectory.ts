/**
 * Agent discovery and replay (SPEC §14): agents (`app_id 'ai'`, `table_name 'agents'`) are read across
 * users through the runner's narrow read path (sql/runner-role.sql) and replayed like missions.
 *
 * `refresh` reads agent rows newer than its cursor minus a look-back window (a row whose transaction
 * committed late still has an older created_at), skips ids already applied, and replays each touched
 * agent from all its rows, so the order of late rows cannot matter. It returns the agents whose replayed
 * record changed: the supervisor passes each to its user's actor, which re-resolves the missions under
 * that agent (a paused agent resumed, a budget raised) without a restart.
 *
 * Agents are few per user and change rarely, so the replayed records are held in memory; the first
 * refresh reads every agent row once.
 */
import { EventLogSchema } from "./EventLogSchema.js"
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Ref from "effect/Ref"
import * as Schema from "effect/Schema"
import { AGENTS_APP_ID, AGENTS_TABLE, type AgentResolution, resolveAgent } from "../domain/agent.js"
import { type RecordState, isLive, parseInstant, replayOrdered } from "../domain/replay.js"
import { malformedRowsTotal } from "./metrics.js"

export interface AgentKey {
  readonly userId: string
  readonly agentId: string
}

export interface AgentDirectoryShape {
  /** Applies new agent rows; returns the agents whose replayed record changed (first call: every agent). */
  readonly refresh: Effect.Effect<ReadonlyArray<AgentKey>, SqlError>
  /** The agent's replayed record when it exists and is not deleted. */
  readonly record: (userId: string, agentId: string) => Effect.Effect<Option.Option<Readonly<Record<string, unknown>>>>
  /** What a mission with this `agentId` runs under: legacy, the agent, or malformed (skip, with a reason). */
  readonly resolve: (userId: string, agentId: string | undefined) => Effect.Effect<AgentResolution>
  /** Every live agent of the user (for /internal). */
  readonly agentsOf: (userId: string) => Effect.Effect<ReadonlyArray<Readonly<Record<string, unknown>>>>
}

export interface AgentDirectoryOptions {
  /** How far behind the cursor each refresh re-reads: longer than any sync-server transaction lasts. */
  readonly lookback?: Duration.DurationInput
}

const AgentRow = Schema.Struct({
  id: Schema.String,
  user_id: Schema.String,
  record_id: Schema.String,
  op: Schema.Literal("insert", "update", "delete"),
  data: Schema.NullOr(Schema.Unknown),
  field_timestamps: Schema.NullOr(Schema.Unknown),
  created_at: Schema.DateFromSelf,
  /** created_at as exact UTC text (microseconds), for the cursor. */
  at: Schema.String,
})
type AgentRow = typeof AgentRow.Type
const decodeAgentRow = Schema.decodeUnknownEither(AgentRow)

interface State {
  /** created_at (exact text) of the newest row applied; null before the first refresh. */
  readonly cursor: string | null
  /** Ids applied at or after cursor − lookback, with their created_at in ms. */
  readonly applied: ReadonlyMap<string, number>
  /** `${userId}\u0000${agentId}` → replayed state. */
  readonly records: ReadonlyMap<string, RecordState>
}

const keyOf = (userId: string, agentId: string): string => `${userId}\u0000${agentId}`

export const makeAgentDirectory = (options: AgentDirectoryOptions = {}) =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    // The per-field time column of the event log's generation (SPEC §13).
    const { timeColumn } = yield* EventLogSchema
    const lookbackMs = Duration.toMillis(Duration.decode(options.lookback ?? Duration.minutes(2)))
    const lookback = `${Math.round(lookbackMs * 1000)} microseconds`
    const state = yield* Ref.make<State>({ cursor: null, applied: new Map(), records: new Map() })

    const columns = sql`
      id::text AS id, user_id, record_id, op, data, ${sql(timeColumn)} AS field_timestamps, created_at,
      to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS at`

    /** Rows that do not decode are counted and left out: a broken row never stops discovery. */
    const decodeRows = (raw: ReadonlyArray<unknown>) =>
      Effect.gen(function* () {
        const rows: Array<AgentRow> = []
        for (const r of raw) {
          const decoded = decodeAgentRow(r)
          if (Either.isRight(decoded)) rows.push(decoded.right)
          else yield* Metric.increment(Metric.tagged(malformedRowsTotal, "reason", "agent-row-undecodable"))
        }
        return rows
      })

    const newRows = (cursor: string | null) =>
      cursor === null
        ? sql`SELECT ${columns} FROM sync_changes
              WHERE app_id = ${AGENTS_APP_ID} AND table_name = ${AGENTS_TABLE}
              ORDER BY created_at, id`
        : sql`SELECT ${columns} FROM sync_changes
              WHERE app_id = ${AGENTS_APP_ID} AND table_name = ${AGENTS_TABLE}
                AND created_at > ${cursor}::timestamptz - ${lookback}::interval
              ORDER BY created_at, id`

    /** Every row of the touched agents, in log order (served by the sync server's (table_name, record_id, created_at) index). */
    const rowsOf = (keys: ReadonlyArray<AgentKey>) =>
      sql`SELECT ${columns} FROM sync_changes
          WHERE app_id = ${AGENTS_APP_ID} AND table_name = ${AGENTS_TABLE}
            AND ${sql.or(keys.map((k) => sql`(record_id = ${k.agentId} AND user_id = ${k.userId})`))}
          ORDER BY created_at, id`

    const refresh = Effect.gen(function* () {
      const before = yield* Ref.get(state)
      const fresh = (yield* decodeRows(yield* newRows(before.cursor))).filter((r) => !before.applied.has(r.id))
      if (fresh.length === 0) return []
      const touched = new Map<string, AgentKey>()
      for (const r of fresh) touched.set(keyOf(r.user_id, r.record_id), { userId: r.user_id, agentId: r.record_id })
      const all = yield* decodeRows(yield* rowsOf([...touched.values()]))
      const byKey = new Map<string, Array<AgentRow>>()
      for (const r of all) {
        const k = keyOf(r.user_id, r.record_id)
        const list = byKey.get(k)
        if (list === undefined) byKey.set(k, [r])
        else list.push(r)
      }
      const records = new Map(before.records)
      const changed: Array<AgentKey> = []
      for (const [k, key] of touched) {
        const next = replayOrdered(byKey.get(k) ?? [])
        const previous = records.get(k)
        if (JSON.stringify(previous?.record ?? null) !== JSON.stringify(next.record)) changed.push(key)
        records.set(k, next)
      }
      // The cursor only moves forward; ids behind cursor − lookback will not be read again.
      const newest = fresh.reduce((a, r) => (r.created_at.getTime() >= a.created_at.getTime() ? r : a))
      const ms = (at: string) => parseInstant(at) ?? 0
      const cursor = before.cursor === null || ms(newest.at) > ms(before.cursor) ? newest.at : before.cursor
      const horizon = ms(cursor) - lookbackMs - 1
      const applied = new Map<string, number>()
      for (const [id, at] of before.applied) if (at >= horizon) applied.set(id, at)
      for (const r of fresh) if (r.created_at.getTime() >= horizon) applied.set(r.id, r.created_at.getTime())
      yield* Ref.set(state, { cursor, applied, records })
      if (changed.length > 0) yield* Effect.logDebug("Agents changed").pipe(Effect.annotateLogs({ agents: changed.length }))
      return changed
    }).pipe(Effect.withSpan("AgentDirectory.refresh"))

    const liveRecord = (s: RecordState | undefined) =>
      s !== undefined && isLive(s) && s.record !== null ? Option.some(s.record) : Option.none()

    const record = (userId: string, agentId: string) =>
      Effect.map(Ref.get(state), (s) => liveRecord(s.records.get(keyOf(userId, agentId))))

    const resolve = (userId: string, agentId: string | undefined) =>
      agentId === undefined
        ? Effect.succeed<AgentResolution>({ _tag: "Legacy" })
        : Effect.map(record(userId, agentId), (r) => resolveAgent(agentId, Option.getOrUndefined(r)))

    const agentsOf = (userId: string) =>
      Effect.map(Ref.get(state), (s) => {
        const out: Array<Readonly<Record<string, unknown>>> = []
        const prefix = `${userId}\u0000`
        for (const [k, v] of s.records) {
          if (!k.startsWith(prefix)) continue
          const live = liveRecord(v)
          if (Option.isSome(live)) out.push(live.value)
        }
        return out
      })

    return { refresh, record, resolve, agentsOf } satisfies AgentDirectoryShape
  })

/** The supervisor's discovery passes each user's agent changes to its actor; makeAgentDirectory builds one with another look-back. */
export class AgentDirectory extends Effect.Service<AgentDirectory>()("mana-ai/AgentDirectory", { effect: makeAgentDirectory() }) {}
