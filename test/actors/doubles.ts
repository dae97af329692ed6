/**
 * Doubles of the supervisor's contracts for its unit tests: an in-memory MissionStore whose
 * `refresh` applies rows "written to the log" since the last refresh, and a MissionRunner that
 * records starts, LLM concurrency and completed writes, and writes the next nextRunAt back to the
 * store as the real write-back would.
 */
import { Clock, Context, Effect, Either, Fiber, Layer, Option, Ref, TestClock } from "effect"
import { shardOf } from "../../src/cluster/ClusterConfig.js"
import { isSchedulable, missionValidity } from "../../src/domain/missionValidity.js"
import { RunnerConfig, type RunnerConfigShape } from "../../src/services/AppConfig.js"
import { GlobalLlmPermits } from "../../src/services/GlobalLlmPermits.js"
import { MissionRunner, type MissionTimeout, type RunOutcome, type RunRequest } from "../../src/services/MissionRunner.js"
import { MissionStore, type MissionSnapshot } from "../../src/services/MissionStore.js"
import { Quarantines, type Quarantine } from "../../src/services/Quarantines.js"
import { Supervisor, SupervisorLayer } from "../../src/actors/Supervisor.js"

export const MIN = 60_000

/** The shard count the in-memory store's shard reads assume. */
export const DOUBLE_SHARDS = 60

export interface MissionSeed {
  readonly userId: string
  readonly id: string
  readonly state?: "active" | "paused" | "done" | "archived"
  /** Epoch ms under TestClock; null: unscheduled. */
  readonly nextRunAt?: number | null
  readonly everyMinutes?: number
}

const record = (m: MissionSeed): Record<string, unknown> => ({
  id: m.id,
  title: `mission ${m.id}`,
  objective: "keep going",
  state: m.state ?? "active",
  nextRunAt: m.nextRunAt === null ? null : new Date(m.nextRunAt ?? 0).toISOString(),
  cadence: { kind: "interval", everyMinutes: m.everyMinutes ?? 10 },
  iterations: [],
})

/** Judged by the rule the real store uses (missionValidity), so a double cannot schedule what discovery skips. */
const snapshotOf = (userId: string, missionId: string, rec: Record<string, unknown> | null): MissionSnapshot => {
  const valid = rec === null ? Either.left("the mission is deleted") : missionValidity(rec, RunnerConfig.defaults.defaultTimezone)
  const live = Either.isRight(valid) && !valid.right.mission.deletedAt ? valid.right : null
  return {
    userId,
    missionId,
    record: rec,
    decoded: Either.map(valid, (v) => v.mission),
    schedulable: live !== null && isSchedulable(live),
    nextRunAt: live?.nextRunAt ? new Date(live.nextRunAt) : null,
  }
}

const key = (userId: string, missionId: string) => `${userId}/${missionId}`

const ordered = (all: Iterable<MissionSnapshot>) =>
  [...all].sort(
    (a, b) =>
      (a.nextRunAt?.getTime() ?? 0) - (b.nextRunAt?.getTime() ?? 0) || (a.missionId < b.missionId ? -1 : 1),
  )

const byUserAndMission = (
  a: { readonly userId: string; readonly missionId: string },
  b: { readonly userId: string; readonly missionId: string },
) => (a.userId < b.userId ? -1 : a.userId > b.userId ? 1 : a.missionId < b.missionId ? -1 : a.missionId > b.missionId ? 1 : 0)

export const makeStore = Effect.gen(function* () {
  const applied = yield* Ref.make(new Map<string, MissionSnapshot>())
  /** Pages of `schedulable` read so far. */
  const schedulablePages = yield* Ref.make(0)
  const pending = yield* Ref.make<Array<MissionSnapshot>>([])
  const refreshes = yield* Ref.make(0)
  /** Appends a mission's new state to the "log": visible after the next refresh. */
  const put = (m: MissionSeed) => Ref.update(pending, (p) => [...p, snapshotOf(m.userId, m.id, record(m))])
  const setNextRunAt = (userId: string, missionId: string, nextRunAt: string | null) =>
    Effect.gen(function* () {
      const current = (yield* Ref.get(applied)).get(key(userId, missionId))
      const base = current?.record ?? {}
      yield* Ref.update(pending, (p) => [...p, snapshotOf(userId, missionId, { ...base, nextRunAt })])
    })
  const service = MissionStore.make({
    refresh: Effect.gen(function* () {
      yield* Ref.update(refreshes, (n) => n + 1)
      const changed = yield* Ref.getAndSet(pending, [])
      yield* Ref.update(applied, (m) => {
        const next = new Map(m)
        for (const s of changed) next.set(key(s.userId, s.missionId), s)
        return next
      })
      return { changed, rowsRead: changed.length }
    }),
    // The real store's keyset page: (user, mission) order, after the given one.
    schedulable: (after, limit) =>
      Ref.get(applied).pipe(
        Effect.tap(() => Ref.update(schedulablePages, (n) => n + 1)),
        Effect.map((m) =>
          [...m.values()]
            .filter((s) => s.schedulable && (after === undefined || byUserAndMission(s, after) > 0))
            .sort(byUserAndMission)
            .slice(0, limit),
        ),
      ),
    // Shards as a cluster of DOUBLE_SHARDS would compute them (the real store reads its `shard` column).
    schedulableIn: (shards) =>
      Ref.get(applied).pipe(
        Effect.map((m) => ordered(m.values()).filter((s) => s.schedulable && shards.includes(shardOf(s.userId, DOUBLE_SHARDS)))),
      ),
    due: (now, shards) =>
      Ref.get(applied).pipe(
        Effect.map((m) =>
          ordered(m.values()).filter(
            (s) =>
              s.schedulable &&
              s.nextRunAt !== null &&
              s.nextRunAt <= now &&
              (shards === undefined || shards.includes(shardOf(s.userId, DOUBLE_SHARDS))),
          ),
        ),
      ),
    forUser: (userId) =>
      Ref.get(applied).pipe(
        Effect.map((m) => ordered(m.values()).filter((s) => s.userId === userId && s.record !== null)),
      ),
    claim: () => Effect.succeed(true),
    releaseClaim: () => Effect.void,
  })
  /** The mission as the store holds it now (a run reads it as it stands, not from the actor's reference). */
  const current = (userId: string, missionId: string) =>
    Ref.get(applied).pipe(
      Effect.map((m) => {
        const decoded = m.get(key(userId, missionId))?.decoded
        return decoded !== undefined && Either.isRight(decoded) ? decoded.right : undefined
      }),
    )
  return { service, put, setNextRunAt, current, refreshes, schedulablePages }
})

export type FakeStore = Effect.Effect.Success<typeof makeStore>

export interface RunStart {
  readonly userId: string
  readonly missionId: string
  readonly slot: string | null
  readonly at: number
}

/** What the double does for one request: return an outcome, fail, hang or die. */
export type Script = (request: RunRequest, defaultRun: Effect.Effect<RunOutcome>) => Effect.Effect<RunOutcome, MissionTimeout>

export interface RunnerTimings {
  /** Before the LLM call (input resolution). */
  readonly beforeMs?: number
  /** The fake LLM call, under a GlobalLlmPermits permit. */
  readonly llmMs?: number
  /** Per mission, instead of llmMs. */
  readonly llmMsFor?: (missionId: string) => number
  /** After it (the write-back). */
  readonly afterMs?: number
}

export const makeRunner = (store: FakeStore, permits: GlobalLlmPermits, timings: RunnerTimings = {}) =>
  Effect.gen(function* () {
    const starts = yield* Ref.make<Array<RunStart>>([])
    const writes = yield* Ref.make<Array<RunStart & { readonly nextRunAt: string | null }>>([])
    const perUser = yield* Ref.make(new Map<string, { now: number; max: number }>())
    const llm = yield* Ref.make({ now: 0, max: 0 })
    const script = yield* Ref.make<Script>((_, run) => run)

    const bump = (userId: string, d: number) =>
      Ref.update(perUser, (m) => {
        const c = m.get(userId) ?? { now: 0, max: 0 }
        const now = c.now + d
        return new Map(m).set(userId, { now, max: Math.max(c.max, now) })
      })

    const defaultRun = (request: RunRequest, start: RunStart): Effect.Effect<RunOutcome> =>
      Effect.gen(function* () {
        yield* Effect.sleep(timings.beforeMs ?? 100)
        yield* permits.withPermit(
          Effect.acquireUseRelease(
            Ref.update(llm, (c) => ({ now: c.now + 1, max: Math.max(c.max, c.now + 1) })),
            () => Effect.sleep(timings.llmMsFor?.(request.mission.id) ?? timings.llmMs ?? 1_000),
            () => Ref.update(llm, (c) => ({ ...c, now: c.now - 1 })),
          ),
        )
        yield* Effect.sleep(timings.afterMs ?? 50)
        const now = yield* Clock.currentTimeMillis
        const cadence = (yield* store.current(request.userId, request.mission.id))?.cadence
        let next: string | null = null
        if (cadence?.kind === "interval") {
          const every = cadence.everyMinutes * MIN
          let at = request.mission.nextRunAt === null ? now : Date.parse(request.mission.nextRunAt)
          while (at <= now) at += every
          next = new Date(at).toISOString()
        }
        // The write is one step: a run interrupted before it records nothing.
        yield* Ref.update(writes, (w) => [...w, { ...start, nextRunAt: next }])
        yield* store.setNextRunAt(request.userId, request.mission.id, next)
        return {
          _tag: "Written",
          iterationId: `${request.mission.id}@${start.slot}`,
          overallStatus: "awaiting-review",
          steps: 1,
          nextRunAt: next,
          planProduced: true,
          parseFailures: 0,
        } as const
      })

    const service = MissionRunner.make({
      run: (request) =>
        Effect.gen(function* () {
          const start: RunStart = {
            userId: request.userId,
            missionId: request.mission.id,
            slot: request.mission.nextRunAt,
            at: yield* Clock.currentTimeMillis,
          }
          yield* Ref.update(starts, (s) => [...s, start])
          const behave = yield* Ref.get(script)
          return yield* Effect.acquireUseRelease(
            bump(request.userId, 1),
            () => behave(request, defaultRun(request, start)),
            () => bump(request.userId, -1),
          )
        }),
    })
    return { service, starts, writes, perUser, llm, script }
  })

export type FakeRunner = Effect.Effect.Success<ReturnType<typeof makeRunner>>

/** Quarantines kept in memory; `kept` plays the table a process finds at start. */
export const makeQuarantines = (kept: ReadonlyArray<Quarantine> = []) =>
  Effect.gen(function* () {
    const held = yield* Ref.make(new Map(kept.map((q) => [q.userId, q.reason])))
    const service = Quarantines.make({
      all: Ref.get(held).pipe(Effect.map((m) => [...m].map(([userId, reason]) => ({ userId, reason })))),
      hold: ({ userId, reason }) => Ref.update(held, (m) => new Map(m).set(userId, reason)),
      lift: (userId) =>
        Ref.update(held, (m) => {
          const next = new Map(m)
          next.delete(userId)
          return next
        }),
    })
    return { service, held }
  })

/** The supervisor on the doubles, built in the current scope. */
export const makeWorld = (
  config: Partial<RunnerConfigShape>,
  timings: RunnerTimings = {},
  keptQuarantines: ReadonlyArray<Quarantine> = [],
) =>
  Effect.gen(function* () {
    const store = yield* makeStore
    const quarantines = yield* makeQuarantines(keptQuarantines)
    const full = { ...RunnerConfig.defaults, ...config }
    const permits = yield* GlobalLlmPermits.sized(full.globalConcurrency)
    const runner = yield* makeRunner(store, permits, timings)
    const layer = SupervisorLayer.pipe(
      Layer.provide(
        Layer.mergeAll(
          Layer.succeed(MissionStore, store.service),
          Layer.succeed(MissionRunner, runner.service),
          Layer.succeed(GlobalLlmPermits, permits),
          Layer.succeed(Quarantines, quarantines.service),
          Layer.succeed(RunnerConfig, full),
        ),
      ),
    )
    return { store, runner, permits, quarantines, layer }
  })

export const startSupervisor = (layer: Layer.Layer<Supervisor>) =>
  Layer.build(layer).pipe(Effect.map((ctx) => Context.get(ctx, Supervisor)))

/** Moves the TestClock in steps of `stepMs`, `steps` times. */
export const advance = (stepMs: number, steps: number) =>
  Effect.gen(function* () {
    for (let i = 0; i < steps; i++) yield* TestClock.adjust(stepMs)
  })

/** Moves the TestClock in steps until the fiber is done, and joins it. */
export const advanceUntilDone = <A, E>(fiber: Fiber.Fiber<A, E>, stepMs: number, maxSteps = 10_000) =>
  Effect.gen(function* () {
    for (let i = 0; i < maxSteps; i++) {
      if (Option.isSome(yield* Fiber.poll(fiber))) break
      yield* TestClock.adjust(stepMs)
    }
    if (Option.isNone(yield* Fiber.poll(fiber))) return yield* Effect.dieMessage(`still running after ${maxSteps} steps`)
    return yield* Fiber.join(fiber)
  })
