/**
 * Cluster mode's reads by shard (issue 19 follow-up, item 2) on the real store and database (server or
 * PGlite): the store stamps mission_snapshots.shard with cluster's shard of the user, and a runner
 * primes, reads again after its shards change, and asks for due missions only in its own shards.
 * Ownership is a settable set of shards here (the cluster itself is tested with real runner processes
 * in test/e2e/cluster.test.ts); everything else is the real stack.
 */
import { layer } from "@effect/vitest"
import { Context, Duration, Effect, Fiber, Layer, Metric, Schedule, Stream, SubscriptionRef } from "effect"
import { expect } from "vitest"
import { Ownership } from "../../src/actors/Ownership.js"
import { Supervisor, SupervisorLive } from "../../src/actors/Supervisor.js"
import { ClusterConfig, shardOf } from "../../src/cluster/ClusterConfig.js"
import { MissionStore } from "../../src/services/MissionStore.js"
import { clusterSnapshotsReadTotal } from "../../src/services/metrics.js"
import { defaultResponder, LlmStandIn } from "../support/LlmStandIn.js"
import { runnerServices } from "../support/RunnerStack.js"
import { insertChanges, missionInsertRow } from "../support/seed.js"
import { TestDatabase, TestDatabaseLive } from "../support/TestDatabase.js"

const SHARDS = 60
const USERS = 120

class OwnedShards extends Context.Tag("test/OwnedShards")<OwnedShards, SubscriptionRef.SubscriptionRef<ReadonlySet<number>>>() {}

const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i)

/** Ownership over the settable set: `owns` and `shards` answer from the set last emitted. */
const OwnershipTest = Layer.scoped(
  Ownership,
  Effect.gen(function* () {
    const ref = yield* OwnedShards
    let owned: ReadonlySet<number> = yield* SubscriptionRef.get(ref)
    return Ownership.of({
      owns: (userId) => owned.has(shardOf(userId, SHARDS)),
      changes: ref.changes.pipe(
        Stream.mapEffect((set) =>
          Effect.sync(() => {
            owned = set
          }),
        ),
      ),
      changedElsewhere: Effect.succeed([]),
      view: Effect.sync(() => ({ runner: "test:1", shardsOwned: owned.size, shards: SHARDS, peers: [] })),
      shardOf: (userId) => shardOf(userId, SHARDS),
      shards: () => [...owned].sort((a, b) => a - b),
      leasedElsewhere: () => Effect.succeed(new Set()),
      leasedHere: Effect.succeed([]),
      giveBack: () => Effect.succeed(0),
    })
  }),
)

const clusterConfig = Layer.succeed(ClusterConfig, {
  host: "127.0.0.1",
  port: 1,
  shards: SHARDS,
  shardLockExpiration: Duration.seconds(6),
  refreshAssignmentsInterval: Duration.seconds(1),
  runnerHealthCheckInterval: Duration.seconds(2),
})

const Stack = SupervisorLive.pipe(
  Layer.provideMerge(OwnershipTest),
  Layer.provideMerge(runnerServices({ runner: { tickEnabled: false } })),
  Layer.provideMerge(Layer.mergeAll(TestDatabaseLive, LlmStandIn.layer, clusterConfig, Layer.effect(OwnedShards, SubscriptionRef.make<ReadonlySet<number>>(new Set(range(1, 10)))))),
)

const users = Array.from({ length: USERS }, (_, u) => `shard-user-${u}`)
const usersIn = (shards: ReadonlyArray<number>) => users.filter((u) => shards.includes(shardOf(u, SHARDS)))
const actorUsers = Effect.map(Effect.flatMap(Supervisor, (s) => s.status), (all) => all.map((a) => a.userId).sort())
const readCount = Effect.map(Metric.value(clusterSnapshotsReadTotal), (s) => s.count)

/**
 * Owns shards 21–40, seeds `missions` due missions of a user of `shard` (runs of 3 s: two stand-in
 * requests of 1.5 s in tools mode), discovers, and starts a tick beside the test (without the loop's
 * ticks, tickEnabled false, a tick starts the due runs); returns once `inFlight` requests are out.
 */
const tickWithRunsUnderWay = (prefix: string, shard: number, missions: number, inFlight: number) =>
  Effect.gen(function* () {
    const owned = yield* OwnedShards
    const standIn = yield* LlmStandIn
    yield* standIn.setResponder((request) => ({ ...defaultResponder(request), delayMs: 1_500 }))
    const user = Array.from({ length: 500 }, (_, i) => `${prefix}-${i}`).find((u) => shardOf(u, SHARDS) === shard)!
    yield* SubscriptionRef.set(owned, new Set(range(21, 40)))
    const ids = missions === 1 ? [`${user}-m`] : Array.from({ length: missions }, (_, n) => `${user}-m${n + 1}`)
    yield* insertChanges(ids.map((id) => missionInsertRow(user, id, { nextRunAt: new Date(Date.now() - 60_000).toISOString() })))
    const supervisor = yield* Supervisor
    yield* supervisor.discover
    yield* actorUsers.pipe(
      Effect.repeat({ schedule: Schedule.spaced("50 millis"), until: (got) => got.includes(user) }),
      Effect.timeout("20 seconds"),
    )
    // A tick answers once its runs ended: it runs beside the test.
    const ticking = yield* Effect.fork(supervisor.tick)
    yield* standIn.inFlight.pipe(
      Effect.repeat({ schedule: Schedule.spaced("20 millis"), until: (n) => n >= inFlight }),
      Effect.timeout("20 seconds"),
    )
    return { user, ticking, owned, standIn, supervisor }
  })

layer(Stack, { timeout: 120_000, excludeTestServices: true })("a cluster runner reads only its own shards", (it) => {
  it.effect("snapshots carry their user's shard; priming, a shard change and the due query read only those shards' rows", () =>
    Effect.gen(function* () {
      const later = new Date(Date.now() + 3_600_000).toISOString()
      yield* insertChanges(users.map((u) => missionInsertRow(u, `${u}-m`, { nextRunAt: later })))
      const supervisor = yield* Supervisor
      // The first pass applies every row (the cursor is shared); actors start for shards 1–10 only.
      yield* supervisor.discover
      const db = yield* TestDatabase
      const stamped = yield* Effect.promise(() => db.ownerQuery("SELECT user_id, shard FROM mana_ai.mission_snapshots"))
      expect(stamped.length).toBe(USERS)
      for (const row of stamped) expect(row.shard).toBe(shardOf(String(row.user_id), SHARDS))
      const first = usersIn(range(1, 10)).sort()
      yield* actorUsers.pipe(
        Effect.repeat({ schedule: Schedule.spaced("50 millis"), until: (got) => got.length === first.length }),
        Effect.timeout("20 seconds"),
      )
      expect(yield* actorUsers).toEqual(first)

      // Shards 11–20 join: the rebalance reads those shards' snapshots, not every user's.
      const before = yield* readCount
      yield* SubscriptionRef.set(yield* OwnedShards, new Set(range(1, 20)))
      const expected = usersIn(range(1, 20)).sort()
      yield* actorUsers.pipe(
        Effect.repeat({ schedule: Schedule.spaced("50 millis"), until: (got) => got.length === expected.length }),
        Effect.timeout("20 seconds"),
      )
      expect(yield* actorUsers).toEqual(expected)
      const gainedRows = usersIn(range(11, 20)).length
      expect(gainedRows).toBeGreaterThan(0)
      expect((yield* readCount) - before).toBe(gainedRows)

      // Shards 1–10 leave: their actors go, nothing is read.
      const beforeLoss = yield* readCount
      yield* SubscriptionRef.set(yield* OwnedShards, new Set(range(11, 20)))
      const left = usersIn(range(11, 20)).sort()
      yield* actorUsers.pipe(
        Effect.repeat({ schedule: Schedule.spaced("50 millis"), until: (got) => got.length === left.length }),
        Effect.timeout("20 seconds"),
      )
      expect(yield* actorUsers).toEqual(left)
      expect((yield* readCount) - beforeLoss).toBe(0)

      // The due query with shards reads only theirs.
      const store = yield* MissionStore
      const due = yield* store.due(new Date(Date.now() + 7_200_000), range(11, 20))
      expect(due.map((s) => s.userId).sort()).toEqual(left)
      expect((yield* store.due(new Date(Date.now() + 7_200_000))).length).toBe(USERS)
    }),
  )

  it.effect("a shard that comes back while its user's actor is still leaving (a run under way): the user gets its actor again once it left", () =>
    Effect.gen(function* () {
      // A run that takes 3 s (inside the 5 s deadline): the actor leaves only after it.
      const { user, ticking, owned, standIn, supervisor } = yield* tickWithRunsUnderWay("bounce-user", 30, 1, 1)
      // Shard 30 goes (the actor is told to leave, its run goes on) and comes back at once.
      yield* SubscriptionRef.set(owned, new Set([...range(21, 40)].filter((x) => x !== 30)))
      yield* Effect.sleep("300 millis")
      expect(yield* supervisor.tickRunning).toBe(true) // its run is still under way
      yield* SubscriptionRef.set(owned, new Set(range(21, 40)))
      // The run ends, the actor leaves, and the user (owned again) is started from the store.
      yield* standIn.inFlight.pipe(
        Effect.repeat({ schedule: Schedule.spaced("50 millis"), until: (n) => n === 0 }),
        Effect.timeout("20 seconds"),
      )
      const answer = yield* Fiber.join(ticking)
      expect(answer.plansWrittenBack).toBe(1)
      // The status lists no actor that is leaving; the user's actor is back within a few lease polls.
      yield* actorUsers.pipe(
        Effect.repeat({ schedule: Schedule.spaced("100 millis"), until: (got) => got.includes(user) }),
        Effect.timeout("10 seconds"),
        Effect.ignore,
      )
      expect(yield* actorUsers).toContain(user)
      yield* standIn.reset
    }),
  )
  it.effect("an actor told to leave finishes the runs under way and starts none of its user's runs still waiting for a permit", () =>
    Effect.gen(function* () {
      yield* Effect.flatMap(LlmStandIn, (standIn) => standIn.reset)
      // USER_CONCURRENCY is 2, so 2 of the 4 due runs are under way and 2 wait for the user's permits.
      const { user, ticking, owned, standIn } = yield* tickWithRunsUnderWay("leave-user", 32, 4, 2)
      // Shard 32 goes to another runner while two runs are under way and two wait for the user's permits.
      yield* SubscriptionRef.set(owned, new Set([...range(21, 40)].filter((x) => x !== 32)))
      const answer = yield* Fiber.join(ticking)
      // The two under way are written; the two waiting never start here (their new owner runs them).
      expect(answer.plansWrittenBack).toBe(2)
      expect(answer.errors.filter((e) => e.endsWith("not started here, its user moved to another runner")).length).toBe(2)
      // Two requests per run (tools mode): two runs asked the LLM, not four.
      expect((yield* standIn.requests).length).toBe(4)
      yield* actorUsers.pipe(
        Effect.repeat({ schedule: Schedule.spaced("50 millis"), until: (got) => !got.includes(user) }),
        Effect.timeout("10 seconds"),
      )
      yield* standIn.reset
    }),
  )
})
