/**
 * 1. Throughput: users × 5 due missions, LLM latency 200 ms, GLOBAL_CONCURRENCY=64,
 * USER_CONCURRENCY=2: missions written back per second ÷ the LLM-bound limit (64 / 0.2 s per LLM
 * request a run makes), in both planner modes with the same stand-in latency: PLANNER_MODE=tools (the
 * default; two requests per run: the calls, then the summary once they are answered) and json (one).
 * The same workload with GLOBAL_CONCURRENCY=1, sampled over its first runs, is the one-at-a-time baseline.
 * Rates count from the first run's start to the last counted write, so discovery and actor start-up
 * before the first run are not in them (reported separately) but everything after is.
 */
import { Effect } from "effect"
import type { PlannerMode } from "../../src/services/AppConfig.js"
import type { BenchLlmStandIn } from "../support/llmStandIn.js"
import type { RunRecord } from "../support/probes.js"
import type { Figure } from "../support/report.js"
import { round, roundSummary, summarize } from "../support/stats.js"
import { runWorkload, type WorkloadResult } from "./workload.js"

export interface ThroughputOptions {
  readonly ownerUrl: string
  readonly standIn: BenchLlmStandIn
  readonly users: number
  readonly baselineSample: number
  readonly log: (line: string) => Effect.Effect<void>
}

const LATENCY_MS = 200
const GLOBAL = 64
const USER = 2
const PER_USER = 5
/** LLM requests per run with the stand-in's fixed answers: tools mode asks again after the calls. */
const REQUESTS_PER_RUN: Record<PlannerMode, number> = { tools: 2, json: 1 }

const written = (runs: ReadonlyArray<RunRecord>) => runs.filter((r) => r.outcome.startsWith("Written"))

/** Writes per second from the first run's start to the n-th write's end. */
const rateOf = (result: WorkloadResult, n: number) => {
  const ends = written(result.recorder.runs)
    .map((r) => r.t1)
    .sort((a, b) => a - b)
    .slice(0, n)
  const firstStart = Math.min(...result.recorder.runs.map((r) => r.t0))
  const seconds = (ends[ends.length - 1]! - firstStart) / 1000
  return { rate: ends.length / seconds, seconds, count: ends.length, firstStart }
}

/** One-at-a-time rate: writes per second between the first and the n-th write (no start-up in it). */
const rateBetweenWrites = (result: WorkloadResult, n: number) => {
  const ends = written(result.recorder.runs)
    .map((r) => r.t1)
    .sort((a, b) => a - b)
    .slice(0, n)
  const seconds = (ends[ends.length - 1]! - ends[0]!) / 1000
  return { rate: (ends.length - 1) / seconds, seconds, count: ends.length }
}

/** Rate over the middle 80 % of writes (no fill or drain). */
const steadyRate = (result: WorkloadResult) => {
  const ends = written(result.recorder.runs)
    .map((r) => r.t1)
    .sort((a, b) => a - b)
  const lo = Math.floor(ends.length * 0.1)
  const hi = Math.floor(ends.length * 0.9)
  return (hi - lo) / ((ends[hi]! - ends[lo]!) / 1000)
}

export const overheadOf = (runs: ReadonlyArray<RunRecord>) =>
  summarize(written(runs).map((r) => r.t1 - r.t0 - r.llmMs))

/** Where the overhead sits: before the first LLM call (claim, check, resolvers) and after the last (write-back). */
export const overheadParts = (runs: ReadonlyArray<RunRecord>) => {
  const withLlm = written(runs).filter((r) => r.llmCalls > 0)
  return {
    beforeLlmMs: roundSummary(summarize(withLlm.map((r) => r.llmFirstAt - r.t0))),
    afterLlmMs: roundSummary(summarize(withLlm.map((r) => r.t1 - r.llmLastEnd))),
    llmCallMs: roundSummary(summarize(withLlm.map((r) => r.llmMs / r.llmCalls))),
    ...overheadSplit(withLlm),
  }
}

/**
 * The overhead by what the runner's main thread did meanwhile (probes.ts): on a core, waiting on a
 * run queue for a core other processes held, or asleep (Postgres, the pool, locks, timers). For the
 * whole distribution and for the slowest 1 % of runs (their means): on the shared machine a tail
 * made of run-queue wait is the machine's, one made of sleep is a wait on something outside the
 * thread, one made of on-core time is this process's own work queued ahead of the run.
 */
export const overheadSplit = (runs: ReadonlyArray<RunRecord>) => {
  const rows = runs
    .filter((r) => !Number.isNaN(r.runQueueMs))
    .map((r) => {
      const overhead = r.t1 - r.t0 - r.llmMs
      return { t0: r.t0, overhead, onCore: r.threadRunMs, runQueue: r.runQueueMs, asleep: overhead - r.threadRunMs - r.runQueueMs }
    })
  if (rows.length === 0) return {}
  const firstStart = Math.min(...rows.map((x) => x.t0))
  rows.sort((a, b) => b.overhead - a.overhead)
  const tail = rows.slice(0, Math.max(1, Math.ceil(rows.length / 100)))
  const mean = (f: (x: (typeof rows)[number]) => number) => Math.round((tail.reduce((a, x) => a + f(x), 0) / tail.length) * 100) / 100
  return {
    overheadMainThreadOnCoreMs: roundSummary(summarize(rows.map((x) => x.onCore))),
    overheadMainThreadRunQueueMs: roundSummary(summarize(rows.map((x) => x.runQueue))),
    overheadMainThreadAsleepMs: roundSummary(summarize(rows.map((x) => x.asleep))),
    overheadLessRunQueueMs: roundSummary(summarize(rows.map((x) => x.overhead - x.runQueue))),
    overheadSlowest1pct: {
      runs: tail.length,
      overheadMs: mean((x) => x.overhead),
      onCoreMs: mean((x) => x.onCore),
      runQueueMs: mean((x) => x.runQueue),
      asleepMs: mean((x) => x.asleep),
      // When each of them started, seconds after the first run's start, in order: a tail bunched in
      // time (start-up, a pass, a collection) reads differently from one spread over the whole run.
      startedAtSeconds: tail.map((x) => Math.round((x.t0 - firstStart) / 100) / 10).sort((a, b) => a - b),
    },
  }
}

export const measureThroughput = (options: ThroughputOptions) =>
  Effect.gen(function* () {
    const missions = options.users * PER_USER
    const workload = (seededAt: number) => ({
      users: options.users,
      missionsPerUser: PER_USER,
      firstDueAt: seededAt - 60_000,
      spreadMs: 0,
      withGoal: true,
    })
    const full = (mode: PlannerMode) =>
      Effect.gen(function* () {
        const limit = GLOBAL / ((LATENCY_MS * REQUESTS_PER_RUN[mode]) / 1000)
        const result = yield* runWorkload({
          name: `throughput G=${GLOBAL} ${mode}`,
          ownerUrl: options.ownerUrl,
          standIn: options.standIn,
          latencyMs: LATENCY_MS,
          config: { globalConcurrency: GLOBAL, userConcurrency: USER, plannerMode: mode },
          workload,
          stopAfterWritten: missions,
          deadline: "180 seconds",
          log: options.log,
        })
        const rate = rateOf(result, missions)
        const prefix = mode === "tools" ? "throughput" : "throughput.json"
        const figures: Array<Figure> = [
          {
            id: `${prefix}.ratio`,
            label: `1. throughput ÷ LLM-bound limit (${options.users}×${PER_USER}, G=${GLOBAL}, PLANNER_MODE=${mode})`,
            value: rate.rate / limit,
            unit: "",
            target: { op: ">=", value: 0.9, text: "≥ 0.90" },
            detail: {
              plannerMode: mode,
              missions,
              written: result.recorder.written,
              runsEnded: result.recorder.runs.length,
              timedOut: result.timedOut,
              definition: `writes per second from the first run's start to the last write; limit = G / (latency × ${REQUESTS_PER_RUN[mode]} requests per run)`,
              ratePerSecond: round(rate.rate, 1),
              limitPerSecond: limit,
              windowSeconds: round(rate.seconds, 2),
              steadyRatePerSecond: round(steadyRate(result), 1),
              startupSecondsBeforeFirstRun: round((rate.firstStart - result.appStartedAt) / 1000, 2),
              benchProcessCpuPerWallSecond: round(result.cpuPerWallSecond, 2),
              cpuCoresInUse: result.cpu,
              runnerThreads: result.threads,
              eventLoopLagMs: roundSummary(summarize(result.lagMs)),
              // This process's CPU (all threads) from start-up to the last write, per mission written.
              cpuMsPerWrittenRun: round(result.cpuMs / result.recorder.written, 2),
              // The runner role's own backends over the same span (other sessions on the server left out), per mission written.
              postgresCpuMsPerWrittenRun: round((result.postgresCpuS * 1000) / result.recorder.written, 2),
              llmRequests: result.standIn.requests,
              llmRequestsPerWrittenRun: round(result.standIn.requests / Math.max(1, result.recorder.written), 2),
              llmMaxInFlight: result.standIn.maxInFlight,
              llmLatencyMs: LATENCY_MS,
              globalConcurrency: GLOBAL,
              userConcurrency: USER,
              overheadMsUnderLoad: roundSummary(overheadOf(result.recorder.runs)),
              ...overheadParts(result.recorder.runs),
            },
          },
          {
            id: `${prefix}.rate`,
            label: `1. throughput, missions written back per second (PLANNER_MODE=${mode})`,
            value: rate.rate,
            unit: "/s",
          },
        ]
        return { rate, figures }
      })

    const tools = yield* full("tools")
    const json = yield* full("json")
    const fullRate = tools.rate
    const figures: Array<Figure> = [...tools.figures, ...json.figures]
    if (options.baselineSample <= 0) return figures
    const base = yield* runWorkload({
      name: "throughput G=1",
      ownerUrl: options.ownerUrl,
      standIn: options.standIn,
      latencyMs: LATENCY_MS,
      config: { globalConcurrency: 1, userConcurrency: USER },
      workload,
      stopAfterWritten: options.baselineSample,
      deadline: "60 seconds",
      log: options.log,
    })
    const baseRate = rateBetweenWrites(base, options.baselineSample)
    const baseFromFirstStart = rateOf(base, options.baselineSample)
    figures.push(
      {
        id: "throughput.baseline.rate",
        label: `1. baseline G=1, first ${options.baselineSample} writes`,
        value: baseRate.rate,
        unit: "/s",
        detail: {
          sample: options.baselineSample,
          written: base.recorder.written,
          timedOut: base.timedOut,
          definition: "writes per second between the first and the last sampled write",
          windowSeconds: round(baseRate.seconds, 2),
          rateFromFirstRunStart: round(baseFromFirstStart.rate, 2),
          llmMaxInFlight: base.standIn.maxInFlight,
          runDurationMs: roundSummary(summarize(written(base.recorder.runs).map((r) => r.t1 - r.t0))),
        },
      },
      {
        id: "throughput.vs.baseline",
        label: `1. throughput G=${GLOBAL} ÷ baseline G=1 (PLANNER_MODE=tools)`,
        value: fullRate.rate / baseRate.rate,
        unit: "×",
      },
    )

    return figures
  })
