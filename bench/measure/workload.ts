/**
 * A run workload: a fresh database seeded with due (or soon due) missions, the whole runner started
 * on it (supervisor, actors, real services) against the LLM stand-in in a child process, watched
 * until enough runs have finished or a deadline passes (bounded); then the child is ended and the
 * database dropped.
 */
import { Context, Duration, Effect, Layer, Redacted, type Scope } from "effect"
import type { PlannerMode } from "../../src/services/AppConfig.js"
import { appLayer, Supervisor } from "../support/app.js"
import { type BenchDatabase, makeBenchDatabase } from "../support/benchDatabase.js"
import { runInChild } from "../support/child.js"
import { type CpuReport, startCpuWatch, startRoleBackendsCpu } from "../support/cpu.js"
import { type BenchLlmStandIn, connectLlmStandIn, type StandInStats } from "../support/llmStandIn.js"
import { mainThreadSchedstat, makeRecorder, type Recorder, sampleEventLoopLag, threadsBetween, threadsSchedstat } from "../support/probes.js"
import { type DueWorkload, seedDueMissions } from "../support/seed.js"
import { startTrace } from "../support/trace.js"
import { benchLog } from "../support/log.js"
import { nowMs, round } from "../support/stats.js"

/** The RunnerConfig fields a workload sets; the rest keep their production defaults. */
export interface WorkloadConfig {
  readonly globalConcurrency?: number
  readonly userConcurrency?: number
  /** PLANNER_MODE; default tools, as in production. */
  readonly plannerMode?: PlannerMode
}

export interface WorkloadOptions {
  readonly name: string
  readonly ownerUrl: string
  readonly standIn: BenchLlmStandIn
  readonly latencyMs: number
  readonly config: WorkloadConfig
  /** Missions, given the instant the seed is written (epoch ms). */
  readonly workload: (seededAt: number) => DueWorkload
  /** Seeds instead of `workload` when given (returns the mission count). */
  readonly seed?: (db: BenchDatabase, seededAt: number) => Effect.Effect<number>
  /** Stop once this many runs wrote an iteration… */
  readonly stopAfterWritten: number
  /** …or once this many runs of the users whose id starts with `userPrefix` did… */
  readonly stopAfterWrittenFor?: StopAfterWrittenFor
  /** …or after this long, whichever comes first. */
  readonly deadline: Duration.DurationInput
  readonly log: (line: string) => Effect.Effect<void>
}

export interface StopAfterWrittenFor {
  readonly userPrefix: string
  readonly count: number
}

/** What the child measured; its clocks (t0, t1, appStartedAt) are its own performance clock. */
export interface ChildWorkloadResult {
  readonly recorder: Recorder
  /** performance clock when the runner's layers started building. */
  readonly appStartedAt: number
  readonly timedOut: boolean
  readonly standIn: StandInStats
  /** CPU seconds the runner's process spent per wall second while it ran (1.0 = one core busy). */
  readonly cpuPerWallSecond: number
  /** CPU milliseconds the runner's process spent (all threads) while it ran. */
  readonly cpuMs: number
  /** Cores in use while the runner ran: the machine, the runner, the stand-in, all of postgres. */
  readonly cpu: CpuReport | undefined
  /** CPU seconds of the runner role's own backends while it ran (`startRoleBackendsCpu`): its Postgres work alone. */
  readonly postgresCpuS: number
  /** Event-loop lag samples (ms) taken in the runner's process while it ran. */
  readonly lagMs: ReadonlyArray<number>
  /** The runner's main thread while it ran (seconds): on a core, runnable but waiting for one (Linux). */
  readonly mainThread: { readonly onCoreS: number; readonly runQueueS: number; readonly wallS: number }
  /** The runner's process by thread name (probes.ts `threadsSchedstat`): who else took its CPU. */
  readonly threads: Readonly<Record<string, { readonly onCoreS: number; readonly runQueueS: number }>>
}

export interface WorkloadResult extends ChildWorkloadResult {
  readonly missions: number
  /**
   * Connections Postgres accepted for the database while the runner ran (`pg_stat_database.sessions`
   * after − before): the pool's size when it kept its connections; more when it closed idle ones
   * (pg-pool's 10 s idle timeout) and opened them again, each new backend starting with empty caches
   * (bench/tools/coldConnection.ts). Includes BENCH_TRACE's two, and the owner's one if its pool closed its own meanwhile.
   */
  readonly sessionsOpened: number
}

export interface WorkloadChildInput {
  readonly name: string
  readonly runnerUrl: string
  readonly standInUrl: string
  readonly standInPid: number | undefined
  readonly config: WorkloadConfig
  readonly stopAfterWritten: number
  readonly stopAfterWrittenFor: StopAfterWrittenFor | null
  readonly deadlineMs: number
}

/** Child side: the runner on the seeded database until the stop condition or the deadline. */
export const workloadChild = (input: WorkloadChildInput): Effect.Effect<ChildWorkloadResult, never, Scope.Scope> =>
    Effect.gen(function* () {
      const log = benchLog
      const standIn = connectLlmStandIn(input.standInUrl, input.standInPid)
      const recorder = makeRecorder()
      const lagMs: Array<number> = []
      const appStartedAt = nowMs()
      const cpu0 = process.cpuUsage()
      const sched0 = mainThreadSchedstat()
      const threads0 = threadsSchedstat()
      const cpuWatch = startCpuWatch(input.standInPid)
      const roleBackends = yield* Effect.promise(() => startRoleBackendsCpu(input.runnerUrl))
      const finishTrace = yield* Effect.promise(() => startTrace(new URL(input.runnerUrl).pathname.slice(1), input.runnerUrl))
      const { plannerMode, ...runnerConfig } = input.config
      const ctx = yield* Layer.build(
        appLayer({ runnerUrl: Redacted.make(input.runnerUrl) }, runnerConfig, input.standInUrl, recorder, plannerMode),
      )
      const supervisor = Context.get(ctx, Supervisor)
      yield* Effect.forkScoped(sampleEventLoopLag(lagMs))
      const deadlineAt = nowMs() + input.deadlineMs
      let lastLog = nowMs()
      const stopFor = input.stopAfterWrittenFor
      const enough = () =>
        recorder.written >= input.stopAfterWritten ||
        (stopFor !== null &&
          recorder.runs.filter((r) => r.userId.startsWith(stopFor.userPrefix) && r.outcome.startsWith("Written")).length >= stopFor.count)
      // Bounded: ends at the deadline whatever happens.
      while (!enough() && nowMs() < deadlineAt) {
        yield* Effect.sleep("100 millis")
        if (nowMs() - lastLog > 5000) {
          lastLog = nowMs()
          // The census counts the actors without building every actor's view (`status` took 2-103 ms
          // of the runner's thread at 500 actors, every 5 s, on the loaded machine): the progress
          // line must not hold up the runs it measures.
          const actors = (yield* supervisor.census).total
          yield* log(`${input.name}: ${recorder.written} written, ${recorder.runs.length} runs ended, ${actors} actors`)
        }
      }
      const cpu = process.cpuUsage(cpu0)
      const sched1 = mainThreadSchedstat()
      const threads = threadsBetween(threads0, threadsSchedstat())
      const wallMs = nowMs() - appStartedAt
      const cpuReport = cpuWatch()
      const postgresCpuS = yield* Effect.promise(roleBackends)
      const cpuMs = (cpu.user + cpu.system) / 1000
      const timedOut = !enough()
      if (finishTrace !== undefined) yield* Effect.promise(() => finishTrace(recorder, { name: input.name, appStartedAt }))
      yield* log(`${input.name}: ${recorder.written} written in ${round(wallMs / 1000, 1)} s${timedOut ? " (deadline reached)" : ""}`)
      return {
        recorder,
        appStartedAt,
        timedOut,
        standIn: yield* standIn.stats,
        cpuPerWallSecond: cpuMs / wallMs,
        cpuMs,
        cpu: cpuReport,
        postgresCpuS,
        lagMs,
        threads,
        mainThread: {
          onCoreS: round((sched1[0] - sched0[0]) / 1000, 1),
          runQueueS: round((sched1[1] - sched0[1]) / 1000, 1),
          wallS: round(wallMs / 1000, 1),
        },
      }
    })

export const runWorkload = (options: WorkloadOptions): Effect.Effect<WorkloadResult> =>
  Effect.scoped(
    Effect.gen(function* () {
      const db = yield* makeBenchDatabase(options.ownerUrl)
      const seededAt = Date.now()
      const missions =
        options.seed === undefined
          ? yield* seedDueMissions(db, options.workload(seededAt))
          : yield* options.seed(db, seededAt)
      yield* options.log(`${options.name}: seeded ${missions} missions`)
      yield* options.standIn.configure(options.latencyMs)
      const sessions = Effect.map(
        db.ownerQuery("SELECT sessions FROM pg_stat_database WHERE datname = current_database()"),
        (rows) => Number(rows[0]?.sessions ?? Number.NaN),
      )
      const sessions0 = yield* sessions
      const deadlineMs = Duration.toMillis(Duration.decode(options.deadline))
      const result = yield* runInChild<ChildWorkloadResult>(
        "workload",
        {
          name: options.name,
          runnerUrl: Redacted.value(db.runnerUrl),
          standInUrl: options.standIn.url,
          standInPid: options.standIn.pid,
          config: options.config,
          stopAfterWritten: options.stopAfterWritten,
          stopAfterWrittenFor: options.stopAfterWrittenFor ?? null,
          deadlineMs,
        } satisfies WorkloadChildInput,
        Duration.millis(deadlineMs + 60_000),
      )
      // The owner's pool is idle while the child runs: the difference is the runner's connections.
      return { ...result, missions, sessionsOpened: (yield* sessions) - sessions0 }
    }),
  )
