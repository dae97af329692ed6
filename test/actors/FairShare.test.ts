/**
 * Fair share (issue 16 item 6): run slots and LLM permits are granted round-robin across users, so a
 * quiet user's due run is not queued behind a hot user's backlog. The supervisor on the doubles,
 * under TestClock; the LLM permits are the real GlobalLlmPermits, wrapped to record each grant.
 */
import { describe, expect, it } from "@effect/vitest"
import { Clock, Duration, Effect, Exit, FiberRef, Layer, Ref, Scope } from "effect"
import { SupervisorLayer } from "../../src/actors/Supervisor.js"
import { RunnerConfig, type RunnerConfigShape } from "../../src/services/AppConfig.js"
import { GlobalLlmPermits, llmPermitUser } from "../../src/services/GlobalLlmPermits.js"
import { MissionRunner } from "../../src/services/MissionRunner.js"
import { MissionStore } from "../../src/services/MissionStore.js"
import { Quarantines } from "../../src/services/Quarantines.js"
import { advance, advanceUntilDone, makeQuarantines, makeRunner, makeStore, startSupervisor } from "./doubles.js"

const HOT_USERS = 4
const HOT_DUE = 60
const QUIET_USERS = 3
const QUIET_DUE_AT = 5_000
const LLM_MS = 1_000
const PERMITS = 2

interface Grant {
  readonly user: string
  readonly at: number
}

/** The real LLM permits, noting each grant's user and instant, in order. */
const recordingPermits = (permits: GlobalLlmPermits, grants: Ref.Ref<Array<Grant>>) =>
  GlobalLlmPermits.make({
    ...permits,
    withPermit: (self) =>
      permits.withPermit(
        Effect.zipRight(
          Effect.flatMap(Effect.all([FiberRef.get(llmPermitUser), Clock.currentTimeMillis]), ([user, at]) =>
            Ref.update(grants, (g) => [...g, { user, at }]),
          ),
          self,
        ),
      ),
  })

/** The supervisor over the doubles (the runner's LLM permits recorded), started in `scope`. */
const superviseIn = (
  scope: Scope.Scope,
  parts: {
    readonly store: Effect.Effect.Success<typeof makeStore>
    readonly runner: Effect.Effect.Success<ReturnType<typeof makeRunner>>
    readonly permits: GlobalLlmPermits
    readonly quarantines: Effect.Effect.Success<ReturnType<typeof makeQuarantines>>
    readonly config: RunnerConfigShape
  },
) =>
  Scope.extend(
    startSupervisor(
      SupervisorLayer.pipe(
        Layer.provide(
          Layer.mergeAll(
            Layer.succeed(MissionStore, parts.store.service),
            Layer.succeed(MissionRunner, parts.runner.service),
            Layer.succeed(GlobalLlmPermits, parts.permits),
            Layer.succeed(Quarantines, parts.quarantines.service),
            Layer.succeed(RunnerConfig, parts.config),
          ),
        ),
      ),
    ),
    scope,
  )

describe("fair share", () => {
  it.scoped(
    "quiet users due while 4 hot users have hundreds waiting get a run slot and an LLM permit within a round of the ring",
    () =>
      Effect.gen(function* () {
        // USER_CONCURRENCY 60 lets each hot user put all its 60 runs at the run slots (max(2 × 2, 60) =
        // 60 slots), so hundreds wait for slots and permits when the quiet users come due.
        const config = {
          ...RunnerConfig.defaults,
          userConcurrency: HOT_DUE,
          globalConcurrency: PERMITS,
          tickEnabled: true,
          tickInterval: Duration.seconds(5),
        }
        const store = yield* makeStore
        const quarantines = yield* makeQuarantines()
        const permits = yield* GlobalLlmPermits.sized(PERMITS)
        const grants = yield* Ref.make<Array<Grant>>([])
        const recording = recordingPermits(permits, grants)
        const runner = yield* makeRunner(store, recording, { beforeMs: 100, llmMs: LLM_MS, afterMs: 50 })
        for (let u = 0; u < HOT_USERS; u++)
          for (let i = 0; i < HOT_DUE; i++)
            yield* store.put({ userId: `hot${u}`, id: `hot${u}-m${i}`, nextRunAt: 0, everyMinutes: 24 * 60 })
        for (let q = 0; q < QUIET_USERS; q++)
          yield* store.put({ userId: `quiet${q}`, id: `quiet${q}-m`, nextRunAt: QUIET_DUE_AT, everyMinutes: 24 * 60 })
        const scope = yield* Scope.make()
        yield* superviseIn(scope, { store, runner, permits, quarantines, config })
        yield* advance(250, 4 * 20) // 20 s
        // The drain lets the requests out finish: the clock has to move for it.
        yield* advanceUntilDone(yield* Effect.fork(Scope.close(scope, Exit.void)), 250)

        const all = yield* Ref.get(grants)
        const starts = yield* Ref.get(runner.starts)
        // The hot backlog is still far from done: 2 permits × 1 s for 240 runs is 120 s.
        expect(all.filter((g) => g.user.startsWith("hot")).length).toBeLessThan(HOT_USERS * HOT_DUE / 2)
        for (let q = 0; q < QUIET_USERS; q++) {
          const user = `quiet${q}`
          const start = starts.find((s) => s.userId === user)
          const grant = all.findIndex((g) => g.user === user)
          expect(start).toBeDefined()
          expect(grant).toBeGreaterThanOrEqual(0)
          // Runs started after the quiet user came due and before its run: at most one turn for each
          // other user in the ring (4 hot + 2 other quiet), plus the same instant's ties.
          const startsBefore = starts.filter((s) => s.at >= QUIET_DUE_AT && s.at < start!.at).length
          expect(startsBefore).toBeLessThanOrEqual(HOT_USERS + QUIET_USERS)
          // LLM grants between its request (100 ms after its start) and its own grant: one round.
          const requestAt = start!.at + 100
          const grantsBefore = all.slice(0, grant).filter((g) => g.at >= requestAt).length
          expect(grantsBefore).toBeLessThanOrEqual(HOT_USERS + QUIET_USERS)
          // So in time: a round of the slots and a round of the permits, each (7 users / 2 permits) × 1 s,
          // where first come first served would queue it behind the whole backlog (~100 s).
          expect(all[grant]!.at - QUIET_DUE_AT).toBeLessThanOrEqual(2 * 4 * LLM_MS + 100 + 250)
        }
      }),
    { timeout: 30_000 },
  )

  it.scoped(
    "all due at once: the free run slots go round-robin across the users that asked, so every quiet user's LLM request is in the first round of the ring",
    () =>
      Effect.gen(function* () {
        // 4 hot users × 20 due and 8 quiet users × 1, all due when the supervisor starts; USER 4,
        // GLOBAL 4: 8 run slots. The store hands the hot users over first (as discovery does when
        // their ids sort first), so first come first served gives hot0 and hot1 the 8 free slots, the
        // first 4 LLM permits to hot0 and the next to hot1's waiting runs, and the quiet users
        // their requests only after 10 hot grants and more.
        const HOT = 4
        const QUIET = 8
        const config = {
          ...RunnerConfig.defaults,
          userConcurrency: 4,
          globalConcurrency: 4,
          tickEnabled: true,
          tickInterval: Duration.seconds(5),
        }
        const store = yield* makeStore
        const quarantines = yield* makeQuarantines()
        const permits = yield* GlobalLlmPermits.sized(config.globalConcurrency)
        const grants = yield* Ref.make<Array<Grant>>([])
        const recording = recordingPermits(permits, grants)
        const runner = yield* makeRunner(store, recording, { beforeMs: 100, llmMs: LLM_MS, afterMs: 50 })
        for (let u = 0; u < HOT; u++)
          for (let i = 0; i < 20; i++) yield* store.put({ userId: `hot${u}`, id: `hot${u}-m${i}`, nextRunAt: 0, everyMinutes: 24 * 60 })
        for (let q = 0; q < QUIET; q++) yield* store.put({ userId: `quiet${q}`, id: `quiet${q}-m`, nextRunAt: 0, everyMinutes: 24 * 60 })
        const scope = yield* Scope.make()
        yield* superviseIn(scope, { store, runner, permits, quarantines, config })
        yield* advance(250, 4 * 5) // 5 s: 4 rounds of the LLM permits
        yield* advanceUntilDone(yield* Effect.fork(Scope.close(scope, Exit.void)), 250)

        const all = (yield* Ref.get(grants)).map((g) => g.user)
        const starts = (yield* Ref.get(runner.starts)).map((s) => s.userId)
        // Round-robin over the 12 users that asked at once: each user's first run within the first
        // 12 run starts and its first LLM request within the first 12 grants (3 rounds of 4 permits).
        for (let q = 0; q < QUIET; q++) {
          expect(starts.indexOf(`quiet${q}`)).toBeGreaterThanOrEqual(0)
          expect(starts.indexOf(`quiet${q}`)).toBeLessThan(HOT + QUIET)
          expect(all.indexOf(`quiet${q}`)).toBeGreaterThanOrEqual(0)
          expect(all.indexOf(`quiet${q}`)).toBeLessThan(HOT + QUIET)
        }
        for (let u = 0; u < HOT; u++) expect(starts.slice(0, HOT + QUIET)).toContain(`hot${u}`)
        // Never more than the limits: USER_CONCURRENCY per user, GLOBAL_CONCURRENCY LLM requests.
        for (const c of (yield* Ref.get(runner.perUser)).values()) expect(c.max).toBeLessThanOrEqual(config.userConcurrency)
        expect((yield* Ref.get(runner.llm)).max).toBe(config.globalConcurrency)
      }),
    { timeout: 30_000 },
  )
})
