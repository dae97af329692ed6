/**
 * Database faults under the real run pipeline, the runner's pool built as the process builds it
 * (databaseLayerFromUrl) and connected through a TcpProxy the test owns: the runner's backends
 * terminated mid-run (pg_terminate_backend as the owner, on the runner role's backends of this
 * test's database only), a commit whose acknowledgement is lost, the server refused or blackholed
 * for a few seconds, and random connection drops during a batch of runs.
 *
 * The runner recovers by itself (the same layers throughout: no restart), no write Postgres
 * acknowledged is lost, and no mission ever holds an iteration twice.
 */
import { layer } from "@effect/vitest"
import { Duration, Effect, Either, Fiber, Layer, Redacted, Schedule } from "effect"
import pg from "pg"
import { expect } from "vitest"
import type { Mission } from "../../src/domain/mission.js"
import { MissionRunner, type RunOutcome } from "../../src/services/MissionRunner.js"
import { MissionStore } from "../../src/services/MissionStore.js"
import { audited } from "../support/auditedTest.js"
import { missionKey } from "../support/FaultLedger.js"
import { LlmStandIn } from "../support/LlmStandIn.js"
import { runnerRows } from "../support/eventLogRows.js"
import { missionOf, runnerRowCount, runnerServices, snapshotOf } from "../support/RunnerStack.js"
import { insertChanges, missionFields, missionInsertRow } from "../support/seed.js"
import { TcpProxy } from "../support/TcpProxy.js"
import { TestDatabase } from "../support/TestDatabase.js"
import { ProxiedPool, ProxiedWorld } from "../support/ProxiedDatabase.js"

const ON_SERVER = (process.env.TEST_DATABASE_URL ?? "") !== ""

const Base = ProxiedWorld
const Stack = runnerServices({ sql: ProxiedPool, missionTimeout: "6 seconds", llmTimeout: "2 seconds" }).pipe(
  Layer.provideMerge(Base),
)

const tally = { faults: {} as Record<string, number>, runs: 0 }
const acknowledged: Array<{ key: string; iterationId: string }> = []
const fault = (kind: string, n = 1) => {
  tally.faults[kind] = (tally.faults[kind] ?? 0) + n
}

const sleep = (ms: number) => Effect.sleep(Duration.millis(ms))

let counter = 0
const dueMission = (prefix: string) =>
  Effect.gen(function* () {
    const userId = `${prefix}-user-${++counter}`
    const missionId = `${prefix}-mission-${counter}`
    const nextRunAt = new Date(Date.now() - 60_000).toISOString()
    yield* insertChanges([missionInsertRow(userId, missionId, { nextRunAt })])
    return { userId, missionId, nextRunAt }
  })

/** Runs once; a Written outcome is an acknowledged write the suite must find stored later. */
const run = (userId: string, mission: Mission) =>
  Effect.gen(function* () {
    const runner = yield* MissionRunner
    const result = yield* Effect.either(runner.run({ userId, mission }))
    tally.runs++
    if (Either.isRight(result) && result.right._tag === "Written") {
      acknowledged.push({ key: missionKey(userId, mission.id), iterationId: result.right.iterationId })
    }
    return result
  })

const tagOf = (result: Either.Either<RunOutcome, { readonly _tag: string }>) =>
  Either.isRight(result) ? result.right._tag : result.left._tag

/** As the owner: terminates every backend of the runner role in this test's database. */
const terminateRunnerBackends = Effect.flatMap(TestDatabase, (db) =>
  Effect.promise(async () => {
    const rows = await db.ownerQuery(
      `SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity
       WHERE usename = $1 AND datname = current_database() AND pid <> pg_backend_pid()`,
      [db.runnerRole],
    )
    return Number(rows[0]?.n ?? 0)
  }),
)

/** The owner's URL for this test's database (server mode): TEST_DATABASE_URL pointed at that database. */
const ownerUrlOf = (runnerUrl: Redacted.Redacted<string>) => {
  const u = new URL(process.env.TEST_DATABASE_URL ?? "")
  u.pathname = new URL(Redacted.value(runnerUrl)).pathname
  return u.toString()
}

const waitUntil = (what: string, check: Effect.Effect<boolean>, timeoutMs = 10_000) =>
  Effect.gen(function* () {
    const deadline = Date.now() + timeoutMs
    while (!(yield* check)) {
      if (Date.now() > deadline) return yield* Effect.dieMessage(`timed out waiting for ${what}`)
      yield* sleep(25)
    }
  })

layer(Stack, { timeout: 180_000, excludeTestServices: true })("database faults under the run pipeline", (it) => {
  // Every test ends with the audit of what it stored: no acknowledged write of its own lost, no
  // duplicate iteration; each records its own figures.
  const check = <A, E, R>(body: Effect.Effect<A, E, R>) =>
    audited("databaseFaults", () => ({ runs: tally.runs, rejected: 0, faults: tally.faults }), body, () => acknowledged)

  it.effect("the runner's connections cut while the LLM answers: the write-back gets a fresh connection and writes once", () =>
    check(Effect.gen(function* () {
      const standIn = yield* LlmStandIn
      const proxy = yield* TcpProxy
      yield* standIn.reset
      const { userId, missionId } = yield* dueMission("cut")
      const mission = missionOf(yield* snapshotOf(userId, missionId))
      yield* standIn.enqueue({ delayMs: 1200 })
      const fiber = yield* Effect.fork(run(userId, mission))
      yield* waitUntil("the LLM request", Effect.map(standIn.inFlight, (n) => n >= 1))
      const cut = ON_SERVER ? yield* terminateRunnerBackends : yield* proxy.dropAll
      expect(cut).toBeGreaterThanOrEqual(1)
      fault(ON_SERVER ? "db:pg_terminate_backend" : "db:connections-dropped", cut)
      const result = yield* Fiber.join(fiber)
      expect(tagOf(result)).toBe("Written")
      expect(yield* runnerRowCount(userId, missionId)).toBe(1)
    })))

  it.effect.skipIf(!ON_SERVER)(
    "the write transaction terminated at its INSERT: nothing written, the run fails with SqlError, the retry writes once",
    () =>
      Effect.scoped(Effect.gen(function* () {
        const db = yield* TestDatabase
        const standIn = yield* LlmStandIn
        yield* standIn.reset
        const { userId, missionId } = yield* dueMission("intx")
        const mission = missionOf(yield* snapshotOf(userId, missionId))
        // The sync server's side holds a lock that makes every INSERT wait: the runner's write-back
        // blocks inside its transaction, after its reads, where the termination then hits it.
        const owner = yield* Effect.acquireRelease(
          Effect.promise(async () => {
            const c = new pg.Client({ connectionString: ownerUrlOf(db.runnerUrl) })
            c.on("error", () => {})
            await c.connect()
            return c
          }),
          (c) => Effect.promise(() => c.end().catch(() => {})),
        )
        yield* Effect.promise(() => owner.query("BEGIN; LOCK TABLE sync_changes IN SHARE MODE"))
        const fiber = yield* Effect.fork(run(userId, mission))
        yield* waitUntil(
          "the write-back to wait on the lock",
          Effect.promise(async () => {
            const rows = await db.ownerQuery(
              `SELECT count(*)::int AS n FROM pg_stat_activity
               WHERE usename = $1 AND datname = current_database() AND wait_event_type = 'Lock'
                 AND query ILIKE '%INSERT INTO sync_changes%'`,
              [db.runnerRole],
            )
            return Number(rows[0]?.n ?? 0) >= 1
          }),
        )
        const killed = yield* terminateRunnerBackends
        expect(killed).toBeGreaterThanOrEqual(1)
        fault("db:pg_terminate_backend", killed)
        yield* Effect.promise(() => owner.query("ROLLBACK"))
        const result = yield* Fiber.join(fiber)
        expect(tagOf(result)).toBe("SqlError")
        expect(yield* runnerRowCount(userId, missionId)).toBe(0)
        // The same services, no restart: the retry writes exactly one iteration.
        expect(tagOf(yield* run(userId, mission))).toBe("Written")
        expect(yield* runnerRowCount(userId, missionId)).toBe(1)
      })),
  )

  it.effect("a commit whose acknowledgement is lost: the row is there once, and the retry adds nothing", () =>
    check(Effect.gen(function* () {
      const proxy = yield* TcpProxy
      const standIn = yield* LlmStandIn
      yield* standIn.reset
      const { userId, missionId } = yield* dueMission("ack")
      const mission = missionOf(yield* snapshotOf(userId, missionId))
      // The pool's connections end first, so the run's transactions parse their statements on new ones and
      // the proxy sees the INSERT's text (a connection that prepared it before sends only its name).
      yield* proxy.dropAll
      yield* sleep(300) // the pool notices its connections ended and opens new ones for the run
      const fired = yield* proxy.cutAfterForwarding({ after: "INSERT INTO sync_changes", cut: "COMMIT", lingerMs: 500 })
      const result = yield* run(userId, mission)
      yield* fired.pipe(Effect.timeout("5 seconds"))
      fault("db:commit-ack-lost")
      expect(tagOf(result)).toBe("SqlError")
      yield* sleep(600) // the server finishes the COMMIT it received
      expect(yield* runnerRowCount(userId, missionId)).toBe(1)
      const retry = yield* run(userId, mission)
      expect(tagOf(retry)).toBe("Skipped")
      expect(yield* runnerRowCount(userId, missionId)).toBe(1)
    })))

  it.scoped("the server refused for 3 s: runs and discovery fail fast without writing, then recover by themselves", () =>
    check(Effect.gen(function* () {
      const proxy = yield* TcpProxy
      const store = yield* MissionStore
      const standIn = yield* LlmStandIn
      yield* standIn.reset
      const seeded = [yield* dueMission("down"), yield* dueMission("down"), yield* dueMission("down")]
      const missions = yield* Effect.forEach(seeded, (s) => Effect.map(snapshotOf(s.userId, s.missionId), missionOf))
      yield* proxy.setMode("refuse")
      yield* Effect.addFinalizer(() => proxy.resume)
      fault("db:server-refused", yield* proxy.dropAll)
      const started = Date.now()
      const during = yield* run(seeded[0]!.userId, missions[0]!)
      expect(tagOf(during)).toBe("SqlError")
      expect(Either.isLeft(yield* Effect.either(store.refresh))).toBe(true)
      // Fast, not waiting out the refusal: well under the 10 s connect timeout (a wide margin for busy machines).
      expect(Date.now() - started).toBeLessThan(8_000)
      yield* sleep(Math.max(0, 3000 - (Date.now() - started)))
      yield* proxy.resume
      yield* store.refresh
      for (const [i, s] of seeded.entries()) {
        expect(tagOf(yield* run(s.userId, missions[i]!))).toBe("Written")
        expect(yield* runnerRowCount(s.userId, s.missionId)).toBe(1)
      }
    })))

  it.scoped("new connections blackholed for 2 s: a run started then waits or fails, writes nothing twice, and all write once after", () =>
    check(Effect.gen(function* () {
      const proxy = yield* TcpProxy
      const standIn = yield* LlmStandIn
      yield* standIn.reset
      const s = yield* dueMission("hole")
      const mission = missionOf(yield* snapshotOf(s.userId, s.missionId))
      yield* proxy.setMode("blackhole")
      yield* Effect.addFinalizer(() => proxy.resume)
      fault("db:blackholed", yield* proxy.dropAll)
      yield* sleep(200) // the pool notices its cut connections before the run asks for one
      const fiber = yield* Effect.fork(run(s.userId, mission))
      yield* sleep(2000)
      expect((yield* proxy.stats).blackholed).toBeGreaterThanOrEqual(1)
      yield* proxy.resume
      const first = yield* Fiber.join(fiber)
      if (tagOf(first) !== "Written") expect(tagOf(yield* run(s.userId, mission))).toBe("Written")
      expect(yield* runnerRowCount(s.userId, s.missionId)).toBe(1)
    })))

  it.scoped("random connection drops during 12 runs: every acknowledged write is stored, each mission ends with exactly one", () =>
    check(Effect.gen(function* () {
      const proxy = yield* TcpProxy
      const store = yield* MissionStore
      const standIn = yield* LlmStandIn
      const db = yield* TestDatabase
      yield* standIn.reset
      yield* standIn.setResponder(() => ({ delayMs: 40 }))
      const seeded = yield* Effect.forEach(Array.from({ length: 12 }), () => dueMission("chaos"))
      const missions = yield* Effect.forEach(seeded, (s) => Effect.map(snapshotOf(s.userId, s.missionId), missionOf))

      // A seeded generator: the same drop schedule on every run of the suite.
      let seed = 0x5eed
      const random = () => {
        seed = (seed * 1103515245 + 12345) & 0x7fffffff
        return seed / 0x7fffffff
      }
      let drops = 0
      let stop = false
      const chaos = Effect.gen(function* () {
        // A fixed number of rounds, not "until the runs finish": on a busy machine a run can take longer
        // than the gap between drops, and endless chaos would then starve every attempt.
        for (let round = 0; round < 12 && !stop; round++) {
          yield* sleep(60 + Math.floor(random() * 240))
          drops += yield* proxy.dropAll
          if (random() < 0.25) {
            yield* proxy.setMode("reset")
            yield* sleep(100)
            yield* proxy.resume
          }
        }
      })
      const chaosFiber = yield* Effect.fork(chaos)
      yield* Effect.addFinalizer(() => proxy.resume)

      const outcomes = yield* Effect.forEach(
        seeded,
        (s, i) =>
          Effect.gen(function* () {
            for (let attempt = 1; attempt <= 25; attempt++) {
              yield* Effect.either(store.refresh) // discovery under the same faults
              const result = yield* run(s.userId, missions[i]!)
              const tag = tagOf(result)
              // Final: written, or found written already (a commit whose acknowledgement was lost). Any other
              // skip (a claim whose answer was lost reads as claimed-elsewhere) is retried, as the actor does.
              const reason = Either.isRight(result) && result.right._tag === "Skipped" ? result.right.reason : undefined
              if (tag === "Written" || reason === "already-written") return { tag, attempt, reason }
              yield* sleep(50)
            }
            return { tag: "gave-up", attempt: 25, reason: undefined }
          }),
        { concurrency: 3 },
      )
      stop = true
      yield* Fiber.join(chaosFiber)
      fault("db:connections-dropped", drops)
      expect(drops).toBeGreaterThanOrEqual(3)
      expect(outcomes.map((o) => o.tag).filter((t) => t === "gave-up")).toEqual([])
      const counts = yield* Effect.forEach(seeded, (s) => runnerRowCount(s.userId, s.missionId))
      expect({ outcomes, counts }).toEqual({ outcomes, counts: seeded.map(() => 1) })

      // Discovery after the faults: every snapshot is the mission as seeded plus the one row the runner
      // wrote (its iterations and nextRunAt, read straight from that row). The pool may still hand out a
      // connection cut by the last drop a moment ago: that refresh fails and the next works.
      yield* store.refresh.pipe(Effect.retry(Schedule.spaced("100 millis").pipe(Schedule.intersect(Schedule.recurs(3)))))
      for (const s of seeded) {
        const snapshot = (yield* store.forUser(s.userId)).find((x) => x.missionId === s.missionId)
        const [written] = yield* runnerRows(s.userId, s.missionId)
        const data = written!.data as { iterations: ReadonlyArray<{ id: string }>; nextRunAt: string }
        expect(data.iterations).toHaveLength(1)
        expect(Date.parse(data.nextRunAt)).toBeGreaterThan(Date.parse(s.nextRunAt))
        // As the store hands it on, without iterations (MissionSnapshot.record); as stored, with them.
        const { iterations: _, ...fields } = missionFields({ nextRunAt: s.nextRunAt })
        expect(snapshot?.record).toEqual({ ...fields, id: s.missionId, nextRunAt: data.nextRunAt })
        const [stored] = yield* Effect.promise(() =>
          db.ownerQuery("SELECT record FROM mana_ai.mission_snapshots WHERE user_id = $1 AND record_id = $2", [s.userId, s.missionId]),
        )
        expect(stored?.record).toEqual({ ...fields, id: s.missionId, iterations: data.iterations, nextRunAt: data.nextRunAt })
      }
    })))
})
