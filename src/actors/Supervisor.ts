/**
 * The supervisor (SPEC §8): discovery (feeding each user's actor what changed, spawning actors for
 * new users), the tick, and the drain. The actors run on the ActorHost, which restarts a failed one
 * with backoff and quarantines a user whose actor fails RESTART_MAX times within RESTART_WINDOW_MS.
 *
 * A pass also reads the agents that changed (AgentDirectory, SPEC §14) and tells their users' actors,
 * which look again at the missions those agents held.
 *
 * `discoveryLock` lets one pass deliver snapshots at a time, so a message never carries an older
 * view than one already delivered, and an actor's start-up read is not overtaken by a pass.
 */
import type { SqlError } from "@effect/sql/SqlError"
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as FiberMap from "effect/FiberMap"
import * as FiberRef from "effect/FiberRef"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Ref from "effect/Ref"
import * as Schedule from "effect/Schedule"
import * as Stream from "effect/Stream"
import {
  emptyTickPart,
  type MissionStatus,
  renderTickError,
  TickError,
  type TickPart,
  upsert,
} from "../domain/actorView.js"
import { edenCollection, fullCollection } from "../primitives/collection.js"
import { makeKeyedFairSemaphore } from "../primitives/KeyedFairSemaphore.js"
import { AgentDirectory, type AgentKey } from "../services/AgentDirectory.js"
import { RunnerConfig, type RunnerConfigShape } from "../services/AppConfig.js"
import { type MissionSnapshot, MissionStore, RefreshKeeps } from "../services/MissionStore.js"
import { Quarantines } from "../services/Quarantines.js"
import { GlobalLlmPermits } from "../services/GlobalLlmPermits.js"
import { MissionRunner } from "../services/MissionRunner.js"
import {
  actorRestartsTotal,
  actorsGauge,
  clusterSnapshotsReadTotal,
  quarantinedGauge,
  runsInFlightGauge,
  tickDuration,
  tickOverlapsTotal,
  ticksTotal,
  updateMetricsAnd,
} from "../services/metrics.js"
import * as ActorHost from "./ActorHost.js"
import { type ClusterView, Ownership } from "./Ownership.js"
import * as UserActor from "./UserActor.js"
import { workBegins } from "../layers/jitPolicy.js"

export interface TickReport {
  readonly scannedAt: string
  readonly dueMissionCount: number
  readonly plansProduced: number
  readonly plansWrittenBack: number
  readonly parseFailures: number
  readonly errors: ReadonlyArray<string>
  /** Cluster mode: the tick covered only the users of this runner's shards (issue 19). */
  readonly cluster?: ClusterView & { readonly covers: "users of this runner's shards" }
}

export interface DiscoveryReport {
  readonly rowsRead: number
  readonly changed: number
  readonly actorsStarted: number
  /** Agents whose record changed (SPEC §14), passed to their users' actors; 0 without an AgentDirectory. */
  readonly agentsChanged: number
}

export type ActorState = "running" | "idle" | "backing-off" | "quarantined"

/** One user's actor as GET /internal/actors shows it. */
export interface ActorStatus {
  readonly userId: string
  readonly state: ActorState
  readonly missions: ReadonlyArray<MissionStatus>
  readonly inFlight: number
  readonly restarts: number
  readonly lastError: string | null
  readonly nextWakeAt: string | null
}

/**
 * The actors as of one step, for the operator page: it reads the few actors that are not idle and
 * the page's idle ones, never every actor's status. Read it in the step that got it.
 */
export interface ActorCensus {
  readonly total: number
  /** Every actor's user id, ascending. */
  readonly userIds: ReadonlyArray<string>
  /** The actors quarantined, backing off or running (any order): the ones not idle. */
  readonly notIdle: ReadonlyArray<ActorStatus>
  /** One user's actor; null when the user has none. */
  readonly status: (userId: string) => ActorStatus | null
}

export interface SupervisorShape {
  /** Discovery pass, then every mission due now through its user's actor; waits for those runs. */
  readonly tick: Effect.Effect<TickReport>
  /** One discovery pass on demand (the loop runs one every TICK_INTERVAL_MS when TICK_ENABLED). */
  readonly discover: Effect.Effect<DiscoveryReport, SqlError>
  /** Every actor, by userId. */
  readonly status: Effect.Effect<ReadonlyArray<ActorStatus>>
  /** Every actor in no particular order: `status` without its sort, for a caller that orders (or pages) by itself. */
  readonly statusUnordered: Effect.Effect<ReadonlyArray<ActorStatus>>
  /** Counts and a few actors' statuses without reading every actor (the operator page's poll). */
  readonly census: Effect.Effect<ActorCensus>
  /** Lifts a quarantine and restarts the user's actor; false when the user has no actor. */
  readonly restart: (userId: string) => Effect.Effect<boolean>
  readonly tickRunning: Effect.Effect<boolean>
  readonly draining: Effect.Effect<boolean>
}

export class Supervisor extends Context.Tag("mana-ai/Supervisor")<Supervisor, SupervisorShape>() {}

/** Failed actors come back after 1 s, doubling to 30 s, jittered so a shared outage does not restart them in step. */
const restartSchedule = Schedule.exponential("1 second").pipe(
  Schedule.union(Schedule.spaced("30 seconds")),
  Schedule.jittered,
)

const iso = (ms: number) => new Date(ms).toISOString()

const seconds = (fromMs: number, toMs: number) => (toMs - fromMs) / 1000

/**
 * Runs doing work at once, process-wide: twice the LLM permits keeps every permit busy while the
 * other half reads and writes, and never fewer than one user's own limit.
 */
const maxRunsAtWork = (config: RunnerConfigShape): number =>
  Math.max(2 * config.globalConcurrency, config.userConcurrency)

/**
 * Run slots found free are handed out round-robin after this many yields to the scheduler
 * (KeyedFairSemaphore's batch), so the users whose runs come due together (the first pass's actors, a
 * tick) share them by user, instead of the first actors spawned taking USER_CONCURRENCY slots each
 * (issue 16 item 6, at once: hot users spawned first took all 32 slots, 38 hot grants before the first
 * quiet one). The fair-share bench at once: 1 yield still let 20 hot grants through ahead of the last
 * quiet user, 4 and 16 left 10 (one per hot user: round-robin).
 */
const RUN_SLOT_BATCH_YIELDS = 8

const toStatus = (info: ActorHost.ActorInfo<UserActor.ActorView>): ActorStatus => {
  const stopped = info.phase === "backing-off" || info.phase === "quarantined"
  const inFlight = stopped ? 0 : (info.view?.inFlight ?? 0)
  return {
    userId: info.key,
    state: info.phase === "backing-off" || info.phase === "quarantined" ? info.phase : inFlight > 0 ? "running" : "idle",
    missions: info.view?.missions ?? [],
    inFlight,
    restarts: info.restarts,
    lastError: info.lastError,
    nextWakeAt: info.nextWakeAt === null ? null : iso(info.nextWakeAt),
  }
}

const byUser = (snapshots: ReadonlyArray<MissionSnapshot>) => {
  const groups = new Map<string, Array<MissionSnapshot>>()
  for (const s of snapshots) {
    const group = groups.get(s.userId)
    if (group === undefined) groups.set(s.userId, [s])
    else group.push(s)
  }
  return groups
}

const agentsByUser = (keys: ReadonlyArray<AgentKey>) => {
  const groups = new Map<string, Array<string>>()
  for (const k of keys) {
    const group = groups.get(k.userId)
    if (group === undefined) groups.set(k.userId, [k.agentId])
    else group.push(k.agentId)
  }
  return groups
}

/** Cluster mode: how often a runner looks at users waiting for a lease and at leases to give back. */
const LEASE_POLL = Duration.millis(250)

/**
 * Schedulable snapshots read per page when the first pass starts the actors (MissionStore.schedulable):
 * 50,000 read at once after a first discovery of 1M rows were that start-up's peak heap (issue 16 item 5).
 */
export const PRIME_PAGE_SNAPSHOTS = 2000

/** Every this many pages of PRIME_PAGE_SNAPSHOTS read, PrimePageCollection's collection is a full one. */
export const PRIME_FULL_COLLECTION_EVERY = 4

/**
 * Called with the page's number (0, 1, …) once each page of PRIME_PAGE_SNAPSHOTS is read, before its
 * users' actors start (issue 16 item 5): an eden collection, and every PRIME_FULL_COLLECTION_EVERY-th
 * page a full one. Reading a page makes far more garbage (rows, records, decoded missions) than the
 * actors keep, and JavaScriptCore, which does not compact, collected it at its own pace: the actors'
 * objects ended up spread over blocks that stay in RSS once the garbage around them is gone. After a
 * first discovery of 1M rows (10,000 users, 50,000 missions: 26 pages) the heap kept 35 MB live in
 * 65 MB of capacity (the pass itself leaves 11 MB live in 20 MB: measured after forced collections
 * between the two). Measured per page (`bench/tools/discoveryMemory.ts`, heap capacity and RSS 5 s
 * after the tick; the collections' CPU): nothing 65–81 / 151–174 MB; eden 52–53 / 137–143 MB (about
 * 0.3 s); eden and a full one every 8th 51.6 / 138–141 MB (0.55 s); a full one every 4th alone 63 /
 * 145 MB (0.57 s); eden and a full one every 4th (this) 48.6 / 131–133 MB (0.7–0.8 s); a full one
 * every page 47.5 / 130 MB (2 s of CPU: too dear). Collecting after the page's actors started instead
 * kept more (eden 60, full 55 MB of capacity). A FiberRef so tests can count the calls.
 */
export const PrimePageCollection: FiberRef.FiberRef<(page: number) => void> = FiberRef.unsafeMake<(page: number) => void>(
  (page) => (page % PRIME_FULL_COLLECTION_EVERY === PRIME_FULL_COLLECTION_EVERY - 1 ? fullCollection() : edenCollection()),
)

/** How long a tick waits for a discovery pass under way before it answers overlap-skipped. */
const TICK_PASS_WAIT = Duration.seconds(2)

export const make = Effect.gen(function* () {
  const config = yield* RunnerConfig
  const store = yield* MissionStore
  const runner = yield* MissionRunner
  const llmPermits = yield* GlobalLlmPermits
  const quarantines = yield* Quarantines
  // Cluster mode (issue 19): only the users of this runner's shards; absent, every user.
  const ownership = Option.getOrUndefined(yield* Effect.serviceOption(Ownership))
  /**
   * Users of this runner's shards whose runs another runner still holds (its live lease): they get no
   * actor here, and the tick leaves them out, until that runner gave them back (issue 19).
   */
  const waitingForLease = new Set<string>()
  /**
   * The shards the last rebalance acted on. A user of a shard just gained is not this runner's for
   * discovery and ticks until the rebalance gave it its actor from all its stored snapshots (a pass
   * in between would spawn it from the few snapshots that pass changed).
   */
  let actedShards: ReadonlySet<number> = new Set()
  const owns =
    ownership === undefined
      ? () => true
      : (userId: string) =>
          ownership.owns(userId) && actedShards.has(ownership.shardOf(userId)) && !waitingForLease.has(userId)
  // Optional so unit stacks without it run unchanged; runnerServicesLayer provides it.
  const agents = yield* Effect.serviceOption(AgentDirectory)
  /** The directory's first refresh returns every agent: the actors spawned then start with nothing held. */
  const agentsPrimed = yield* Ref.make(false)

  const discoveryLock = yield* Effect.makeSemaphore(1)
  /**
   * Held by whoever runs a discovery pass (the loop, a tick, `discover`) for the whole pass. A tick
   * that finds it taken waits TICK_PASS_WAIT for it (the loop's incremental passes take milliseconds,
   * and a tick asked just then should run, not be refused), then answers overlap-skipped (SPEC §9)
   * instead of waiting out a pass that may take minutes (a first discovery, a burst);
   * `discoveryLock` alone is also taken briefly by actors.
   */
  const discoveryPass = yield* Effect.makeSemaphore(1)
  /** Semaphore permits held by a pass: `withPermitsIfAvailable`, but willing to wait `wait` for them. */
  const withPassWithin =
    (wait: Duration.DurationInput) =>
    <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<Option.Option<A>, E, R> =>
      Effect.uninterruptibleMask((restore) =>
        Effect.flatMap(restore(Effect.timeoutOption(discoveryPass.take(1), wait)), (taken) =>
          Option.isNone(taken)
            ? Effect.succeedNone
            : restore(self).pipe(Effect.map(Option.some), Effect.ensuring(discoveryPass.release(1))),
        ),
      )
  const tickLock = yield* Effect.makeSemaphore(1)
  const tickInProgress = yield* Ref.make(false)
  /** The first discovery pass also starts actors for every schedulable mission already stored. */
  const primed = yield* Ref.make(false)

  // ---- the drain: a gate every run passes, closed when the scope closes. Plain state changed in
  // synchronous steps (a run passes it twice: a SubscriptionRef took about 100 run-loop instructions
  // per run for its lock and change stream, issue 16); the drain waits for `drained`, which the last
  // run out completes once draining.
  const gateState = { draining: false, inFlight: 0 }
  const drained = yield* Deferred.make<void>()
  const runSlots = yield* makeKeyedFairSemaphore(maxRunsAtWork(config), { batchYields: RUN_SLOT_BATCH_YIELDS })
  const gate: UserActor.RunGate = {
    withRunSlot: runSlots.withPermit,
    enter: updateMetricsAnd((labels) => {
      if (gateState.draining) return false
      workBegins()
      gateState.inFlight++
      runsInFlightGauge.unsafeUpdate(gateState.inFlight, labels)
      return true
    }),
    leave: updateMetricsAnd((labels) => {
      gateState.inFlight--
      runsInFlightGauge.unsafeUpdate(gateState.inFlight, labels)
      if (gateState.draining && gateState.inFlight === 0) Deferred.unsafeDone(drained, Exit.void)
    }),
    draining: Effect.sync(() => gateState.draining),
  }

  /**
   * A quarantine (or its lift) is written to mana_ai at once; when the database refuses, it is
   * retried in the background until the database takes it, so a quarantine taken during an outage
   * still survives a restart (SPEC §8). One retrying fiber per user: a newer hold or lift replaces
   * an older one still retrying, so the last word wins.
   */
  const quarantineWrites = yield* FiberMap.make<string>()
  const persistQuarantine = <E>(userId: string, write: Effect.Effect<void, E>, warning: string) =>
    FiberMap.remove(quarantineWrites, userId).pipe(
      Effect.zipRight(write),
      Effect.catchAll((e) =>
        Effect.logWarning(warning, e).pipe(
          Effect.annotateLogs({ userId }),
          Effect.zipRight(
            FiberMap.run(
              quarantineWrites,
              userId,
              write.pipe(Effect.retry(Schedule.exponential("500 millis").pipe(Schedule.union(Schedule.spaced("30 seconds"))))),
            ),
          ),
        ),
      ),
      Effect.asVoid,
    )

  const host = yield* ActorHost.make(
    UserActor.behaviour({
      config,
      store,
      runner,
      gate,
      exclusiveOfDiscovery: (self) => discoveryLock.withPermits(1)(self),
    }),
    {
      idleTtl: config.actorIdleTtl,
      restartMax: config.restartMax,
      restartWindow: config.restartWindow,
      restartBackoff: restartSchedule,
      // Until an operator lifts it, also across restarts of the process (SPEC §8).
      quarantine: Option.none(),
      onQuarantine: (userId, reason) =>
        persistQuarantine(userId, quarantines.hold({ userId, reason }), "could not record the quarantine yet; retrying"),
      onLift: (userId) =>
        persistQuarantine(userId, quarantines.lift(userId), "could not record that the quarantine was lifted yet; retrying"),
      keyName: "userId",
      metrics: { actors: actorsGauge, quarantined: quarantinedGauge, restarts: actorRestartsTotal },
    },
  )

  // Quarantines from earlier processes hold: those users get no actor until an operator lifts them.
  const kept = yield* quarantines.all.pipe(
    Effect.retry(Schedule.exponential("200 millis").pipe(Schedule.intersect(Schedule.recurs(4)))),
    Effect.catchAll((e) =>
      Effect.logError("could not read the quarantined users; they may run again", e).pipe(Effect.as([])),
    ),
  )
  for (const q of kept) if (owns(q.userId)) yield* host.quarantined(q.userId, q.reason)
  if (kept.length > 0) yield* Effect.logWarning("users still quarantined").pipe(Effect.annotateLogs({ users: kept.length }))

  /** A new user's actor, with the snapshots of this pass as its view (saves a store read). Not while draining. */
  const spawn = (userId: string, initial: Option.Option<ReadonlyArray<MissionSnapshot>>) =>
    Effect.gen(function* () {
      if (yield* gate.draining) return false
      const state = Option.map(initial, (snapshots) => {
        const s = UserActor.makeState()
        for (const snapshot of snapshots) upsert(s.view, snapshot)
        return s
      })
      return yield* host.spawn(userId, state)
    })

  /** Caller holds `discoveryLock`. */
  const discoverLocked = Effect.gen(function* () {
    // Agents first: a run started after this read sees every change it returns, so an actor spawned
    // in this pass needs no news of them (its runs start later), and one already running gets it below.
    const agentPass = Option.isSome(agents) ? yield* agents.value.refresh : []
    const spawnedNow = new Set<string>()
    // Before the first pass's end every user without an actor is started from the stored snapshots
    // (below), so the store keeps only the changes of users with one (no actor starts while this pass
    // holds discoveryLock): a first discovery of a long history holds no snapshot through its pass.
    const present = (yield* Ref.get(primed)) ? undefined : new Set((yield* host.census).keys)
    const refresh = present === undefined ? store.refresh : Effect.locally(store.refresh, RefreshKeeps, (userId) => present.has(userId))
    // Only the grouping is kept, so snapshots dropped below are not held through the pass.
    const { rowsRead, changedCount, changed } = yield* Effect.map(refresh, (r) => ({
      rowsRead: r.rowsRead,
      changedCount: r.changedCount ?? r.changed.length,
      changed: byUser(r.changed),
    }))
    if (ownership !== undefined) {
      // Changes other runners' passes applied to this runner's users (the passes share one cursor).
      const elsewhere = byUser(yield* ownership.changedElsewhere)
      for (const [userId, snapshots] of elsewhere) {
        const mine = changed.get(userId)
        if (mine === undefined) changed.set(userId, snapshots)
        else for (const s of snapshots) if (!mine.some((m) => m.missionId === s.missionId)) mine.push(s)
      }
      // Users waiting for their lease are left out too: they start from the store once it is theirs.
      for (const userId of [...changed.keys()]) if (!owns(userId)) changed.delete(userId)
    }
    let actorsStarted = 0
    if (!(yield* Ref.get(primed))) {
      // The run slots are held back while the actors start (a page of stored missions at a time), then
      // handed out round-robin across every user that asked: otherwise the first pages' users (in user
      // order) would take every free slot before the last pages' users had their actors.
      yield* runSlots.whileHeld(
        Effect.gen(function* () {
          // A user without an actor yet is spawned from `schedulable`, read after this refresh: its
          // changes are already in that view (redelivering them would wake every new actor at once).
          for (const userId of [...changed.keys()]) if (!(yield* host.has(userId))) changed.delete(userId)
          const spawnUsers = (snapshots: ReadonlyArray<MissionSnapshot>) =>
            Effect.gen(function* () {
              if (snapshots.length > 0) workBegins()
              for (const [userId, group] of byUser(snapshots)) {
                if (!owns(userId)) continue
                if (yield* spawn(userId, Option.some(group))) {
                  actorsStarted++
                  spawnedNow.add(userId)
                }
              }
            })
          if (ownership === undefined) {
            // Every schedulable snapshot, a page at a time (in user order): each page's users get their
            // actors before the next is read, so the snapshots read (records, decoded missions) are never
            // all held at once. The page's last user may go on in the next page: it waits for it.
            let after: { readonly userId: string; readonly missionId: string } | undefined
            let carried: ReadonlyArray<MissionSnapshot> = []
            const collect = yield* FiberRef.get(PrimePageCollection)
            for (let pageNumber = 0; ; pageNumber++) {
              const page = yield* store.schedulable(after, PRIME_PAGE_SNAPSHOTS)
              // The read's garbage collected before the page's actors allocate what they keep (above).
              collect(pageNumber)
              const read = carried.length === 0 ? page : [...carried, ...page]
              const last = page[page.length - 1]
              if (last === undefined || page.length < PRIME_PAGE_SNAPSHOTS) {
                yield* spawnUsers(read)
                break
              }
              const cut = read.findIndex((s) => s.userId === last.userId)
              yield* spawnUsers(read.slice(0, cut))
              carried = read.slice(cut)
              after = { userId: last.userId, missionId: last.missionId }
            }
          } else {
            // A cluster runner: the snapshots of the shards it acted on (mission_snapshots.shard).
            yield* spawnUsers(yield* store.schedulableIn([...actedShards]))
          }
          yield* Ref.set(primed, true)
        }),
      )
    }
    for (const [userId, snapshots] of changed) {
      const sent = yield* host.send(userId, UserActor.ActorMessage.Upsert({ snapshots }))
      if (sent === "no-actor" && snapshots.some((s) => s.schedulable)) {
        // No actor means no schedulable mission was known for this user before this pass.
        if (yield* spawn(userId, Option.some(snapshots.filter((s) => s.schedulable)))) {
          actorsStarted++
          spawnedNow.add(userId)
        }
      }
    }
    // After the missions: an actor sees a mission's change before its agent's. Only users with an
    // actor are told: a user without one has no mission waiting on an agent.
    let agentsChanged = 0
    if (Option.isSome(agents) && (yield* Ref.getAndSet(agentsPrimed, true))) {
      agentsChanged = agentPass.length
      for (const [userId, agentIds] of agentsByUser(agentPass)) {
        if (!spawnedNow.has(userId)) yield* host.send(userId, UserActor.ActorMessage.AgentsChanged({ agentIds }))
      }
    }
    if (changedCount > 0 || actorsStarted > 0 || agentsChanged > 0) {
      yield* Effect.logDebug("discovery pass").pipe(
        Effect.annotateLogs({ rowsRead, changed: changedCount, actorsStarted, agentsChanged }),
      )
    }
    return { rowsRead, changed: changedCount, actorsStarted, agentsChanged } satisfies DiscoveryReport
  })

  const discover = discoveryPass
    .withPermits(1)(discoveryLock.withPermits(1)(discoverLocked))
    .pipe(Effect.withSpan("Supervisor.discover"))

  /** Hands a user's due missions to its actor (spawning one if needed); the reply comes when its runs end. */
  const dispatch = Effect.fnUntraced(function* (userId: string, snapshots: ReadonlyArray<MissionSnapshot>, now: number) {
    const reply = yield* Deferred.make<TickPart>()
    const refuse = (reason: "quarantined" | "shutting down") =>
      Deferred.succeed(reply, { ...emptyTickPart, errors: [TickError.ActorUnavailable({ userId, reason })] })
    const message = UserActor.ActorMessage.RunNow({ request: { now, snapshots, reply } })
    let sent = yield* host.send(userId, message)
    if (sent === "no-actor" && (yield* spawn(userId, Option.none()))) sent = yield* host.send(userId, message)
    if (sent === "quarantined") yield* refuse("quarantined")
    else if (sent === "no-actor") yield* refuse("shutting down")
    return reply
  })

  /** None: a discovery pass is under way (the tick is skipped). */
  const tickOnce = Effect.gen(function* () {
    const started = yield* Clock.currentTimeMillis
    const errors: Array<TickError> = []
    const report = (scannedAt: number, due: number, parts: ReadonlyArray<TickPart>): TickReport => ({
      scannedAt: iso(scannedAt),
      dueMissionCount: due,
      plansProduced: parts.reduce((n, p) => n + p.plansProduced, 0),
      plansWrittenBack: parts.reduce((n, p) => n + p.plansWrittenBack, 0),
      parseFailures: parts.reduce((n, p) => n + p.parseFailures, 0),
      errors: [...errors, ...parts.flatMap((p) => p.errors)].map(renderTickError),
    })
    if (yield* gate.draining) {
      yield* Metric.increment(ticksTotal)
      errors.push(TickError.ShuttingDown())
      return Option.some(report(started, 0, []))
    }
    const pass = yield* withPassWithin(TICK_PASS_WAIT)(
      discoveryLock.withPermits(1)(Effect.gen(function* () {
        yield* Metric.increment(ticksTotal)
        yield* discoverLocked.pipe(
          Effect.catchAll((e) => Effect.sync(() => errors.push(TickError.DiscoveryFailed({ message: e.message })))),
        )
        const now = yield* Clock.currentTimeMillis
        const due = yield* (ownership === undefined ? store.due(new Date(now)) : store.due(new Date(now), [...actedShards])).pipe(
          Effect.map((all) => (ownership === undefined ? all : all.filter((s) => owns(s.userId)))),
          Effect.catchAll((e) =>
            Effect.sync(() => errors.push(TickError.DueQueryFailed({ message: e.message }))).pipe(Effect.as([])),
          ),
        )
        const replies = yield* Effect.forEach(byUser(due), ([userId, snapshots]) => dispatch(userId, snapshots, now))
        return { now, due, replies }
      })),
    )
    if (Option.isNone(pass)) return Option.none<TickReport>()
    const { now, due, replies } = pass.value
    const parts = yield* Effect.forEach(replies, Deferred.await, { concurrency: "unbounded" })
    const result: TickReport =
      ownership === undefined
        ? report(now, due.length, parts)
        : { ...report(now, due.length, parts), cluster: { ...(yield* ownership.view), covers: "users of this runner's shards" } }
    const finished = yield* Clock.currentTimeMillis
    yield* Metric.update(tickDuration, seconds(started, finished))
    yield* Effect.logInfo("tick done").pipe(
      Effect.annotateLogs({
        dueMissionCount: result.dueMissionCount,
        plansProduced: result.plansProduced,
        plansWrittenBack: result.plansWrittenBack,
        parseFailures: result.parseFailures,
        errors: result.errors.length,
      }),
    )
    return Option.some(result)
  })

  const tickHere = Effect.gen(function* () {
    const attempted = yield* Clock.currentTimeMillis
    const ran = yield* tickLock.withPermitsIfAvailable(1)(
      Effect.acquireUseRelease(
        Ref.set(tickInProgress, true),
        () => tickOnce,
        () => Ref.set(tickInProgress, false),
      ),
    )
    if (Option.isSome(ran) && Option.isSome(ran.value)) return ran.value.value
    yield* Metric.increment(tickOverlapsTotal)
    yield* Effect.logInfo("tick skipped: one is under way")
    return {
      scannedAt: iso(attempted),
      dueMissionCount: 0,
      plansProduced: 0,
      plansWrittenBack: 0,
      parseFailures: 0,
      errors: [renderTickError(TickError.OverlapSkipped())],
    } satisfies TickReport
  }).pipe(Effect.withSpan("Supervisor.tick"))

  // A tick runs in the supervisor's scope, not in its caller's fiber: a caller that goes away (an HTTP
  // client that hung up) stops waiting for the report, but the pass is not cut in the middle of its
  // transaction, and the tick holds its lock until it ends, so the next tick answers overlap-skipped
  // at once instead of queueing behind a rollback.
  const scope = yield* Effect.scope
  // While draining the supervisor's scope is closing, and a fiber forked into it would be interrupted
  // before it answers: a tick then answers shutting-down in the caller's fiber (it runs no pass).
  const tick = Effect.flatMap(gate.draining, (draining) =>
    draining
      ? tickHere
      : Effect.flatMap(Effect.forkIn(tickHere, scope), Fiber.join).pipe(
          Effect.catchAllCause((cause) =>
            Effect.flatMap(gate.draining, (now) => (now && Cause.isInterruptedOnly(cause) ? tickHere : Effect.failCause(cause))),
          ),
        ),
  )

  const status = Effect.map(host.status, (all) =>
    all.map(toStatus).sort((a, b) => (a.userId < b.userId ? -1 : a.userId > b.userId ? 1 : 0)),
  )

  /** The operator page sorts and pages itself: every actor's status, in no particular order. */
  const statusUnordered = Effect.map(host.status, (all) => all.map(toStatus))

  /**
   * A parked actor is idle (UserActor parks only with no run in flight), so the ones not idle are
   * among the few active, restarting, backing-off or quarantined: only those are read.
   */
  const census = Effect.map(
    host.census,
    (c): ActorCensus => ({
      total: c.size,
      userIds: c.keys,
      notIdle: c
        .inPhases(["quarantined", "backing-off", "active", "restarting"])
        .map(toStatus)
        .filter((s) => s.state !== "idle"),
      status: (userId) => {
        const info = c.info(userId)
        return info === undefined ? null : toStatus(info)
      },
    }),
  )

  const restart = (userId: string) =>
    Effect.tap(host.restart(userId), (known) =>
      known ? Effect.logInfo("restart requested").pipe(Effect.annotateLogs({ userId })) : Effect.void,
    )

  // Registered after the host, so it runs before the actors are interrupted.
  yield* Effect.addFinalizer(() =>
    Effect.gen(function* () {
      gateState.draining = true
      const inFlight = gateState.inFlight
      // Runs that have not sent their LLM request yet stop here; the ones waiting for it finish.
      yield* llmPermits.close
      if (inFlight === 0) return
      yield* Effect.logInfo("draining: waiting for runs in flight").pipe(
        Effect.annotateLogs({ inFlight, graceMs: Duration.toMillis(config.shutdownGrace) }),
      )
      const ended = yield* Deferred.await(drained).pipe(
        // Finalizers run uninterruptibly: without this the deadline could not stop the wait.
        Effect.interruptible,
        Effect.timeoutOption(config.shutdownGrace),
      )
      if (Option.isNone(ended)) {
        const left = gateState.inFlight
        yield* Effect.logWarning("shutdown grace over: interrupting runs in flight").pipe(
          Effect.annotateLogs({ inFlight: left }),
        )
      }
    }),
  )

  if (ownership !== undefined) {
    /** Users dropped here whose leases this runner may still hold: given back once their actors left. */
    let giveBackPending = false
    /**
     * Users whose actors were told to leave (a run under way finishes first). If the user's shard
     * comes back before the actor has left, the rebalance finds it still here and starts nothing;
     * once it has left, the user is started again from the store (through the lease wait below).
     */
    const leaving = new Set<string>()

    /** Spawns owned users without an actor, or has them wait while another runner holds their runs. */
    const startOwned = (groups: ReadonlyMap<string, ReadonlyArray<MissionSnapshot>>) =>
      Effect.gen(function* () {
        const candidates: Array<string> = []
        for (const userId of groups.keys()) if (ownership.owns(userId) && !(yield* host.has(userId))) candidates.push(userId)
        const busy = yield* ownership.leasedElsewhere(candidates)
        let started = 0
        for (const userId of candidates) {
          if (busy.has(userId)) waitingForLease.add(userId)
          else if (yield* spawn(userId, Option.some(groups.get(userId) ?? []))) started++
        }
        return { started, waiting: busy.size }
      })

    /**
     * The runner's shards changed: actors of users it no longer owns leave (a run under way finishes
     * first and keeps its claim and its user's lease), users it now owns get theirs from the stored
     * snapshots of the shards gained (only those: `mission_snapshots.shard`), and their quarantines
     * hold here too. A gained user whose runs the old owner still holds waits for its lease.
     */
    const rebalance = discoveryLock.withPermits(1)(
      Effect.gen(function* () {
        const shardsNow = new Set(ownership.shards())
        const gained = [...shardsNow].filter((x) => !actedShards.has(x))
        const lost = [...actedShards].filter((x) => !shardsNow.has(x)).length
        let dropped = 0
        for (const userId of (yield* host.census).keys) {
          if (!ownership.owns(userId) && (yield* host.drop(userId))) {
            dropped++
            leaving.add(userId)
          }
        }
        for (const userId of waitingForLease) if (!ownership.owns(userId)) waitingForLease.delete(userId)
        if (dropped > 0 || lost > 0) giveBackPending = true
        let started = 0
        let waiting = 0
        let snapshotsRead = 0
        if (!(yield* gate.draining)) {
          for (const q of yield* quarantines.all) if (ownership.owns(q.userId)) yield* host.quarantined(q.userId, q.reason)
          const gainedSnapshots = yield* store.schedulableIn(gained)
          snapshotsRead = gainedSnapshots.length
          const outcome = yield* startOwned(byUser(gainedSnapshots))
          started = outcome.started
          waiting = outcome.waiting
        }
        actedShards = shardsNow
        yield* Metric.incrementBy(clusterSnapshotsReadTotal, snapshotsRead)
        yield* Effect.logInfo("users moved with the shards").pipe(
          Effect.annotateLogs({
            shards: shardsNow.size,
            shardsGained: gained.length,
            shardsLost: lost,
            snapshotsRead,
            actorsDropped: dropped,
            actorsStarted: started,
            waitingForLease: waiting,
          }),
        )
      }),
    )
    yield* ownership.changes.pipe(
      Stream.runForEach(() =>
        rebalance.pipe(
          Effect.retry(Schedule.exponential("200 millis").pipe(Schedule.union(Schedule.spaced("5 seconds")))),
        ),
      ),
      Effect.forkScoped,
    )

    /**
     * Leases across a handover (issue 19), cluster mode only: a gained user waiting for its lease gets
     * its actor once the old owner gave it back (or died, or the lease expired); a dropped user's lease
     * goes back once its actor here left (its runs done), so its new owner can start at once.
     */
    const keepLeases = Effect.gen(function* () {
      for (const userId of [...leaving]) {
        if (yield* host.has(userId)) continue
        leaving.delete(userId)
        // Its shard came back while the actor was leaving: it is this runner's again.
        if (ownership.owns(userId)) waitingForLease.add(userId)
      }
      if (waitingForLease.size > 0) {
        const waiting = [...waitingForLease].filter((u) => ownership.owns(u))
        const busy = yield* ownership.leasedElsewhere(waiting)
        const free = waiting.filter((u) => !busy.has(u))
        if (free.length > 0) {
          yield* discoveryLock.withPermits(1)(
            Effect.gen(function* () {
              const groups = new Map<string, ReadonlyArray<MissionSnapshot>>()
              for (const userId of free) {
                waitingForLease.delete(userId)
                groups.set(userId, (yield* store.forUser(userId)).filter((x) => x.schedulable))
              }
              const { started } = yield* startOwned(groups)
              yield* Effect.logInfo("users' leases given back elsewhere: actors started").pipe(
                Effect.annotateLogs({ actorsStarted: started, stillWaiting: waitingForLease.size }),
              )
            }),
          )
        }
      }
      if (giveBackPending) {
        const held = yield* ownership.leasedHere
        const notMine = held.filter((u) => !ownership.owns(u))
        const gone: Array<string> = []
        for (const userId of notMine) if (!(yield* host.has(userId))) gone.push(userId)
        const given = yield* ownership.giveBack(gone)
        if (given > 0) yield* Effect.logInfo("leases of users moved away given back").pipe(Effect.annotateLogs({ users: given }))
        if (gone.length === notMine.length) giveBackPending = false
      }
    })
    yield* keepLeases.pipe(
      Effect.catchAll((e) => Effect.logWarning(`could not check the users' leases: ${e.message}`)),
      Effect.repeat(Schedule.spaced(LEASE_POLL)),
      Effect.forkScoped,
    )
  }

  if (config.tickEnabled) {
    // Forked last, so closing the scope stops discovery first.
    yield* discover.pipe(
      Effect.catchAllCause((cause) =>
        Effect.logError("discovery pass failed").pipe(Effect.annotateLogs({ reason: ActorHost.describeCause(cause) })),
      ),
      Effect.repeat(Schedule.spaced(config.tickInterval)),
      Effect.forkScoped,
    )
  }

  return Supervisor.of({
    tick,
    discover,
    status,
    statusUnordered,
    census,
    restart,
    tickRunning: Ref.get(tickInProgress),
    draining: gate.draining,
  })
})

/** The supervisor on a given Quarantines (a double in unit tests). */
export const SupervisorLayer = Layer.scoped(Supervisor, make)

/** The supervisor with its quarantines kept in mana_ai. */
export const SupervisorLive = SupervisorLayer.pipe(Layer.provide(Quarantines.Default))
