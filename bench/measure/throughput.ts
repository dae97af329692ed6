/**
 * 1. Throughput: users × 5 due missions, LLM latency 200 ms, GLOBAL_CONCURRENCY=64,
 * USER_CONCURRENCY=2: missions written back per second ÷ the LLM-bound limit (64 / 0.2 s). The same
 * workload with GLOBAL_CONCURRENCY=1, sampled over its first runs, is the one-at-a-time baseline.
 * Rates count from the first run's start to the last counted write, so discovery and actor start-up
 * before the first run are not in them (reported separately) but everything after is.
 */
import { Effect } from "effect"
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
    const limit = GLOBAL / (LATENCY_MS / 1000)

    const full = yield* runWorkload({
      name: `throughput G=${GLOBAL}`,
      ownerUrl: options.ownerUrl,
      standIn: options.standIn,
      latencyMs: LATENCY_MS,
      config: { globalConcurrency: GLOBAL, userConcurrency: USER },
      workload,
      stopAfterWritten: missions,
      deadline: "180 seconds",
      log: options.log,
    })
    const fullRate = rateOf(full, missions)

    const figures: Array<Figure> = [
      {
        id: "throughput.ratio",
        label: `1. throughput ÷ LLM-bound limit (${options.users}×${PER_USER}, G=${GLOBAL})`,
        value: fullRate.rate / limit,
        unit: "",
        target: { op: ">=", value: 0.9, text: "≥ 0.90" },
        detail: {
          missions,
          written: full.recorder.written,
          runsEnded: full.recorder.runs.length,
          timedOut: full.timedOut,
          definition: "writes per second from the first run's start to the last write",
          ratePerSecond: round(fullRate.rate, 1),
          limitPerSecond: limit,
          windowSeconds: round(fullRate.seconds, 2),
          steadyRatePerSecond: round(steadyRate(full), 1),
          startupSecondsBeforeFirstRun: round((fullRate.firstStart - full.appStartedAt) / 1000, 2),
          benchProcessCpuPerWallSecond: round(full.cpuPerWallSecond, 2),
          cpuCoresInUse: full.cpu,
          eventLoopLagMs: roundSummary(summarize(full.lagMs)),
          // This process's CPU (all threads) from start-up to the last write, per mission written.
          cpuMsPerWrittenRun: round(full.cpuMs / full.recorder.written, 2),
          llmRequests: full.standIn.requests,
          llmMaxInFlight: full.standIn.maxInFlight,
          llmLatencyMs: LATENCY_MS,
          globalConcurrency: GLOBAL,
          userConcurrency: USER,
          overheadMsUnderLoad: roundSummary(overheadOf(full.recorder.runs)),
          ...overheadParts(full.recorder.runs),
        },
      },
      {
        id: "throughput.rate",
        label: `1. throughput, missions written back per second`,
        value: fullRate.rate,
        unit: "/s",
      },
    ]
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
        label: `1. throughput G=${GLOBAL} ÷ baseline G=1`,
        value: fullRate.rate / baseRate.rate,
        unit: "×",
      },
    )

    return figures
  })
