/** Every number an operator watches (SPEC §9 /metrics), prefixed mana_ai_ when exported. */
import * as Effect from "effect/Effect"
import * as FiberRef from "effect/FiberRef"
import * as Metric from "effect/Metric"
import * as MetricBoundaries from "effect/MetricBoundaries"
import type * as MetricLabel from "effect/MetricLabel"

/**
 * Several metric updates as one instruction of the run loop: what `Metric.update` / `Metric.increment`
 * do for each (the fiber's metric labels as extra tags, then the metric's own update), with the labels
 * read once. On a run's path each `Metric.update` costs four instructions (issue 16); call
 * `metric.unsafeUpdate(value, labels)` for counters and histograms inside `record`.
 */
export const updateMetrics = (record: (labels: ReadonlyArray<MetricLabel.MetricLabel>) => void): Effect.Effect<void> =>
  Effect.withFiberRuntime((fiber) => {
    record(fiber.getFiberRef(FiberRef.currentMetricLabels))
    return Effect.void
  })

/** `updateMetrics` for a step that also answers: `record`'s result, in the same one instruction. */
export const updateMetricsAnd = <A>(record: (labels: ReadonlyArray<MetricLabel.MetricLabel>) => A): Effect.Effect<A> =>
  Effect.withFiberRuntime((fiber) => Effect.succeed(record(fiber.getFiberRef(FiberRef.currentMetricLabels))))

const seconds = MetricBoundaries.exponential({ start: 0.005, factor: 2, count: 16 })

export const ticksTotal = Metric.counter("mana_ai_ticks_total", { description: "Discovery/run ticks started" })
export const tickOverlapsTotal = Metric.counter("mana_ai_tick_overlaps_total", { description: "Ticks skipped because one was under way" })
export const tickDuration = Metric.histogram("mana_ai_tick_duration_seconds", seconds, "Duration of one tick")

export const discoveryRowsRead = Metric.counter("mana_ai_discovery_rows_read_total", { description: "Event-log rows read by discovery" })
export const discoveryDuration = Metric.histogram("mana_ai_discovery_duration_seconds", seconds, "Duration of one incremental refresh")
export const clusterSnapshotsReadTotal = Metric.counter("mana_ai_cluster_snapshots_read_total", { description: "Cluster mode: mission snapshots read after the runner's shards changed (those of the shards gained)" })

export const plansProducedTotal = Metric.counter("mana_ai_plans_produced_total", { description: "Valid plans returned by the planner" })
export const plansWrittenBackTotal = Metric.counter("mana_ai_plans_written_back_total", { description: "Iterations appended to sync_changes" })
export const parseFailuresTotal = Metric.counter("mana_ai_parse_failures_total", { description: "Planner answers rejected by the parser" })
/** Tagged with kind = the error's tag (LlmTimeout, PlanRejected, MissionTimeout, SqlError, …). */
export const missionErrorsTotal = Metric.counter("mana_ai_mission_errors_total", { description: "Failed mission runs by kind" })
/** Tagged with reason. */
export const missionsSkippedTotal = Metric.counter("mana_ai_missions_skipped_total", { description: "Missions skipped (malformed, not active, already written, …) by reason" })
export const inputsSkippedTotal = Metric.counter("mana_ai_inputs_skipped_total", { description: "Mission inputs left out of the prompt, by reason" })
export const malformedRowsTotal = Metric.counter("mana_ai_malformed_rows_total", { description: "Event-log rows that could not be applied, by reason" })

export const llmRequestDuration = Metric.histogram("mana_ai_llm_request_duration_seconds", seconds, "Duration of one LLM HTTP request")
export const llmRequestsTotal = Metric.counter("mana_ai_llm_requests_total", { description: "LLM HTTP requests by outcome" })
export const llmTokensTotal = Metric.counter("mana_ai_llm_tokens_total", { description: "LLM tokens used, by kind (prompt, completion)" })
export const missionRunDuration = Metric.histogram("mana_ai_mission_run_duration_seconds", seconds, "Duration of one mission run")

export const actorsGauge = Metric.gauge("mana_ai_actors", { description: "User actors alive" })
export const quarantinedGauge = Metric.gauge("mana_ai_actors_quarantined", { description: "Users quarantined" })
export const runsInFlightGauge = Metric.gauge("mana_ai_runs_in_flight", { description: "Mission runs under way" })
export const memoryTrimsTotal = Metric.counter("mana_ai_memory_trims_total", { description: "Collections of a quiet process, by kind (shrink: compiled code dropped too; collect: garbage only; MEMORY_TRIM_CODE)" })
export const actorRestartsTotal = Metric.counter("mana_ai_actor_restarts_total", { description: "User actors restarted after a failure" })

// Mission Grant (SPEC §15). Tagged with table: the input's table name, never a record id or a value.
export const decryptsTotal = Metric.counter("mana_ai_decrypts_total", { description: "Encrypted fields decrypted under a Mission Grant, by table" })
export const grantScopeViolationsTotal = Metric.counter("mana_ai_grant_scope_violations_total", { description: "Mission inputs outside their grant's recordIds (never read), by table" })
/** Tagged with reason: not-configured, expired, mission-mismatch, malformed, wrap-rejected. */
export const grantSkipsTotal = Metric.counter("mana_ai_grant_skips_total", { description: "Runs whose Mission Grant could not be used, by reason" })
/** Tagged with reason (the audit row's). */
export const decryptFailuresTotal = Metric.counter("mana_ai_decrypt_failures_total", { description: "Inputs under a valid grant that could not be read (failed audit rows), by reason" })
/** Tagged with decision = ran | skipped-paused | skipped-archived | skipped-budget (SPEC §14). */
export const agentDecisionsTotal = Metric.counter("mana_ai_agent_decisions_total", { description: "Agent decisions per mission run, by decision" })
/** Tokens newly recorded in mana_ai.token_usage (each answer once; what the budgets count). */
export const tokensUsedTotal = Metric.counter("mana_ai_tokens_used_total", { description: "LLM tokens charged to the daily budgets" })
/** 1 while the LLM breaker is open or probing, 0 when closed. */
export const llmBreakerOpenGauge = Metric.gauge("mana_ai_llm_breaker_open", { description: "1 while the LLM breaker is open (no request starts), else 0" })
/** Tools mode: answers with tool calls (or the final text) per plan, repair turns not counted. */
export const plannerRounds = Metric.histogram(
  "mana_ai_planner_rounds",
  MetricBoundaries.linear({ start: 1, width: 1, count: 10 }),
  "Tool-calling rounds per plan",
)
/** Tagged with kind = the parser's rejection kind (unknown-tool, invalid-arguments, …). */
export const planRejectionsTotal = Metric.counter("mana_ai_plan_rejections_total", { description: "Planner answers rejected, by kind" })
export const discoveryReconciledTotal = Metric.counter("mana_ai_discovery_reconciled_total", { description: "Mission snapshots a reconciliation corrected (rows the incremental discovery missed)" })
