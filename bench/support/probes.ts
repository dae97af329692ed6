/**
 * Stopwatches around the real services, as decorating layers: each MissionRunner.run records when
 * it started (vs. the mission's nextRunAt), how long it took, and how long its LLM calls took
 * (LlmClient.complete, the global permit wait included), so the run's own overhead is the rest.
 * A FiberRef ties each LLM call to the run whose fiber made it. Bench code: the recorder is a
 * plain array owned by one measurement.
 */
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
            }
            return Effect.locally(inner.run(request), currentRun, record).pipe(
              Effect.onExit((exit) =>
                Effect.sync(() => {
                  record.t1 = nowMs()
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
          if (record !== null && Number.isNaN(record.llmFirstAt)) record.llmFirstAt = t0
          return inner.complete(messages, options).pipe(
            Effect.ensuring(
              Effect.sync(() => {
                if (record === null) return
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
