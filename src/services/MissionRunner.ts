/**
 * One run of one mission for one scheduled time (SPEC §4–§6): claim → check → resolve inputs → plan →
 * write back.
 *
 * MISSION_TIMEOUT_MS covers the whole run, from the claim to the commit of the write-back (SPEC §4):
 * a run that outlasts it is interrupted and fails with MissionTimeout. The write-back is one
 * transaction, so an interrupted one rolls back whole: nothing is written, the claim is given back,
 * and the mission stays due and is retried. A permanent planning failure is not an error of the run:
 * it is written as a failed iteration and advances nextRunAt.
 */
import { randomUUID } from "node:crypto"
import { hostname } from "node:os"
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberRef from "effect/FiberRef"
import * as Layer from "effect/Layer"
import * as LogLevel from "effect/LogLevel"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Ref from "effect/Ref"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import { type Agent, runDecision } from "../domain/agent.js"
import { withDeadline } from "../primitives/Deadline.js"
import { failedIteration, iterationIdFor, plannedIteration } from "../domain/iteration.js"
import type { ErrorPhase, Iteration, Mission, MissionRef } from "../domain/mission.js"
import { parseInstant } from "../domain/replay.js"
import { describeRejection } from "../domain/planParser.js"
import { RunnerConfig } from "./AppConfig.js"
import { AgentPermits } from "./AgentPermits.js"
import { judgeRunRead, runReadQuery, runReadShapes } from "./currentMission.js"
import { EventLogSchema } from "./EventLogSchema.js"
import { InputResolvers, type ResolvedInput, type UnavailableInput } from "./InputResolvers.js"
import type { RecordRef } from "./recordRows.js"
import { type LlmError, type TokenUsage, isTransientLlmError } from "./LlmClient.js"
import { LlmBreaker } from "./LlmBreaker.js"
import { MissionStore } from "./MissionStore.js"
import {
  agentDecisionsTotal,
  missionErrorsTotal,
  missionRunDuration,
  missionsSkippedTotal,
  plansProducedTotal,
  plansWrittenBackTotal,
  updateMetrics,
} from "./metrics.js"
import { Planner, type PlanRejected, type PlannerResult } from "./Planner.js"
import { claimTimes, scopedClaimStatement } from "./runClaims.js"
import { sqlShapes } from "./sqlShapes.js"
import { ClusterConfig } from "../cluster/ClusterConfig.js"
import { TokenLedger, type UsageEntry } from "./TokenLedger.js"
import { WriteBack, type WriteBasis } from "./WriteBack.js"
import { preparedStatementsOn } from "./Database.js"
import { pipelinedTransaction } from "./pipelinedTransaction.js"
import { withSpanWhenTracing } from "./tracing.js"

// Tagged once: Metric.tagged builds and hashes a new key on every call.
const ranDecisions = Metric.tagged(agentDecisionsTotal, "decision", "ran")

/** Whether a line at `level` would be written (the minimum level in force lets it through). */
const logsAt = (level: LogLevel.LogLevel): Effect.Effect<boolean> =>
  Effect.map(FiberRef.get(FiberRef.currentMinimumLogLevel), (minimum) => LogLevel.greaterThanEqual(level, minimum))

/** The run's transient errors outlasted MISSION_TIMEOUT_MS: nothing written, the mission stays due. */
export class MissionTimeout extends Schema.TaggedError<MissionTimeout>()("MissionTimeout", {
  timeoutMs: Schema.Number,
}) {
  override get message() {
    return `mission run exceeded its deadline of ${this.timeoutMs} ms`
  }
}

export interface RunRequest {
  readonly userId: string
  /** The actor's reference (a whole Mission will do): the run reads the mission as it stands. */
  readonly mission: MissionRef
}

export type RunOutcome =
  | {
      readonly _tag: "Written"
      readonly iterationId: string
      readonly overallStatus: "awaiting-review" | "approved" | "failed"
      readonly steps: number
      readonly nextRunAt: string | null
      /** A valid plan came back from the planner (false for a failed iteration). */
      readonly planProduced: boolean
      /** Planner answers the parser rejected during this run. */
      readonly parseFailures: number
      /** For a failed iteration: the error's tag (errorDetails.name). */
      readonly failure?: string
    }
  | {
      readonly _tag: "Skipped"
      /** not-due: the mission as it stands now was rescheduled past the present (the snapshot was stale). */
      readonly reason: "claimed-elsewhere" | "not-found" | "deleted" | "not-active" | "not-due" | "already-written" | "malformed"
        // SPEC §14: the agent's decision (nothing written, the mission stays due) and a broken agent record.
        | "skipped-paused" | "skipped-archived" | "skipped-budget" | "agent-malformed"
      readonly planProduced: boolean
      readonly parseFailures: number
      /** skipped-budget: the budget that stopped the run. */
      readonly budget?: "agent" | "user" | "process"
      /**
       * skipped-budget: when enough of the window has passed for the run to ask again (ISO instant), so
       * the caller can wait without a database read; null when only a record change can free it (limit 0).
       */
      readonly freeAt?: string | null
      /** agent-malformed: which fields of the agent record are wrong (never their values). */
      readonly detail?: string
    }

export interface MissionRunnerShape {
  /**
   * Runs under MISSION_TIMEOUT_MS. A permanent planning failure writes a failed iteration (outcome
   * Written with overallStatus "failed"); transient failures that outlast the deadline fail with
   * MissionTimeout and write nothing. Interruption (drain) never leaves a partial write.
   */
  readonly run: (request: RunRequest) => Effect.Effect<RunOutcome, MissionTimeout | SqlError>
}

export interface MissionRunnerOptions {
  /** Who holds claims: one id per process (default: host, pid and a random suffix). */
  readonly instanceId?: string
  /** How long a claim outlives the run's deadline (which already covers the write-back): a margin for clock skew. */
  readonly claimMargin?: Duration.DurationInput
  /** How often expired claims are deleted (at most once per interval, after a run; default 1 minute). */
  readonly claimPruneEvery?: Duration.DurationInput
}

export const defaultInstanceId = (): string => `mana-ai:${hostname()}:${process.pid}:${randomUUID().slice(0, 8)}`

type PermanentFailure = LlmError | PlanRejected

/** Recording usage the write-back did not commit: long enough to outlast a short database outage. */
const heldUsageRetry = Schedule.exponential("100 millis").pipe(
  Schedule.union(Schedule.spaced("2 seconds")),
  Schedule.intersect(Schedule.recurs(8)),
)

/** What a permanent failure tells the user (short, no LLM output, no secret) and where it happened. */
export const describeFailure = (error: PermanentFailure): { readonly summary: string; readonly phase: ErrorPhase } => {
  // Never the parser's reason nor the model's text: the kind of failure only (SPEC §6); the detail is logged.
  switch (error._tag) {
    case "PlanRejected":
      return {
        summary: `Planning failed: the model's answer was rejected ${error.attempts === 1 ? "once" : `${error.attempts} times`} (${describeRejection(error.kind)}).`,
        phase: "parsing-response",
      }
    case "LlmHttpError":
      return { summary: `Planning failed: the language model refused the request (HTTP ${error.status}).`, phase: "calling-llm" }
    case "LlmInvalidResponse":
      return { summary: "Planning failed: the language model's reply was not a valid chat completion.", phase: "calling-llm" }
    case "LlmRequestInvalid":
      return { summary: "Planning failed: the request to the language model could not be built.", phase: "calling-llm" }
    default:
      return { summary: "Planning failed: the language model could not be reached.", phase: "calling-llm" }
  }
}

/** The bounded part's result: a plan, or a permanent failure to write as a failed iteration. */
type Planned =
  | { readonly _tag: "Plan"; readonly result: PlannerResult; readonly mission: Mission; readonly basis: WriteBasis }
  | {
      readonly _tag: "Failed"
      readonly error: PermanentFailure
      readonly phase: ErrorPhase
      readonly summary: string
      readonly basis: WriteBasis
    }
  /** `release`: nothing was written and the mission stays due: give the claim back at once. */
  | { readonly _tag: "Skip"; readonly outcome: Extract<RunOutcome, { _tag: "Skipped" }>; readonly release?: boolean }

type SkippedOutcome = Extract<RunOutcome, { _tag: "Skipped" }>

/** The first transaction's result: a skip, or the mission as read, its agent and its inputs. */
type Checked =
  | Extract<Planned, { _tag: "Skip" }>
  | {
      readonly _tag: "Ready"
      readonly basis: WriteBasis
      readonly agent: Agent | undefined
      readonly inputs: { readonly resolved: ReadonlyArray<ResolvedInput>; readonly unavailable: ReadonlyArray<UnavailableInput> }
    }

const skipped = (reason: SkippedOutcome["reason"], parseFailures = 0): Extract<Planned, { _tag: "Skip" }> => ({
  _tag: "Skip",
  outcome: { _tag: "Skipped", reason, planProduced: false, parseFailures },
})

/** An agent's skip (SPEC §14): typed, counted, logged; the claim goes back, the mission stays due. */
const agentSkip = (
  outcome: Omit<SkippedOutcome, "_tag" | "planProduced" | "parseFailures">,
  message: string,
): Effect.Effect<Extract<Planned, { _tag: "Skip" }>> => {
  const decision = outcome.reason
  return Effect.gen(function* () {
    if (decision !== "agent-malformed") yield* Metric.increment(Metric.tagged(agentDecisionsTotal, "decision", decision))
    yield* Effect.logInfo(`run skipped: ${message}`).pipe(
      Effect.annotateLogs({
        reason: decision,
        ...(outcome.freeAt === undefined ? {} : { freeAt: outcome.freeAt ?? "never by time" }),
        ...(outcome.budget === undefined ? {} : { budget: outcome.budget }),
      }),
    )
    return { _tag: "Skip", release: true, outcome: { _tag: "Skipped", planProduced: false, parseFailures: 0, ...outcome } } as const
  })
}

/** The run's token usage over every LLM answer that reported it (repair turns included). */
const tokensOf = (usage: ReadonlyArray<TokenUsage>) => ({
  llmAnswersWithUsage: usage.length,
  promptTokens: usage.reduce((n, u) => n + u.promptTokens, 0),
  completionTokens: usage.reduce((n, u) => n + u.completionTokens, 0),
  totalTokens: usage.reduce((n, u) => n + u.totalTokens, 0),
})

const errorKind = (cause: Cause.Cause<MissionTimeout | SqlError>): string =>
  Option.match(Cause.failureOption(cause), { onNone: () => (Cause.isInterruptedOnly(cause) ? "Interrupted" : "Defect"), onSome: (e) => e._tag })

export const makeMissionRunner = (options: MissionRunnerOptions = {}) =>
  Effect.gen(function* () {
    const store = yield* MissionStore
    const resolvers = yield* InputResolvers
    const planner = yield* Planner
    const writeBack = yield* WriteBack
    const config = yield* RunnerConfig
    const sqlClient = yield* SqlClient.SqlClient
    /** Whether the run's statements are prepared once per connection (DB_PREPARED_STATEMENTS; pipelinedTransaction.ts). */
    const prepared = preparedStatementsOn(sqlClient)
    const eventLog = yield* EventLogSchema
    // Optional so a stack without them (the offline planner's unit tests) still runs: no cap, no wait.
    const permits = yield* Effect.serviceOption(AgentPermits)
    const breaker = yield* Effect.serviceOption(LlmBreaker)
    const ledger = yield* Effect.serviceOption(TokenLedger)
    const owner = options.instanceId ?? defaultInstanceId()
    // Cluster mode: the claim takes the user's lease too (USER_CONCURRENCY across runners, issue 19).
    const inCluster = Option.isSome(yield* Effect.serviceOption(ClusterConfig))
    const timeoutMs = Duration.toMillis(config.missionTimeout)
    const claimTtlMs = Duration.toMillis(Duration.sum(config.missionTimeout, Duration.decode(options.claimMargin ?? Duration.seconds(60))))
    const pruneEveryMs = Duration.toMillis(Duration.decode(options.claimPruneEvery ?? Duration.minutes(1)))
    // When claims were last pruned: read and set in one synchronous step, so no run sees it half-changed.
    let lastPrune = Number.NEGATIVE_INFINITY

    /**
     * A claim kept after its write-back (or by a crashed instance) is useless once expired: delete those
     * through run_claims_expires_idx, at most once per interval, so the table stays as small as the runs
     * under way. Same clock as `claim`, so TestClock drives both.
     */
    const prune = (now: number) =>
      Effect.gen(function* () {
        const sql = sqlClient
        const pruned = yield* sql<{ n: number }>`
          WITH gone AS (DELETE FROM mana_ai.run_claims WHERE expires_at <= ${new Date(now)} RETURNING 1)
          SELECT count(*)::int AS n FROM gone`
        const n = Number(pruned[0]?.n ?? 0)
        if (n > 0) yield* Effect.logDebug("expired run claims pruned").pipe(Effect.annotateLogs({ pruned: n }))
      }).pipe(
        Effect.timeout("5 seconds"),
        Effect.catchAll((e) => Effect.logWarning(`could not prune expired run claims: ${String(e)}`)),
      )
    // The interval is checked first: most runs prune nothing and need no timeout (a timer fiber) for it.
    const pruneClaims = Effect.clockWith((clock) => {
      const now = clock.unsafeCurrentTimeMillis()
      if (now - lastPrune < pruneEveryMs) return Effect.void
      lastPrune = now
      return prune(now)
    })

    // The check's constant statements, built (and compiled, which @effect/sql caches on the statement) once.
    const asynchronousCommit = sqlClient`SET LOCAL synchronous_commit = off`
    const genericPlans = sqlClient`SET LOCAL plan_cache_mode = force_generic_plan`
    // Its claim in the scoping statement and its read (the prepared shape), built once per shape (sqlShapes.ts).
    const claimStatement = sqlShapes((cluster: boolean) => (cluster ? 1 : 0), scopedClaimStatement(sqlClient))
    const runRead = runReadShapes(sqlClient, eventLog.timeColumn)

    /**
     * The run's one transaction before the LLM call (see `prepare`): claims, reads the mission, its
     * agent and inputs, judges them, and resolves the inputs.
     */
    const check = Effect.fnUntraced(function* (
      userId: string,
      mission: MissionRef,
      iterationId: string,
      now: number,
      also: ReadonlyArray<RecordRef>,
      claimed: Effect.Effect<void>,
    ): Effect.fn.Return<Checked, SqlError> {
      // Prepared statements (DB_PREPARED_STATEMENTS): the read in the shape whose generic plan
      // serves every user, planned once (currentMission.ts runReadQuery); otherwise planned each time.
      const results = yield* pipelinedTransaction(
        sqlClient,
        [
          asynchronousCommit,
          claimStatement(inCluster, { userId, missionId: mission.id, iterationId, owner, ...claimTimes(now, claimTtlMs) }),
          ...(prepared
            ? [genericPlans, runRead(userId, mission.id, also)]
            : [runReadQuery(sqlClient, eventLog.timeColumn, userId, mission.id, also, "planned-each-time")]),
        ],
        { commitWithStatements: true },
      ).pipe(Effect.onInterrupt(() => claimed))
      const scoped = results[1]
      const raw = results[results.length - 1]
      if (Number(scoped?.[0]?.claimed ?? 0) === 0) return skipped("claimed-elsewhere")
      yield* claimed

      // The snapshot may be stale: a cheap read spares an LLM call for a mission paused, deleted,
      // rescheduled or already planned (by another instance) since. The write-back checks again.
      // The mission's agent comes with it, in the same query (SPEC §14).
      const read = judgeRunRead(raw ?? [], mission.id, iterationId, config.defaultTimezone, also)
      const { current, agent: resolution } = read
      if (current._tag === "Skip") {
        yield* Effect.logInfo(`run skipped: ${current.detail}`).pipe(Effect.annotateLogs({ reason: current.reason }))
        return skipped(current.reason)
      }
      const dueAt = current.mission.nextRunAt === null ? undefined : parseInstant(current.mission.nextRunAt)
      if (dueAt === undefined || dueAt > now) {
        yield* Effect.logInfo("run skipped: the mission was rescheduled and is not due").pipe(
          Effect.annotateLogs({ reason: "not-due", nextRunAt: current.mission.nextRunAt ?? "none" }),
        )
        return skipped("not-due")
      }
      if (resolution._tag === "Malformed") {
        return yield* agentSkip(
          { reason: "agent-malformed", detail: resolution.error.message },
          `the mission's agent record does not decode: ${resolution.error.message}`,
        )
      }
      const agent: Agent | undefined = resolution._tag === "Agent" ? resolution.agent : undefined
      const decision = runDecision(agent)
      if (decision !== "ran") return yield* agentSkip({ reason: decision }, `the mission's agent is ${agent?.state ?? "inactive"}`)

      // Plan from the mission as it stands (latest objective, feedback and iterations), not the snapshot.
      // The grant is read from the record as it stands now (a revoked grant is null), for this run only.
      const inputs = yield* resolvers.resolveForRun(
        userId,
        current.mission.inputs,
        { missionId: mission.id, iterationId, grant: current.record.grant },
        read.records,
      )
      // judgeRunRead gives `actor` with every appendable mission.
      return { _tag: "Ready", basis: { current, missionRows: read.missionRows, actor: read.actor! }, agent, inputs } as const
    })

    /** Claim, check the mission as it stands now, resolve, plan: everything before the write-back. */
    const prepare = Effect.fnUntraced(function* (
      userId: string,
      mission: MissionRef,
      iterationId: string,
      attemptId: string,
      heldUsage: Ref.Ref<ReadonlyArray<UsageEntry>>,
      /** Marks the claim as this run's: once taken, or when it may have been (interrupted under way). */
      claimed: Effect.Effect<void>,
    ): Effect.fn.Return<Planned, SqlError | MissionTimeout> {
      // The caller's Clock, not the server's, so TestClock drives expiry like every other timer.
      const now = yield* Clock.currentTimeMillis
      // One transaction in one round trip (issue 16, `pipelinedTransaction` with
      // `commitWithStatements`): the claim in the scoping statement and, sent with it, the mission,
      // its agent and the inputs the snapshot names, and COMMIT. The read is made (and dropped) even
      // when another runner holds the claim. The COMMIT goes with them, so a run interrupted while
      // they are under way (its deadline, a drain) may have committed its claim without knowing: such
      // a run counts as holding it, and its interruption gives it back (a release of a claim it never
      // took deletes nothing: it deletes only this owner's). A failed sequence committed nothing.
      // Inputs that changed since the snapshot, and encrypted ones, are read after it in a scope of their own.
      // Its COMMIT does not wait for the WAL flush (`synchronous_commit` off for this transaction
      // only): a flush costs milliseconds per commit, and a run made two. A claim lost in a server
      // crash costs at most a second LLM call for the run, never a second iteration: the write-back
      // (a synchronous commit, which flushes the WAL up to and past this one) checks the mission as
      // it stands for the run's iteration id.
      const also = resolvers.plainRefs(mission.inputs)
      const checked = yield* check(userId, mission, iterationId, now, also, claimed).pipe(withSpanWhenTracing("checkMission"))
      if (checked._tag !== "Ready") return checked
      const { basis, agent } = checked
      const fresh = basis.current.mission

      const resolveAndPlan = planner.plan({
        mission: fresh,
        resolvedInputs: checked.inputs.resolved,
        unavailableInputs: checked.inputs.unavailable,
        ...(agent === undefined ? {} : { agent }),
        // The last answer's usage is held for the write-back transaction (SPEC §14).
        run: { userId, iterationId, attemptId, ...(Option.isSome(ledger) ? { heldUsage } : {}) },
      })
      // An agent's runs across the user's missions hold one of its maxConcurrentMissions permits.
      const capped =
        agent === undefined || Option.isNone(permits)
          ? resolveAndPlan
          : permits.value.withPermit({ userId, agentId: agent.id, cap: agent.maxConcurrentMissions })(resolveAndPlan)

      return yield* capped.pipe(
        withSpanWhenTracing("plan"),
        Effect.map((result): Planned => ({ _tag: "Plan", result, mission: fresh, basis })),
        Effect.catchAll((error): Effect.Effect<Planned, MissionTimeout | SqlError> => {
          if (error._tag === "SqlError") return Effect.fail(error)
          if (error._tag === "BudgetExhausted") {
            return agentSkip(
              {
                reason: "skipped-budget",
                budget: error.budget,
                freeAt: error.freeAtMs === undefined ? null : new Date(error.freeAtMs).toISOString(),
              },
              error.message,
            )
          }
          if (error._tag !== "PlanRejected" && isTransientLlmError(error)) {
            // The client retries transient errors until the deadline; one that surfaces anyway is
            // treated as an exhausted deadline: nothing written, the mission stays due.
            return Effect.logWarning(`the LLM client gave up on a transient error: ${error.message}`).pipe(
              Effect.zipRight(Effect.fail(new MissionTimeout({ timeoutMs }))),
            )
          }
          const { summary, phase } = describeFailure(error)
          return Effect.succeed({ _tag: "Failed", error, phase, summary, basis })
        }),
      )
    })

    /**
     * The write-back did not commit them (skipped, rolled back, failed, interrupted): the spend
     * happened all the same, so they are recorded on their own. Keyed per answer, so a write-back
     * whose COMMIT landed but whose acknowledgement was lost is not counted twice.
     */
    const recordHeld = Effect.fnUntraced(function* (userId: string, heldUsage: Ref.Ref<ReadonlyArray<UsageEntry>>) {
      const held = yield* Ref.getAndSet(heldUsage, [])
      if (held.length === 0 || Option.isNone(ledger)) return
      yield* ledger.value.record(userId, held).pipe(
        Effect.retry(heldUsageRetry),
        Effect.catchAll((e) => Effect.logWarning(`could not record the run's last LLM answer's token usage: ${e.message}`)),
      )
    })

    /** Claim to commit: the part the deadline bounds. */
    const bounded = Effect.fnUntraced(function* (
      userId: string,
      mission: MissionRef,
      iterationId: string,
      attemptId: string,
      startedAt: Date,
      heldUsage: Ref.Ref<ReadonlyArray<UsageEntry>>,
      /** Marks the claim as this run's (see prepare). */
      claimed: Effect.Effect<void>,
      giveBackClaim: Effect.Effect<void>,
    ) {
      const planned = yield* prepare(userId, mission, iterationId, attemptId, heldUsage, claimed)
      if (planned._tag === "Skip") {
        if (planned.release === true) yield* giveBackClaim
        return planned.outcome
      }

      const finishedAt = new Date(yield* Clock.currentTimeMillis)
      let iteration: Iteration
      let parseFailures: number
      if (planned._tag === "Plan") {
        yield* updateMetrics((labels) => plansProducedTotal.unsafeUpdate(1, labels))
        const { plan, rejectedAnswers } = planned.result
        parseFailures = rejectedAnswers
        iteration = plannedIteration({ id: iterationId, startedAt, finishedAt, summary: plan.summary, steps: plan.steps })
      } else {
        const { error, phase, summary } = planned
        parseFailures = error._tag === "PlanRejected" ? error.attempts : 0
        yield* Metric.increment(Metric.tagged(missionErrorsTotal, "kind", error._tag))
        yield* Effect.logWarning(`planning failed for good; writing a failed iteration: ${error.message}`).pipe(
          Effect.annotateLogs({ error: error._tag, phase }),
        )
        iteration = failedIteration({
          id: iterationId,
          startedAt,
          finishedAt,
          summary,
          errorName: error._tag,
          errorMessage: error.message,
          phase,
        })
      }

      const written = yield* writeBack
        .append({ userId, missionId: mission.id, iteration, basis: planned.basis, usage: yield* Ref.get(heldUsage) })
        .pipe(withSpanWhenTracing("writeBack"))
      // Committed with the iteration: nothing left to record on its own.
      if (written._tag === "Written") yield* Ref.set(heldUsage, [])
      const planProduced = planned._tag === "Plan"
      if (written._tag === "Skipped") {
        return { _tag: "Skipped", reason: written.reason, planProduced, parseFailures } satisfies RunOutcome
      }
      yield* updateMetrics((labels) => {
        plansWrittenBackTotal.unsafeUpdate(1, labels)
        ranDecisions.unsafeUpdate(1, labels)
      })
      // Built only when it is written: its annotations cost a run more than the check (issue 16).
      if (yield* logsAt(LogLevel.Info)) {
        yield* Effect.logInfo("iteration written back").pipe(
          Effect.annotateLogs({
            overallStatus: iteration.overallStatus,
            steps: iteration.plan.length,
            nextRunAt: written.nextRunAt ?? "none",
            // SPEC §3: token usage goes to metrics (the LLM client) and to this run's log line.
            ...(planned._tag === "Plan" ? tokensOf(planned.result.usage) : {}),
          }),
        )
      }
      return {
        _tag: "Written",
        iterationId,
        overallStatus: iteration.overallStatus === "failed" ? "failed" : iteration.plan.length === 0 ? "approved" : "awaiting-review",
        steps: iteration.plan.length,
        nextRunAt: written.nextRunAt,
        planProduced,
        parseFailures,
        ...(planned._tag === "Failed" ? { failure: planned.error._tag } : {}),
      } satisfies RunOutcome
    })

    const runFrom = Effect.fnUntraced(function* ({ userId, mission }: RunRequest, iterationId: string, startMs: number, attemptId: string) {
      const key = { userId, missionId: mission.id, iterationId }
      const startedAt = new Date(startMs)
      // Set once the claim is ours, or may be (see prepare; this run's fiber only).
      let holdsClaim = false
      /** The run's answer(s) not yet recorded: they go into the write-back transaction. */
      const heldUsage = yield* Ref.make<ReadonlyArray<UsageEntry>>([])
      const giveBackClaim = Effect.suspend(() =>
        holdsClaim
          ? store.releaseClaim(key, owner).pipe(
              Effect.timeout("5 seconds"),
              Effect.catchAll((e) => Effect.logWarning(`could not release the run's claim: ${String(e)}`)),
            )
          : Effect.void,
      )
      const claimed = Effect.sync(() => {
        holdsClaim = true
      })
      // While the LLM breaker is open the run waits here, before it takes its deadline (SPEC §14).
      if (Option.isSome(breaker)) yield* breaker.value.awaitReady
      const outcome = yield* bounded(userId, mission, iterationId, attemptId, startedAt, heldUsage, claimed, giveBackClaim).pipe(
        // Past the deadline the run is interrupted wherever it is; in the write-back, its
        // transaction rolls back whole (a COMMIT already under way finishes: the retry then finds
        // the iteration written and skips).
        withDeadline({ duration: config.missionTimeout, onTimeout: () => new MissionTimeout({ timeoutMs }) }),
        // Failed or interrupted before its commit, the run wrote nothing: give the claim back for the retry.
        Effect.onError(() => giveBackClaim),
        // Outside the deadline: usage the write-back did not commit is recorded whatever the run's end.
        Effect.ensuring(recordHeld(userId, heldUsage)),
      )

      if (outcome._tag === "Skipped") {
        yield* Metric.increment(Metric.tagged(missionsSkippedTotal, "reason", outcome.reason))
      }
      return outcome as RunOutcome
    })

    const run: MissionRunnerShape["run"] = (request) => {
      const { userId, mission } = request
      const iterationId = iterationIdFor(mission.id, mission.nextRunAt)
      return Effect.flatMap(Clock.currentTimeMillis, (startMs) =>
        runFrom(request, iterationId, startMs, randomUUID()).pipe(
          Effect.tap(pruneClaims),
          Effect.onExit((exit) =>
            Effect.clockWith((clock) => {
              const end = clock.unsafeCurrentTimeMillis()
              const timed = updateMetrics((labels) => missionRunDuration.unsafeUpdate(Math.max(0, end - startMs) / 1000, labels))
              if (Exit.isSuccess(exit) || Cause.isInterruptedOnly(exit.cause)) return timed
              const kind = errorKind(exit.cause)
              return Effect.all([
                timed,
                Metric.increment(Metric.tagged(missionErrorsTotal, "kind", kind)),
                Effect.logWarning(`mission run failed: ${kind}`).pipe(Effect.annotateLogs({ error: kind })),
              ], { discard: true })
            }),
          ),
        ),
      ).pipe(
        withSpanWhenTracing("MissionRunner.run", {
          attributes: { userId, missionId: mission.id, iterationId, scheduledFor: mission.nextRunAt ?? "none" },
        }),
        Effect.annotateLogs({ userId, missionId: mission.id, iterationId }),
      )
    }

    return { run } satisfies MissionRunnerShape
  })

export class MissionRunner extends Effect.Service<MissionRunner>()("mana-ai/MissionRunner", { effect: makeMissionRunner() }) {
  /** With another instance id (cluster mode), claim margin or prune interval (tests). */
  static readonly withOptions = (
    options: MissionRunnerOptions,
  ): Layer.Layer<
    MissionRunner,
    never,
    MissionStore | InputResolvers | Planner | WriteBack | RunnerConfig | SqlClient.SqlClient | EventLogSchema
  > =>
    // AgentPermits and LlmBreaker are taken when present (runnerServicesLayer provides both).
    Layer.effect(MissionRunner, Effect.map(makeMissionRunner(options), MissionRunner.make))
}
