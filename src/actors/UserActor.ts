/**
 * One user's actor (SPEC §8): a mailbox, a view of the user's schedulable missions, and the runs of
 * those missions under a per-user permit. It sleeps until its earliest wake-up or a message.
 *
 * The actor's state is local to one incarnation and touched only by its own fiber; runs, timers and
 * the supervisor talk to it through the mailbox. A defect in a run fails the incarnation, which the
 * supervisor sees as a failed actor.
 */
import type { SqlError } from "@effect/sql/SqlError"
import {
  Cause,
  Chunk,
  Clock,
  Data,
  Deferred,
  Duration,
  Effect,
  Either,
  Exit,
  FiberSet,
  Metric,
  Option,
  Queue,
  Ref,
  Schedule,
  type Scope,
} from "effect"
import type { Mission } from "../domain/mission.js"
import type { RunnerConfigShape } from "../services/AppConfig.js"
import type { MissionSnapshot, MissionStoreShape } from "../services/MissionStore.js"
import { MissionTimeout, type MissionRunnerShape, type RunOutcome } from "../services/MissionRunner.js"
import { missionErrorsTotal } from "../services/metrics.js"

// ---------------------------------------------------------------- messages and status

/** What one tick learned from one user's actor. */
export interface TickPart {
  readonly ran: number
  readonly plansProduced: number
  readonly plansWrittenBack: number
  readonly parseFailures: number
  readonly errors: ReadonlyArray<string>
}

export const emptyTickPart: TickPart = { ran: 0, plansProduced: 0, plansWrittenBack: 0, parseFailures: 0, errors: [] }

/** A tick's request: run these missions if they are due at `now` in the actor's view, then reply. */
export interface TickRequest {
  readonly now: number
  readonly snapshots: ReadonlyArray<MissionSnapshot>
  readonly reply: Deferred.Deferred<TickPart>
}

type RunResult =
  | { readonly _tag: "Outcome"; readonly outcome: RunOutcome }
  /** backstop: the actor's own deadline ended it (the runner counts and logs every other failure). */
  | { readonly _tag: "Failed"; readonly error: MissionTimeout | SqlError; readonly backstop: boolean }
  | { readonly _tag: "Aborted" }
  | { readonly _tag: "Defect"; readonly cause: Cause.Cause<unknown> }

export type ActorMessage =
  /** Snapshots changed by discovery (deleted or no longer schedulable ones included). */
  | { readonly _tag: "Upsert"; readonly snapshots: ReadonlyArray<MissionSnapshot> }
  | { readonly _tag: "RunNow"; readonly request: TickRequest }
  | { readonly _tag: "RunDone"; readonly missionId: string; readonly slot: number | null; readonly result: RunResult }
  /** Its wake-up came while it was running: re-evaluate what is due. */
  | { readonly _tag: "Wake" }

export type ActorState = "running" | "idle" | "backing-off" | "quarantined"

export interface MissionStatus {
  readonly missionId: string
  readonly nextRunAt: string | null
  readonly running: boolean
  /** Consecutive runs that timed out, failed or were skipped. */
  readonly consecutiveFailures: number
  /** When a mission backing off after a timeout or skip may run again. */
  readonly retryAt: string | null
}

export interface ActorStatus {
  readonly userId: string
  readonly state: ActorState
  readonly missions: ReadonlyArray<MissionStatus>
  readonly inFlight: number
  readonly restarts: number
  readonly lastError: string | null
  readonly nextWakeAt: string | null
}

export const initialStatus = (userId: string): ActorStatus => ({
  userId,
  state: "idle",
  missions: [],
  inFlight: 0,
  restarts: 0,
  lastError: null,
  nextWakeAt: null,
})

/** A run died with a defect: the actor fails and the supervisor restarts it. */
export class ActorCrashed extends Data.TaggedError("ActorCrashed")<{ readonly missionId: string; readonly reason: string }> {
  override get message() {
    return `run of mission ${this.missionId} died: ${this.reason}`
  }
}

/** Process-wide admission of runs: closed while draining. */
export interface RunGate {
  /** True when the run may start (the caller must `leave` afterwards); false while draining. */
  readonly enter: Effect.Effect<boolean>
  readonly leave: Effect.Effect<void>
  readonly draining: Effect.Effect<boolean>
  /**
   * Bounds the runs doing work at once across all users (first in, first out). Without it every
   * admitted run's reads queue on the pool ahead of earlier runs' write-backs.
   */
  readonly withRunSlot: <A, E>(self: Effect.Effect<A, E>) => Effect.Effect<A, E>
}

export interface UserActorDeps {
  readonly userId: string
  readonly mailbox: Queue.Queue<ActorMessage>
  readonly status: Ref.Ref<ActorStatus>
  readonly config: RunnerConfigShape
  readonly store: MissionStoreShape
  readonly runner: MissionRunnerShape
  readonly gate: RunGate
  /** Runs `self` while no discovery pass is delivering snapshots (so the start-up read is not overtaken). */
  readonly exclusiveOfDiscovery: <A, E>(self: Effect.Effect<A, E>) => Effect.Effect<A, E>
  /** The incarnation's state; it outlives a parked actor's fiber. */
  readonly memory: ActorMemory
  readonly start: ActorStart
  /** Leaves the supervisor's books if no message is waiting; false means stay. */
  readonly tryRetire: Effect.Effect<boolean>
  /** Sets (or with null clears) the actor's one wake-up in the supervisor's shared schedule. */
  readonly setWake: (at: number | null) => Effect.Effect<void>
  /**
   * Ends this fiber's turn if no message is waiting (false means stay): the actor stays in the
   * supervisor's books, and its next message or wake-up starts a fiber that resumes its memory.
   */
  readonly tryPark: Effect.Effect<boolean>
}

/** What an incarnation keeps between its fiber's turns: an idle actor is this plus its books. */
export interface ActorMemory {
  readonly entries: Map<string, Entry>
  idleSince: number | null
}

export const makeMemory = (): ActorMemory => ({ entries: new Map(), idleSince: null })

export type ActorStart =
  /** A new incarnation without a view (a restart, or spawned by a tick): read the user's missions from the store. */
  | { readonly _tag: "Reload" }
  /** The incarnation's memory holds its view (primed at spawn, or kept while parked). */
  | { readonly _tag: "Resume" }

/** How a turn of the actor's fiber ended. */
export type ActorEnd = "retired" | "parked"

// ---------------------------------------------------------------- backoff

/** The n-th (1-based) delay of a schedule, computed without sleeping. */
export const nthDelay = (schedule: Schedule.Schedule<unknown>, n: number): Effect.Effect<Duration.Duration> =>
  Schedule.run(Schedule.delays(schedule), 0, Array.from({ length: Math.max(1, n) }, () => undefined)).pipe(
    Effect.map((delays) => Option.getOrElse(Chunk.last(delays), () => Duration.zero)),
  )

/** Timed-out, failed or skipped runs wait 30 s, doubling up to 15 min (SPEC §4). */
export const missionRetrySchedule = Schedule.exponential("30 seconds").pipe(Schedule.union(Schedule.spaced("15 minutes")))

// ---------------------------------------------------------------- the actor

/** MissionRunner bounds planning by MISSION_TIMEOUT_MS and writes back after it: the actor's backstop allows for that. */
export const WRITE_BACK_ALLOWANCE = Duration.seconds(30)

export interface Entry {
  readonly missionId: string
  mission: Mission
  /** Epoch ms of the slot to run next; null: nothing scheduled. */
  nextRunAt: number | null
  /** The slot of the last run this actor finished: a snapshot still showing it is stale. */
  ranSlot: number | null
  running: boolean
  /** No longer schedulable, kept only until its run in flight ends. */
  removed: boolean
  failures: number
  retryAt: number | null
  waiters: Array<OpenTick>
}

interface OpenTick {
  readonly request: TickRequest
  remaining: number
  part: TickPart
}

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString())

const parseMs = (s: string | null | undefined): number | null => {
  if (s === null || s === undefined) return null
  const ms = Date.parse(s)
  return Number.isNaN(ms) ? null : ms
}

export const describeCause = (cause: Cause.Cause<unknown>): string => {
  const e = Cause.squash(cause)
  return e instanceof Error ? `${e.name}: ${e.message}` : String(e)
}

const addToPart = (part: TickPart, result: RunResult, missionId: string): TickPart => {
  switch (result._tag) {
    case "Outcome": {
      const o = result.outcome
      const written = o._tag === "Written"
      return {
        ran: part.ran + 1,
        plansProduced: part.plansProduced + (o.planProduced ? 1 : 0),
        plansWrittenBack: part.plansWrittenBack + (written ? 1 : 0),
        parseFailures: part.parseFailures + o.parseFailures,
        errors:
          written && o.failure !== undefined ? [...part.errors, `mission ${missionId}: ${o.failure}`] : part.errors,
      }
    }
    case "Failed":
      return { ...part, ran: part.ran + 1, errors: [...part.errors, `mission ${missionId}: ${result.error._tag}`] }
    case "Aborted":
      return { ...part, errors: [...part.errors, `mission ${missionId}: not started, shutting down`] }
    case "Defect":
      return { ...part, ran: part.ran + 1, errors: [...part.errors, `mission ${missionId}: defect`] }
  }
}

/** Applies a snapshot from discovery or the store to the actor's view. */
export const upsert = (entries: Map<string, Entry>, snapshot: MissionSnapshot): void => {
  const existing = entries.get(snapshot.missionId)
  if (!snapshot.schedulable || Either.isLeft(snapshot.decoded)) {
    if (existing === undefined) return
    if (existing.running) existing.removed = true
    else entries.delete(snapshot.missionId)
    return
  }
  // A compact copy: the decoded one sits amid the store pass's garbage and would keep its pages in RSS.
  const mission = structuredClone(snapshot.decoded.right)
  const at = snapshot.nextRunAt === null ? null : snapshot.nextRunAt.getTime()
  if (existing === undefined) {
    entries.set(snapshot.missionId, {
      missionId: snapshot.missionId,
      mission,
      nextRunAt: at,
      ranSlot: null,
      running: false,
      removed: false,
      failures: 0,
      retryAt: null,
      waiters: [],
    })
    return
  }
  existing.removed = false
  if (at !== null && at === existing.ranSlot) {
    // A snapshot read before our own write: keep the slot we already moved on to.
    existing.mission = { ...mission, nextRunAt: existing.mission.nextRunAt }
    return
  }
  existing.mission = mission
  if (at !== existing.nextRunAt) {
    existing.nextRunAt = at
    existing.failures = 0
    existing.retryAt = null
  }
}

/** When the actor may start the entry by itself; null: only news from discovery can make it due. */
const dueAt = (e: Entry): number | null =>
  // A slot already run stays put until discovery brings the next one (never the same slot twice).
  e.nextRunAt === null || e.nextRunAt === e.ranSlot
    ? null
    : e.retryAt === null
      ? e.nextRunAt
      : Math.max(e.nextRunAt, e.retryAt)

/** The actor's view as the API shows it. */
const publish = (status: Ref.Ref<ActorStatus>, entries: Map<string, Entry>, now: number, wakeAt: number | null) =>
  Ref.update(status, (s): ActorStatus => ({
    ...s,
    state: s.inFlight > 0 ? "running" : "idle",
    missions: [...entries.values()]
      .filter((e) => !e.removed)
      .map((e) => ({
        missionId: e.missionId,
        nextRunAt: iso(e.nextRunAt),
        running: e.running,
        consecutiveFailures: e.failures,
        retryAt: e.retryAt !== null && e.retryAt > now ? iso(e.retryAt) : null,
      })),
    nextWakeAt: iso(wakeAt),
  }))

/** What a look at the actor's view decides. */
interface Plan {
  /** Entries to start now. */
  readonly due: Array<Entry>
  /** The earliest later start, not counting retirement. */
  readonly wakeAt: number | null
  /** Nothing scheduled, running or waited for: retirement may come. */
  readonly idle: boolean
}

/** `launchable` false: nothing starts by itself (TICK_ENABLED=false, or draining). */
const plan = (entries: Map<string, Entry>, openTicks: number, now: number, launchable: boolean): Plan => {
  const due: Array<Entry> = []
  let wakeAt: number | null = null
  let idle = openTicks === 0
  for (const e of entries.values()) {
    if (e.running) idle = false
    if (e.removed || e.nextRunAt === null) continue
    idle = false
    if (!launchable || e.running) continue
    const at = dueAt(e)
    if (at === null) continue
    if (at <= now) due.push(e)
    else wakeAt = wakeAt === null ? at : Math.min(wakeAt, at)
  }
  return { due, wakeAt, idle }
}

/**
 * A spawned actor's first look at its snapshots, made by the supervisor without a fiber. Some(wake-up):
 * nothing is due or waited for, so it may park at once with its view published; None: it needs a turn.
 */
export const primeParked = (
  memory: ActorMemory,
  status: Ref.Ref<ActorStatus>,
  snapshots: ReadonlyArray<MissionSnapshot>,
  now: number,
  launchable: boolean,
): Effect.Effect<Option.Option<number | null>> =>
  Effect.suspend(() => {
    for (const snapshot of snapshots) upsert(memory.entries, snapshot)
    const p = plan(memory.entries, 0, now, launchable)
    if (p.due.length > 0 || p.idle) return Effect.succeed(Option.none())
    return publish(status, memory.entries, now, p.wakeAt).pipe(Effect.as(Option.some(p.wakeAt)))
  })

/**
 * One turn of an incarnation of a user's actor. Succeeds when it retires (idle past
 * ACTOR_IDLE_TTL_MS) or parks (nothing in flight and no message: no fiber until the next one);
 * fails with ActorCrashed when a run dies (or SqlError when its start-up read fails); never leaves a
 * tick request it took from the mailbox unanswered (open ones are answered when the incarnation ends).
 */
export const run = (deps: UserActorDeps): Effect.Effect<ActorEnd, ActorCrashed | SqlError, Scope.Scope> =>
  Effect.gen(function* () {
    const { config, gate, mailbox, memory, runner, status, store, userId } = deps
    const entries = memory.entries
    const openTicks = new Set<OpenTick>()
    // A turn parks only with no run in flight, so these need not outlive it.
    const userPermits = yield* Effect.makeSemaphore(config.userConcurrency)
    const runs = yield* FiberSet.make<void, never>()

    // Whatever happens to this incarnation, nobody waits for an answer forever.
    yield* Effect.addFinalizer((exit) =>
      Effect.forEach(openTicks, (open) =>
        Deferred.succeed(open.request.reply, {
          ...open.part,
          errors: [
            ...open.part.errors,
            Exit.isFailure(exit) && !Exit.isInterrupted(exit)
              ? `user ${userId}: actor failed (${describeCause(exit.cause)})`
              : `user ${userId}: actor stopped before its runs ended`,
          ],
        }),
      ),
    )

    const runOne = (missionId: string, mission: Mission, slot: number | null) =>
      userPermits
        .withPermits(1)(
          Effect.acquireUseRelease(
            gate.enter,
            (admitted): Effect.Effect<RunResult> =>
              admitted
                ? Ref.update(status, (s): ActorStatus => ({ ...s, inFlight: s.inFlight + 1, state: "running" })).pipe(
                    Effect.zipRight(
                      gate.withRunSlot(
                        runner.run({ userId, mission }).pipe(
                          Effect.exit,
                          // MissionRunner applies the deadline itself (then writes back); this bounds a runner that hangs.
                          Effect.timeoutOption(Duration.sum(config.missionTimeout, WRITE_BACK_ALLOWANCE)),
                        ),
                      ),
                    ),
                    Effect.map(
                      Option.match({
                        onNone: (): RunResult => ({
                          _tag: "Failed",
                          error: new MissionTimeout({ timeoutMs: Duration.toMillis(config.missionTimeout) }),
                          backstop: true,
                        }),
                        onSome: (exit): RunResult =>
                          Exit.isSuccess(exit)
                            ? { _tag: "Outcome", outcome: exit.value }
                            : Option.match(Cause.failureOption(exit.cause), {
                                onNone: (): RunResult => ({ _tag: "Defect", cause: exit.cause }),
                                onSome: (error): RunResult => ({ _tag: "Failed", error, backstop: false }),
                              }),
                      }),
                    ),
                    Effect.ensuring(
                      Ref.update(status, (s): ActorStatus => ({
                        ...s,
                        inFlight: s.inFlight - 1,
                        state: s.inFlight - 1 > 0 ? "running" : "idle",
                      })),
                    ),
                  )
                : Effect.succeed({ _tag: "Aborted" }),
            (admitted) => (admitted ? gate.leave : Effect.void),
          ),
        )
        .pipe(
          Effect.flatMap((result) => Queue.offer(mailbox, { _tag: "RunDone", missionId, slot, result })),
          Effect.asVoid,
          Effect.annotateLogs({ missionId }),
          Effect.withSpan("UserActor.run", { attributes: { userId, missionId } }),
        )

    const launch = (e: Entry) =>
      Effect.suspend(() => {
        e.running = true
        return FiberSet.run(runs, runOne(e.missionId, e.mission, e.nextRunAt))
      })

    const settle = (open: OpenTick) =>
      Effect.suspend(() => {
        if (open.remaining > 0) return Effect.void
        openTicks.delete(open)
        return Deferred.succeed(open.request.reply, open.part)
      })

    const onRunNow = (request: TickRequest) =>
      Effect.gen(function* () {
        const open: OpenTick = { request, remaining: 0, part: emptyTickPart }
        openTicks.add(open)
        const draining = yield* gate.draining
        for (const snapshot of request.snapshots) {
          if (!entries.has(snapshot.missionId)) upsert(entries, snapshot)
          const e = entries.get(snapshot.missionId)
          if (e === undefined || e.removed) continue
          if (e.running) {
            // Already under way: the tick waits for that run instead of starting a second one.
            e.waiters.push(open)
            open.remaining++
            continue
          }
          // The actor's own view decides: a slot it has already run is not due again.
          if (e.nextRunAt === null || e.nextRunAt === e.ranSlot || e.nextRunAt > request.now) continue
          if (draining) {
            open.part = addToPart(open.part, { _tag: "Aborted" }, e.missionId)
            continue
          }
          e.waiters.push(open)
          open.remaining++
          yield* launch(e)
        }
        yield* settle(open)
      })

    const onRunDone = (missionId: string, slot: number | null, result: RunResult) =>
      Effect.gen(function* () {
        const e = entries.get(missionId)
        if (e === undefined || !e.running) return
        e.running = false
        const now = yield* Clock.currentTimeMillis
        const backOff = Effect.gen(function* () {
          e.failures++
          e.retryAt = now + Duration.toMillis(yield* nthDelay(missionRetrySchedule, e.failures))
        })
        switch (result._tag) {
          case "Outcome": {
            const o = result.outcome
            if (o._tag === "Written") {
              // Move on at once: the store's view catches up on a later discovery pass.
              e.ranSlot = slot
              e.nextRunAt = parseMs(o.nextRunAt)
              e.mission = { ...e.mission, nextRunAt: o.nextRunAt }
              e.failures = 0
              e.retryAt = null
              yield* Effect.logInfo("mission run wrote an iteration").pipe(
                Effect.annotateLogs({
                  missionId,
                  iterationId: o.iterationId,
                  overallStatus: o.overallStatus,
                  steps: o.steps,
                  nextRunAt: o.nextRunAt ?? "none",
                }),
              )
            } else {
              if (o.reason === "already-written") e.ranSlot = slot
              // A skip waits for discovery to bring news, and backs off so it never loops hot.
              yield* backOff
              yield* Effect.logInfo("mission run skipped").pipe(
                Effect.annotateLogs({ missionId, reason: o.reason, retryAt: iso(e.retryAt) ?? "" }),
              )
            }
            break
          }
          case "Failed": {
            yield* backOff
            if (result.backstop) yield* Metric.increment(Metric.tagged(missionErrorsTotal, "kind", result.error._tag))
            yield* Ref.update(status, (s) => ({ ...s, lastError: `mission ${missionId}: ${result.error.message}` }))
            yield* Effect.logWarning("mission run failed; it stays due and backs off").pipe(
              Effect.annotateLogs({ missionId, error: result.error._tag, retryAt: iso(e.retryAt) ?? "" }),
            )
            break
          }
          case "Aborted":
            break
          case "Defect":
            break
        }
        const waiters = e.waiters
        e.waiters = []
        for (const open of waiters) {
          open.part = addToPart(open.part, result, missionId)
          open.remaining--
          yield* settle(open)
        }
        if (e.removed) entries.delete(missionId)
        if (result._tag === "Defect") {
          return yield* new ActorCrashed({ missionId, reason: describeCause(result.cause) })
        }
      })

    const handle = (message: ActorMessage) => {
      switch (message._tag) {
        case "Upsert":
          return Effect.sync(() => {
            for (const snapshot of message.snapshots) upsert(entries, snapshot)
          })
        case "RunNow":
          return onRunNow(message.request)
        case "RunDone":
          return onRunDone(message.missionId, message.slot, message.result)
        case "Wake":
          return Effect.void
      }
    }

    if (deps.start._tag === "Reload") {
      // A restart: the store's view replaces whatever discovery queued for an earlier incarnation.
      const carried = yield* deps.exclusiveOfDiscovery(
        Effect.gen(function* () {
          const queued = yield* Queue.takeAll(mailbox)
          const snapshots = yield* store.forUser(userId)
          for (const snapshot of snapshots) upsert(entries, snapshot)
          return Chunk.filter(queued, (m) => m._tag === "RunNow")
        }),
      )
      for (const message of carried) yield* handle(message)
    }

    while (true) {
      const now = yield* Clock.currentTimeMillis
      const draining = yield* gate.draining
      // With TICK_ENABLED=false only a tick runs missions; while draining nothing starts.
      const p = plan(entries, openTicks.size, now, config.tickEnabled && !draining)
      for (const e of p.due) yield* launch(e)
      let wakeAt = p.wakeAt
      const idle = p.idle
      const busy = openTicks.size > 0 || [...entries.values()].some((e) => e.running)
      if (idle) {
        memory.idleSince ??= now
        const retireAt = memory.idleSince + Duration.toMillis(config.actorIdleTtl)
        if (retireAt <= now && (yield* deps.tryRetire)) {
          yield* deps.setWake(null)
          yield* Effect.logInfo("actor retired: idle past ACTOR_IDLE_TTL_MS")
          return "retired"
        }
        wakeAt = wakeAt === null ? retireAt : Math.min(wakeAt, retireAt)
      } else {
        memory.idleSince = null
      }
      yield* deps.setWake(wakeAt)
      yield* publish(status, entries, now, wakeAt)
      // Nothing in flight and nobody waiting for an answer: the fiber is not needed until the next message or wake-up.
      if (!busy && (yield* deps.tryPark)) return "parked"
      const message = yield* Queue.take(mailbox)
      yield* handle(message)
    }
  })
