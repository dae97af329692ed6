/**
 * A run workload: a fresh database seeded with due (or soon due) missions, the whole runner started
 * on it (supervisor, actors, real services) against the LLM stand-in, watched until enough runs have
 * finished or a deadline passes (bounded), then shut down and the database dropped.
 */
import { Context, Duration, Effect, Layer } from "effect"
import type { RunnerConfigShape } from "../../src/services/AppConfig.js"
import { appLayer, Supervisor } from "../support/app.js"
import { type CpuReport, startCpuWatch } from "../support/cpu.js"
import { makeBenchDatabase } from "../support/benchDatabase.js"
import type { BenchLlmStandIn, StandInStats } from "../support/llmStandIn.js"
import { makeRecorder, type Recorder, sampleEventLoopLag } from "../support/probes.js"
import { type DueWorkload, seedDueMissions } from "../support/seed.js"
import { nowMs, round } from "../support/stats.js"

export interface WorkloadOptions {
  readonly name: string
  readonly ownerUrl: string
  readonly standIn: BenchLlmStandIn
  readonly latencyMs: number
  readonly config: Partial<RunnerConfigShape>
  /** Missions, given the instant the seed is written (epoch ms). */
  readonly workload: (seededAt: number) => DueWorkload
  /** Stop once this many runs wrote an iteration… */
  readonly stopAfterWritten: number
  /** …or after this long, whichever comes first. */
  readonly deadline: Duration.DurationInput
  readonly log: (line: string) => Effect.Effect<void>
}

export interface WorkloadResult {
  readonly missions: number
  readonly recorder: Recorder
  /** performance clock when the runner's layers started building. */
  readonly appStartedAt: number
  readonly timedOut: boolean
  readonly standIn: StandInStats
  /** CPU seconds this process spent per wall second while the runner ran (1.0 = one core busy). */
  readonly cpuPerWallSecond: number
  /** CPU milliseconds this process spent (all threads) while the runner ran. */
  readonly cpuMs: number
  /** Cores in use while the runner ran: the machine, this process, the stand-in, all of postgres. */
  readonly cpu: CpuReport | undefined
  /** Event-loop lag samples (ms) taken while the runner ran. */
  readonly lagMs: ReadonlyArray<number>
}

export const runWorkload = (options: WorkloadOptions): Effect.Effect<WorkloadResult> =>
  Effect.scoped(
    Effect.gen(function* () {
      const db = yield* makeBenchDatabase(options.ownerUrl)
      const seededAt = Date.now()
      const workload = options.workload(seededAt)
      const missions = yield* seedDueMissions(db, workload)
      yield* options.log(`${options.name}: seeded ${missions} missions for ${workload.users} users`)
      yield* options.standIn.configure(options.latencyMs)
      const recorder = makeRecorder()
      const lagMs: Array<number> = []
      const appStartedAt = nowMs()
      const cpu0 = process.cpuUsage()
      const cpuWatch = startCpuWatch(options.standIn.pid)
      const { timedOut, standIn, cpuReport, cpuMs, wallMs } = yield* Effect.scoped(
        Effect.gen(function* () {
          const ctx = yield* Layer.build(appLayer(db, options.config, options.standIn.url, recorder))
          const supervisor = Context.get(ctx, Supervisor)
          yield* Effect.forkScoped(sampleEventLoopLag(lagMs))
          const deadlineAt = nowMs() + Duration.toMillis(Duration.decode(options.deadline))
          let lastLog = nowMs()
          // Bounded: ends at the deadline whatever happens.
          while (recorder.written < options.stopAfterWritten && nowMs() < deadlineAt) {
            yield* Effect.sleep("100 millis")
            if (nowMs() - lastLog > 5000) {
              lastLog = nowMs()
              const actors = (yield* supervisor.status).length
              yield* options.log(`${options.name}: ${recorder.written} written, ${recorder.runs.length} runs ended, ${actors} actors`)
            }
          }
          const cpu = process.cpuUsage(cpu0)
          const wallMs = nowMs() - appStartedAt
          const cpuReport = cpuWatch()
          const standIn = yield* options.standIn.stats
          // Runs still in flight are drained on close; answering them at once keeps that short.
          yield* options.standIn.configure(0)
          return {
            timedOut: recorder.written < options.stopAfterWritten,
            standIn,
            cpuReport,
            cpuMs: (cpu.user + cpu.system) / 1000,
            wallMs,
          }
        }),
      )
      const cpuPerWallSecond = cpuMs / wallMs
      yield* options.log(
        `${options.name}: ${recorder.written} written in ${round(wallMs / 1000, 1)} s${timedOut ? " (deadline reached)" : ""}, stopped after ${round((nowMs() - appStartedAt - wallMs) / 1000, 1)} s`,
      )
      return { missions, recorder, appStartedAt, timedOut, standIn, cpuPerWallSecond, cpuMs, cpu: cpuReport, lagMs }
    }),
  )
