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
import * as SqlClient from "@effect/sql/SqlClient"
import type * as Statement from "@effect/sql/Statement"
import type { SqlError } from "@effect/sql/SqlError"
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
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
import type { SyncGeneration } from "../domain/eventLog.js"
import type { RecordState } from "../domain/replay.js"
import { RunnerConfig } from "./AppConfig.js"
import { type ActorAgent, type ActorAgentBasis, type CurrentMission, actorAgent, nextRunFor, readCurrentMission } from "./currentMission.js"
import { EventLogSchema } from "./EventLogSchema.js"
import { REFRESH_LOCK_KEY } from "./MissionStore.js"
import { readRecordRows, recordRefKey } from "./recordRows.js"
import { TokenLedger, type UsageEntry } from "./TokenLedger.js"
import { pipelinedTransaction } from "./pipelinedTransaction.js"
import { sqlShapes } from "./sqlShapes.js"
import { advisoryLock, scopeStatement, withUserScopeFirst } from "./withUserScope.js"
import { withSpanWhenTracing } from "./tracing.js"

/**
 * The mission as the run's pre-check read it (its own transaction, before the LLM call), and how many
 * of its rows that read saw. The write-back appends onto it in one statement when the log still
 * holds exactly those rows under the lock; otherwise it reads the mission again, as without one.
 */
export interface WriteBasis {
  readonly current: Extract<CurrentMission, { _tag: "Appendable" }>
  readonly missionRows: number
  /** The actor's agent as the same read gave it, and its record's row count (checked like missionRows). */
  readonly actor: ActorAgentBasis
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

/**
 * The mission's agent as the actor names it (SPEC §14): a live `ai/agents` record of the same user,
 * read in the write transaction; null (the legacy path) when there is no agentId or no such agent.
 */
const readAgent = (sql: SqlClient.SqlClient, userId: string, agentId: string | undefined) => {
  if (agentId === undefined) return Effect.succeed(null)
  const ref = { appId: MISSIONS_APP_ID, table: AGENTS_TABLE, recordId: agentId }
  return Effect.map(readRecordRows(sql, userId, [ref]), (byRef) => actorAgent(agentId, byRef.get(recordRefKey(ref))?.rows ?? []))
}

/**
 * The scoping statement's locks: the mission's write lock (waited for), and discovery's lock shared,
 * taken only when free at once (`snapshot_lock`): held, no discovery pass runs until this commits, and
 * every pass before it committed first, so its rows are among those the append is checked against.
 */
const snapshotLocks = (sql: SqlClient.SqlClient, request: WriteRequest, withSnapshot: boolean) => {
  const mission = advisoryLock(sql, JSON.stringify(["mana-ai/write-back", request.userId, request.missionId]))
  // Whether it was free is kept in a transaction-local setting, so the append (a later statement of
  // the same transaction, possibly of the same round trip) folds only under it.
  return withSnapshot
    ? { columns: sql`${mission.columns}, set_config('app.snapshot_lock', pg_try_advisory_xact_lock_shared(${REFRESH_LOCK_KEY}::bigint)::text, true) AS snapshot_lock` }
    : mission
}

/** What decides the append statement's text (sqlShapes.ts). */
export interface AppendShape {
  readonly copied: boolean
  readonly basis: boolean
  readonly agentCheck: boolean
}

/** The append statement's parameters; those its shape does not use are undefined. */
export interface AppendValues {
  readonly userId: string
  readonly missionId: string
  readonly from: string | undefined
  readonly iterationJson: string | undefined
  readonly dataJson: string | undefined
  readonly nextRunAt: string | null
  readonly fieldTimesJson: string
  readonly actorJson: string
  readonly writtenMs: number
  readonly schedulable: boolean
  readonly missionRows: number | undefined
  readonly agentId: string | undefined
  readonly agentRows: number | undefined
  readonly iterationId: string
}

const RUNNER_ACTOR_JSON = JSON.stringify(RUNNER_ACTOR)

/** Tells apart every pair of shapes `appendStatementBuilder` makes different text for. */
export const appendShapeKey = (f: AppendShape): number => (f.copied ? 1 : 0) | (f.basis ? 2 : 0) | (f.agentCheck ? 4 : 0)

/**
 * The append's statement for one generation, with or without the snapshot fold (`snapshotsPresent`),
 * from its shape and values; `values` are parameters only (sqlShapes.ts). `copied`: the iterations
 * are copied in SQL from the row the read named (`from`), else sent whole (`dataJson`); `basis`: it
 * inserts only while the mission has `missionRows` rows, and with `agentCheck` the actor's agent
 * `agentRows`.
 */
export const appendStatementBuilder =
  (sql: Statement.Constructor, generation: SyncGeneration, snapshotsPresent: boolean) =>
  (f: AppendShape, v: AppendValues): Statement.Statement<unknown> => {
    // An identifier, escaped at compile: once per shape.
    const timeColumn = sql(generation)
    const dataSql = f.copied
      ? sql`jsonb_build_object(
            'iterations', (SELECT w.data -> 'iterations' FROM sync_changes w WHERE w.id = ${v.from}::uuid AND w.record_id = ${v.missionId})
                          || jsonb_build_array(${v.iterationJson}::jsonb),
            'nextRunAt', ${v.nextRunAt}::text)`
      : sql`${v.dataJson}::jsonb`
    const sourcePresent = f.copied
      ? sql`EXISTS (SELECT 1 FROM sync_changes w WHERE w.id = ${v.from}::uuid AND w.record_id = ${v.missionId}
                  AND jsonb_typeof(w.data -> 'iterations') = 'array')`
      : sql`true`
    // The row folded into the mission's snapshot and marked applied (see the header): only under
    // discovery's lock (taken by the scoping statement, `app.snapshot_lock`), only onto a snapshot
    // that is live, valid and active (so the row's two valid fields keep it valid and schedulable
    // exactly when nextRunAt is set) and whose newest row sorts before this one (so no delete of
    // the snapshot's can come after it). Its times are the write time, newer than any the
    // snapshot's rows hold for both fields (they are among the rows this append was checked against).
    // The mark: a record mark of its own holding this one id (applied_records, migration 0007).
    const folded = !snapshotsPresent
      ? sql``
      : sql`,
      snap AS (
        UPDATE mana_ai.mission_snapshots m
        SET record = m.record || ins.data,
            field_times = m.field_times || jsonb_build_object('iterations', ${v.writtenMs}::bigint, 'nextRunAt', ${v.writtenMs}::bigint),
            last_created_at = ins.created_at, last_change_id = ins.id,
            next_run_at = ${v.nextRunAt}::timestamptz, schedulable = ${v.schedulable}, updated_at = now()
        FROM ins
        WHERE current_setting('app.snapshot_lock', true) = 'true'
          AND m.user_id = ${v.userId} AND m.record_id = ${v.missionId}
          AND m.record IS NOT NULL AND NOT m.deleted AND m.malformed_reason IS NULL AND m.state = 'active'
          AND (m.last_created_at, m.last_change_id) < (ins.created_at, ins.id)
        RETURNING 1),
      marked AS (
        INSERT INTO mana_ai.applied_records (user_id, record_id, newest_at, change_ids)
        SELECT ${v.userId}, ${v.missionId}, ins.created_at, ARRAY[ins.id] FROM ins WHERE EXISTS (SELECT 1 FROM snap))`
    const rowsOf = (appId: string, table: string, recordId: unknown) =>
      sql`(SELECT count(*) FROM sync_changes
         WHERE user_id = ${v.userId} AND app_id = ${appId} AND table_name = ${table} AND record_id = ${recordId})`
    const unchanged = !f.basis
      ? sql`WHERE ${sourcePresent}`
      : sql`WHERE ${sourcePresent} AND ${rowsOf(MISSIONS_APP_ID, MISSIONS_TABLE, v.missionId)} = ${v.missionRows}${
          f.agentCheck ? sql` AND ${rowsOf(MISSIONS_APP_ID, AGENTS_TABLE, v.agentId)} = ${v.agentRows}` : sql``
        }`
    const written = sql`SELECT set_config('app.written_iteration', ${v.iterationId}, true) AS written FROM ins`
    return generation === "field_meta"
      ? sql`
      WITH ins AS (
        INSERT INTO sync_changes
          (app_id, table_name, record_id, user_id, op, data, ${timeColumn}, client_id, schema_version, actor, origin)
        SELECT ${MISSIONS_APP_ID}, ${MISSIONS_TABLE}, ${v.missionId}, ${v.userId}, 'update',
               ${dataSql}, ${v.fieldTimesJson}::jsonb,
               ${RUNNER_CLIENT_ID}, 1, ${v.actorJson}::jsonb, ${RUNNER_ORIGIN}
        ${unchanged}
        RETURNING id, created_at, data)${folded}
      ${written}`
      : sql`
      WITH ins AS (
        INSERT INTO sync_changes
          (app_id, table_name, record_id, user_id, op, data, ${timeColumn}, client_id, actor)
        SELECT ${MISSIONS_APP_ID}, ${MISSIONS_TABLE}, ${v.missionId}, ${v.userId}, 'update',
               ${dataSql}, ${v.fieldTimesJson}::jsonb,
               ${RUNNER_CLIENT_ID}, ${v.actorJson}::jsonb
        ${unchanged}
        RETURNING id, created_at, data)${folded}
      ${written}`
  }

/** The append, built: its statement and what it writes, or why it cannot be written. */
type BuiltAppend =
  | {
      readonly _tag: "Statement"
      readonly shape: AppendShape
      readonly values: AppendValues
      readonly nextRunAt: string | null
      readonly writtenAt: string
    }
  | { readonly _tag: "Skipped"; readonly result: WriteResult }

export const makeWriteBack = Effect.gen(function* () {
  const sqlClient = yield* SqlClient.SqlClient
  const config = yield* RunnerConfig
  const eventLog = yield* EventLogSchema
  // Optional: a stack without budgets (unit tests) writes no usage.
  const ledger = yield* Effect.serviceOption(TokenLedger)
  // The store's snapshots, when this database has them (a stack without migrations, as in unit tests, has not).
  const [tables] = yield* sqlClient<{ present: boolean }>`
    SELECT to_regclass('mana_ai.mission_snapshots') IS NOT NULL AND to_regclass('mana_ai.applied_records') IS NOT NULL AS present`.pipe(Effect.orDie)
  const snapshotsPresent = tables?.present === true

  /** The append's statement, built once per shape (sqlShapes.ts). */
  const buildAppendStatement = appendStatementBuilder(sqlClient, eventLog.generation, snapshotsPresent)
  const appendStatement = sqlShapes(appendShapeKey, buildAppendStatement)

  /**
   * The append onto `current` as one statement. With a basis (the run's pre-check read), it inserts
   * only while the mission, and on today's generation the actor's agent, still have exactly the rows
   * the basis was replayed from (the log is append-only: the same rows); otherwise it inserts nothing
   * and the caller reads the mission again. When it inserts, its row also sets
   * `app.written_iteration`, which the usage statement after it in the same transaction waits for.
   */
  const buildAppend = Effect.fnUntraced(function* (
    request: WriteRequest,
    current: Extract<CurrentMission, { _tag: "Appendable" }>,
    /** Today's generation: the agent the actor names (null: the legacy principal). */
    agent: ActorAgent | null,
    basis?: WriteBasis,
  ): Effect.fn.Return<BuiltAppend> {
    const nowMs = yield* Clock.currentTimeMillis
    const writtenMs = writeTimeFor(nowMs, current.state)
    const writtenAt = new Date(writtenMs).toISOString()
    // SPEC §6: strictly after the write time actually stamped, which a device clock ahead pushes later.
    const next = nextRunFor(current.mission, new Date(writtenMs), config.defaultTimezone)
    if (Either.isLeft(next)) {
      yield* Effect.logWarning(`write-back skipped: the next run cannot be computed: ${next.left.reason}`).pipe(
        Effect.annotateLogs({ reason: "malformed", iterationId: request.iteration.id }),
      )
      return { _tag: "Skipped", result: { _tag: "Skipped", reason: "malformed" } } as const
    }
    const nextRunAt = next.right === null ? null : next.right.toISOString()
    // Existing iterations exactly as stored (unknown keys included), not as decoded; missing = none yet.
    // Postgres copies them from the row they came from (the read's replay names it): the list grows by
    // one with every run, and sending it back cost the runner a JSON text and a socket write of the
    // whole history per run (issue 16: about 34 KB at 40 iterations) and Postgres its parse. The row
    // is in the append-only log for good; should it be missing all the same, nothing is inserted
    // rather than a list without it. Without that row's id, the list is sent as before.
    const from = current.iterationsFrom
    const hasIterations = Object.hasOwn(current.record, "iterations")
    const copied = hasIterations && from !== undefined
    const existing = (current.record.iterations ?? []) as ReadonlyArray<unknown>
    const agentId = basis?.actor.agentId
    const shape: AppendShape = { copied, basis: basis !== undefined, agentCheck: eventLog.generation === "field_meta" && agentId !== undefined }
    const values: AppendValues = {
      userId: request.userId,
      missionId: request.missionId,
      from,
      iterationJson: copied ? JSON.stringify(request.iteration) : undefined,
      dataJson: copied ? undefined : JSON.stringify({ iterations: [...existing, request.iteration], nextRunAt }),
      nextRunAt,
      fieldTimesJson: JSON.stringify({ iterations: writtenAt, nextRunAt: writtenAt }),
      actorJson:
        eventLog.generation === "field_meta"
          ? JSON.stringify(
              aiActorFor({ agent, missionId: request.missionId, iterationId: request.iteration.id, summary: request.iteration.summary }),
            )
          : RUNNER_ACTOR_JSON,
      writtenMs,
      schedulable: nextRunAt !== null,
      missionRows: basis?.missionRows,
      agentId,
      agentRows: basis?.actor.agentRows,
      iterationId: request.iteration.id,
    }
    return { _tag: "Statement", shape, values, nextRunAt, writtenAt } as const
  })

  const writtenResult = (request: WriteRequest, built: Extract<BuiltAppend, { _tag: "Statement" }>): WriteResult => ({
    _tag: "Written",
    iterationId: request.iteration.id,
    nextRunAt: built.nextRunAt,
    writtenAt: built.writtenAt,
  })

  /** SPEC §14: the run's answers not yet recorded, in the append's transaction, only once it inserted. */
  const usageStatement = (request: WriteRequest) => {
    const usage = request.usage ?? []
    return usage.length === 0 || Option.isNone(ledger)
      ? []
      : [ledger.value.insertWhen(usage, sqlClient`current_setting('app.written_iteration', true) = ${request.iteration.id}`)]
  }

  /**
   * On the pre-check's basis: scope and locks, the append and the usage (gated on the append in SQL)
   * in one round trip, then COMMIT (`pipelinedTransaction`). Undefined when the rows changed since
   * the basis was read.
   */
  const appendOnBasis = Effect.fnUntraced(function* (request: WriteRequest, basis: WriteBasis): Effect.fn.Return<WriteResult | undefined, SqlError> {
      const built = yield* buildAppend(request, basis.current, basis.actor.agent, basis)
      if (built._tag === "Skipped") return built.result
      // Pipelined since issue 16's run-cpu round (4 round trips -> 2). It was reverted once (ad8d8b5)
      // because AgentRuns.test.ts' cap test on PGlite made 9-11 LLM requests for 8 runs; that test
      // repeated 20 times each way, interleaved (load 8-12), made 8 requests in all 20 pipelined and
      // 9 in one of 20 one-statement-per-round-trip: an LLM timeout of 1 s on a loaded machine, not this.
      const results = yield* pipelinedTransaction(sqlClient, [
        scopeStatement(sqlClient, request.userId, snapshotLocks(sqlClient, request, snapshotsPresent)),
        // Built once per shape (sqlShapes.ts): the run's usual path.
        appendStatement(built.shape, built.values),
        ...usageStatement(request),
      ])
      if ((results[1]?.length ?? 0) === 0) return undefined
      if (results.length > 2 && Option.isSome(ledger)) yield* ledger.value.booked(results[2] ?? [])
      return writtenResult(request, built)
    })

  /** The append on a fresh read of the mission, in a transaction whose scoping statement takes the locks. */
  const appendOnRead = (request: WriteRequest) =>
    withUserScopeFirst(
      request.userId,
      // The lock in the scoping statement: every statement after it sees every earlier append. Discovery's
      // lock, shared and only if free at once: a run never waits for a discovery pass (issue 16 item 4).
      snapshotLocks(sqlClient, request, snapshotsPresent),
      (_row, sql) =>
        Effect.gen(function* (): Effect.fn.Return<WriteResult, SqlError, EventLogSchema> {
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
          const agent = eventLog.generation === "field_meta" ? yield* readAgent(sql, request.userId, current.mission.agentId) : null
          const built = yield* buildAppend(request, current, agent)
          if (built._tag === "Skipped") return built.result
          // Without a basis the insert inserts unless the row the iterations are copied from is gone
          // (never, in an append-only log): then nothing is written rather than a shorter list.
          if ((yield* buildAppendStatement(built.shape, built.values)).length === 0) return { _tag: "Skipped", reason: "malformed" }
          // SPEC §14: the run's answers not yet recorded commit with the iteration, or not at all.
          const usage = request.usage ?? []
          if (usage.length > 0 && Option.isSome(ledger)) yield* ledger.value.insert(usage)
          return writtenResult(request, built)
        }),
    ).pipe(Effect.provideService(SqlClient.SqlClient, sqlClient), Effect.provideService(EventLogSchema, eventLog))

  const append = (request: WriteRequest): Effect.Effect<WriteResult, SqlError> => {
    const basis = request.basis
    return (
      basis === undefined
        ? appendOnRead(request)
        : // Nothing written since the pre-check: its replay is the mission as it stands (no read).
          Effect.flatMap(appendOnBasis(request, basis), (written) => (written === undefined ? appendOnRead(request) : Effect.succeed(written)))
    ).pipe(
      withSpanWhenTracing("WriteBack.append", {
        attributes: { userId: request.userId, missionId: request.missionId, iterationId: request.iteration.id },
      }),
    )
  }

  return { append } satisfies WriteBackShape
})

export class WriteBack extends Effect.Service<WriteBack>()("mana-ai/WriteBack", { effect: makeWriteBack }) {}
