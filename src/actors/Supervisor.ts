/**
 * The supervisor (SPEC §8): keeps one user actor per user with a schedulable mission, feeds them
 * what discovery finds, restarts a failed actor with backoff, quarantines a user whose actor fails
 * RESTART_MAX times within RESTART_WINDOW_MS, and drains runs when its scope closes.
 *
 * Locks, always taken in this order: `discoveryLock` (one pass delivering snapshots at a time, so a
 * message never carries an older view than one already delivered) then `lock` (the actor books:
 * spawning, delivering, retiring, quarantining).
 */
import type { SqlError } from "@effect/sql/SqlError"
import {
  Chunk,
  Clock,
  Context,
  Deferred,
  Duration,
  Effect,
  Exit,
  FiberId,
  FiberSet,
  Layer,
  Metric,
  Option,
  Queue,
  Ref,
  Schedule,
  Stream,
  SubscriptionRef,
} from "effect"
import { RunnerConfig, type RunnerConfigShape } from "../services/AppConfig.js"
import { type MissionSnapshot, MissionStore } from "../services/MissionStore.js"
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
import { makeFairSemaphore } from "../services/FairSemaphore.js"
import * as UserActor from "./UserActor.js"
import type { ActorMessage, ActorStatus, RunGate, TickPart } from "./UserActor.js"
import { type WakeEntry, WakeHeap } from "./WakeHeap.js"

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

export interface SupervisorShape {
  /** Discovery pass, then every mission due now through its user's actor; waits for those runs. */
  readonly tick: Effect.Effect<TickReport>
  /** One discovery pass on demand (the loop runs one every TICK_INTERVAL_MS when TICK_ENABLED). */
  readonly discover: Effect.Effect<DiscoveryReport, SqlError>
  /** Every actor, by userId. */
  readonly status: Effect.Effect<ReadonlyArray<ActorStatus>>
  /** Lifts a quarantine and restarts the user's actor; false when the user has no actor. */
  readonly restart: (userId: string) => Effect.Effect<boolean>
  readonly tickRunning: Effect.Effect<boolean>
  readonly draining: Effect.Effect<boolean>
}

export class Supervisor extends Context.Tag("mana-ai/Supervisor")<Supervisor, SupervisorShape>() {}

/**
 * A user's actor in the supervisor's books. While it has work a fiber runs it; an idle actor is
 * parked: this record, its memory and one entry in the shared wake-up schedule, and no fiber.
 */
interface ActorHandle {
  readonly userId: string
  /** Made by the first message or turn after parking (a parked actor's is empty, so it is dropped). */
  mailbox: Queue.Queue<ActorMessage> | null
  readonly status: Ref.Ref<ActorStatus>
  /** True while a fiber runs it; a parked actor gets one from its next message or wake-up. */
  active: boolean
  /** Completed by restart(userId); a fresh one per incarnation or wait; null while parked. */
  restartSignal: Deferred.Deferred<void> | null
  /** The current incarnation's state; null: the next turn starts a new incarnation. */
  memory: UserActor.ActorMemory | null
  /** Failure times within RESTART_WINDOW_MS (they outlive parking). */
  failures: Array<number>
  wake: WakeEntry<ActorHandle> | null
}

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
export const maxRunsAtWork = (config: RunnerConfigShape): number =>
  Math.max(2 * config.globalConcurrency, config.userConcurrency)

export const make = Effect.gen(function* () {
  const config = yield* RunnerConfig
  const store = yield* MissionStore
  const runner = yield* MissionRunner

  // The fibers of actors with work; closing the scope interrupts them (after the drain below).
  const actors = yield* FiberSet.make()
  const forkActor = yield* FiberSet.runtime(actors)<never>()
  const handles = new Map<string, ActorHandle>()
  const wakeUps = new WakeHeap<ActorHandle>()
  /** Nudges the scheduler when a wake-up earlier than the one it sleeps for arrives. */
  const wakeUpsChanged = yield* Queue.sliding<void>(1)
  /** What the scheduler sleeps until; null: nothing scheduled. */
  let armedAt: number | null = null
  // Thousands of actors may report to the supervisor at once: a FIFO lock wakes one per release.
  const lock = yield* makeFairSemaphore(1)
  const discoveryLock = yield* Effect.makeSemaphore(1)
  const tickLock = yield* Effect.makeSemaphore(1)
  const tickInProgress = yield* Ref.make(false)
  /** The first discovery pass also starts actors for every schedulable mission already stored. */
  const primed = yield* Ref.make(false)

  const gateState = yield* SubscriptionRef.make({ draining: false, inFlight: 0 })
  const runSlots = yield* makeFairSemaphore(maxRunsAtWork(config))
  const gate: RunGate = {
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

  /** Users whose actor is quarantined: kept as a set so the gauges cost the same with 10 or 10,000 actors. */
  const quarantined = new Set<string>()

  const publishGauges = Effect.suspend(() =>
    Metric.set(actorsGauge, handles.size).pipe(Effect.zipRight(Metric.set(quarantinedGauge, quarantined.size))),
  )

  /** Answers tick requests still queued for an actor that will not take them. */
  const answerQueued = (handle: ActorHandle, why: string) =>
    (handle.mailbox === null ? Effect.succeed(Chunk.empty<ActorMessage>()) : Queue.takeAll(handle.mailbox)).pipe(
      Effect.flatMap((messages) =>
        Effect.forEach(
          messages,
          (m) =>
            m._tag === "RunNow"
              ? Deferred.succeed(m.request.reply, { ...UserActor.emptyTickPart, errors: [`user ${handle.userId}: ${why}`] })
              : Effect.void,
          { discard: true },
        ),
      ),
    )

  const tryRetire = (handle: ActorHandle) =>
    lock.withPermit(
      Effect.gen(function* () {
        if (handle.mailbox !== null && (yield* Queue.size(handle.mailbox)) > 0) return false
        if (handles.get(handle.userId) === handle) handles.delete(handle.userId)
        setWakeNow(handle, null)
        yield* publishGauges
        return true
      }),
    )

  /** Synchronous, so no message can slip between the check and the change (see `post`). */
  const setWakeNow = (handle: ActorHandle, at: number | null): boolean => {
    if (handle.wake?.live && handle.wake.at === at) return false
    if (handle.wake !== null) wakeUps.cancel(handle.wake)
    handle.wake = at === null ? null : wakeUps.add(at, handle)
    return at !== null && (armedAt === null || at < armedAt)
  }

  const setWake = (handle: ActorHandle, at: number | null) =>
    Effect.suspend(() => (setWakeNow(handle, at) ? Queue.offer(wakeUpsChanged, undefined) : Effect.void))

  /** Parks the actor unless a message is waiting; atomic with `post`'s check, so none is stranded. */
  const tryPark = (handle: ActorHandle) =>
    Effect.sync(() => {
      if (handle.mailbox !== null && Option.getOrElse(handle.mailbox.unsafeSize(), () => 0) > 0) return false
      handle.active = false
      handle.mailbox = null
      handle.restartSignal = null
      return true
    })

  /** Gives a parked actor a fiber. Synchronous: the caller has seen `active` false in the same step. */
  const activate = (handle: ActorHandle, restarted: boolean) => {
    handle.active = true
    handle.restartSignal = Deferred.unsafeMake<void>(FiberId.none)
    forkActor(supervise(handle, restarted))
  }

  /** Delivers a message, waking a parked actor; offer and check in one step, atomic with `tryPark`. */
  const deliver = (handle: ActorHandle, mailbox: Queue.Queue<ActorMessage>, message: ActorMessage) => {
    if (handle.mailbox === null) handle.mailbox = mailbox
    handle.mailbox.unsafeOffer(message)
    if (!handle.active) activate(handle, false)
  }

  const post = (handle: ActorHandle, message: ActorMessage) =>
    Effect.suspend(() => {
      const existing = handle.mailbox
      if (existing !== null) return Effect.sync(() => deliver(handle, existing, message))
      return Effect.map(Queue.unbounded<ActorMessage>(), (fresh) => deliver(handle, fresh, message))
    })

  /** One fiber sleeps until the earliest wake-up of all actors and wakes the due ones. */
  const scheduler = Effect.gen(function* () {
    while (true) {
      const now = yield* Clock.currentTimeMillis
      for (const entry of wakeUps.takeDue(now)) {
        const handle = entry.target
        if (handle.wake === entry) handle.wake = null
        yield* post(handle, { _tag: "Wake" })
      }
      const next = wakeUps.peek()
      armedAt = next === undefined ? null : next.at
      if (next === undefined) yield* Queue.take(wakeUpsChanged)
      else {
        const later = yield* Clock.currentTimeMillis
        if (next.at > later) {
          yield* Effect.raceFirst(Effect.sleep(Duration.millis(next.at - later)), Queue.take(wakeUpsChanged))
        }
      }
    }
  })

  const supervise = (handle: ActorHandle, restarted: boolean): Effect.Effect<void> => {
    let parked = false
    const afterRestart = Effect.gen(function* () {
      quarantined.delete(handle.userId)
      yield* Ref.update(
        handle.status,
        (s): ActorStatus => ({ ...s, state: "idle", inFlight: 0, restarts: s.restarts + 1, nextWakeAt: null }),
      )
      yield* Metric.increment(actorRestartsTotal)
      yield* lock.withPermit(publishGauges)
    })
    return Effect.gen(function* () {
      if (restarted) {
        // Restarted while parked: a new incarnation, as for a running one below.
        handle.failures = []
        handle.memory = null
        setWakeNow(handle, null)
        yield* Effect.logInfo("actor restarted on request")
        yield* afterRestart
      }
      let signal = handle.restartSignal ?? (yield* Deferred.make<void>())
      while (true) {
        handle.restartSignal = signal
        const start: UserActor.ActorStart = handle.memory !== null ? { _tag: "Resume" } : { _tag: "Reload" }
        const memory = handle.memory ?? UserActor.makeMemory()
        handle.memory = memory
        if (handle.mailbox === null) {
          const fresh = yield* Queue.unbounded<ActorMessage>()
          // A message may have made one meanwhile.
          handle.mailbox ??= fresh
        }
        const mailbox = handle.mailbox
        const result = yield* Effect.raceFirst(
          Effect.exit(
            Effect.scoped(
              UserActor.run({
                userId: handle.userId,
                mailbox,
                status: handle.status,
                config,
                store,
                runner,
                gate,
                exclusiveOfDiscovery: (self) => discoveryLock.withPermits(1)(self),
                memory,
                start,
                tryRetire: tryRetire(handle),
                setWake: (at) => setWake(handle, at),
                tryPark: tryPark(handle),
              }),
            ),
          ),
          Deferred.await(signal).pipe(Effect.as("restart-requested" as const)),
        )
        if (result === "restart-requested") {
          handle.failures = []
          yield* Effect.logInfo("actor restarted on request")
        } else if (Exit.isSuccess(result)) {
          parked = result.value === "parked"
          return
        } else {
          const now = yield* Clock.currentTimeMillis
          const windowMs = Duration.toMillis(config.restartWindow)
          handle.failures = [...handle.failures.filter((t) => t > now - windowMs), now]
          const failures = handle.failures
          const reason = UserActor.describeCause(result.cause)
          const quarantine = failures.length >= config.restartMax
          const wait = quarantine ? config.restartWindow : yield* UserActor.nthDelay(restartSchedule, failures.length)
          const wakeAt = now + Duration.toMillis(wait)
          yield* lock.withPermit(
            Effect.gen(function* () {
              yield* Ref.update(
                handle.status,
                (s): ActorStatus => ({
                  ...s,
                  state: quarantine ? "quarantined" : "backing-off",
                  inFlight: 0,
                  lastError: reason,
                  nextWakeAt: iso(wakeAt),
                }),
              )
              if (quarantine) quarantined.add(handle.userId)
              // A tick must not wait out a quarantine.
              if (quarantine) yield* answerQueued(handle, "quarantined")
              yield* publishGauges
            }),
          )
          if (quarantine) {
            yield* Effect.logError("user quarantined: actor failed too often").pipe(
              Effect.annotateLogs({ reason, failures: failures.length, until: iso(wakeAt) }),
            )
          } else {
            yield* Effect.logError("actor failed; restarting after backoff").pipe(
              Effect.annotateLogs({ reason, failures: failures.length, restartAt: iso(wakeAt) }),
            )
          }
          yield* Effect.raceFirst(Effect.sleep(wait), Deferred.await(signal))
          if (quarantine || (yield* Deferred.isDone(signal))) handle.failures = []
          if (quarantine) yield* Effect.logInfo("quarantine lifted")
        }
        // Either way the next turn is a new incarnation that reads the store.
        handle.memory = null
        setWakeNow(handle, null)
        yield* afterRestart
        signal = yield* Deferred.make<void>()
      }
    }).pipe(
      // A parked actor keeps its mailbox: the next message wakes it.
      Effect.ensuring(Effect.suspend(() => (parked ? Effect.void : answerQueued(handle, "actor stopped")))),
      Effect.annotateLogs({ userId: handle.userId }),
    )
  }

  /**
   * Caller holds `lock`, and `discoveryLock` when it passes `initial` (the user's schedulable
   * snapshots as of that pass, so nothing queued later can be older).
   */
  const spawn = (userId: string, initial: Option.Option<ReadonlyArray<MissionSnapshot>>) =>
    Effect.gen(function* () {
      const handle: ActorHandle = {
        userId,
        mailbox: null,
        status: yield* Ref.make(UserActor.initialStatus(userId)),
        active: false,
        restartSignal: null,
        memory: null,
        failures: [],
        wake: null,
      }
      handles.set(userId, handle)
      if (Option.isSome(initial)) {
        // The snapshots of this pass are the view (saves a store read); nothing queued can be older.
        const memory = UserActor.makeMemory()
        handle.memory = memory
        const now = yield* Clock.currentTimeMillis
        // Most actors start with nothing due: they park at once and never need a fiber to start.
        const parked = yield* UserActor.primeParked(memory, handle.status, initial.value, now, config.tickEnabled)
        if (Option.isSome(parked)) yield* setWake(handle, parked.value)
        else activate(handle, false)
      } else {
        activate(handle, false)
      }
      yield* publishGauges
      yield* Effect.logInfo("actor started").pipe(Effect.annotateLogs({ userId }))
      return handle
    })

  /** Caller holds `lock` (see spawn for `initial`). Undefined while draining: no new actor then. */
  const ensureActor = (userId: string, initial: Option.Option<ReadonlyArray<MissionSnapshot>> = Option.none()) =>
    Effect.gen(function* () {
      const existing = handles.get(userId)
      if (existing !== undefined) return existing
      if (yield* gate.draining) return undefined
      return yield* spawn(userId, initial)
    })

  const byUser = (snapshots: ReadonlyArray<MissionSnapshot>) => {
    const groups = new Map<string, Array<MissionSnapshot>>()
    for (const s of snapshots) {
      const group = groups.get(s.userId)
      if (group === undefined) groups.set(s.userId, [s])
      else group.push(s)
    }
    return groups
  }

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
      for (const userId of [...changed.keys()]) if (!handles.has(userId)) changed.delete(userId)
      const all = yield* store.schedulable
      yield* lock.withPermit(
        Effect.forEach(
          byUser(all),
          ([userId, snapshots]) =>
            Effect.gen(function* () {
              if (!handles.has(userId) && (yield* ensureActor(userId, Option.some(snapshots))) !== undefined) actorsStarted++
            }),
          { discard: true },
        ),
      )
      yield* Ref.set(primed, true)
    }
    yield* lock.withPermit(
      Effect.forEach(
        changed,
        ([userId, snapshots]) =>
          Effect.gen(function* () {
            const handle = handles.get(userId)
            if (handle !== undefined) {
              yield* post(handle, { _tag: "Upsert", snapshots })
            } else if (snapshots.some((s) => s.schedulable)) {
              // No actor means no schedulable mission was known for this user before this pass.
              const initial = Option.some(snapshots.filter((s) => s.schedulable))
              if ((yield* ensureActor(userId, initial)) !== undefined) actorsStarted++
            }
          }),
        { discard: true },
      ),
    )
    if (changedCount > 0 || actorsStarted > 0) {
      yield* Effect.logDebug("discovery pass").pipe(Effect.annotateLogs({ rowsRead, changed: changedCount, actorsStarted }))
    }
    return { rowsRead, changed: changedCount, actorsStarted } satisfies DiscoveryReport
  })

  const discover = discoveryLock.withPermits(1)(discoverLocked).pipe(Effect.withSpan("Supervisor.discover"))

  /** Caller holds `lock`. */
  const dispatch = (userId: string, snapshots: ReadonlyArray<MissionSnapshot>, now: number) =>
    Effect.gen(function* () {
      const reply = yield* Deferred.make<TickPart>()
      const handle = yield* ensureActor(userId)
      const answer = (why: string) =>
        Deferred.succeed(reply, { ...UserActor.emptyTickPart, errors: [`user ${userId}: ${why}`] })
      if (handle === undefined) yield* answer("shutting down")
      else if ((yield* Ref.get(handle.status)).state === "quarantined") yield* answer("quarantined")
      else yield* post(handle, { _tag: "RunNow", request: { now, snapshots, reply } })
      return reply
    })

  const tickOnce = Effect.gen(function* () {
    yield* Metric.increment(ticksTotal)
    const started = yield* Clock.currentTimeMillis
    const errors: Array<string> = []
    const report = (scannedAt: number, due: number, parts: ReadonlyArray<TickPart>): TickReport => ({
      scannedAt: iso(scannedAt),
      dueMissionCount: due,
      plansProduced: parts.reduce((n, p) => n + p.plansProduced, 0),
      plansWrittenBack: parts.reduce((n, p) => n + p.plansWrittenBack, 0),
      parseFailures: parts.reduce((n, p) => n + p.parseFailures, 0),
      errors: [...errors, ...parts.flatMap((p) => p.errors)],
    })
    if (yield* gate.draining) {
      errors.push("shutting-down")
      return report(started, 0, [])
    }
    const { now, due, replies } = yield* discoveryLock.withPermits(1)(
      Effect.gen(function* () {
        yield* discoverLocked.pipe(
          Effect.catchAll((e) => Effect.sync(() => errors.push(`discovery: ${e.message}`))),
        )
        const now = yield* Clock.currentTimeMillis
        const due = yield* store.due(new Date(now)).pipe(
          Effect.catchAll((e) => Effect.sync(() => errors.push(`due missions: ${e.message}`)).pipe(Effect.as([]))),
        )
        const replies = yield* lock.withPermit(
          Effect.forEach(byUser(due), ([userId, snapshots]) => dispatch(userId, snapshots, now)),
        )
        return { now, due, replies }
      }),
    )
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
    return result
  })

  const tick = Effect.gen(function* () {
    const attempted = yield* Clock.currentTimeMillis
    const ran = yield* tickLock.withPermitsIfAvailable(1)(
      Effect.acquireUseRelease(
        Ref.set(tickInProgress, true),
        () => tickOnce,
        () => Ref.set(tickInProgress, false),
      ),
    )
    if (Option.isSome(ran)) return ran.value
    yield* Metric.increment(tickOverlapsTotal)
    yield* Effect.logInfo("tick skipped: one is under way")
    return {
      scannedAt: iso(attempted),
      dueMissionCount: 0,
      plansProduced: 0,
      plansWrittenBack: 0,
      parseFailures: 0,
      errors: ["overlap-skipped"],
    } satisfies TickReport
  }).pipe(Effect.withSpan("Supervisor.tick"))

  const status = Effect.suspend(() =>
    Effect.forEach([...handles.values()], (h) => Ref.get(h.status)).pipe(
      Effect.map((all) => [...all].sort((a, b) => (a.userId < b.userId ? -1 : a.userId > b.userId ? 1 : 0))),
    ),
  )

  const restart = (userId: string) =>
    Effect.suspend(() => {
      const handle = handles.get(userId)
      if (handle === undefined) return Effect.succeed(false)
      const signal = handle.restartSignal
      if (!handle.active) activate(handle, true)
      else if (signal !== null) Deferred.unsafeDone(signal, Effect.void)
      return Effect.logInfo("restart requested").pipe(Effect.annotateLogs({ userId }), Effect.as(true))
    })

  // Registered after the FiberSet, so it runs before the actors are interrupted.
  yield* Effect.addFinalizer(() =>
    Effect.gen(function* () {
      const { inFlight } = yield* SubscriptionRef.updateAndGet(gateState, (s) => ({ ...s, draining: true }))
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

  yield* Effect.forkScoped(scheduler)

  if (config.tickEnabled) {
    // Forked last, so closing the scope stops discovery first.
    yield* discover.pipe(
      Effect.catchAllCause((cause) =>
        Effect.logError("discovery pass failed").pipe(Effect.annotateLogs({ reason: UserActor.describeCause(cause) })),
      ),
      Effect.repeat(Schedule.spaced(config.tickInterval)),
      Effect.forkScoped,
    )
  }

  return Supervisor.of({
    tick,
    discover,
    status,
    restart,
    tickRunning: Ref.get(tickInProgress),
    draining: gate.draining,
  })
})

export const SupervisorLive = Layer.scoped(Supervisor, make)
