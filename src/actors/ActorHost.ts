/**
 * The actor host: a small runtime for actors addressed by a string key (SPEC §8), knowing nothing of
 * missions. An actor is a `Behaviour` over a state of its own; the host gives it a mailbox, a fiber
 * while it has work, one entry in a shared wake-up schedule, and supervision:
 *
 * - a turn of the actor's fiber takes messages and asks the behaviour what next after each:
 *   `Continue` (work in flight: keep the fiber), `Park` (nothing in flight: drop the fiber until a
 *   message or the wake-up), `Retire` (nothing at all: leave the books once idle for `idleTtl`);
 * - a failed turn restarts the actor with a fresh incarnation after a backoff; the `restartMax`-th
 *   failure within `restartWindow` (OTP's intensity and period) quarantines it instead, until
 *   `restart(key)` (or for `quarantine`, when one is given); `onQuarantine` / `onLift` let the
 *   owner keep quarantines across restarts of the process (`quarantined(key)` brings one back).
 *
 * Shaped like @effect/cluster's EntityManager (an entity per address, a mailbox and a behaviour per
 * entity) and EntityReaper (idle entities leave after maxIdleTime), so the same behaviour can later
 * run as a cluster Entity. Unlike cluster, an idle actor here costs no fiber: a parked actor is its
 * cell and state only, which keeps 10,000s of mostly-idle actors cheap.
 *
 * The books are plain fields changed only in synchronous steps (`Effect.sync`), so no locks: the one
 * same-tick pair is "park if the mailbox is empty" against "offer, and activate if parked" (see
 * `tryPark` and `deliver`), which must not interleave or a message would be stranded.
 */
import * as Cause from "effect/Cause"
import * as Chunk from "effect/Chunk"
import * as Clock from "effect/Clock"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as FiberSet from "effect/FiberSet"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import { type WakeEntry, WakeHeap } from "../primitives/WakeHeap.js"

// ---------------------------------------------------------------- the behaviour

/** What an actor answers after each message: whether its fiber stays, and when it wants to wake. */
export type Next = Data.TaggedEnum<{
  /** Work in flight: keep the fiber; wake at `wakeAt` (null: only a message wakes it). */
  Continue: { readonly wakeAt: number | null }
  /** Nothing in flight: the fiber may go; a message or `wakeAt` brings one back. */
  Park: { readonly wakeAt: number | null }
  /** Nothing scheduled, in flight or waited for: the host retires it after `idleTtl` of this. */
  Retire: {}
}>

export const Next = Data.taggedEnum<Next>()

/** One turn of an actor's fiber: what it does with a message, and what next. */
export interface Turn<M, E> {
  readonly receive: (message: M) => Effect.Effect<void, E>
  readonly next: Effect.Effect<Next, E>
}

/** What the host tells an actor about itself. */
export interface ActorContext<M> {
  readonly key: string
  /** Sends to this actor (a run reporting back). */
  readonly tell: (message: M) => Effect.Effect<void>
  /** Shows an error to the operator (the actor's `lastError`) without failing the actor. */
  readonly noteError: (reason: string) => Effect.Effect<void>
  /** Told to leave (`drop`: its key moved elsewhere): finish what is under way, start nothing new. */
  readonly leaving: Effect.Effect<boolean>
}

/** Why a message will never be handled. */
export type Rejection = "quarantined" | "actor stopped"

export interface Behaviour<M, S, V, E> {
  /**
   * A new incarnation: the first start without a known state, and every restart. `takeQueued` takes
   * the messages waiting, so the behaviour can order them against its own read; it hands back the
   * ones to handle first (the rest are dropped).
   */
  readonly start: (
    key: string,
    takeQueued: Effect.Effect<ReadonlyArray<M>>,
  ) => Effect.Effect<{ readonly state: S; readonly carried: ReadonlyArray<M> }, E>
  /** One turn over the incarnation's state; its scope closes when the turn ends (parks, retires, fails). */
  readonly turn: (context: ActorContext<M>, state: S) => Effect.Effect<Turn<M, E>, never, Scope.Scope>
  /** An actor spawned with a state: Some(wake-up) when it may park at once without a turn. */
  readonly settle: (state: S, now: number) => Option.Option<number | null>
  /** Answers a message that will never be handled. */
  readonly reject: (key: string, message: M, why: Rejection) => Effect.Effect<void>
  /** What the operator sees of the state. */
  readonly view: (state: S, now: number) => V
}

// ---------------------------------------------------------------- configuration and API

export interface HostOptions {
  /** How long an actor answering `Retire` stays before it leaves the books (cluster's maxIdleTime). */
  readonly idleTtl: Duration.Duration
  /** Failures within `restartWindow` that quarantine (OTP: intensity restartMax - 1 per period). */
  readonly restartMax: number
  readonly restartWindow: Duration.Duration
  /** Delay before the n-th restart within the window. */
  readonly restartBackoff: Schedule.Schedule<unknown>
  /** How long a quarantine holds unless `restart` lifts it; None: until `restart`. */
  readonly quarantine: Option.Option<Duration.Duration>
  /** Told when an actor is quarantined and when a quarantine is lifted (to persist them). */
  readonly onQuarantine?: (key: string, reason: string) => Effect.Effect<void>
  readonly onLift?: (key: string) => Effect.Effect<void>
  /** The log annotation that carries the key. */
  readonly keyName: string
  readonly metrics: {
    readonly actors: Metric.Metric.Gauge<number>
    readonly quarantined: Metric.Metric.Gauge<number>
    readonly restarts: Metric.Metric.Counter<number>
  }
}

export type Phase = "active" | "parked" | "backing-off" | "quarantined" | "restarting"

export interface ActorInfo<V> {
  readonly key: string
  readonly phase: Phase
  /** Restarts after failures or on request. */
  readonly restarts: number
  readonly lastError: string | null
  readonly nextWakeAt: number | null
  /** Null before the first incarnation has a state. */
  readonly view: V | null
}

export type SendResult = "delivered" | "no-actor" | "quarantined"

export const PHASES: ReadonlyArray<Phase> = ["active", "parked", "backing-off", "quarantined", "restarting"]

/**
 * The books as of one synchronous step, for a reader that wants a few actors of 10,000s without
 * computing every view (the operator page). Read it in the step that got it: the books move on.
 */
export interface Census<V> {
  readonly size: number
  /** Actors per phase, kept where the phase changes (no pass over the books). */
  readonly counts: Readonly<Record<Phase, number>>
  /** Every key, ascending (sorted again only after an actor came or went). */
  readonly keys: ReadonlyArray<string>
  /** The actors in these phases, each with its view: cheap when those phases hold few. */
  readonly inPhases: (phases: ReadonlyArray<Phase>) => ReadonlyArray<ActorInfo<V>>
  /** One actor, with its view; undefined when the key has none. */
  readonly info: (key: string) => ActorInfo<V> | undefined
}

export interface ActorHost<M, S, V> {
  /** Adds an actor unless the key has one (false then); with a state it may park at once. */
  readonly spawn: (key: string, state: Option.Option<S>) => Effect.Effect<boolean>
  /** Delivers to the key's actor, waking it when parked; a quarantined actor takes nothing. */
  readonly send: (key: string, message: M) => Effect.Effect<SendResult>
  /** Sets (null: clears) the key's one wake-up in the shared schedule. */
  readonly wakeAt: (key: string, at: number | null) => Effect.Effect<void>
  /** Lifts a quarantine or cuts a backoff short, or stops the running incarnation: a fresh one starts. */
  readonly restart: (key: string) => Effect.Effect<boolean>
  /** Adds the key's actor as quarantined (one kept from an earlier process); false when it has one. */
  readonly quarantined: (key: string, reason: string) => Effect.Effect<boolean>
  /**
   * Takes the key's actor off this host (its user moved to another process): at once when it has no
   * fiber, else when its turn parks; queued messages are rejected. False when the key has none.
   */
  readonly drop: (key: string) => Effect.Effect<boolean>
  readonly has: (key: string) => Effect.Effect<boolean>
  readonly phase: (key: string) => Effect.Effect<Option.Option<Phase>>
  readonly status: Effect.Effect<ReadonlyArray<ActorInfo<V>>>
  /** Counts, sorted keys and reads of a few actors, without a pass over every actor's view. */
  readonly census: Effect.Effect<Census<V>>
}

// ---------------------------------------------------------------- the host

/** The n-th (1-based) delay of a schedule, computed without sleeping. */
export const nthDelay = (schedule: Schedule.Schedule<unknown>, n: number): Effect.Effect<Duration.Duration> =>
  Schedule.run(Schedule.delays(schedule), 0, Array.from({ length: Math.max(1, n) }, () => undefined)).pipe(
    Effect.map((delays) => Option.getOrElse(Chunk.last(delays), () => Duration.zero)),
  )

export const describeCause = (cause: Cause.Cause<unknown>): string => {
  const e = Cause.squash(cause)
  return e instanceof Error ? `${e.name}: ${e.message}` : String(e)
}

/** The letter the wake-up schedule posts to an actor whose fiber runs. */
const WakeUp: unique symbol = Symbol("WakeUp")

/** An actor in the host's books. */
interface Cell<M, S> {
  readonly key: string
  phase: Phase
  /** Made by the first message or turn after parking; null while parked (a parked actor's is empty). */
  mailbox: Queue.Queue<M | typeof WakeUp> | null
  /** The fiber of the current turn (phase active). */
  fiber: Fiber.RuntimeFiber<void> | null
  /** Counts turns, so a turn that was replaced (restart) changes nothing in the books. */
  turn: number
  /** The incarnation's state; it outlives parking. After a failure the last one stays for the view. */
  state: S | null
  /** False: the next turn starts a new incarnation. */
  incarnated: boolean
  /** Failure times within the restart window (they outlive parking). */
  failures: Array<number>
  restarts: number
  lastError: string | null
  /** Since when the actor answers `Retire`. */
  idleSince: number | null
  wake: WakeEntry<Cell<M, S>> | null
  /** Dropped while its turn ran: leaves the books when the turn parks. */
  leaving: boolean
}

export const make = <M, S, V, E>(
  behaviour: Behaviour<M, S, V, E>,
  options: HostOptions,
): Effect.Effect<ActorHost<M, S, V>, never, Scope.Scope> =>
  Effect.gen(function* () {
    const books = new Map<string, Cell<M, S>>()
    /** The cells of the books by phase: counts and the few busy actors without a pass over all. */
    const byPhase = new Map<Phase, Set<Cell<M, S>>>(PHASES.map((p) => [p, new Set()]))
    /** Every key ascending; null after an actor came or went (sorted again on the next census). */
    let sortedKeys: Array<string> | null = null
    const admit = (cell: Cell<M, S>) => {
      books.set(cell.key, cell)
      byPhase.get(cell.phase)?.add(cell)
      sortedKeys = null
    }
    const evict = (cell: Cell<M, S>) => {
      books.delete(cell.key)
      byPhase.get(cell.phase)?.delete(cell)
      sortedKeys = null
    }
    const quarantinedCount = () => byPhase.get("quarantined")?.size ?? 0
    // Registered before the fibers' set, so it runs after they were interrupted: nobody waits for an answer forever.
    yield* Effect.addFinalizer(() =>
      Effect.forEach(books.values(), (cell) => rejectQueued(cell, "actor stopped"), { discard: true }),
    )
    const fibers = yield* FiberSet.make<void, never>()
    const fork = yield* FiberSet.runtime(fibers)<never>()

    const wakeUps = new WakeHeap<Cell<M, S>>()
    /** Nudges the scheduler when a wake-up earlier than the one it sleeps for arrives. */
    const wakeUpsChanged = yield* Queue.sliding<void>(1)
    /** What the scheduler sleeps until; null: nothing scheduled. */
    let armedAt: number | null = null

    const publishGauges = Effect.suspend(() =>
      Metric.set(options.metrics.actors, books.size).pipe(
        Effect.zipRight(Metric.set(options.metrics.quarantined, quarantinedCount())),
      ),
    )

    const setPhase = (cell: Cell<M, S>, phase: Phase) => {
      // Only a cell in the books is in a phase's set (a cell not yet admitted moves on admission).
      if (byPhase.get(cell.phase)?.delete(cell)) byPhase.get(phase)?.add(cell)
      cell.phase = phase
    }

    /** Synchronous; true when the scheduler must wake to re-arm. */
    const setWakeNow = (cell: Cell<M, S>, at: number | null): boolean => {
      if (cell.wake?.live && cell.wake.at === at) return false
      if (cell.wake !== null) wakeUps.cancel(cell.wake)
      cell.wake = at === null ? null : wakeUps.add(at, cell)
      return at !== null && (armedAt === null || at < armedAt)
    }

    const nudge = (rearm: boolean) => (rearm ? Queue.offer(wakeUpsChanged, undefined) : Effect.void)

    const takeQueued = (cell: Cell<M, S>) =>
      (cell.mailbox === null ? Effect.succeed(Chunk.empty<M | typeof WakeUp>()) : Queue.takeAll(cell.mailbox)).pipe(
        Effect.map((letters) => Chunk.toReadonlyArray(letters).filter((l): l is M => l !== WakeUp)),
      )

    const rejectQueued = (cell: Cell<M, S>, why: Rejection) =>
      Effect.flatMap(takeQueued(cell), (messages) =>
        Effect.forEach(messages, (m) => behaviour.reject(cell.key, m, why), { discard: true }),
      )

    /** Gives a cell a fiber for a new turn. Synchronous: the caller saw it without one in the same step. */
    const activate = (cell: Cell<M, S>) => {
      setPhase(cell, "active")
      cell.turn++
      cell.fiber = fork(supervise(cell, cell.turn))
    }

    /** Offers and activates in one step, so `tryPark` cannot run in between. */
    const deliver = (key: string, fresh: Queue.Queue<M | typeof WakeUp> | null, letter: M | typeof WakeUp): SendResult => {
      const cell = books.get(key)
      if (cell === undefined) return "no-actor"
      if (cell.phase === "quarantined") return "quarantined"
      if (cell.mailbox === null) {
        if (fresh === null) return "no-actor" // not reached: callers pass a queue when the cell has none
        cell.mailbox = fresh
      }
      cell.mailbox.unsafeOffer(letter)
      // Backing off or restarting: the letter waits for the next incarnation.
      if (cell.phase === "parked") activate(cell)
      return "delivered"
    }

    const post = (key: string, letter: M | typeof WakeUp): Effect.Effect<SendResult> =>
      Effect.suspend(() => {
        const cell = books.get(key)
        if (cell === undefined) return Effect.succeed<SendResult>("no-actor")
        if (cell.mailbox !== null) return Effect.sync(() => deliver(key, null, letter))
        return Effect.map(Queue.unbounded<M | typeof WakeUp>(), (fresh) => deliver(key, fresh, letter))
      })

    /** Parks unless a letter waits; atomic with `deliver`'s check, so none is stranded. */
    const tryPark = (cell: Cell<M, S>, turn: number): boolean => {
      if (cell.turn !== turn || cell.phase !== "active") return false
      if (cell.mailbox !== null && Option.getOrElse(cell.mailbox.unsafeSize(), () => 0) > 0) return false
      setPhase(cell, "parked")
      cell.mailbox = null
      cell.fiber = null
      if (cell.leaving) {
        evict(cell)
        setWakeNow(cell, null)
      }
      return true
    }

    const tryRetire = (cell: Cell<M, S>, turn: number): boolean => {
      if (!tryPark(cell, turn)) return false
      evict(cell)
      setWakeNow(cell, null)
      return true
    }

    const contextOf = (cell: Cell<M, S>): ActorContext<M> => ({
      key: cell.key,
      tell: (message) => Effect.asVoid(post(cell.key, message)),
      noteError: (reason) =>
        Effect.sync(() => {
          cell.lastError = reason
        }),
      leaving: Effect.sync(() => cell.leaving),
    })

    /** One turn: a new incarnation when needed, then messages until the behaviour parks or retires. */
    const runTurn = Effect.fnUntraced(function* (cell: Cell<M, S>, turn: number): Effect.fn.Return<"parked" | "retired", E, Scope.Scope> {
      let carried: ReadonlyArray<M> = []
      if (!cell.incarnated || cell.state === null) {
        const started = yield* behaviour.start(cell.key, takeQueued(cell))
        cell.state = started.state
        cell.incarnated = true
        carried = started.carried
      }
      if (cell.mailbox === null) {
        const fresh = yield* Queue.unbounded<M | typeof WakeUp>()
        // A message may have made one meanwhile.
        cell.mailbox ??= fresh
      }
      const mailbox = cell.mailbox
      const actor = yield* behaviour.turn(contextOf(cell), cell.state)
      for (const message of carried) yield* actor.receive(message)
      while (true) {
        const next = yield* actor.next
        const now = yield* Clock.currentTimeMillis
        const end = yield* Next.$match(next, {
          Continue: ({ wakeAt }) =>
            Effect.suspend(() => {
              cell.idleSince = null
              return Effect.as(nudge(setWakeNow(cell, wakeAt)), null)
            }),
          Park: ({ wakeAt }) =>
            Effect.suspend(() => {
              cell.idleSince = null
              const rearm = setWakeNow(cell, wakeAt)
              const parked = tryPark(cell, turn)
              return Effect.as(nudge(rearm), parked ? ("parked" as const) : null)
            }),
          Retire: () =>
            Effect.suspend(() => {
              cell.idleSince ??= now
              const retireAt = cell.idleSince + Duration.toMillis(options.idleTtl)
              if (retireAt <= now && tryRetire(cell, turn)) return Effect.succeed("retired" as const)
              const rearm = setWakeNow(cell, retireAt)
              const parked = tryPark(cell, turn)
              return Effect.as(nudge(rearm), parked ? ("parked" as const) : null)
            }),
        })
        if (end !== null) return end
        const letter = yield* Queue.take(mailbox)
        if (letter !== WakeUp) yield* actor.receive(letter)
      }
    })

    /** Starts a fresh incarnation of a cell without a fiber (backing off, quarantined, restarting). */
    const restartNow = Effect.fnUntraced(function* (cell: Cell<M, S>, why: string) {
      cell.incarnated = false
      cell.idleSince = null
      cell.restarts++
      yield* nudge(setWakeNow(cell, null))
      activate(cell)
      yield* Metric.increment(options.metrics.restarts)
      yield* publishGauges
      yield* Effect.logInfo(why).pipe(Effect.annotateLogs(options.keyName, cell.key))
    })

    const onFailure = Effect.fnUntraced(function* (cell: Cell<M, S>, turn: number, cause: Cause.Cause<unknown>) {
      if (cell.turn !== turn || cell.phase !== "active") return
      const now = yield* Clock.currentTimeMillis
      const windowMs = Duration.toMillis(options.restartWindow)
      cell.failures = [...cell.failures.filter((t) => t > now - windowMs), now]
      const failures = cell.failures.length
      const reason = describeCause(cause)
      const quarantine = failures >= options.restartMax
      const wait = quarantine ? Option.getOrNull(options.quarantine) : yield* nthDelay(options.restartBackoff, failures)
      const until = wait === null ? null : now + Duration.toMillis(wait)
      if (cell.turn !== turn || cell.phase !== "active") return
      if (cell.leaving) {
        // Dropped while it ran: it is another runner's now, so it is not restarted here.
        evict(cell)
        setWakeNow(cell, null)
        cell.fiber = null
        yield* rejectQueued(cell, "actor stopped")
        return yield* publishGauges
      }
      setPhase(cell, quarantine ? "quarantined" : "backing-off")
      cell.fiber = null
      cell.incarnated = false
      cell.idleSince = null
      cell.lastError = reason
      yield* nudge(setWakeNow(cell, until))
      // A quarantined actor takes nothing: whoever waits for an answer gets one now.
      if (quarantine) yield* rejectQueued(cell, "quarantined")
      yield* publishGauges
      const at = until === null ? "until lifted" : new Date(until).toISOString()
      if (quarantine) {
        yield* Effect.logError("actor quarantined: it failed too often").pipe(
          Effect.annotateLogs({ reason, failures, until: at }),
        )
        if (options.onQuarantine !== undefined) yield* options.onQuarantine(cell.key, reason)
      } else {
        yield* Effect.logError("actor failed; restarting after backoff").pipe(
          Effect.annotateLogs({ reason, failures, restartAt: at }),
        )
      }
    })

    const supervise = (cell: Cell<M, S>, turn: number): Effect.Effect<void> =>
      Effect.scoped(runTurn(cell, turn)).pipe(
        Effect.exit,
        Effect.flatMap((exit) =>
          Exit.isSuccess(exit)
            ? exit.value === "retired"
              ? publishGauges.pipe(Effect.zipRight(Effect.logInfo("actor retired: idle past its idle TTL")))
              : Effect.void
            : onFailure(cell, turn, exit.cause),
        ),
        Effect.annotateLogs(options.keyName, cell.key),
      )

    const infoOf = (cell: Cell<M, S>, now: number): ActorInfo<V> => ({
      key: cell.key,
      phase: cell.phase,
      restarts: cell.restarts,
      lastError: cell.lastError,
      nextWakeAt: cell.wake?.live ? cell.wake.at : null,
      view: cell.state === null ? null : behaviour.view(cell.state, now),
    })

    const lifted = (cell: Cell<M, S>) => (options.onLift === undefined ? Effect.void : options.onLift(cell.key))

    /** Wakes a cell whose time has come: a letter to a running one, a fiber for a parked one, a restart. */
    const wake = (cell: Cell<M, S>) =>
      Effect.suspend(() => {
        if (books.get(cell.key) !== cell) return Effect.void
        switch (cell.phase) {
          case "active":
          case "parked":
            return Effect.asVoid(post(cell.key, WakeUp))
          case "backing-off":
            return restartNow(cell, "actor restarted after backoff")
          case "quarantined":
            cell.failures = []
            return lifted(cell).pipe(Effect.zipRight(restartNow(cell, "quarantine over: actor restarted")))
          case "restarting":
            return Effect.void
        }
      })

    /** One fiber sleeps until the earliest wake-up of all actors and wakes the due ones. */
    const scheduler = Effect.gen(function* () {
      while (true) {
        const now = yield* Clock.currentTimeMillis
        for (const entry of wakeUps.takeDue(now)) {
          const cell = entry.target
          if (cell.wake === entry) cell.wake = null
          yield* wake(cell)
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
    yield* Effect.forkScoped(scheduler)

    /** A parked cell; with a state it is that incarnation's, without one its first turn starts one. */
    const newCell = (key: string, state: Option.Option<S>): Cell<M, S> => ({
      key,
      phase: "parked",
      mailbox: null,
      fiber: null,
      turn: 0,
      state: Option.getOrNull(state),
      incarnated: Option.isSome(state),
      failures: [],
      restarts: 0,
      lastError: null,
      idleSince: null,
      wake: null,
      leaving: false,
    })

    const spawn = Effect.fnUntraced(function* (key: string, state: Option.Option<S>) {
      if (books.has(key)) return false
      const cell = newCell(key, state)
      admit(cell)
      const now = yield* Clock.currentTimeMillis
      // Most actors start with nothing due: they park at once and need no fiber to start.
      const parked = Option.isSome(state) ? behaviour.settle(state.value, now) : Option.none()
      if (Option.isSome(parked)) yield* nudge(setWakeNow(cell, parked.value))
      else activate(cell)
      yield* publishGauges
      yield* Effect.logInfo("actor started").pipe(Effect.annotateLogs(options.keyName, key))
      return true
    })

    const quarantined = (key: string, reason: string) =>
      Effect.suspend(() => {
        if (books.has(key)) return Effect.succeed(false)
        const cell = newCell(key, Option.none())
        cell.lastError = reason
        setPhase(cell, "quarantined")
        admit(cell)
        return publishGauges.pipe(Effect.as(true))
      })

    const restart = (key: string) =>
      Effect.suspend(() => {
        const cell = books.get(key)
        if (cell === undefined) return Effect.succeed(false)
        if (cell.phase === "restarting") return Effect.succeed(true)
        const running = cell.phase === "active" ? cell.fiber : null
        const wasQuarantined = cell.phase === "quarantined"
        setPhase(cell, "restarting")
        cell.turn++ // the running turn, if any, no longer changes the books
        return (running === null ? Effect.void : Fiber.interrupt(running)).pipe(
          Effect.zipRight(
            Effect.suspend(() => {
              cell.failures = []
              return (wasQuarantined ? lifted(cell) : Effect.void).pipe(
                Effect.zipRight(restartNow(cell, "actor restarted on request")),
              )
            }),
          ),
          Effect.as(true),
        )
      })

    const drop = (key: string) =>
      Effect.suspend(() => {
        const cell = books.get(key)
        if (cell === undefined) return Effect.succeed(false)
        if (cell.phase === "active" || cell.phase === "restarting") {
          cell.leaving = true
          return Effect.succeed(true)
        }
        evict(cell)
        setWakeNow(cell, null)
        return rejectQueued(cell, "actor stopped").pipe(
          Effect.zipRight(publishGauges),
          Effect.zipRight(Effect.logInfo("actor dropped: its user moved to another runner")),
          Effect.annotateLogs(options.keyName, key),
          Effect.as(true),
        )
      })

    return {
      spawn,
      drop,
      send: (key, message) => post(key, message),
      wakeAt: (key, at) =>
        Effect.suspend(() => {
          const cell = books.get(key)
          return cell === undefined ? Effect.void : nudge(setWakeNow(cell, at))
        }),
      restart,
      quarantined,
      has: (key) => Effect.sync(() => books.has(key)),
      phase: (key) => Effect.sync(() => Option.map(Option.fromNullable(books.get(key)), (cell) => cell.phase)),
      status: Effect.map(Clock.currentTimeMillis, (now) => [...books.values()].map((cell) => infoOf(cell, now))),
      census: Effect.map(Clock.currentTimeMillis, (now): Census<V> => {
        sortedKeys ??= [...books.keys()].sort()
        const counts = Object.fromEntries(PHASES.map((p) => [p, byPhase.get(p)?.size ?? 0])) as Record<Phase, number>
        return {
          size: books.size,
          counts,
          keys: sortedKeys,
          inPhases: (phases) => phases.flatMap((p) => [...(byPhase.get(p) ?? [])].map((cell) => infoOf(cell, now))),
          info: (key) => {
            const cell = books.get(key)
            return cell === undefined ? undefined : infoOf(cell, now)
          },
        }
      }),
    }
  })
