/**
 * 3. Scheduling precision: missions due at times spread evenly over one minute, no LLM backlog;
 * lateness of each run's start after its nextRunAt, p50 and p99.
 * 4. Overhead per run, from the same runs: the time a run spends outside its LLM calls (claim,
 * mission check, input resolvers, planner parsing, write-back), p50 and p99.
 */
import { Duration, Effect } from "effect"
import type { BenchLlmStandIn } from "../support/llmStandIn.js"
import type { Figure } from "../support/report.js"
import { round, roundSummary, summarize } from "../support/stats.js"
import { POOL_MAX } from "../support/app.js"
import { overheadParts, overheadSplit } from "./throughput.js"
import { runWorkload } from "./workload.js"

export interface PrecisionOptions {
  readonly ownerUrl: string
  readonly standIn: BenchLlmStandIn
  readonly missions: number
  readonly users: number
  readonly spreadMs: number
  /** Time between seeding and the first mission falling due: discovery and actor start-up happen in it. */
  readonly leadMs: number
  readonly log: (line: string) => Effect.Effect<void>
}

const LATENCY_MS = 200

export const measurePrecision = (options: PrecisionOptions) =>
  Effect.gen(function* () {
    const perUser = Math.ceil(options.missions / options.users)
    const result = yield* runWorkload({
      name: "precision",
      ownerUrl: options.ownerUrl,
      standIn: options.standIn,
      latencyMs: LATENCY_MS,
      // Production defaults (GLOBAL_CONCURRENCY 16, USER_CONCURRENCY 2): ~33 runs/s × 0.2 s keeps ~7 LLM calls in flight.
      config: {},
      workload: (seededAt) => ({
        users: options.users,
        missionsPerUser: perUser,
        firstDueAt: seededAt + options.leadMs,
        spreadMs: options.spreadMs,
        withGoal: true,
      }),
      stopAfterWritten: options.users * perUser,
      deadline: Duration.millis(options.leadMs + options.spreadMs + 60_000),
      log: options.log,
    })
    const runs = result.recorder.runs.filter((r) => r.scheduledFor !== null)
    const lateness = summarize(runs.map((r) => r.startedAt - r.scheduledFor!))
    const written = result.recorder.runs.filter((r) => r.outcome.startsWith("Written"))
    const overhead = summarize(written.map((r) => r.t1 - r.t0 - r.llmMs))
    const overlaps = (r: (typeof written)[number]) => result.recorder.refreshes.some((p) => p.t0 < r.t1 && p.t1 > r.t0)
    const during = written.filter(overlaps)
    const outside = written.filter((r) => !overlaps(r))
    const detail = {
      missions: result.missions,
      users: options.users,
      spreadSeconds: options.spreadMs / 1000,
      leadSeconds: options.leadMs / 1000,
      runsStarted: runs.length,
      written: result.recorder.written,
      timedOut: result.timedOut,
      llmLatencyMs: LATENCY_MS,
      llmMaxInFlight: result.standIn.maxInFlight,
      cpuCoresInUse: result.cpu,
      runnerMainThread: result.mainThread,
      runnerThreads: result.threads,
      poolMax: POOL_MAX,
      sessionsOpened: result.sessionsOpened,
      eventLoopLagMs: roundSummary(summarize(result.lagMs)),
      discoveryPasses: result.recorder.refreshes.length,
      discoveryPassMs: roundSummary(summarize(result.recorder.refreshes.map((r) => r.t1 - r.t0))),
      outcomes: Object.fromEntries(
        [...new Set(result.recorder.runs.map((r) => r.outcome))].map((o) => [o, result.recorder.runs.filter((r) => r.outcome === o).length]),
      ),
    }
    const figures: Array<Figure> = [
      {
        id: "precision.lateness.p50",
        label: `3. scheduling lateness p50 (${result.missions} over ${options.spreadMs / 1000} s)`,
        value: lateness.p50,
        unit: "ms",
        detail: { ...detail, latenessMs: roundSummary(lateness) },
      },
      {
        id: "precision.lateness.p99",
        label: "3. scheduling lateness p99",
        value: lateness.p99,
        unit: "ms",
        target: { op: "<", value: 250, text: "< 250 ms" },
      },
      {
        id: "overhead.p50",
        label: "4. overhead per run outside the LLM call p50",
        value: overhead.p50,
        unit: "ms",
        detail: {
          runs: written.length,
          overheadMs: roundSummary(overhead),
          ...overheadParts(result.recorder.runs),
          // Runs that overlapped a discovery pass vs. the rest: does discovery hold the runs up?
          overheadMsDuringDiscovery: roundSummary(summarize(during.map((r) => r.t1 - r.t0 - r.llmMs))),
          overheadMsOutsideDiscovery: roundSummary(summarize(outside.map((r) => r.t1 - r.t0 - r.llmMs))),
        },
      },
      {
        id: "overhead.p99",
        label: "4. overhead per run outside the LLM call p99",
        value: overhead.p99,
        unit: "ms",
        target: { op: "<", value: 20, text: "< 20 ms" },
      },
    ]
    const split = overheadSplit(written.filter((r) => r.llmCalls > 0))
    yield* options.log(
      `precision: lateness p50 ${round(lateness.p50)} ms, p99 ${round(lateness.p99)} ms; overhead p99 ${round(overhead.p99)} ms` +
        ` (less the main thread's run-queue wait: p99 ${split.overheadLessRunQueueMs?.p99 ?? "?"} ms; slowest 1 %: ${JSON.stringify(split.overheadSlowest1pct ?? {})};` +
        ` runner main thread ${JSON.stringify(result.mainThread)}; ${result.sessionsOpened} connections opened, pool of ${POOL_MAX})`,
    )
    return figures
  })
