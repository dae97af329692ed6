/**
 * 5. Memory: heap and RSS growth per idle actor. Users with one mission each, due a day from now,
 * so every actor starts, reads its missions and sleeps until then. In a fresh child process: the
 * baseline is taken with every service built but no supervisor, the second reading once every
 * actor is up and idle (or at the start-up deadline). Both after forced full collections and a
 * pause (RSS right after start-up still holds its garbage's pages).
 */
import { readFileSync } from "node:fs"
import { Context, Duration, Effect, Fiber, Layer, Redacted, type Scope } from "effect"
import { request } from "../../test/support/ManaProcess.js"
import { Supervisor, SupervisorLive, servicesLayer } from "../support/app.js"
import { type BenchDatabase, makeBenchDatabase } from "../support/benchDatabase.js"
import { runInChild } from "../support/child.js"
import type { BenchLlmStandIn } from "../support/llmStandIn.js"
import { benchLog } from "../support/log.js"
import { processTicks } from "../support/cpu.js"
import { startNpmRunner } from "../support/npmRunner.js"
import { makeRecorder } from "../support/probes.js"
import type { Figure } from "../support/report.js"
import type { HistoryTemplates } from "../support/historyTemplate.js"
import { missionsDueAgain, seedDueMissions } from "../support/seed.js"
import { nowMs, round } from "../support/stats.js"

export interface MemoryOptions {
  readonly ownerUrl: string
  readonly standIn: BenchLlmStandIn
  readonly actors: number
  /** How long to wait for every actor to be up and idle (bounded). */
  readonly startDeadline: Duration.DurationInput
  readonly log: (line: string) => Effect.Effect<void>
}

interface Reading {
  readonly heapUsed: number
  readonly rss: number
}

export interface MemoryChildInput {
  readonly runnerUrl: string
  readonly standInUrl: string
  readonly actors: number
  readonly startDeadlineMs: number
}

export interface MemoryChildResult {
  readonly before: Reading
  readonly after: Reading
  readonly spawned: number
  readonly ready: number
  readonly startSeconds: number
}

const fullGc = Effect.promise(async () => {
  const bun = (globalThis as { Bun?: { gc: (force: boolean) => void } }).Bun
  const gc = bun === undefined ? (globalThis as { gc?: () => void }).gc : () => bun.gc(true)
  for (let i = 0; i < 3; i++) {
    gc?.()
    // Let finalizers and deferred frees run between collections.
    await new Promise((resolve) => setImmediate(resolve))
  }
})

/** After full collections and a pause: Bun hands freed pages back to the OS a few seconds later. */
const collect = Effect.gen(function* () {
  yield* fullGc
  yield* Effect.sleep("6 seconds")
  yield* fullGc
  const m = process.memoryUsage()
  return { heapUsed: m.heapUsed, rss: m.rss } satisfies Reading
})

/** Child side. */
export const memoryChild = (input: MemoryChildInput): Effect.Effect<MemoryChildResult, never, Scope.Scope> =>
    Effect.gen(function* () {
      const services = yield* Layer.build(
        servicesLayer({ runnerUrl: Redacted.make(input.runnerUrl) }, {}, input.standInUrl, makeRecorder()),
      )
      const before = yield* collect
      const t0 = nowMs()
      const ctx = yield* Layer.build(SupervisorLive.pipe(Layer.provide(Layer.succeedContext(services))))
      const supervisor = Context.get(ctx, Supervisor)
      // Bounded: every actor up, with its mission read and its wake-up set, or the deadline.
      const deadline = nowMs() + input.startDeadlineMs
      let ready = 0
      let spawned = 0
      let lastLog = nowMs()
      while (nowMs() < deadline) {
        const status = yield* supervisor.status
        spawned = status.length
        ready = status.filter((s) => s.missions.length === 1 && s.nextWakeAt !== null).length
        if (ready >= input.actors) break
        if (nowMs() - lastLog > 10_000) {
          lastLog = nowMs()
          yield* benchLog(`memory: ${spawned} actors spawned, ${ready} up and idle`)
        }
        yield* Effect.sleep("500 millis")
      }
      const startSeconds = (nowMs() - t0) / 1000
      yield* benchLog(
        `memory: ${ready} of ${spawned} actors up and idle after ${round(startSeconds, 1)} s${ready >= input.actors ? "" : " (start-up not finished by the deadline)"}`,
      )
      const after = yield* collect
      return { before, after, spawned, ready, startSeconds }
    }).pipe(Effect.orDie)

export const measureMemory = (options: MemoryOptions) =>
  Effect.scoped(
    Effect.gen(function* () {
      const db = yield* makeBenchDatabase(options.ownerUrl)
      yield* seedDueMissions(db, {
        users: options.actors,
        missionsPerUser: 1,
        firstDueAt: Date.now() + 86_400_000,
        spreadMs: 3_600_000,
        withGoal: false,
      })
      yield* options.log(`memory: seeded ${options.actors} users with one mission each, due tomorrow`)
      const startDeadlineMs = Duration.toMillis(Duration.decode(options.startDeadline))
      const r = yield* runInChild<MemoryChildResult>(
        "memory",
        {
          runnerUrl: Redacted.value(db.runnerUrl),
          standInUrl: options.standIn.url,
          actors: options.actors,
          startDeadlineMs,
        } satisfies MemoryChildInput,
        Duration.millis(startDeadlineMs + 120_000),
      )
      const complete = r.ready >= options.actors
      // Every spawned actor holds its fibers, idle or still starting: that is what the growth is for.
      const perActor = (a: number, b: number) => (b - a) / Math.max(1, r.spawned) / 1024
      return [
        {
          id: "memory.heap.perActor",
          label: `5. heap growth per actor (${r.spawned} actors${complete ? ", all idle" : `, ${r.ready} idle`})`,
          value: perActor(r.before.heapUsed, r.after.heapUsed),
          unit: "KB",
          target: { op: "<", value: 10, text: "< 10 KB" },
          detail: {
            actorsSpawned: r.spawned,
            actorsIdle: r.ready,
            wanted: options.actors,
            startupComplete: complete,
            secondsToStart: round(r.startSeconds, 1),
            heapUsedBeforeMb: round(r.before.heapUsed / 2 ** 20, 1),
            heapUsedAfterMb: round(r.after.heapUsed / 2 ** 20, 1),
          },
        },
        {
          id: "memory.rss.perActor",
          label: "5. RSS growth per actor",
          value: perActor(r.before.rss, r.after.rss),
          unit: "KB",
          target: { op: "<", value: 10, text: "< 10 KB" },
          detail: { rssBeforeMb: round(r.before.rss / 2 ** 20, 1), rssAfterMb: round(r.after.rss / 2 ** 20, 1) },
        },
      ] satisfies Array<Figure>
    }),
  )

// ---------------------------------------------------------------- the process's RSS (issue 16 item 5)

export interface ProcessMemoryOptions {
  readonly ownerUrl: string
  readonly standIn: BenchLlmStandIn
  /** Runs per tick: each round seeds this many new missions, due now, one per user, and ticks once. */
  readonly runsPerRound: number
  readonly rounds: number
  /** Mission rows of history discovered at the end (missions due in two days: nothing runs). */
  readonly historyRows: number
  /** Where that history comes from: seeded once for the bench, copied here. */
  readonly histories: HistoryTemplates
  /**
   * Other measurements to run beside the ticks whose RSS is no figure (2 … rounds − 1), over before
   * the last tick: none of this process's figures is taken while they run (bench/run.ts). The
   * template of `historyRows` rows is seeded beside them too, if it is not yet.
   */
  readonly beside?: Effect.Effect<void>
  readonly log: (line: string) => Effect.Effect<void>
}

/** The process's resident set now, from /proc (Linux; 0 elsewhere). */
const rssOf = (pid: number): number => {
  try {
    const line = readFileSync(`/proc/${pid}/status`, "utf8").split("\n").find((l) => l.startsWith("VmRSS:"))
    return line === undefined ? 0 : Number(line.replace(/\D+/g, "")) * 1024
  } catch {
    return 0
  }
}


const commandLineOf = (pid: number): string => {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").filter((a) => a !== "").join(" ")
  } catch {
    return "?"
  }
}

const mb = (bytes: number) => round(bytes / 2 ** 20, 1)

/** Every figure's RSS is read this long after its step, nothing forced. */
const SETTLE_SECONDS = 5
/**
 * Between two ticks whose RSS is no figure (ticks 2 … rounds − 1), only long enough for the process to
 * be as quiet as after a figure's settle before the next tick: the memory trimmer
 * (src/layers/memoryTrim.ts) checks every second and collects at the first check that finds no run
 * under way and the heap still, so within 2 s of the tick's end; 3 s leave one check to spare.
 */
const BETWEEN_TICKS_SECONDS = 3

/**
 * The runner as operators start it (`npm start`: the bundle, `bun dist/main.js`; the runner role, TICK_ENABLED=false so only
 * the bench's ticks do work, PLANNER_MODE=json, otherwise defaults) and its RSS as the OS sees it,
 * read 5 s after each step with nothing forced: idle after start-up; after the first tick of
 * `runsPerRound` runs; after `rounds` such ticks; after a tick whose discovery reads `historyRows`
 * rows of history.
 */
const startRunnerProcess = (db: BenchDatabase, standInUrl: string, log: (line: string) => Effect.Effect<void>) =>
  Effect.gen(function* () {
    const { mana, pid, key } = yield* startNpmRunner({ runnerUrl: db.runnerUrl, llmUrl: standInUrl })
    yield* log(`process memory: runner pid ${pid}: ${commandLineOf(pid)}`)
    return {
      /** RSS 5 s (or `seconds`) after the step before, nothing forced. */
      settle: (seconds = SETTLE_SECONDS) => Effect.sleep(Duration.seconds(seconds)).pipe(Effect.map(() => rssOf(pid))),
      tick: Effect.promise(async () => {
        const t0 = nowMs()
        const cpu0 = processTicks(String(pid))?.ticks ?? 0
        const r = await request(mana, "POST", "/internal/tick", key)
        return {
          status: r.status,
          written: Number(r.body?.plansWrittenBack ?? 0),
          errors: (r.body?.errors ?? []) as ReadonlyArray<string>,
          seconds: (nowMs() - t0) / 1000,
          /** The runner's CPU (utime + stime) over the tick, in ms (clock ticks of 10 ms). */
          cpuMs: ((processTicks(String(pid))?.ticks ?? 0) - cpu0) * 10,
        }
      }),
    }
  })

/**
 * The runner as operators start it (`npm start`: the bundle, `bun dist/main.js`; the runner role, TICK_ENABLED=false so only
 * the bench's ticks do work, PLANNER_MODE=json, otherwise defaults) and its RSS as the OS sees it,
 * read 5 s after each step with nothing forced: idle after start-up; after the first tick of
 * `runsPerRound` runs (as many users, one mission each); after `rounds` such ticks of the same
 * missions made due again (the same actors, so the growth is what runs leave behind). Then
 * another process on another database holding
 * `historyRows` rows of mission history: RSS after the tick whose first discovery reads them all.
 * MIMALLOC_* and other variables of the bench's environment pass through to both processes.
 */
export const measureProcessMemory = (options: ProcessMemoryOptions) =>
  Effect.gen(function* () {
    const runs = (n: number) => (n >= 1000 ? `${n / 1000}k` : String(n))
    const { idle, rssAfterRound, written, cpuMsPerRun, overlapped } = yield* Effect.scoped(
      Effect.gen(function* () {
        const db = yield* makeBenchDatabase(options.ownerUrl)
        const mana = yield* startRunnerProcess(db, options.standIn.url, options.log)
        yield* mana.tick
        const idle = yield* mana.settle()
        yield* options.log(`process memory: idle ${mb(idle)} MB`)
        const rssAfterRound: Array<number> = []
        const cpuMsPerRun: Array<number> = []
        /** Ticks that began while work beside them ran (their CPU per run shares the machine with it). */
        const overlapped: Array<number> = []
        let written = 0
        // Beside the ticks whose RSS is no figure (2 … rounds − 1), over before the last tick: the seed of
        // the history the discovery reading copies (if not seeded yet) and the other measurements given.
        const besideWork = Effect.all(
          [...(options.historyRows > 0 ? [options.histories.prepare(options.historyRows)] : []), ...(options.beside === undefined ? [] : [options.beside])],
          { concurrency: "unbounded", discard: true },
        )
        let besides: Fiber.RuntimeFiber<void> | undefined
        for (let round_ = 1; round_ <= options.rounds; round_++) {
          if (round_ === options.rounds && besides !== undefined) yield* Fiber.join(besides)
          if (besides !== undefined && besides.unsafePoll() === null) overlapped.push(round_)
          // The same users and missions every round (the same actors).
          yield* missionsDueAgain(db, "mem", "Memory mission", round_, options.runsPerRound)
          const t = yield* mana.tick
          written += t.written
          cpuMsPerRun.push(t.cpuMs / Math.max(1, t.written))
          // The figures' readings (after the first and the last tick) 5 s after; the ticks between only
          // need the process quiet again before the next one, which the trimmer makes it within 2 s.
          const rss = yield* mana.settle(round_ === 1 || round_ === options.rounds ? SETTLE_SECONDS : BETWEEN_TICKS_SECONDS)
          rssAfterRound.push(rss)
          yield* options.log(
            `process memory: tick ${round_} wrote ${t.written} plans in ${round(t.seconds, 1)} s (${t.errors.length} errors), runner CPU ${round(t.cpuMs / Math.max(1, t.written), 2)} ms per run; RSS ${mb(rss)} MB`,
          )
          if (round_ === 1) besides = yield* Effect.fork(besideWork)
        }
        if (besides !== undefined) yield* Fiber.join(besides)
        return { idle, rssAfterRound, written, cpuMsPerRun, overlapped }
      }),
    )
    const first = rssAfterRound[0] ?? 0
    const last = rssAfterRound[rssAfterRound.length - 1] ?? 0

    // --history=0: no discovery reading (a shorter run while working on the other three). With nothing
    // of the bench's own beside it: its RSS follows the garbage collector's pace, which CPU taken by
    // others slows (481 MB beside the ticks on a machine at load 19, against 280 MB in the quiet run).
    const discovery = options.historyRows <= 0 ? undefined : yield* Effect.scoped(
      Effect.gen(function* () {
        // The same history discovery measured (seeded once, a copy of its own here).
        const db = yield* options.histories.copy(options.historyRows)
        const mana = yield* startRunnerProcess(db, options.standIn.url, options.log)
        const before = yield* mana.settle()
        const t = yield* mana.tick
        const after = yield* mana.settle()
        yield* options.log(
          `process memory: first discovery of ${options.historyRows} rows in ${round(t.seconds, 1)} s; RSS ${mb(before)} -> ${mb(after)} MB`,
        )
        return { before, after, seconds: t.seconds, errors: t.errors }
      }),
    )
    return [
      {
        id: "memory.process.idle",
        label: "5. process RSS, idle after start",
        value: mb(idle),
        unit: "MB",
        target: { op: "<=", value: 64, text: "≤ 64 MB" },
      },
      {
        id: "memory.process.afterRuns",
        label: `5. process RSS after ${runs(options.runsPerRound)} runs (one tick)`,
        value: mb(first),
        unit: "MB",
        target: { op: "<=", value: 100, text: "≤ 100 MB" },
      },
      {
        id: "memory.process.growth",
        label: `5. process RSS after ${runs(options.runsPerRound * options.rounds)} runs ÷ after ${runs(options.runsPerRound)}`,
        value: first === 0 ? 0 : last / first,
        unit: "×",
        target: { op: "<=", value: 1.1, text: "≤ 1.1×" },
        detail: {
          rssAfterEachTickMb: rssAfterRound.map(mb),
          rssReadSecondsAfterEachTick: rssAfterRound.map((_, i) => (i === 0 || i === rssAfterRound.length - 1 ? SETTLE_SECONDS : BETWEEN_TICKS_SECONDS)),
          plansWrittenBack: written,
          runnerCpuMsPerRunEachTick: cpuMsPerRun.map((ms) => round(ms, 2)),
          ticksBesideOtherWork: overlapped,
        },
      },
      ...(discovery === undefined ? [] : [{
        id: "memory.process.afterDiscovery",
        label: `5. process RSS after discovering ${options.historyRows >= 1_000_000 ? `${options.historyRows / 1_000_000}M` : runs(options.historyRows)} rows`,
        value: mb(discovery.after),
        unit: "MB",
        target: { op: "<=", value: 150, text: "≤ 150 MB" },
        detail: { rssBeforeMb: mb(discovery.before), discoverySeconds: round(discovery.seconds, 1), tickErrors: discovery.errors },
      } satisfies Figure]),
    ] satisfies Array<Figure>
  })
