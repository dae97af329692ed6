/**
 * What the HTTP server knows about the process: its phase (for /ready) and, once the database is up
 * and the supervisor runs, the backend the /internal routes talk to. The server starts before the
 * database so /health answers at once and /ready says 503 until migrations ran; it stops after the
 * supervisor drained so /ready says 503 while draining.
 */
import type { ClusterView } from "../actors/Ownership.js"
import type { TickReport } from "../actors/Supervisor.js"
import type { AuditQuery, AuditRow } from "../services/decryptAudit.js"
import type { LlmBreakerState } from "../services/LlmBreaker.js"
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import type * as Redacted from "effect/Redacted"
import * as Ref from "effect/Ref"
import { appVersion } from "../appRoot.js"
import { type ActorOrder, makeActorOrder } from "./actorPage.js"
import { makeRecentFailures, type RecentFailuresShape } from "./RecentFailures.js"

export type Phase = "starting" | "ready" | "draining"

/** One tick's answer (SPEC §9 POST /internal/tick), as the supervisor reports it. */
export type { TickReport }

/** One user actor as GET /internal/actors shows it. */
export interface ActorView {
  readonly userId: string
  readonly state: string
  readonly missions: ReadonlyArray<unknown>
  readonly inFlight: number
  readonly restarts: number
  readonly lastError: string | null
  readonly nextWakeAt: string | null
}

/**
 * The actors as of one step, for the operator page's poll: the few not idle with their views, every
 * user id in order, and a read of one actor, so a page costs its own actors rather than all of them.
 */
export interface ActorCensusView {
  readonly total: number
  /** Every actor's user id, ascending. */
  readonly userIds: ReadonlyArray<string>
  /** The actors not idle (quarantined, backing off, running), in any order. */
  readonly notIdle: ReadonlyArray<ActorView>
  /** One user's actor; null when the user has none. */
  readonly status: (userId: string) => ActorView | null
}

/** One mission as GET /internal/missions/:userId shows it: the replayed record, every field. */
export interface MissionView {
  readonly missionId: string
  readonly record: Readonly<Record<string, unknown>>
  /** Set when the record does not decode as a mission (the runner skips it). */
  readonly malformed: string | null
}

/** The backend could not answer (a database error, say); `reason` is safe to show to the caller. */
export class BackendError extends Data.TaggedError("BackendError")<{ readonly reason: string }> {}

/** What /internal needs from the actors and the store; the process composition adapts the real ones. */
export interface ApiBackend {
  readonly tick: Effect.Effect<TickReport, BackendError>
  readonly actors: Effect.Effect<ReadonlyArray<ActorView>, BackendError>
  /** The same actors in any order (cheaper with many actors); the operator page orders them itself. */
  readonly actorsUnordered?: Effect.Effect<ReadonlyArray<ActorView>, BackendError>
  /** The actors without reading each (the operator page pages from it when present; issue 18 item 4). */
  readonly actorCensus?: Effect.Effect<ActorCensusView, BackendError>
  /** False when the runner has no actor and no quarantine for that user. */
  readonly restart: (userId: string) => Effect.Effect<boolean, BackendError>
  readonly missions: (userId: string) => Effect.Effect<ReadonlyArray<MissionView>, BackendError>
  /** A tick is under way, whoever started it. */
  readonly tickRunning: Effect.Effect<boolean>
  /** The user's Mission Grant audit rows, newest first (SPEC §15); absent: the route answers 404. */
  readonly audit?: (userId: string, query: AuditQuery) => Effect.Effect<ReadonlyArray<AuditRow>, BackendError>
  /** LLM requests holding a GLOBAL_CONCURRENCY permit now (the operator page); absent: shown as n/a. */
  readonly llmRequestsInFlight?: Effect.Effect<number>
  /** The LLM breaker's state (SPEC §14) once the process has one; absent: shown as n/a. */
  readonly breaker?: Effect.Effect<BreakerView>
  /** Tokens spent in the budget window (SPEC §14) once the process counts them; absent: shown as n/a. */
  readonly tokensInWindow?: Effect.Effect<TokensView | null>
  /** The process's LLM breaker (SPEC §14), shown in /health; absent: not shown. */
  readonly llmBreaker?: Effect.Effect<LlmBreakerState>
  /** The user's tokens in the budget window (SPEC §14), joined onto /internal/actors; absent: not shown. */
  readonly spentInWindow?: (userId: string) => Effect.Effect<number, BackendError>
  /** Cluster mode (issue 19): this runner's shards and its peers, shown in /health; absent: not shown. */
  readonly cluster?: Effect.Effect<ClusterView>
}

/** How GET /internal/overview reports the breaker: `state` plus whatever else the breaker knows. */
export interface BreakerView {
  readonly state: "closed" | "open" | "half-open" | "probing"
  readonly [detail: string]: unknown
}

/** How GET /internal/overview reports tokens spent: in the rolling window, against the process budget. */
export interface TokensView {
  readonly spent: number
  readonly budget: number | null
  readonly windowHours: number
}

export interface ServerSettings {
  readonly serviceKey: Redacted.Redacted<string>
  readonly tickEnabled: boolean
  readonly version: string
}

export interface ServerStateShape {
  readonly settings: ServerSettings
  readonly phase: Effect.Effect<Phase>
  readonly setPhase: (phase: Phase) => Effect.Effect<void>
  /** The backend once the supervisor runs; None before. */
  readonly backend: Effect.Effect<Option.Option<ApiBackend>>
  readonly provideBackend: (backend: ApiBackend) => Effect.Effect<void>
  /** Ticks requested over HTTP and still under way (GET /health tick.running). */
  readonly ticksRunning: Ref.Ref<number>
  /** The last failures the process logged (the operator page); fed by `captureFailures`. */
  readonly failures: RecentFailuresShape
  /** The operator page's memory of the actors' user-id order, so a poll re-sorts only when actors came or went. */
  readonly actorOrder: ActorOrder
}

export class ServerState extends Context.Tag("mana-ai/ServerState")<ServerState, ServerStateShape>() {
  static readonly make = (settings: ServerSettings): Effect.Effect<ServerStateShape> =>
    Effect.gen(function* () {
      const phase = yield* Ref.make<Phase>("starting")
      const backend = yield* Deferred.make<ApiBackend>()
      const ticksRunning = yield* Ref.make(0)
      const failures = makeRecentFailures()
      const actorOrder = makeActorOrder()
      return {
        settings,
        phase: Ref.get(phase),
        setPhase: (next) => Ref.set(phase, next),
        backend: Deferred.poll(backend).pipe(Effect.flatMap(Option.match({ onNone: () => Effect.succeedNone, onSome: Effect.asSome }))),
        provideBackend: (b) => Deferred.succeed(backend, b).pipe(Effect.asVoid),
        ticksRunning,
        failures,
        actorOrder,
      }
    })
  static readonly layer = (settings: ServerSettings) => Layer.effect(ServerState, ServerState.make(settings))
}

/** package.json's version: the one thing /health reports about the build ("unknown" if it cannot be read). */
export const packageVersion = (): string => {
  try {
    return appVersion()
  } catch {
    return "unknown"
  }
}
