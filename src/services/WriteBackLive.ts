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
 */
import { SqlClient } from "@effect/sql"
import type { SqlError } from "@effect/sql/SqlError"
import { Clock, Effect, Either, Layer, Option } from "effect"
import {
  AGENTS_TABLE,
  MISSIONS_APP_ID,
  MISSIONS_TABLE,
  RUNNER_ACTOR,
  RUNNER_CLIENT_ID,
  RUNNER_ORIGIN,
  aiActorFor,
} from "../domain/mission.js"
import { type RecordState, isLive, replayOrdered } from "../domain/replay.js"
import { RunnerConfig } from "./AppConfig.js"
import { nextRunFor, readCurrentMission } from "./currentMission.js"
import { EventLogSchema } from "./EventLogSchema.js"
import { readRecordRows, recordRefKey } from "./recordRows.js"
import { TokenLedger } from "./TokenLedger.js"
import { WriteBack, type WriteRequest, type WriteResult } from "./WriteBack.js"
import { withUserScope } from "./withUserScope.js"

/**
 * The write time stamped on both fields: the clock, but never at or before the time of the values
 * being replaced. A device whose clock runs ahead may have stamped `iterations` in our future; an
 * older stamp would make the replay drop this append silently (LWW), so it moves just past the
 * newest one instead; nextRunAt is then computed after that stamp, so it stays strictly after it.
 */
export const writeTimeFor = (nowMs: number, state: RecordState): number => {
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

export const makeWriteBack = Effect.gen(function* () {
  const sqlClient = yield* SqlClient.SqlClient
  const config = yield* RunnerConfig
  const eventLog = yield* EventLogSchema
  // Optional: a stack without budgets (unit tests) writes no usage.
  const ledger = yield* Effect.serviceOption(TokenLedger)

  const append = (request: WriteRequest): Effect.Effect<WriteResult, SqlError> =>
    withUserScope(request.userId, (sql) =>
      Effect.gen(function* (): Effect.fn.Return<WriteResult, SqlError, EventLogSchema> {
        const lockKey = JSON.stringify(["mana-ai/write-back", request.userId, request.missionId])
        yield* sql`SELECT pg_advisory_xact_lock(hashtextextended(${lockKey}, 0))`
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
        if (eventLog.generation === "field_meta") {
          const actor = aiActorFor({
            agent: yield* readAgent(sql, request.userId, current.mission.agentId),
            missionId: request.missionId,
            iterationId: request.iteration.id,
            summary: request.iteration.summary,
          })
          yield* sql`
            INSERT INTO sync_changes
              (app_id, table_name, record_id, user_id, op, data, ${timeColumn}, client_id, schema_version, actor, origin)
            VALUES
              (${MISSIONS_APP_ID}, ${MISSIONS_TABLE}, ${request.missionId}, ${request.userId}, 'update',
               ${JSON.stringify(data)}::jsonb, ${JSON.stringify(fieldTimes)}::jsonb,
               ${RUNNER_CLIENT_ID}, 1, ${JSON.stringify(actor)}::jsonb, ${RUNNER_ORIGIN})`
        } else {
          yield* sql`
            INSERT INTO sync_changes
              (app_id, table_name, record_id, user_id, op, data, ${timeColumn}, client_id, actor)
            VALUES
              (${MISSIONS_APP_ID}, ${MISSIONS_TABLE}, ${request.missionId}, ${request.userId}, 'update',
               ${JSON.stringify(data)}::jsonb, ${JSON.stringify(fieldTimes)}::jsonb,
               ${RUNNER_CLIENT_ID}, ${JSON.stringify(RUNNER_ACTOR)}::jsonb)`
        }
        // SPEC §14: the run's answers not yet recorded commit with the iteration, or not at all.
        const usage = request.usage ?? []
        if (usage.length > 0 && Option.isSome(ledger)) yield* ledger.value.insert(usage)
        return { _tag: "Written", iterationId: request.iteration.id, nextRunAt, writtenAt }
      }),
    ).pipe(
      Effect.provideService(SqlClient.SqlClient, sqlClient),
      Effect.provideService(EventLogSchema, eventLog),
      Effect.withSpan("WriteBack.append", {
        attributes: { userId: request.userId, missionId: request.missionId, iterationId: request.iteration.id },
      }),
    )

  return WriteBack.of({ append })
})

export const WriteBackLive: Layer.Layer<WriteBack, never, SqlClient.SqlClient | RunnerConfig | EventLogSchema> = Layer.effect(
  WriteBack,
  makeWriteBack,
)
