/**
 * 6. Fair share: 10 hot users × 500 due (USER_CONCURRENCY=8, GLOBAL_CONCURRENCY=16) and 100 quiet
 * users × 1 due, LLM latency L = 200 ms, PLANNER_MODE=json (one LLM request per run, so a run's
 * request went out at its call's end − L, the stand-in's fixed latency; a little late, never early).
 * The quiet users' wait is from their nextRunAt (or the first run's start, when they came due before
 * the runner was up) to that request; total throughput is writes per second from the first run's
 * start to the last write ÷ the LLM-bound limit G / L, the backlog still running at the window's end
 * (`at-once`: until half the hot backlog and every quiet user were written; `spread`: until every quiet
 * user was written).
 *
 * Two arrangements: `at-once`, everything due when the runner starts (the issue's wording), and
 * `spread`, the quiet users coming due one by one while the hot backlog is being worked off.
 * At once, 100 quiet runs share 16 permits: whatever the order, the 99th quiet request cannot start
 * before round ⌈99 / 16⌉ − 1 = 6 (1.2 s), so the issue's 2 × L cannot hold at once for any grant.
 * Round-robin across users with waiting work serves each user once per cycle, the 10 hot users
 * included, so the 99th quiet user is served within the first ⌈(99 + 10) / 16⌉ − 1 = 6 rounds: the
 * at-once target is that fair bound plus the issue's 2 × L (8 × L). The issue's 2 × L is the target
 * of `spread`, quiet users arriving while the backlog runs: what "one user's backlog delays every
 * other user's due run" is about.
 */
import { Effect } from "effect"
import type { BenchLlmStandIn } from "../support/llmStandIn.js"
import type { RunRecord } from "../support/probes.js"
import type { Figure } from "../support/report.js"
import { seedSkewedDueMissions } from "../support/seed.js"
import { round, roundSummary, summarize } from "../support/stats.js"
import { runWorkload } from "./workload.js"

export type FairArrangement = "at-once" | "spread"

export interface FairShareOptions {
  readonly ownerUrl: string
  readonly standIn: BenchLlmStandIn
  readonly arrangements: ReadonlyArray<FairArrangement>
  readonly log: (line: string) => Effect.Effect<void>
}

const LATENCY_MS = 200
const GLOBAL = 16
const USER = 8
const HOT_USERS = 10
const HOT_DUE = 500
const QUIET_USERS = 100
/** spread: the first quiet user comes due this long after seeding, then one every QUIET_EVERY_MS. */
const QUIET_DELAY_MS = 10_000
const QUIET_EVERY_MS = 250
/** at-once: the writes the window lasts for, half the hot backlog and every quiet user. */
const AT_ONCE_WRITTEN = (HOT_USERS * HOT_DUE) / 2 + QUIET_USERS

/**
 * At once: rounds of L before round-robin has served the 99th percentile quiet user, every hot user
 * taking one turn in the same cycle (6 with these sizes; no order does better than ⌈99 / 16⌉ − 1).
 */
const fairRounds = Math.ceil((Math.ceil(0.99 * QUIET_USERS) + HOT_USERS) / GLOBAL) - 1

const written = (runs: ReadonlyArray<RunRecord>) => runs.filter((r) => r.outcome.startsWith("Written"))

export const measureFairShare = (options: FairShareOptions) =>
  Effect.gen(function* () {
    const figures: Array<Figure> = []
    const limit = GLOBAL / (LATENCY_MS / 1000)
    const missions = HOT_USERS * HOT_DUE + QUIET_USERS
    for (const arrangement of options.arrangements) {
      const result = yield* runWorkload({
        name: `fair share ${arrangement}`,
        ownerUrl: options.ownerUrl,
        standIn: options.standIn,
        latencyMs: LATENCY_MS,
        config: { globalConcurrency: GLOBAL, userConcurrency: USER, plannerMode: "json" },
        workload: () => ({ users: 0, missionsPerUser: 0, firstDueAt: 0, spreadMs: 0, withGoal: false }),
        seed: (db, seededAt) =>
          seedSkewedDueMissions(db, {
            hotUsers: HOT_USERS,
            hotPerUser: HOT_DUE,
            quietUsers: QUIET_USERS,
            dueAt: seededAt - 60_000,
            quietFirstDueAt: arrangement === "at-once" ? seededAt - 60_000 : seededAt + QUIET_DELAY_MS,
            quietSpreadMs: arrangement === "at-once" ? 0 : QUIET_EVERY_MS,
          }),
        // at-once: over once half the hot backlog and the quiet users are written (the quiet users are
        //   all written in the first seconds), a window of about 33 s, as long as spread's; the backlog
        //   runs on at the same pace after it (round-robin keeps all ten hot users at work to their last
        //   runs), so its drain, ⌈5,000 / 16⌉ × L ≈ 63 s, was 32 s of the bench's time measuring more of
        //   the same (the whole drain read 0.97–0.98 of the limit in the last three quiet full runs).
        // spread: over once every quiet user has been served; the hot backlog still runs then (the last
        //   quiet user comes due at about 35 s), so the throughput is that of the backlog while the quiet
        //   users come and go.
        stopAfterWritten: arrangement === "at-once" ? AT_ONCE_WRITTEN : missions,
        ...(arrangement === "spread" ? { stopAfterWrittenFor: { userPrefix: "quiet-", count: QUIET_USERS } } : {}),
        deadline: "200 seconds",
        log: options.log,
      })
      const runs = written(result.recorder.runs)
      const firstStart = Math.min(...result.recorder.runs.map((r) => r.t0))
      const lastEnd = Math.max(...runs.map((r) => r.t1))
      const rate = runs.length / ((lastEnd - firstStart) / 1000)
      const waitOf = (r: RunRecord) => r.llmLastEnd - LATENCY_MS - Math.max(r.scheduledFor ?? firstStart, firstStart)
      const quiet = runs.filter((r) => r.userId.startsWith("quiet-") && r.llmCalls > 0)
      const hot = runs.filter((r) => r.userId.startsWith("hot-") && r.llmCalls > 0)
      // A quiet user not written inside the window counts as never served: the p99 then fails its target.
      const quietWait = summarize([...quiet.map(waitOf), ...Array<number>(Math.max(0, QUIET_USERS - quiet.length)).fill(Number.POSITIVE_INFINITY)])
      const suffix = arrangement === "at-once" ? "" : ".spread"
      const label = arrangement === "at-once" ? "all due at once" : `quiet due one per ${QUIET_EVERY_MS} ms during the backlog`
      figures.push(
        {
          id: `fairShare.quietWait.p99${suffix}`,
          label: `6. quiet users' p99 wait nextRunAt → LLM request (${label})`,
          value: quietWait.p99,
          unit: "ms",
          target:
            arrangement === "at-once"
              ? { op: "<=", value: (fairRounds + 2) * LATENCY_MS, text: `≤ ${(fairRounds + 2) * LATENCY_MS} ms (${fairRounds + 2} × L)` }
              : { op: "<=", value: 2 * LATENCY_MS, text: `≤ ${2 * LATENCY_MS} ms (2 × L)` },
          detail: {
            arrangement,
            quietWaitMs: roundSummary(quietWait),
            // Where a quiet run's wait goes: before its run starts (the actor's wake-up and a run slot),
            // and from its start to its LLM request (the pre-check and an LLM permit).
            quietWaitSplitMs: {
              toRunStart: roundSummary(summarize(quiet.map((r) => r.t0 - Math.max(r.scheduledFor ?? firstStart, firstStart)))),
              runStartToRequest: roundSummary(summarize(quiet.map((r) => r.llmLastEnd - LATENCY_MS - r.t0))),
            },
            hotWaitMs: roundSummary(summarize(hot.map(waitOf))),
            quietWritten: quiet.length,
            hotWritten: hot.length,
            timedOut: result.timedOut,
            definition: "request sent = the run's (only) LLM call's end − L; from max(nextRunAt, first run's start)",
            ...(arrangement === "at-once" ? { fairBoundRounds: fairRounds, lowerBoundRounds: Math.ceil(Math.ceil(0.99 * QUIET_USERS) / GLOBAL) - 1 } : {}),
          },
        },
        {
          id: `fairShare.throughput.ratio${suffix}`,
          label: `6. fair share throughput ÷ LLM-bound limit (${label})`,
          value: rate / limit,
          unit: "",
          target: { op: ">=", value: 0.9, text: "≥ 0.90" },
          detail: {
            missions,
            window:
              arrangement === "spread"
                ? "first run's start to the last write once every quiet user was written (the hot backlog still running)"
                : `first run's start to the last write once ${AT_ONCE_WRITTEN} runs were written (half the hot backlog, every quiet user)`,
            written: result.recorder.written,
            ratePerSecond: round(rate, 1),
            limitPerSecond: limit,
            windowSeconds: round((lastEnd - firstStart) / 1000, 2),
            llmRequests: result.standIn.requests,
            llmMaxInFlight: result.standIn.maxInFlight,
            eventLoopLagMs: roundSummary(summarize(result.lagMs)),
            cpuCoresInUse: result.cpu,
          },
        },
      )
    }
    return figures
  })
