/**
 * One user's actor (SPEC §8) as a behaviour for the ActorHost: messages in (snapshots from
 * discovery, a tick's request, a finished run), runs out, each under the user's permit. Its view of
 * the user's missions and the decisions on it are pure (src/domain/actorView.ts); the host gives it
 * a mailbox, a fiber while it has work, wake-ups, restarts and quarantine.
 *
 * A defect in a run fails the incarnation, which the host sees as a failed actor.
 */
import type { SqlError } from "@effect/sql/SqlError"
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Data from "effect/Data"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberSet from "effect/FiberSet"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import {
  addToPart,
  emptyTickPart,
  type MissionStatus,
  missionStatuses,
  plan,
  RunResult,
  type TickPart,
  TickError,
  upsert,
  type View,
  dueForTick,
  type HoldReason,
  hold,
  isHoldReason,
  movedOn,
  releaseAgents,
} from "../domain/actorView.js"
import type { MissionRef } from "../domain/mission.js"
import type { RunnerConfigShape } from "../services/AppConfig.js"
import type { MissionSnapshot, MissionStoreShape } from "../services/MissionStore.js"
import type { MissionRunnerShape, MissionTimeout, RunOutcome } from "../services/MissionRunner.js"
import { GlobalLlmPermits } from "../services/GlobalLlmPermits.js"
import { type ActorContext, type Behaviour, describeCause, Next, nthDelay } from "./ActorHost.js"
import { withSpanWhenTracing } from "../services/tracing.js"

// ---------------------------------------------------------------- messages

/** A tick's request: run these missions if they are due at `now` in the actor's view, then reply. */
export interface TickRequest {
  readonly now: number
  readonly snapshots: ReadonlyArray<MissionSnapshot>
  readonly reply: Deferred.Deferred<TickPart>
}

export type ActorMessage = Data.TaggedEnum<{
  /** Snapshots changed by discovery (deleted or no longer schedulable ones included). */
  Upsert: { readonly snapshots: ReadonlyArray<MissionSnapshot> }
  RunNow: { readonly request: TickRequest }
  RunDone: { readonly missionId: string; readonly slot: number | null; readonly result: RunResult<RunOutcome> }
  /** These agents of the user changed (discovery, SPEC §14): missions they hold are looked at again. */
  AgentsChanged: { readonly agentIds: ReadonlyArray<string> }
}>

export const ActorMessage = Data.taggedEnum<ActorMessage>()

/** A run died with a defect: the actor fails and the host restarts it. */
export class ActorCrashed extends Data.TaggedError("ActorCrashed")<{ readonly missionId: string; readonly reason: string }> {
  override get message() {
    return `run of mission ${this.missionId} died: ${this.reason}`
  }
}

// ---------------------------------------------------------------- state and what it shows

/** An incarnation's state: an idle actor is this and its cell in the host. */
export interface ActorState {
  readonly view: View
  /** Runs admitted and not yet ended. */
  inFlight: number
}

export const makeState = (): ActorState => ({ view: new Map(), inFlight: 0 })

export interface ActorView {
  readonly missions: ReadonlyArray<MissionStatus>
  readonly inFlight: number
}

// ---------------------------------------------------------------- dependencies

/** Process-wide admission of runs: closed while draining. */
export interface RunGate {
  /** True when the run may start (the caller must `leave` afterwards); false while draining. */
  readonly enter: Effect.Effect<boolean>
  readonly leave: Effect.Effect<void>
  readonly draining: Effect.Effect<boolean>
  /**
   * Bounds the runs doing work at once across all users, granted round-robin by user (first in,
   * first out within a user). Without it every admitted run's reads queue on the pool ahead of
   * earlier runs' write-backs.
   */
  readonly withRunSlot: (userId: string) => <A, E>(self: Effect.Effect<A, E>) => Effect.Effect<A, E>
}

export interface UserActorDeps {
  readonly config: RunnerConfigShape
  readonly store: MissionStoreShape
  readonly runner: MissionRunnerShape
  readonly gate: RunGate
  /** Runs `self` while no discovery pass is delivering snapshots (so the start-up read is not overtaken). */
  readonly exclusiveOfDiscovery: <A, E>(self: Effect.Effect<A, E>) => Effect.Effect<A, E>
}

/** Timed-out, failed or skipped runs wait 30 s, doubling up to 15 min (SPEC §4). */
const missionRetrySchedule = Schedule.exponential("30 seconds").pipe(Schedule.union(Schedule.spaced("15 minutes")))

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString())

const parseMs = (s: string | null | undefined): number | null => {
  if (s === null || s === undefined) return null
  const ms = Date.parse(s)
  return Number.isNaN(ms) ? null : ms
}

/** A tick's request still waiting for runs. */
interface OpenTick {
  readonly request: TickRequest
  remaining: number
  part: TickPart
}

// ---------------------------------------------------------------- a turn's message handlers

/**
 * What a turn's handlers share. The handlers' generator functions are module-level (DEVELOPERS.md: no
 * generator function made per call on a hot path): made per turn, JavaScriptCore threw their optimized
 * code away after a few collections and compiled it again (`onRunDone` most: once per run).
 */
interface TurnHandlers {
  readonly self: ActorContext<ActorMessage>
  readonly view: View
  readonly openTicks: Set<OpenTick>
  readonly waiters: Map<string, Array<OpenTick>>
  readonly gate: RunGate
  readonly tickEnabled: boolean
  readonly wait: (missionId: string, open: OpenTick) => void
  readonly launch: (missionId: string) => Effect.Effect<void>
  readonly settle: (open: OpenTick) => Effect.Effect<void>
}

/** RunNow: the tick's due missions start (or are waited for); the tick is answered once they all ended. */
const runNowSteps = Effect.fnUntraced(function* (h: TurnHandlers, request: TickRequest) {
  const { view, openTicks, gate, wait, launch, settle } = h
  const open: OpenTick = { request, remaining: 0, part: emptyTickPart }
  openTicks.add(open)
  const draining = yield* gate.draining
  for (const snapshot of request.snapshots) {
    if (!view.has(snapshot.missionId)) upsert(view, snapshot)
    const e = view.get(snapshot.missionId)
    if (e === undefined || e.removed) continue
    if (e.running) {
      // Already under way: the tick waits for that run instead of starting a second one.
      wait(e.missionId, open)
      continue
    }
    // The actor's own view decides: a slot it has already run is not due again.
    if (!dueForTick(e, request.now)) continue
    if (draining) {
      open.part = addToPart(open.part, RunResult.Aborted(), e.missionId)
      continue
    }
    wait(e.missionId, open)
    yield* launch(e.missionId)
  }
  yield* settle(open)
})

/** RunDone: the run's end in the actor's view (moved on, held, or backing off) and in the ticks waiting for it. */
const runDoneSteps = Effect.fnUntraced(function* (
  h: TurnHandlers,
  missionId: string,
  slot: number | null,
  result: RunResult<RunOutcome>,
) {
  const { self, view, waiters, settle } = h
  const e = view.get(missionId)
  if (e === undefined || !e.running) return
  e.running = false
  const now = yield* Clock.currentTimeMillis
  const backOff = Effect.suspend(() => {
    e.failures++
    return Effect.map(nthDelay(missionRetrySchedule, e.failures), (delay) => {
      e.retryAt = now + Duration.toMillis(delay)
    })
  })
  yield* RunResult.$match(result, {
    Outcome: ({ outcome: o }) =>
      o._tag === "Written"
        ? Effect.suspend(() => {
            // Move on at once: the store's view catches up on a later discovery pass.
            e.ranSlot = slot
            e.nextRunAt = parseMs(o.nextRunAt)
            movedOn(e, o.nextRunAt)
            e.failures = 0
            e.retryAt = null
            e.held = null
            return Effect.logInfo("mission run wrote an iteration").pipe(
              Effect.annotateLogs({
                missionId,
                iterationId: o.iterationId,
                overallStatus: o.overallStatus,
                steps: o.steps,
                nextRunAt: o.nextRunAt ?? "none",
              }),
            )
          })
        : isHoldReason(o.reason)
          ? Effect.suspend(() => {
              const reason = o.reason as HoldReason
              // SPEC §14: looked at again when the reason can have changed (a budget's window
              // frees at freeAt; the agent or the mission changes), not on the retry backoff.
              const held = hold(e, reason, parseMs(o.freeAt))
              return Effect.logInfo(
                held ? "mission held by its agent's decision" : "mission skipped; it changed meanwhile: looked at again",
              ).pipe(
                Effect.annotateLogs({
                  missionId,
                  reason: o.reason,
                  until: held ? (iso(e.held?.until ?? null) ?? "a change of the mission or its agent") : "now",
                }),
              )
            })
        : Effect.suspend(() => {
            if (o.reason === "already-written") e.ranSlot = slot
            // A skip waits for discovery to bring news, and backs off so it never loops hot.
            return Effect.zipRight(
              backOff,
              Effect.suspend(() =>
                Effect.logInfo("mission run skipped").pipe(
                  Effect.annotateLogs({ missionId, reason: o.reason, retryAt: iso(e.retryAt) ?? "" }),
                ),
              ),
            )
          }),
    Failed: ({ error }) =>
      Effect.zipRight(
        Effect.zipRight(backOff, self.noteError(`mission ${missionId}: ${error.message}`)),
        Effect.suspend(() =>
          Effect.logWarning("mission run failed; it stays due and backs off").pipe(
            Effect.annotateLogs({ missionId, error: error._tag, retryAt: iso(e.retryAt) ?? "" }),
          ),
        ),
      ),
    // Not started (the drain, or the user moved): it backs off too, so nothing can re-launch it in a hot loop.
    Aborted: () => backOff,
    Moved: () => backOff,
    Defect: () => Effect.void,
  })
  const waiting = waiters.get(missionId) ?? []
  waiters.delete(missionId)
  for (const open of waiting) {
    open.part = addToPart(open.part, result, missionId)
    open.remaining--
    yield* settle(open)
  }
  if (e.removed) view.delete(missionId)
  if (result._tag === "Defect") return yield* new ActorCrashed({ missionId, reason: result.reason })
})

/** After each message: starts what is due, and says whether the actor continues, parks or retires. */
const nextSteps = Effect.fnUntraced(function* (h: TurnHandlers) {
  const { view, openTicks, gate, launch } = h
  const now = yield* Clock.currentTimeMillis
  // With TICK_ENABLED=false only a tick runs missions; while draining nothing starts.
  const p = plan(view, openTicks.size, now, h.tickEnabled && !(yield* gate.draining))
  for (const e of p.due) yield* launch(e.missionId)
  if (p.idle) return Next.Retire()
  const busy = openTicks.size > 0 || [...view.values()].some((e) => e.running)
  // Nothing in flight and nobody waiting for an answer: the fiber is not needed until the next message or wake-up.
  return busy ? Next.Continue({ wakeAt: p.wakeAt }) : Next.Park({ wakeAt: p.wakeAt })
})

// ---------------------------------------------------------------- the behaviour

export const behaviour = (
  deps: UserActorDeps,
): Behaviour<ActorMessage, ActorState, ActorView, ActorCrashed | SqlError> => {
  const { config, gate, runner, store } = deps

  const answer = (request: TickRequest, part: TickPart) => Deferred.succeed(request.reply, part)

  /** A new incarnation's state: the store's view of the user's missions, and the ticks queued for it. */
  const startSteps = Effect.fnUntraced(function* (userId: string, takeQueued: Effect.Effect<ReadonlyArray<ActorMessage>>) {
    const queued = yield* takeQueued
    const snapshots = yield* store.forUser(userId)
    const state = makeState()
    for (const snapshot of snapshots) upsert(state.view, snapshot)
    return { state, carried: queued.filter(ActorMessage.$is("RunNow")) }
  })

  return {
    // A new incarnation: the store's view replaces whatever discovery queued for an earlier one.
    start: (userId, takeQueued) => deps.exclusiveOfDiscovery(startSteps(userId, takeQueued)),

    settle: (state, now) => {
      const p = plan(state.view, 0, now, config.tickEnabled)
      return p.due.length > 0 || p.idle ? Option.none() : Option.some(p.wakeAt)
    },

    reject: (userId, message, why) =>
      ActorMessage.$is("RunNow")(message)
        ? answer(message.request, {
            ...emptyTickPart,
            errors: [TickError.ActorUnavailable({ userId, reason: why })],
          })
        : Effect.void,

    view: (state, now) => ({ missions: missionStatuses(state.view, now), inFlight: state.inFlight }),

    // Made once (DEVELOPERS.md: no generator function made per call on a hot path; a turn starts per wake-up).
    turn: Effect.fnUntraced(function* (self: ActorContext<ActorMessage>, state: ActorState) {
      const userId = self.key
      const view = state.view
      const openTicks = new Set<OpenTick>()
      /** Tick requests waiting for a mission's run. */
      const waiters = new Map<string, Array<OpenTick>>()
      // A turn parks only with no run in flight, so these need not outlive it.
      const runs = yield* FiberSet.make<void, never>()
      /**
       * USER_CONCURRENCY: runs launched beyond it wait here, in launch order, as records, and get a
       * fiber when one of the user's runs ends. A fiber per launched run, each waiting on a permit,
       * cost a user with 500 due 500 fibers started at once (issue 16 item 6: at once, 5,000 of
       * them held up the first runs' claims for seconds).
       */
      const queued: Array<{ readonly missionId: string; readonly mission: MissionRef; readonly slot: number | null }> = []
      let queuedHead = 0
      /** Runs of this turn with a fiber, not yet ended. */
      let started = 0

      // Whatever happens to this turn, nobody waits for an answer forever.
      yield* Effect.addFinalizer((exit) =>
        Effect.forEach(openTicks, (open) =>
          answer(open.request, {
            ...open.part,
            errors: [
              ...open.part.errors,
              Exit.isFailure(exit) && !Exit.isInterrupted(exit)
                ? TickError.ActorFailed({ userId, reason: describeCause(exit.cause) })
                : TickError.ActorUnavailable({ userId, reason: "actor stopped before its runs ended" }),
            ],
          }),
        ),
      )

      /** How a run the actor may start ends (MissionRunner bounds it by MISSION_TIMEOUT_MS, claim to commit). */
      const settleRun = (exit: Exit.Exit<RunOutcome, MissionTimeout | SqlError>): RunResult<RunOutcome> =>
        Exit.isSuccess(exit)
          ? RunResult.Outcome({ outcome: exit.value })
          : Cause.isInterruptedOnly(exit.cause)
            ? // The drain closed the LLM permits before this run's request: it wrote nothing.
              RunResult.Aborted()
            : Option.match(Cause.failureOption(exit.cause), {
                onNone: () => RunResult.Defect({ reason: describeCause(exit.cause) }),
                onSome: (error) => RunResult.Failed({ error }),
              })

      /** The run itself, once through the gate: a run slot, then the runner (or not, when draining or moving). */
      const admitted = (mission: MissionRef): Effect.Effect<RunResult<RunOutcome>> =>
        gate.withRunSlot(userId)(
          // Admitted before the drain, or before the user moved to another runner (cluster), but
          // still waiting for a slot: it does not start here now (the new owner runs it).
          // Two plain reads (Effect.zip of the two took about 18 run-loop instructions, issue 16).
          Effect.flatMap(gate.draining, (draining) =>
            draining
              ? Effect.succeed(RunResult.Aborted<RunOutcome>())
              : Effect.flatMap(self.leaving, (leaving) =>
                  leaving
                    ? Effect.succeed(RunResult.Moved<RunOutcome>())
                    : runner.run({ userId, mission }).pipe(
                        // Its LLM requests take this user's turns at the global permits (this fiber is the run's own).
                        GlobalLlmPermits.forUserToTheEnd(userId),
                        Effect.exit,
                        Effect.map(settleRun),
                      ),
                ),
          ),
        )

      /**
       * One queued run in a fiber of its own: through the drain's gate (`enter`, and `leave` however
       * it ends), counted in the actor's books meanwhile, then RunDone told. The gate, the books and
       * the count `pump` reads change in one uninterruptible step on each side (an acquireUseRelease and
       * two `ensuring`s took about 30 run-loop instructions, issue 16). No log annotation here: the
       * runner's own logs carry the mission, and nothing else on this fiber logs.
       */
      const runOne = (missionId: string, mission: MissionRef, slot: number | null) =>
        Effect.uninterruptibleMask((restore) =>
          Effect.flatMap(gate.enter, (entered) => {
            if (!entered) {
              started--
              return Effect.succeed(RunResult.Aborted<RunOutcome>())
            }
            state.inFlight++
            return Effect.ensuring(
              restore(admitted(mission)),
              // Counted off before RunDone is told, so the pump that RunDone triggers sees the room.
              Effect.suspend(() => {
                state.inFlight--
                started--
                return gate.leave
              }),
            )
          }),
        ).pipe(
          Effect.flatMap((result) => self.tell(ActorMessage.RunDone({ missionId, slot, result }))),
          withSpanWhenTracing("UserActor.run", { attributes: { userId, missionId } }),
        )

      /** Gives queued runs fibers while the user has fewer than USER_CONCURRENCY under way. */
      const pump = Effect.suspend(() => {
        const now: Array<Effect.Effect<unknown>> = []
        while (started < config.userConcurrency && queuedHead < queued.length) {
          const next = queued[queuedHead++]!
          started++
          now.push(FiberSet.run(runs, runOne(next.missionId, next.mission, next.slot)))
        }
        if (queuedHead === queued.length) {
          queued.length = 0
          queuedHead = 0
        }
        // One fiber at a time is the usual case: no Effect.all for it (about eight run-loop instructions).
        return now.length === 0 ? Effect.void : now.length === 1 ? now[0]! : Effect.all(now, { discard: true })
      })

      const launch = (missionId: string) =>
        Effect.suspend(() => {
          const e = view.get(missionId)
          if (e === undefined) return Effect.void
          e.running = true
          e.newsWhileRunning = false
          queued.push({ missionId: e.missionId, mission: e.mission, slot: e.nextRunAt })
          return pump
        })

      const wait = (missionId: string, open: OpenTick) => {
        const list = waiters.get(missionId)
        if (list === undefined) waiters.set(missionId, [open])
        else list.push(open)
        open.remaining++
      }

      const settle = (open: OpenTick) =>
        Effect.suspend(() => {
          if (open.remaining > 0) return Effect.void
          openTicks.delete(open)
          return answer(open.request, open.part)
        })

      const handlers: TurnHandlers = { self, view, openTicks, waiters, gate, tickEnabled: config.tickEnabled, wait, launch, settle }
      const onRunNow = (request: TickRequest) => runNowSteps(handlers, request)

      const onRunDone = (missionId: string, slot: number | null, result: RunResult<RunOutcome>) =>
        runDoneSteps(handlers, missionId, slot, result)

      const receive = ActorMessage.$match({
        Upsert: ({ snapshots }) =>
          Effect.sync(() => {
            for (const snapshot of snapshots) upsert(view, snapshot)
          }),
        RunNow: ({ request }) => onRunNow(request),
        RunDone: ({ missionId, result, slot }) => Effect.zipRight(pump, onRunDone(missionId, slot, result)),
        AgentsChanged: ({ agentIds }) =>
          Effect.suspend(() => {
            const released = releaseAgents(view, new Set(agentIds))
            return released === 0
              ? Effect.void
              : Effect.logInfo("agents changed: held missions looked at again").pipe(Effect.annotateLogs({ released }))
          }),
      })

      const next = nextSteps(handlers)

      return { receive, next }
    }),
  }
}
