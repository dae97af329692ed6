/**
 * The supervisor (SPEC §8): discovery (feeding each user's actor what changed, spawning actors for
 * new users), the tick, and the drain. The actors run on the ActorHost, which restarts a failed one
 * with backoff and quarantines a user whose actor fails RESTART_MAX times within RESTART_WINDOW_MS.
 *
 * `discoveryLock` lets one pass deliver snapshots at a time, so a message never carries an older
 * view than one already delivered, and an actor's start-up read is not overtaken by a pass.
 */
import type { SqlError } from "@effect/sql/SqlError"
import { Clock, Context, Deferred, Duration, Effect, Fiber, Layer, Metric, Option, Ref, Schedule, Stream, SubscriptionRef } from "effect"
import {
  emptyTickPart,
  type MissionStatus,
  renderTickError,
  TickError,
  type TickPart,
  upsert,
} from "../domain/actorView.js"
import { makeKeyedFairSemaphore } from "../primitives/KeyedFairSemaphore.js"
import { RunnerConfig, type RunnerConfigShape } from "../services/AppConfig.js"
import { type MissionSnapshot, MissionStore } from "../services/MissionStore.js"
import { Quarantines, QuarantinesLive } from "../services/Quarantines.js"
import { GlobalLlmPermits } from "../services/GlobalLlmPermits.js"
import { MissionRunner } from "../services/MissionRunner.js"
import {
  actorRestartsTotal,
  actorsGauge,
  quarantinedGauge,
  runsInFlightGauge,
  tickDuration,
  tickOverlapsTotal,
  ticksTotal,
} from "../services/metrics.js"
import * as ActorHost from "./ActorHost.js"
import * as UserActor from "./UserActor.js"

export interface TickReport {
  readonly scannedAt: string
  readonly dueMissionCount: number
  readonly plansProduced: number
  readonly plansWrittenBack: number
  readonly parseFailures: number
  readonly errors: ReadonlyArray<string>
}

export interface DiscoveryReport {
  readonly rowsRead: number
  readonly changed: number
  readonly actorsStarted: number
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

export const make = Effect.gen(function* () {
  const config = yield* RunnerConfig
  const store = yield* MissionStore
  const runner = yield* MissionRunner
  const llmPermits = yield* GlobalLlmPermits
  const quarantines = yield* Quarantines

  const discoveryLock = yield* Effect.makeSemaphore(1)
  /**
   * Held by whoever runs a discovery pass (the loop, a tick, `discover`) for the whole pass. A tick
   * that finds it taken answers overlap-skipped at once (SPEC §9) instead of waiting out a pass that
   * may take minutes (a first discovery, a burst); `discoveryLock` alone is also taken briefly by actors.
   */
  const discoveryPass = yield* Effect.makeSemaphore(1)
  const tickLock = yield* Effect.makeSemaphore(1)
  const tickInProgress = yield* Ref.make(false)
  /** The first discovery pass also starts actors for every schedulable mission already stored. */
  const primed = yield* Ref.make(false)

  // ---- the drain: a gate every run passes, closed when the scope closes
  const gateState = yield* SubscriptionRef.make({ draining: false, inFlight: 0 })
  const runSlots = yield* makeKeyedFairSemaphore(maxRunsAtWork(config))
  const gate: UserActor.RunGate = {
    withRunSlot: runSlots.withPermit,
    enter: SubscriptionRef.modify(gateState, (s) =>
      s.draining ? [-1, s] : [s.inFlight + 1, { ...s, inFlight: s.inFlight + 1 }],
    ).pipe(
      Effect.flatMap((inFlight) =>
        inFlight < 0 ? Effect.succeed(false) : Metric.set(runsInFlightGauge, inFlight).pipe(Effect.as(true)),
      ),
    ),
    leave: SubscriptionRef.updateAndGet(gateState, (s) => ({ ...s, inFlight: s.inFlight - 1 })).pipe(
      Effect.flatMap((s) => Metric.set(runsInFlightGauge, s.inFlight)),
    ),
    draining: SubscriptionRef.get(gateState).pipe(Effect.map((s) => s.draining)),
  }

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
        quarantines.hold({ userId, reason }).pipe(
          Effect.catchAll((e) => Effect.logError("could not record the quarantine; it holds until this process stops", e)),
        ),
      onLift: (userId) =>
        quarantines.lift(userId).pipe(
          Effect.catchAll((e) => Effect.logError("could not record that the quarantine was lifted", e)),
        ),
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
  for (const q of kept) yield* host.quarantined(q.userId, q.reason)
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
    // Only the grouping is kept, so snapshots dropped below are not held through the pass.
    const { rowsRead, changedCount, changed } = yield* Effect.map(store.refresh, (r) => ({
      rowsRead: r.rowsRead,
      changedCount: r.changed.length,
      changed: byUser(r.changed),
    }))
    let actorsStarted = 0
    if (!(yield* Ref.get(primed))) {
      // A user without an actor yet is spawned from `schedulable`, read after this refresh: its
      // changes are already in that view (redelivering them would wake every new actor at once).
      for (const userId of [...changed.keys()]) if (!(yield* host.has(userId))) changed.delete(userId)
      const all = yield* store.schedulable
      for (const [userId, snapshots] of byUser(all)) {
        if (yield* spawn(userId, Option.some(snapshots))) actorsStarted++
      }
      yield* Ref.set(primed, true)
    }
    for (const [userId, snapshots] of changed) {
      const sent = yield* host.send(userId, UserActor.ActorMessage.Upsert({ snapshots }))
      if (sent === "no-actor" && snapshots.some((s) => s.schedulable)) {
        // No actor means no schedulable mission was known for this user before this pass.
        if (yield* spawn(userId, Option.some(snapshots.filter((s) => s.schedulable)))) actorsStarted++
      }
    }
    if (changedCount > 0 || actorsStarted > 0) {
      yield* Effect.logDebug("discovery pass").pipe(Effect.annotateLogs({ rowsRead, changed: changedCount, actorsStarted }))
    }
    return { rowsRead, changed: changedCount, actorsStarted } satisfies DiscoveryReport
  })

  const discover = discoveryPass
    .withPermits(1)(discoveryLock.withPermits(1)(discoverLocked))
    .pipe(Effect.withSpan("Supervisor.discover"))

  /** Hands a user's due missions to its actor (spawning one if needed); the reply comes when its runs end. */
  const dispatch = (userId: string, snapshots: ReadonlyArray<MissionSnapshot>, now: number) =>
    Effect.gen(function* () {
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
    const pass = yield* discoveryPass.withPermitsIfAvailable(1)(
      discoveryLock.withPermits(1)(Effect.gen(function* () {
        yield* Metric.increment(ticksTotal)
        yield* discoverLocked.pipe(
          Effect.catchAll((e) => Effect.sync(() => errors.push(TickError.DiscoveryFailed({ message: e.message })))),
        )
        const now = yield* Clock.currentTimeMillis
        const due = yield* store.due(new Date(now)).pipe(
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
    const result = report(now, due.length, parts)
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
  const tick = Effect.flatMap(Effect.forkIn(tickHere, scope), Fiber.join)

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
      const { inFlight } = yield* SubscriptionRef.updateAndGet(gateState, (s) => ({ ...s, draining: true }))
      // Runs that have not sent their LLM request yet stop here; the ones waiting for it finish.
      yield* llmPermits.close
      if (inFlight === 0) return
      yield* Effect.logInfo("draining: waiting for runs in flight").pipe(
        Effect.annotateLogs({ inFlight, graceMs: Duration.toMillis(config.shutdownGrace) }),
      )
      const drained = yield* gateState.changes.pipe(
        Stream.filter((s) => s.inFlight === 0),
        Stream.runHead,
        // Finalizers run uninterruptibly: without this the deadline could not stop the wait.
        Effect.interruptible,
        Effect.timeoutOption(config.shutdownGrace),
      )
      if (Option.isNone(drained)) {
        const left = (yield* SubscriptionRef.get(gateState)).inFlight
        yield* Effect.logWarning("shutdown grace over: interrupting runs in flight").pipe(
          Effect.annotateLogs({ inFlight: left }),
        )
      }
    }),
  )

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
export const SupervisorLive = SupervisorLayer.pipe(Layer.provide(QuarantinesLive))
