/**
 * The process-wide LLM breaker (SPEC §14). `LLM_BREAKER_FAILURES` transient failures in a row (timeout,
 * 429, 5xx, transport), counted over every request of the process, open it: no request starts. After
 * a cool-down (5 s, doubling with each failed probe up to 5 min) one probe request decides: success
 * closes it, a transient failure opens it again.
 *
 * Two calls, kept apart so a run's deadline is not spent waiting:
 * - `awaitReady`: waits (on Effect's Clock) until a request may start. Call it before a run takes its
 *   deadline, and again after a run ended with LlmBreakerOpen.
 * - `guard(request, isTransient)`: wraps one HTTP attempt (inside its global permit). While the breaker
 *   is open it fails at once with LlmBreakerOpen and sends nothing; otherwise it runs the request and
 *   counts its outcome.
 */
import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Metric from "effect/Metric"
import * as Schema from "effect/Schema"
import * as SynchronizedRef from "effect/SynchronizedRef"
import { LlmBreakerConfig } from "./AppConfig.js"
import { llmBreakerOpenGauge } from "./metrics.js"

const BREAKER_BASE_COOLDOWN = Duration.seconds(5)
const BREAKER_MAX_COOLDOWN = Duration.minutes(5)

/** No request was sent: the breaker is open (or its one probe is under way). Not an LLM failure. */
export class LlmBreakerOpen extends Schema.TaggedError<LlmBreakerOpen>()("LlmBreakerOpen", {
  /** Epoch ms when a probe may start; absent while a probe is in flight. */
  retryAt: Schema.optional(Schema.Number),
}) {
  override get message() {
    return "the LLM breaker is open: no request was sent"
  }
}

/** What /health, /internal/actors and the tests see. */
export interface LlmBreakerState {
  /** closed: requests start; open: none starts before openUntil; half-open: the next request is the probe; probing: it is under way. */
  readonly state: "closed" | "open" | "half-open" | "probing"
  readonly consecutiveFailures: number
  /** ISO instant the cool-down ends (open and half-open only). */
  readonly openUntil?: string
  /** The current cool-down (not closed only). */
  readonly cooldownMs?: number
}

type Phase =
  | { readonly _tag: "Closed"; readonly failures: number }
  | { readonly _tag: "Open"; readonly failures: number; readonly until: number; readonly cooldownMs: number }
  | { readonly _tag: "Probing"; readonly failures: number; readonly cooldownMs: number }

interface Cell {
  readonly phase: Phase
  /** Completed at every phase change, then replaced: what waiters block on. */
  readonly changed: Deferred.Deferred<void>
}

export interface LlmBreakerShape {
  readonly awaitReady: Effect.Effect<void>
  readonly guard: <A, E, R>(
    request: Effect.Effect<A, E, R>,
    isTransient: (error: E) => boolean,
  ) => Effect.Effect<A, E | LlmBreakerOpen, R>
  readonly state: Effect.Effect<LlmBreakerState>
}

export interface LlmBreakerOptions {
  readonly failures: number
  readonly baseCooldown?: Duration.DurationInput
  readonly maxCooldown?: Duration.DurationInput
}

type Admission = { readonly _tag: "Go"; readonly probe: boolean } | { readonly _tag: "Rejected"; readonly retryAt?: number }

export const makeLlmBreaker = (options: LlmBreakerOptions): Effect.Effect<LlmBreakerShape> =>
  Effect.gen(function* () {
    const threshold = Math.max(1, options.failures)
    const baseMs = Duration.toMillis(options.baseCooldown ?? BREAKER_BASE_COOLDOWN)
    const maxMs = Duration.toMillis(options.maxCooldown ?? BREAKER_MAX_COOLDOWN)
    const cell = yield* SynchronizedRef.make<Cell>({ phase: { _tag: "Closed", failures: 0 }, changed: yield* Deferred.make<void>() })
    /**
     * The breaker's phase as last committed, and how many admissions and settlements are under way
     * (waiting for the cell or changing it). With none under way, the phase is the one the cell holds,
     * so a request to a closed breaker is admitted, and a success that changes nothing (closed, no
     * failure counted) is settled, without taking the cell: what the serialised step would have done,
     * at no run-loop instruction (issue 16: each took the cell's semaphore, twice per LLM request).
     */
    let committed: Phase = { _tag: "Closed", failures: 0 }
    let underWay = 0
    /** `step` on the cell, serialised as before, keeping `committed` and `underWay` in step. */
    const serialised = <A>(step: (c: Cell) => Effect.Effect<readonly [A, Cell]>): Effect.Effect<A> =>
      Effect.suspend(() => {
        underWay++
        return SynchronizedRef.modifyEffect(cell, (c) =>
          Effect.map(step(c), ([a, next]) => {
            committed = next.phase
            return [a, next] as const
          }),
        ).pipe(
          Effect.ensuring(
            Effect.sync(() => {
              underWay--
            }),
          ),
        )
      })
    yield* Metric.set(llmBreakerOpenGauge, 0)

    /** Moves to `next`, wakes every waiter, and keeps the gauge and the log in step. */
    const transition = (current: Cell, next: Phase): Effect.Effect<Cell> =>
      Effect.gen(function* () {
        yield* Deferred.succeed(current.changed, undefined)
        const wasClosed = current.phase._tag === "Closed"
        const isClosed = next._tag === "Closed"
        if (wasClosed !== isClosed) yield* Metric.set(llmBreakerOpenGauge, isClosed ? 0 : 1)
        if (wasClosed && next._tag === "Open") {
          yield* Effect.logWarning("LLM breaker opened: no request starts until the probe").pipe(
            Effect.annotateLogs({ consecutiveFailures: next.failures, cooldownMs: next.cooldownMs }),
          )
        } else if (current.phase._tag === "Probing" && next._tag === "Open") {
          yield* Effect.logWarning("LLM breaker probe failed; open again").pipe(Effect.annotateLogs({ cooldownMs: next.cooldownMs }))
        } else if (!wasClosed && isClosed) {
          yield* Effect.logInfo("LLM breaker closed: requests start again")
        }
        return { phase: next, changed: yield* Deferred.make<void>() }
      })

    const admitSerialised: Effect.Effect<Admission> = serialised((c) =>
      Effect.gen(function* () {
        const now = yield* Clock.currentTimeMillis
        const p = c.phase
        switch (p._tag) {
          case "Closed":
            return [{ _tag: "Go", probe: false } as Admission, c] as const
          case "Probing":
            return [{ _tag: "Rejected" } as Admission, c] as const
          case "Open":
            if (now < p.until) return [{ _tag: "Rejected", retryAt: p.until } as Admission, c] as const
            return [
              { _tag: "Go", probe: true } as Admission,
              yield* transition(c, { _tag: "Probing", failures: p.failures, cooldownMs: p.cooldownMs }),
            ] as const
        }
      }),
    )

    type Outcome = "ok" | "transient" | "abandoned"

    const go: Admission = { _tag: "Go", probe: false }
    const admitClosed = Effect.succeed(go)
    const admit: Effect.Effect<Admission> = Effect.suspend(() =>
      underWay === 0 && committed._tag === "Closed" ? admitClosed : admitSerialised,
    )

    const settle = (probe: boolean, outcome: Outcome): Effect.Effect<void> =>
      underWay === 0 && outcome === "ok" && committed._tag === "Closed" && committed.failures === 0
        ? Effect.void
        : settleSerialised(probe, outcome)

    const settleSerialised = (probe: boolean, outcome: Outcome): Effect.Effect<void> =>
      serialised((c) =>
        Effect.map(settleStep(c, probe, outcome), (next) => [undefined, next] as const),
      )

    const settleStep = (c: Cell, probe: boolean, outcome: Outcome): Effect.Effect<Cell> =>
        Effect.gen(function* () {
          const now = yield* Clock.currentTimeMillis
          const p = c.phase
          if (outcome === "ok") {
            // The LLM answered (a success, or a permanent error it chose to send): it is up.
            if (p._tag !== "Closed") return yield* transition(c, { _tag: "Closed", failures: 0 })
            return p.failures === 0 ? c : { ...c, phase: { _tag: "Closed", failures: 0 } as Phase }
          }
          if (outcome === "abandoned") {
            // An interrupted probe decided nothing: the next request may probe at once.
            return probe && p._tag === "Probing"
              ? yield* transition(c, { _tag: "Open", failures: p.failures, until: now, cooldownMs: p.cooldownMs })
              : c
          }
          if (p._tag === "Closed") {
            const failures = p.failures + 1
            return failures >= threshold
              ? yield* transition(c, { _tag: "Open", failures, until: now + baseMs, cooldownMs: baseMs })
              : { ...c, phase: { _tag: "Closed", failures } as Phase }
          }
          if (probe && p._tag === "Probing") {
            const cooldownMs = Math.min(p.cooldownMs * 2, maxMs)
            return yield* transition(c, { _tag: "Open", failures: p.failures + 1, until: now + cooldownMs, cooldownMs })
          }
          // A request admitted before the breaker opened, failing late: it changes nothing.
          return c
        })

    const guard = <A, E, R>(request: Effect.Effect<A, E, R>, isTransient: (error: E) => boolean) =>
      Effect.uninterruptibleMask((restore) =>
        Effect.flatMap(admit, (admission): Effect.Effect<A, E | LlmBreakerOpen, R> => {
          if (admission._tag === "Rejected") {
            return Effect.fail(new LlmBreakerOpen(admission.retryAt === undefined ? {} : { retryAt: admission.retryAt }))
          }
          return restore(request).pipe(
            Effect.onExit((exit) => {
              if (Exit.isSuccess(exit)) return settle(admission.probe, "ok")
              const failure = exit.cause._tag === "Fail" ? exit.cause.error : undefined
              if (failure === undefined) return settle(admission.probe, "abandoned")
              return settle(admission.probe, isTransient(failure) ? "transient" : "ok")
            }),
          )
        }),
      )

    // A closed breaker with nothing under way: ready, without reading the cell (every run asks).
    const awaitReady: Effect.Effect<void> = Effect.suspend(() =>
      underWay === 0 && committed._tag === "Closed" ? Effect.void : awaitReadySlow,
    )
    const awaitReadySlow: Effect.Effect<void> = Effect.gen(function* () {
      while (true) {
        const c = yield* SynchronizedRef.get(cell)
        const now = yield* Clock.currentTimeMillis
        const p = c.phase
        if (p._tag === "Closed") return
        if (p._tag === "Open" && now >= p.until) return
        const wake = Deferred.await(c.changed)
        yield* p._tag === "Open" ? Effect.race(wake, Effect.sleep(Duration.millis(p.until - now))) : wake
      }
    })

    const state: Effect.Effect<LlmBreakerState> = Effect.gen(function* () {
      const { phase: p } = yield* SynchronizedRef.get(cell)
      const now = yield* Clock.currentTimeMillis
      switch (p._tag) {
        case "Closed":
          return { state: "closed", consecutiveFailures: p.failures }
        case "Probing":
          return { state: "probing", consecutiveFailures: p.failures, cooldownMs: p.cooldownMs }
        case "Open":
          return {
            state: now >= p.until ? "half-open" : "open",
            consecutiveFailures: p.failures,
            openUntil: new Date(p.until).toISOString(),
            cooldownMs: p.cooldownMs,
          }
      }
    })

    return { awaitReady, guard, state }
  })

/** One per process (LLM_BREAKER_FAILURES); makeLlmBreaker builds one with other thresholds for a test. */
export class LlmBreaker extends Effect.Service<LlmBreaker>()("mana-ai/LlmBreaker", {
  effect: Effect.flatMap(LlmBreakerConfig, (c) => makeLlmBreaker({ failures: c.failures })),
}) {}
