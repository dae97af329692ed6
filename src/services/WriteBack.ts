/**
 * Write-back (SPEC §6): one run appends one iteration as one `update` row, under the owner's RLS
 * scope, to the mission as it stands inside the write transaction.
 *
 * The per-mission advisory lock serialises concurrent runners and instances; once it is held, the
 * replay below sees every earlier append, so "already holds this iteration id" is decisive and a
 * retry, restart or second instance never produces a duplicate. The row carries only `iterations`
 * and `nextRunAt`, so every other field (a user's edit, fields the runner does not know) survives.
 * The row's shape follows the generation of sync_changes found at start (EventLogSchema): the seed's
 * stamps `field_timestamps` with the system actor; today's stamps `field_meta` with `origin 'agent'`,
 * `schema_version 1` and the app's AI actor (the mission's agent, or the legacy principal).
 * The run's LLM answers not yet recorded (its last one) are inserted into mana_ai.token_usage in the
 * same transaction (SPEC §14), so the iteration and its usage commit together or not at all.
 *
 * Discovery's share of the append (issue 16): the same statement folds the row into the mission's
 * snapshot and marks it applied, so discovery does not read and replay the runner's own rows. It
 * does so only under a shared try-lock on discovery's lock (never inside a discovery pass, and every
 * pass committed before it is in the rows the append was checked against), only onto a live, valid,
 * active snapshot that the row sorts after: there, LWW makes "the snapshot plus this row" exactly the
 * replay of the snapshot's rows and this one. Anything else is left to discovery, as before.
 */
import { SqlClient } from "@effect/sql"
import type { SqlError } from "@effect/sql/SqlError"
import { Clock, Effect, Either, Option } from "effect"
import {
  AGENTS_TABLE,
  MISSIONS_APP_ID,
  MISSIONS_TABLE,
  RUNNER_ACTOR,
  RUNNER_CLIENT_ID,
  RUNNER_ORIGIN,
  type Iteration,
  aiActorFor,
} from "../domain/mission.js"
import { type RecordState, isLive, replayOrdered } from "../domain/replay.js"
import { RunnerConfig } from "./AppConfig.js"
import { type CurrentMission, nextRunFor, readCurrentMission } from "./currentMission.js"
import { EventLogSchema } from "./EventLogSchema.js"
import { REFRESH_LOCK_KEY } from "./MissionStore.js"
import { readRecordRows, recordRefKey } from "./recordRows.js"
import { TokenLedger, type UsageEntry } from "./TokenLedger.js"
import { advisoryLock, withUserScopeFirst } from "./withUserScope.js"
import { withSpanWhenTracing } from "./tracing.js"

/**
 * The mission as the run's pre-check read it (its own transaction, before the LLM call), and how many
 * of its rows that read saw. The write-back appends onto it in one statement when the log still
 * holds exactly those rows under the lock; otherwise it reads the mission again, as without one.
 */
export interface WriteBasis {
  readonly current: Extract<CurrentMission, { _tag: "Appendable" }>
  readonly missionRows: number
}

export interface WriteRequest {
  readonly userId: string
  readonly missionId: string
  /** The iteration to append; its id is the run's idempotency key (iterationIdFor). */
  readonly iteration: Iteration
  /** Spares the write-back its read of the mission when nothing was written to it since. */
  readonly basis?: WriteBasis
  /**
   * The run's LLM answers not yet recorded (SPEC §14): inserted into mana_ai.token_usage in the same
   * transaction as the iteration, keyed per answer (one already recorded is not counted again).
   * Only when a TokenLedger is provided; a Skipped result records nothing (the caller does).
   */
  readonly usage?: ReadonlyArray<UsageEntry>
}

export type WriteResult =
  | { readonly _tag: "Written"; readonly iterationId: string; readonly nextRunAt: string | null; readonly writtenAt: string }
  | {
      readonly _tag: "Skipped"
      readonly reason: "not-found" | "deleted" | "not-active" | "already-written" | "malformed"
    }

export interface WriteBackShape {
  /**
   * In one transaction scoped to `userId`: takes a per-mission advisory lock, replays the mission as
   * it stands now, and unless it is gone, not active, or already holds this iteration id, inserts one
   * `update` row with all iterations (existing ones as stored, plus this one) and the next `nextRunAt`
   * computed from the cadence strictly after the write time.
   */
  readonly append: (request: WriteRequest) => Effect.Effect<WriteResult, SqlError>
}

/**
 * The write time stamped on both fields: the clock, but never at or before the time of the values
 * being replaced. A device whose clock runs ahead may have stamped `iterations` in our future; an
 * older stamp would make the replay drop this append silently (LWW), so it moves just past the
 * newest one instead; nextRunAt is then computed after that stamp, so it stays strictly after it.
 */
const writeTimeFor = (nowMs: number, state: RecordState): number => {
  const held = Math.max(state.times.iterations ?? Number.NEGATIVE_INFINITY, state.times.nextRunAt ?? Number.NEGATIVE_INFINITY)
  return Math.max(nowMs, held + 1)
}

const CIPHERTEXT_PREFIX = "enc:1:"

/**
 * The mission's agent as the actor names it (SPEC §14): a live `ai/agents` record of the same user,
 * read in the write transaction; null (the legacy path) when there is no agentId or no such agent.
 */
const readAgent = (sql: SqlClient.SqlClient, userId: string, agentId: string | undefined) => {
  if (agentId === undefined) return Effect.succeed(null)
  const ref = { appId: MISSIONS_APP_ID, table: AGENTS_TABLE, recordId: agentId }
  return Effect.map(readRecordRows(sql, userId, [ref]), (byRef) => {
    const state = replayOrdered(byRef.get(recordRefKey(ref))?.rows ?? [])
    if (state.record === null || !isLive(state)) return null
    const name = state.record.name
    const readable = typeof name === "string" && name.trim() !== "" && !name.startsWith(CIPHERTEXT_PREFIX)
    return { id: agentId, name: readable ? name : "Mana" }
  })
}

/**
 * The scoping statement's locks: the mission's write lock (waited for), and discovery's lock shared,
 * taken only when free at once (`snapshot_lock`): held, no discovery pass runs until this commits, and
 * every pass before it committed first, so its rows are among those the append is checked against.
 */
const snapshotLocks = (sql: SqlClient.SqlClient, request: WriteRequest, withSnapshot: boolean) => {
  const mission = advisoryLock(sql, JSON.stringify(["mana-ai/write-back", request.userId, request.missionId]))
  return withSnapshot
    ? { columns: sql`${mission.columns}, pg_try_advisory_xact_lock_shared(${REFRESH_LOCK_KEY}::bigint) AS snapshot_lock` }
    : mission
}

export const makeWriteBack = Effect.gen(function* () {
  const sqlClient = yield* SqlClient.SqlClient
  const config = yield* RunnerConfig
  const eventLog = yield* EventLogSchema
  // Optional: a stack without budgets (unit tests) writes no usage.
  const ledger = yield* Effect.serviceOption(TokenLedger)
  // The store's snapshots, when this database has them (a stack without migrations, as in unit tests, has not).
  const [tables] = yield* sqlClient<{ present: boolean }>`
    SELECT to_regclass('mana_ai.mission_snapshots') IS NOT NULL AND to_regclass('mana_ai.applied_changes') IS NOT NULL AS present`.pipe(Effect.orDie)
  const snapshotsPresent = tables?.present === true

  /**
   * Inserts the append onto `current`. With `expectedRows`, one statement that inserts only while the
   * mission still has exactly that many rows (append-only log: the same rows the basis was replayed
   * from); undefined when it has more, so the caller reads the mission again.
   */
  const insertOnto = (
    sql: SqlClient.SqlClient,
    request: WriteRequest,
    current: Extract<CurrentMission, { _tag: "Appendable" }>,
    foldIntoSnapshot: boolean,
    expectedRows?: number,
  ): Effect.Effect<WriteResult | undefined, SqlError, EventLogSchema> =>
    Effect.gen(function* (): Effect.fn.Return<WriteResult | undefined, SqlError, EventLogSchema> {
      const nowMs = yield* Clock.currentTimeMillis
      const writtenMs = writeTimeFor(nowMs, current.state)
      const writtenAt = new Date(writtenMs).toISOString()
      // SPEC §6: strictly after the write time actually stamped, which a device clock ahead pushes later.
      const next = nextRunFor(current.mission, new Date(writtenMs), config.defaultTimezone)
      if (Either.isLeft(next)) {
        yield* Effect.logWarning(`write-back skipped: the next run cannot be computed: ${next.left.reason}`).pipe(
          Effect.annotateLogs({ reason: "malformed", iterationId: request.iteration.id }),
        )
        return { _tag: "Skipped", reason: "malformed" }
      }
      const nextRunAt = next.right === null ? null : next.right.toISOString()
      // Existing iterations exactly as stored (unknown keys included), not as decoded; missing = none yet.
      const existing = (current.record.iterations ?? []) as ReadonlyArray<unknown>
      const data = { iterations: [...existing, request.iteration], nextRunAt }
      const fieldTimes = { iterations: writtenAt, nextRunAt: writtenAt }
      const timeColumn = sql(eventLog.timeColumn)
      // The row folded into the mission's snapshot and marked applied (see the header): only onto a
      // snapshot that is live, valid and active (so the row's two valid fields keep it valid and
      // schedulable exactly when nextRunAt is set) and whose newest row sorts before this one (so no
      // delete of the snapshot's can come after it). Its times are the write time, newer than any the
      // snapshot's rows hold for both fields (they are among the rows this append was checked against).
      // The mark has no conflict target: the row is new, whatever key applied_changes has.
      const folded = !foldIntoSnapshot
        ? sql``
        : sql`,
          snap AS (
            UPDATE mana_ai.mission_snapshots m
            SET record = m.record || ins.data,
                field_times = m.field_times || jsonb_build_object('iterations', ${writtenMs}::bigint, 'nextRunAt', ${writtenMs}::bigint),
                last_created_at = ins.created_at, last_change_id = ins.id,
                next_run_at = ${nextRunAt}::timestamptz, schedulable = ${nextRunAt !== null}, updated_at = now()
            FROM ins
            WHERE m.user_id = ${request.userId} AND m.record_id = ${request.missionId}
              AND m.record IS NOT NULL AND NOT m.deleted AND m.malformed_reason IS NULL AND m.state = 'active'
              AND (m.last_created_at, m.last_change_id) < (ins.created_at, ins.id)
            RETURNING 1),
          marked AS (
            INSERT INTO mana_ai.applied_changes (change_id, created_at)
            SELECT ins.id, ins.created_at FROM ins WHERE EXISTS (SELECT 1 FROM snap)
            ON CONFLICT DO NOTHING)`
      const unchanged =
        expectedRows === undefined
          ? sql``
          : sql`WHERE (SELECT count(*) FROM sync_changes
                       WHERE user_id = ${request.userId} AND app_id = ${MISSIONS_APP_ID} AND table_name = ${MISSIONS_TABLE}
                         AND record_id = ${request.missionId}) = ${expectedRows}`
      let inserted: ReadonlyArray<unknown>
      if (eventLog.generation === "field_meta") {
        const actor = aiActorFor({
          agent: yield* readAgent(sql, request.userId, current.mission.agentId),
          missionId: request.missionId,
          iterationId: request.iteration.id,
          summary: request.iteration.summary,
        })
        inserted = yield* sql`
          WITH ins AS (
            INSERT INTO sync_changes
              (app_id, table_name, record_id, user_id, op, data, ${timeColumn}, client_id, schema_version, actor, origin)
            SELECT ${MISSIONS_APP_ID}, ${MISSIONS_TABLE}, ${request.missionId}, ${request.userId}, 'update',
                   ${JSON.stringify(data)}::jsonb, ${JSON.stringify(fieldTimes)}::jsonb,
                   ${RUNNER_CLIENT_ID}, 1, ${JSON.stringify(actor)}::jsonb, ${RUNNER_ORIGIN}
            ${unchanged}
            RETURNING id, created_at, data)${folded}
          SELECT 1 FROM ins`
      } else {
        inserted = yield* sql`
          WITH ins AS (
            INSERT INTO sync_changes
              (app_id, table_name, record_id, user_id, op, data, ${timeColumn}, client_id, actor)
            SELECT ${MISSIONS_APP_ID}, ${MISSIONS_TABLE}, ${request.missionId}, ${request.userId}, 'update',
                   ${JSON.stringify(data)}::jsonb, ${JSON.stringify(fieldTimes)}::jsonb,
                   ${RUNNER_CLIENT_ID}, ${JSON.stringify(RUNNER_ACTOR)}::jsonb
            ${unchanged}
            RETURNING id, created_at, data)${folded}
          SELECT 1 FROM ins`
      }
      if (inserted.length === 0) return undefined
      return { _tag: "Written", iterationId: request.iteration.id, nextRunAt, writtenAt }
    })

  const append = (request: WriteRequest): Effect.Effect<WriteResult, SqlError> =>
    withUserScopeFirst(
      request.userId,
      // The lock in the scoping statement: every statement after it sees every earlier append. Discovery's
      // lock, shared and only if free at once: a run never waits for a discovery pass (issue 16 item 4).
      snapshotLocks(sqlClient, request, snapshotsPresent),
      (row, sql) =>
        Effect.tap(appendIn(sql, request, snapshotsPresent && row.snapshot_lock === true), (written) => {
          // SPEC §14: the run's answers not yet recorded commit with the iteration, or not at all.
          const usage = request.usage ?? []
          return written._tag === "Written" && usage.length > 0 && Option.isSome(ledger) ? ledger.value.insert(usage) : Effect.void
        }),
    ).pipe(
      Effect.provideService(SqlClient.SqlClient, sqlClient),
      Effect.provideService(EventLogSchema, eventLog),
      withSpanWhenTracing("WriteBack.append", {
        attributes: { userId: request.userId, missionId: request.missionId, iterationId: request.iteration.id },
      }),
    )

  /** The append inside the locked, scoped transaction: on the basis when it still holds, else on a fresh read. */
  const appendIn = (sql: SqlClient.SqlClient, request: WriteRequest, foldIntoSnapshot: boolean) =>
        Effect.gen(function* (): Effect.fn.Return<WriteResult, SqlError, EventLogSchema> {
          if (request.basis !== undefined) {
            // Nothing written since the pre-check: its replay is the mission as it stands (one statement).
            const written = yield* insertOnto(sql, request, request.basis.current, foldIntoSnapshot, request.basis.missionRows)
            if (written !== undefined) return written
          }
          const current = yield* readCurrentMission(
            sql,
            request.userId,
            request.missionId,
            request.iteration.id,
            config.defaultTimezone,
          )
          if (current._tag === "Skip") {
            yield* Effect.logInfo(`write-back skipped: ${current.detail}`).pipe(
              Effect.annotateLogs({ reason: current.reason, iterationId: request.iteration.id }),
            )
            return { _tag: "Skipped", reason: current.reason }
          }
          const written = yield* insertOnto(sql, request, current, foldIntoSnapshot)
          // Without a row-count condition the insert always inserts.
          return written ?? { _tag: "Skipped", reason: "malformed" }
        })

  return { append } satisfies WriteBackShape
})

export class WriteBack extends Effect.Service<WriteBack>()("mana-ai/WriteBack", { effect: makeWriteBack }) {}
