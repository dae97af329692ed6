/**
 * Stopwatches around the real services, as decorating layers: each MissionRunner.run records when
 * it started (vs. the mission's nextRunAt), how long it took, and how long its LLM calls took
 * (LlmClient.complete, the global permit wait included), so the run's own overhead is the rest.
 * A FiberRef ties each LLM call to the run whose fiber made it. Bench code: the recorder is a
 * plain array owned by one measurement.
 *
 * Where a run's time outside its LLM calls went, from the main thread's scheduler counters
 * (`/proc/self/schedstat`, read at the run's start and end and at each LLM call's start and end: a
 * few microseconds each): `threadRunMs`, the thread on a core (this run's steps and whatever else
 * the process ran meanwhile: other runs, discovery, the collector's share on this thread), and
 * `runQueueMs`, the thread runnable but waiting for a core another process held (the shared
 * machine's load). The rest of the overhead the thread slept: waiting for Postgres, a pool
 * connection, a lock, or a timer. Outside Linux both are NaN.
 */
import { openSync, readdirSync, readFileSync, readSync } from "node:fs"
import { Effect, Exit, FiberRef, Layer } from "effect"
import { LlmClient } from "../../src/services/LlmClient.js"
import { MissionRunner } from "../../src/services/MissionRunner.js"
import { MissionStore } from "../../src/services/MissionStore.js"
import { nowMs } from "./stats.js"

export interface RunRecord {
  readonly userId: string
  readonly missionId: string
  /** The mission's nextRunAt (epoch ms) as the actor handed it over; null when unscheduled. */
  readonly scheduledFor: number | null
  /** Epoch ms (Date.now) when run() was entered. */
  readonly startedAt: number
  /** performance clock, for durations. */
  readonly t0: number
  t1: number
  llmMs: number
  llmCalls: number
  /** performance clock: first LLM call entered, last one left (NaN without a call). */
  llmFirstAt: number
  llmLastEnd: number
  outcome: string
  /** Main thread outside the run's LLM calls: ms on a core, ms waiting on a run queue (see the header). */
  threadRunMs: number
  runQueueMs: number
  /** schedstat [run, wait] (ms) at the start of the current non-LLM stretch. */
  mark: [number, number]
}

/** The main thread's [on-CPU, run-queue wait] in ms since it started; NaN outside Linux. */
// Read through one kept descriptor at offset 0 (the kernel renders the file anew on each read): about
// 3-4 µs a read against 9-15 µs for readFileSync's open/read/close, which the runner's CPU figures
// would otherwise carry (six reads per tools-mode run).
let schedstatFd: number | undefined
const schedstatBuffer = Buffer.alloc(128)
export const mainThreadSchedstat = (): [number, number] => {
  try {
    schedstatFd ??= openSync("/proc/self/schedstat", "r")
    const length = readSync(schedstatFd, schedstatBuffer, 0, schedstatBuffer.length, 0)
    const [run, wait] = schedstatBuffer.toString("latin1", 0, length).split(" ")
    return [Number(run) / 1e6, Number(wait) / 1e6]
  } catch {
    return [Number.NaN, Number.NaN]
  }
}

/**
 * Every thread of this process by name (`comm`: JavaScriptCore's collector and JIT threads, Bun's
 * HTTP client and pool threads, the main thread under the process's name): [on-CPU, run-queue wait]
 * in ms since each started, summed per name. Read at a measurement's start and end, the difference
 * says which threads took the cores the main thread waited for (a thread that ended in between is
 * missed). Empty outside Linux.
 */
export const threadsSchedstat = (): Map<string, [number, number]> => {
  const byName = new Map<string, [number, number]>()
  try {
    for (const tid of readdirSync("/proc/self/task")) {
      try {
        const name = readFileSync(`/proc/self/task/${tid}/comm`, "latin1").trim()
        const [run, wait] = readFileSync(`/proc/self/task/${tid}/schedstat`, "latin1").split(" ")
        const sum = byName.get(name) ?? [0, 0]
        sum[0] += Number(run) / 1e6
        sum[1] += Number(wait) / 1e6
        byName.set(name, sum)
      } catch {
        // the thread ended meanwhile
      }
    }
  } catch {
    // not Linux
  }
  return byName
}

/** Per thread name, seconds on a core and waiting on a run queue between two `threadsSchedstat` readings, busiest first. */
export const threadsBetween = (before: Map<string, [number, number]>, after: Map<string, [number, number]>) =>
  Object.fromEntries(
    [...after]
      .map(([name, [run, wait]]) => {
        const [run0, wait0] = before.get(name) ?? [0, 0]
        return [name, { onCoreS: Math.round((run - run0) / 100) / 10, runQueueS: Math.round((wait - wait0) / 100) / 10 }] as const
      })
      .filter(([, t]) => t.onCoreS > 0 || t.runQueueS > 0)
      .sort((a, b) => b[1].onCoreS - a[1].onCoreS),
  )

/** Ends a non-LLM stretch of `record` (at an LLM call's start or the run's end). */
const closeStretch = (record: RunRecord) => {
  const [run, wait] = mainThreadSchedstat()
  record.threadRunMs += run - record.mark[0]
  record.runQueueMs += wait - record.mark[1]
}

export interface Recorder {
  readonly runs: Array<RunRecord>
  /** Discovery refreshes: [start, end] on the performance clock, and rows read. */
  readonly refreshes: Array<{ readonly t0: number; readonly t1: number; readonly rows: number }>
  /** Runs that ended with an iteration written. */
  written: number
}

export const makeRecorder = (): Recorder => ({ runs: [], refreshes: [], written: 0 })

const currentRun = FiberRef.unsafeMake<RunRecord | null>(null)

/** MissionRunner decorated with a stopwatch; provide the real runner layer to it. */
export const timedRunner = (recorder: Recorder) =>
  Layer.effect(
    MissionRunner,
    Effect.map(MissionRunner, (inner) =>
      MissionRunner.make({
        run: (request) =>
          Effect.suspend(() => {
            const ms = request.mission.nextRunAt === null ? Number.NaN : Date.parse(request.mission.nextRunAt)
            const record: RunRecord = {
              userId: request.userId,
              missionId: request.mission.id,
              scheduledFor: Number.isNaN(ms) ? null : ms,
              startedAt: Date.now(),
              t0: nowMs(),
              t1: Number.NaN,
              llmMs: 0,
              llmCalls: 0,
              llmFirstAt: Number.NaN,
              llmLastEnd: Number.NaN,
              outcome: "running",
              threadRunMs: 0,
              runQueueMs: 0,
              mark: mainThreadSchedstat(),
            }
            return Effect.locally(inner.run(request), currentRun, record).pipe(
              Effect.onExit((exit) =>
                Effect.sync(() => {
                  record.t1 = nowMs()
                  closeStretch(record)
                  record.outcome = Exit.isSuccess(exit)
                    ? exit.value._tag === "Written"
                      ? `Written:${exit.value.overallStatus}`
                      : `Skipped:${exit.value.reason}`
                    : Exit.isInterrupted(exit)
                      ? "Interrupted"
                      : "Failed"
                  recorder.runs.push(record)
                  if (Exit.isSuccess(exit) && exit.value._tag === "Written") recorder.written++
                }),
              ),
            )
          }),
      }),
    ),
  )

/** LlmClient decorated: adds each call's wall time to the run that made it. */
export const timedLlm = Layer.effect(
  LlmClient,
  Effect.map(LlmClient, (inner) =>
    LlmClient.make({
      // The options carry tools mode's `tools`: dropping them would quietly plan in text mode.
      complete: (messages, options) =>
        Effect.flatMap(FiberRef.get(currentRun), (record) => {
          const t0 = nowMs()
          if (record !== null) {
            if (Number.isNaN(record.llmFirstAt)) record.llmFirstAt = t0
            closeStretch(record)
          }
          return inner.complete(messages, options).pipe(
            Effect.ensuring(
              Effect.sync(() => {
                if (record === null) return
                record.mark = mainThreadSchedstat()
                record.llmLastEnd = nowMs()
                record.llmMs += record.llmLastEnd - t0
                record.llmCalls++
              }),
            ),
          )
        }),
    }),
  ),
)

/** MissionStore decorated: records each refresh (discovery pass) with its duration and rows. */
export const timedStore = (recorder: Recorder) =>
  Layer.effect(
    MissionStore,
    Effect.map(MissionStore, (inner) =>
      MissionStore.make({
        ...inner,
        refresh: Effect.suspend(() => {
          const t0 = nowMs()
          return Effect.tap(inner.refresh, (r) =>
            Effect.sync(() => {
              recorder.refreshes.push({ t0, t1: nowMs(), rows: r.rowsRead })
            }),
          )
        }),
      }),
    ),
  )

/**
 * Event-loop lag of this process: how late a 20 ms sleep wakes up, sampled until interrupted.
 * High lag means the runner's thread (or the machine) is busy, and every latency above includes it.
 */
export const sampleEventLoopLag = (into: Array<number>) =>
  Effect.suspend(() => {
    const t0 = nowMs()
    return Effect.zipRight(
      Effect.sleep("20 millis"),
      Effect.sync(() => {
        into.push(nowMs() - t0 - 20)
      }),
    )
  }).pipe(Effect.forever)
