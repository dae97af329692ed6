/**
 * A quarantine survives a restart of the process (issue 15 item 2): the supervisor keeps it in
 * mana_ai.actor_quarantines on the real database (server or PGlite) as the runner role. The store
 * and runner are the doubles, so the actor can be made to die; two supervisors built one after the
 * other on the same database play two processes.
 */
import { it } from "@effect/vitest"
import { Context, Duration, Effect, Exit, Layer, Ref, Scope } from "effect"
import { expect } from "vitest"
import { Supervisor, SupervisorLayer } from "../../src/actors/Supervisor.js"
import { RunnerConfig } from "../../src/services/AppConfig.js"
import { GlobalLlmPermits } from "../../src/services/GlobalLlmPermits.js"
import { MigrationsLive } from "../../src/services/Migrations.js"
import { MissionRunner } from "../../src/services/MissionRunner.js"
import { MissionStore } from "../../src/services/MissionStore.js"
import { Quarantines } from "../../src/services/Quarantines.js"
import { RunnerSqlLive, TestDatabase, TestDatabaseLive } from "../support/TestDatabase.js"
import { advance, makeRunner, makeStore } from "./doubles.js"

const Db = Layer.provideMerge(MigrationsLive, Layer.provideMerge(RunnerSqlLive(4), TestDatabaseLive))

const config = { ...RunnerConfig.defaults, restartMax: 2, restartWindow: Duration.minutes(1), tickInterval: Duration.seconds(5) }

it.layer(Db, { timeout: 120_000 })("quarantine across processes", (it) => {
  it.scoped("a user quarantined by one process stays quarantined in the next, and restart lifts it for good", () =>
    Effect.gen(function* () {
      const db = yield* TestDatabase
      const store = yield* makeStore
      const permits = yield* GlobalLlmPermits.sized(config.globalConcurrency)
      const runner = yield* makeRunner(store, permits, { beforeMs: 0, llmMs: 0, afterMs: 0 })
      yield* Ref.set(runner.script, (request, run) =>
        request.mission.id === "poison" ? Effect.die(new Error("poison mission")) : run,
      )
      yield* store.put({ userId: "victim", id: "poison", nextRunAt: 0 })
      const supervisorLayer = SupervisorLayer.pipe(
        Layer.provide(
          Layer.mergeAll(
            Layer.succeed(MissionStore, store.service),
            Layer.succeed(MissionRunner, runner.service),
            // Each process has its own (its drain closes them); the runner double keeps the test's.
            Layer.effect(GlobalLlmPermits, GlobalLlmPermits.sized(config.globalConcurrency)),
            Layer.succeed(RunnerConfig, config),
            Quarantines.Default,
          ),
        ),
      )
      /** One "process": the supervisor in its own scope. */
      const start = Effect.gen(function* () {
        const scope = yield* Scope.make()
        const ctx = yield* Layer.buildWithScope(supervisorLayer, scope)
        return { supervisor: Context.get(ctx, Supervisor), stop: Scope.close(scope, Exit.void) }
      })
      const poisonStarts = Ref.get(runner.starts).pipe(Effect.map((s) => s.filter((r) => r.missionId === "poison").length))
      const kept = Effect.promise(() => db.ownerQuery("SELECT user_id, reason FROM mana_ai.actor_quarantines"))

      const first = yield* start
      yield* advance(1_000, 10)
      expect(yield* poisonStarts).toBe(2)
      expect(yield* kept).toEqual([{ user_id: "victim", reason: "ActorCrashed: run of mission poison died: Error: poison mission" }])
      yield* first.stop

      const second = yield* start
      yield* advance(1_000, 120)
      expect(yield* poisonStarts).toBe(2)
      expect((yield* second.supervisor.status).find((s) => s.userId === "victim")).toMatchObject({ state: "quarantined" })

      // Fixed and lifted by the operator: it runs, and the next process does not quarantine it again.
      yield* Ref.set(runner.script, (_, run) => run)
      expect(yield* second.supervisor.restart("victim")).toBe(true)
      yield* advance(1_000, 2)
      expect(yield* poisonStarts).toBe(3)
      expect(yield* kept).toEqual([])
      yield* second.stop

      const third = yield* start
      expect((yield* third.supervisor.status).find((s) => s.userId === "victim")?.state).not.toBe("quarantined")
      yield* third.stop
    }),
  )
})
