/**
 * MISSION_TIMEOUT_MS covers the whole run, claim to the commit of the write-back (SPEC §4), on the
 * real stack: the runner's pool (built as the process builds it) reaches the test database through a
 * TcpProxy the test owns, the LLM is the HTTP stand-in, nothing is doubled.
 *
 * The proxy holds the write-back's INSERT past the deadline: the run ends as MissionTimeout, its
 * transaction rolls back whole (the INSERT, once let through, is undone), the claim is given back,
 * the mission stays due, and a later run writes exactly once. Before the fix the write-back ran
 * outside the deadline and this run was written. The claim's transaction, whose COMMIT goes in the
 * same round trip, held past the deadline too: the claim committed late is given back.
 */
import { layer } from "@effect/vitest"
import { Duration, Effect, Either, Fiber, Layer } from "effect"
import { expect } from "vitest"
import { MissionRunner } from "../../src/services/MissionRunner.js"
import { MissionStore } from "../../src/services/MissionStore.js"
import { LlmStandIn } from "../support/LlmStandIn.js"
import { missionOf, runnerRowCount, runnerServices, snapshotOf } from "../support/RunnerStack.js"
import { insertChanges, missionInsertRow } from "../support/seed.js"
import { TcpProxy } from "../support/TcpProxy.js"
import { TestDatabase } from "../support/TestDatabase.js"
import { ProxiedPool, ProxiedWorld } from "../support/ProxiedDatabase.js"

const DEADLINE_MS = 3_000

const Base = ProxiedWorld
const Stack = runnerServices({ sql: ProxiedPool, missionTimeout: Duration.millis(DEADLINE_MS), llmTimeout: "2 seconds" }).pipe(
  Layer.provideMerge(Base),
)

/** As the owner: the run claims held for one mission. */
const claimCount = (userId: string, missionId: string) =>
  Effect.flatMap(TestDatabase, (db) =>
    Effect.promise(async () => {
      const rows = await db.ownerQuery(
        "SELECT count(*)::int AS n FROM mana_ai.run_claims WHERE user_id = $1 AND mission_id = $2",
        [userId, missionId],
      )
      return Number(rows[0]?.n ?? 0)
    }),
  )

layer(Stack, { timeout: 120_000, excludeTestServices: true })("MissionRunner: the deadline covers claim to commit", (it) => {
  it.effect("a write-back held past MISSION_TIMEOUT_MS ends as MissionTimeout, writes nothing, gives its claim back; a later run writes once", () =>
    Effect.gen(function* () {
      const proxy = yield* TcpProxy
      const standIn = yield* LlmStandIn
      yield* standIn.reset
      const userId = "deadline-user"
      const missionId = "deadline-mission"
      yield* insertChanges([missionInsertRow(userId, missionId, { nextRunAt: new Date(Date.now() - 60_000).toISOString() })])
      const mission = missionOf(yield* snapshotOf(userId, missionId))
      const runner = yield* MissionRunner

      // The write-back's INSERT never reaches the server while held.
      const hold = yield* proxy.holdClientMessage({ match: "INSERT INTO sync_changes" })
      const started = Date.now()
      const fiber = yield* Effect.fork(Effect.either(runner.run({ userId, mission })))
      yield* hold.caught.pipe(Effect.timeout("10 seconds"))
      expect((yield* standIn.requests).length, "planned before the write-back").toBeGreaterThanOrEqual(1)
      // Held well past the deadline (measured from the run's start), then let through: the server
      // runs the INSERT in the transaction the interrupted run must roll back.
      yield* Effect.sleep(Duration.millis(Math.max(0, started + DEADLINE_MS + 1_500 - Date.now())))
      yield* hold.release
      const result = yield* Fiber.join(fiber).pipe(Effect.timeout("15 seconds"))

      expect(Either.isLeft(result) && result.left._tag).toBe("MissionTimeout")
      expect(yield* runnerRowCount(userId, missionId)).toBe(0)
      expect(yield* claimCount(userId, missionId)).toBe(0)
      const store = yield* MissionStore
      yield* store.refresh
      expect((yield* store.due(new Date())).some((s) => s.userId === userId && s.missionId === missionId)).toBe(true)

      // The retry (the actor's timeout backoff is its own concern) writes exactly once.
      const retry = yield* runner.run({ userId, mission })
      expect(retry).toMatchObject({ _tag: "Written" })
      expect(yield* runnerRowCount(userId, missionId)).toBe(1)
      const again = yield* runner.run({ userId, mission })
      expect(again._tag).toBe("Skipped")
      expect(yield* runnerRowCount(userId, missionId)).toBe(1)
    }),
  )

  it.effect("a claim held past MISSION_TIMEOUT_MS (its COMMIT goes with it) ends as MissionTimeout; the claim it committed late is given back", () =>
    Effect.gen(function* () {
      const proxy = yield* TcpProxy
      const standIn = yield* LlmStandIn
      yield* standIn.reset
      const userId = "deadline-claim-user"
      const missionId = "deadline-claim-mission"
      yield* insertChanges([missionInsertRow(userId, missionId, { nextRunAt: new Date(Date.now() - 60_000).toISOString() })])
      const mission = missionOf(yield* snapshotOf(userId, missionId))
      const runner = yield* MissionRunner
      // New connections, so the claim's text is parsed (sent) again rather than bound by name.
      yield* proxy.dropAll
      yield* Effect.sleep("300 millis")

      const hold = yield* proxy.holdClientMessage({ match: "INSERT INTO mana_ai.run_claims" })
      const started = Date.now()
      const fiber = yield* Effect.fork(Effect.either(runner.run({ userId, mission })))
      yield* hold.caught.pipe(Effect.timeout("10 seconds"))
      // Let through after the deadline: the server takes the claim and commits it (the COMMIT is in the
      // same sequence) before the interrupted run's ROLLBACK, which then has nothing to undo.
      yield* Effect.sleep(Duration.millis(Math.max(0, started + DEADLINE_MS + 1_500 - Date.now())))
      yield* hold.release
      const result = yield* Fiber.join(fiber).pipe(Effect.timeout("15 seconds"))

      expect(Either.isLeft(result) && result.left._tag).toBe("MissionTimeout")
      expect((yield* standIn.requests).length, "never planned").toBe(0)
      expect(yield* runnerRowCount(userId, missionId)).toBe(0)
      // Not left to expire (MISSION_TIMEOUT_MS + a minute): the retry need not wait for it.
      expect(yield* claimCount(userId, missionId)).toBe(0)
      const retry = yield* runner.run({ userId, mission })
      expect(retry).toMatchObject({ _tag: "Written" })
      expect(yield* runnerRowCount(userId, missionId)).toBe(1)
    }),
  )
})
