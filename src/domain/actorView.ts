/**
 * A user actor's view of its missions (SPEC §8), as pure functions: what a snapshot does to the
 * view, when an entry may start by itself, what a look at the view decides, and what one run adds to
 * a tick's answer. The actor (src/actors/UserActor.ts) owns one view per incarnation and is the only
 * one to change it.
 */
import * as Data from "effect/Data"
import type * as Either from "effect/Either"
import { type MissionRef, missionRefOf, type Mission } from "./mission.js"

// ---------------------------------------------------------------- the view

/** What the view needs of a stored snapshot (MissionStore's MissionSnapshot has these fields). */
export interface ViewSnapshot {
  readonly missionId: string
  readonly decoded: Either.Either<Mission, unknown>
  /** Active, not deleted, decodes, and has a nextRunAt. */
  readonly schedulable: boolean
  readonly nextRunAt: Date | null
}

/** An agent's decision that stopped the last run (SPEC §14): nothing was written, the mission stays due. */
export type HoldReason = "skipped-paused" | "skipped-archived" | "skipped-budget" | "agent-malformed"

const holdReasons: ReadonlySet<string> = new Set<HoldReason>(["skipped-paused", "skipped-archived", "skipped-budget", "agent-malformed"])

export const isHoldReason = (reason: string): reason is HoldReason => holdReasons.has(reason)

/**
 * Why an entry is not started although due, and until when: a budget frees at `until` (when enough of
 * the window has passed); `until` null: only a change of the mission or of its agent can release it.
 */
export interface Hold {
  readonly reason: HoldReason
  readonly until: number | null
}

export interface Entry {
  readonly missionId: string
  /** What a run needs of the mission (it reads the rest as the mission stands then). */
  mission: MissionRef
  /** Epoch ms of the slot to run next; null: nothing scheduled. */
  nextRunAt: number | null
  /** The slot of the last run this actor finished: a snapshot still showing it is stale. */
  ranSlot: number | null
  running: boolean
  /** No longer schedulable, kept only until its run in flight ends. */
  removed: boolean
  /** Consecutive runs that timed out, failed or were skipped. */
  failures: number
  /** When a mission backing off after a failure or skip may run again. */
  retryAt: number | null
  /** Held by its agent's decision (SPEC §14) until the reason can have changed; null: not held. */
  held: Hold | null
  /** The mission or its agent changed while a run was in flight: that run's skip does not hold it. */
  newsWhileRunning: boolean
}

export type View = Map<string, Entry>

/**
 * The entry's run wrote its iteration and moved the mission on to `nextRunAt` (the write-back's text):
 * the entry's copy of the mission says so, set in place. The entry owns that copy (`upsert` makes one
 * per snapshot) and no run of it is under way (the one that ended handed it back). A new copy here
 * would be made amid the run's garbage and outlive it: each such survivor keeps a mostly empty heap
 * block (JavaScriptCore never moves objects) in the process's RSS. `bench/tools/tickSmaps.ts`, after
 * 1,000 runs: heap capacity 31.8 → 24.5 MB for the same 7.7 MB live, RSS 95.8 → 91.5 MB.
 */
export const movedOn = (entry: Entry, nextRunAt: string | null): void => {
  ;(entry.mission as { nextRunAt: string | null }).nextRunAt = nextRunAt
}

/** Applies a snapshot from discovery or the store to the view. */
export const upsert = (view: View, snapshot: ViewSnapshot): void => {
  const existing = view.get(snapshot.missionId)
  if (!snapshot.schedulable || snapshot.decoded._tag === "Left") {
    if (existing === undefined) return
    if (existing.running) existing.removed = true
    else view.delete(snapshot.missionId)
    return
  }
  // A compact copy of what a run needs: the decoded mission sits amid the store pass's garbage and
  // would keep its pages in RSS, and its text and iterations grow with its history.
  const mission = missionRefOf(snapshot.decoded.right, snapshot.missionId)
  const at = snapshot.nextRunAt === null ? null : snapshot.nextRunAt.getTime()
  if (existing === undefined) {
    view.set(snapshot.missionId, {
      missionId: snapshot.missionId,
      mission,
      nextRunAt: at,
      ranSlot: null,
      running: false,
      removed: false,
      failures: 0,
      retryAt: null,
      held: null,
      newsWhileRunning: false,
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
  // The mission changed (its agentId, its state, …): an agent's hold is looked at again.
  existing.held = null
  if (existing.running) existing.newsWhileRunning = true
  if (at !== existing.nextRunAt) {
    existing.nextRunAt = at
    existing.failures = 0
    existing.retryAt = null
  }
}

/** When the actor may start the entry by itself; null: only news from discovery can make it due. */
export const dueAt = (e: Entry): number | null =>
  // A slot already run stays put until discovery brings the next one (never the same slot twice).
  e.nextRunAt === null || e.nextRunAt === e.ranSlot || (e.held !== null && e.held.until === null)
    ? null
    : Math.max(e.nextRunAt, e.retryAt ?? Number.NEGATIVE_INFINITY, e.held?.until ?? Number.NEGATIVE_INFINITY)

/** Whether the entry is held by its agent's decision at `now` (a budget hold ends at its `until`). */
export const heldAt = (e: Entry, now: number): boolean => e.held !== null && (e.held.until === null || e.held.until > now)

/**
 * Whether a tick at `now` finds the entry due in the actor's own view (a slot already run is not, nor
 * one its agent holds: a tick cannot change the reason, SPEC §14).
 */
export const dueForTick = (e: Entry, now: number): boolean =>
  !e.removed && !e.running && e.nextRunAt !== null && e.nextRunAt !== e.ranSlot && e.nextRunAt <= now && !heldAt(e, now)

/**
 * An agent's skip (SPEC §14): the entry waits for its reason to change, not on the retry backoff.
 * `skipped-budget` with a time: until the window frees then; otherwise until the mission or agent changes.
 */
export const hold = (e: Entry, reason: HoldReason, until: number | null): boolean => {
  e.retryAt = null
  if (e.newsWhileRunning) {
    // The run read the mission or agent before a change that may lift the reason: look again now.
    e.newsWhileRunning = false
    return false
  }
  e.held = { reason, until: reason === "skipped-budget" ? until : null }
  return true
}

/**
 * Agents of this user changed (discovery): every entry held under one of them is looked at again.
 * Returns how many were released.
 */
export const releaseAgents = (view: View, agentIds: ReadonlySet<string>): number => {
  let released = 0
  for (const e of view.values()) {
    if (e.mission.agentId === undefined || !agentIds.has(e.mission.agentId)) continue
    if (e.running) e.newsWhileRunning = true
    if (e.held === null) continue
    e.held = null
    released++
  }
  return released
}

/** What a look at the view decides. */
export interface Plan {
  /** Entries to start now. */
  readonly due: ReadonlyArray<Entry>
  /** The earliest later start. */
  readonly wakeAt: number | null
  /** Nothing scheduled, running or waited for: the actor may retire. */
  readonly idle: boolean
}

/**
 * `openTicks`: tick requests still waiting for an answer. `launchable` false: nothing starts by
 * itself (TICK_ENABLED=false, or draining).
 */
export const plan = (view: View, openTicks: number, now: number, launchable: boolean): Plan => {
  const due: Array<Entry> = []
  let wakeAt: number | null = null
  let idle = openTicks === 0
  for (const e of view.values()) {
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

/** The view as /internal/actors shows it. */
export interface MissionStatus {
  readonly missionId: string
  readonly nextRunAt: string | null
  readonly running: boolean
  /** Consecutive runs that timed out, failed or were skipped. */
  readonly consecutiveFailures: number
  /** When a mission backing off after a timeout or skip may run again. */
  readonly retryAt: string | null
  /**
   * The agent's decision holding a due mission (SPEC §14), and until when (null: until the mission or
   * its agent changes); null when not held.
   */
  readonly held: { readonly reason: HoldReason; readonly until: string | null } | null
}

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString())

export const missionStatuses = (view: View, now: number): ReadonlyArray<MissionStatus> =>
  [...view.values()]
    .filter((e) => !e.removed)
    .map((e) => ({
      missionId: e.missionId,
      nextRunAt: iso(e.nextRunAt),
      running: e.running,
      consecutiveFailures: e.failures,
      retryAt: e.retryAt !== null && e.retryAt > now ? iso(e.retryAt) : null,
      held: e.held !== null && heldAt(e, now) ? { reason: e.held.reason, until: iso(e.held.until) } : null,
    }))

// ---------------------------------------------------------------- runs and a tick's answer

/** What the actor needs to know of a run's outcome (MissionRunner's RunOutcome has these fields). */
export interface OutcomeSummary {
  readonly _tag: "Written" | "Skipped"
  readonly planProduced: boolean
  readonly parseFailures: number
  /** For a written failed iteration: the error's tag. */
  readonly failure?: string
}

/** A typed failure of a run (MissionTimeout, SqlError). */
export interface RunError {
  readonly _tag: string
  readonly message: string
}

/** How one run ended, as the actor sees it; `O` is the runner's outcome. */
export type RunResult<O extends OutcomeSummary = OutcomeSummary> = Data.TaggedEnum<{
  /** The runner answered (written or skipped). */
  Outcome: { readonly outcome: O }
  /** The runner failed with a typed error and wrote nothing. */
  Failed: { readonly error: RunError }
  /** Not started: the run gate was closed (draining). */
  Aborted: {}
  /** Not started: the actor was told to leave, its user moved to another runner (cluster mode). */
  Moved: {}
  /** The run died: the actor fails with it. */
  Defect: { readonly reason: string }
}>

interface RunResultDefinition extends Data.TaggedEnum.WithGenerics<1> {
  readonly taggedEnum: RunResult<this["A"] & OutcomeSummary>
}

export const RunResult = Data.taggedEnum<RunResultDefinition>()

/** Why a tick's answer lacks a mission or a user: kept tagged until the report renders it. */
export type TickError = Data.TaggedEnum<{
  /** The run wrote a failed iteration. */
  IterationFailed: { readonly missionId: string; readonly failure: string }
  /** The run failed with a typed error and wrote nothing. */
  RunFailed: { readonly missionId: string; readonly error: string }
  /** The run was not started: shutting down. */
  NotStarted: { readonly missionId: string }
  /** The run was not started here: its user moved to another runner, which runs it. */
  NotStartedMoved: { readonly missionId: string }
  RunDefect: { readonly missionId: string }
  /** The user's actor did not take or finish the request. */
  ActorUnavailable: {
    readonly userId: string
    readonly reason: "quarantined" | "shutting down" | "actor stopped" | "actor stopped before its runs ended"
  }
  ActorFailed: { readonly userId: string; readonly reason: string }
  DiscoveryFailed: { readonly message: string }
  DueQueryFailed: { readonly message: string }
  ShuttingDown: {}
  OverlapSkipped: {}
}>

export const TickError = Data.taggedEnum<TickError>()

/** The strings of POST /internal/tick's `errors`. */
export const renderTickError: (error: TickError) => string = TickError.$match({
  IterationFailed: ({ missionId, failure }) => `mission ${missionId}: ${failure}`,
  RunFailed: ({ missionId, error }) => `mission ${missionId}: ${error}`,
  NotStarted: ({ missionId }) => `mission ${missionId}: not started, shutting down`,
  NotStartedMoved: ({ missionId }) => `mission ${missionId}: not started here, its user moved to another runner`,
  RunDefect: ({ missionId }) => `mission ${missionId}: defect`,
  ActorUnavailable: ({ userId, reason }) => `user ${userId}: ${reason}`,
  ActorFailed: ({ userId, reason }) => `user ${userId}: actor failed (${reason})`,
  DiscoveryFailed: ({ message }) => `discovery: ${message}`,
  DueQueryFailed: ({ message }) => `due missions: ${message}`,
  ShuttingDown: () => "shutting-down",
  OverlapSkipped: () => "overlap-skipped",
})

/** What one tick learned from one user's actor. */
export interface TickPart {
  readonly ran: number
  readonly plansProduced: number
  readonly plansWrittenBack: number
  readonly parseFailures: number
  readonly errors: ReadonlyArray<TickError>
}

export const emptyTickPart: TickPart = { ran: 0, plansProduced: 0, plansWrittenBack: 0, parseFailures: 0, errors: [] }

/** Adds one run's result to a tick's answer. */
export const addToPart = <O extends OutcomeSummary>(part: TickPart, result: RunResult<O>, missionId: string): TickPart =>
  RunResult.$match(result, {
    Outcome: ({ outcome: o }) => {
      const written = o._tag === "Written"
      return {
        ran: part.ran + 1,
        plansProduced: part.plansProduced + (o.planProduced ? 1 : 0),
        plansWrittenBack: part.plansWrittenBack + (written ? 1 : 0),
        parseFailures: part.parseFailures + o.parseFailures,
        errors:
          written && o.failure !== undefined
            ? [...part.errors, TickError.IterationFailed({ missionId, failure: o.failure })]
            : part.errors,
      }
    },
    Failed: ({ error }) => ({
      ...part,
      ran: part.ran + 1,
      errors: [...part.errors, TickError.RunFailed({ missionId, error: error._tag })],
    }),
    Aborted: () => ({ ...part, errors: [...part.errors, TickError.NotStarted({ missionId })] }),
    Moved: () => ({ ...part, errors: [...part.errors, TickError.NotStartedMoved({ missionId })] }),
    Defect: () => ({ ...part, ran: part.ran + 1, errors: [...part.errors, TickError.RunDefect({ missionId })] }),
  })
