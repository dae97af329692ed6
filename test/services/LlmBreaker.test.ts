import { FetchHttpClient, HttpClient, HttpClientRequest } from "@effect/platform"
import { it } from "@effect/vitest"
import { Deferred, Duration, Effect, Exit, Fiber, Metric, Option, Ref, Schedule, TestClock } from "effect"
import { describe, expect } from "vitest"
import { type LlmError, LlmHttpError, LlmTransportError, isTransientLlmError } from "../../src/services/LlmClient.js"
import { LlmBreakerOpen, type LlmBreakerState, makeLlmBreaker } from "../../src/services/LlmBreaker.js"
import { llmBreakerOpenGauge } from "../../src/services/metrics.js"
import { completion, defaultResponder, makeLlmStandIn } from "../support/LlmStandIn.js"

/** A request double that counts how often it was actually started. */
const counter = Effect.map(Ref.make(0), (started) => ({
  started,
  fail: (status: number) =>
    Ref.update(started, (n) => n + 1).pipe(Effect.zipRight(Effect.fail<LlmError>(new LlmHttpError({ status })))),
  ok: Ref.update(started, (n) => n + 1).pipe(Effect.as("answer")),
}))

const gauge = Effect.map(Metric.value(llmBreakerOpenGauge), (s) => s.value)

/** Lets forked fibers run up to their next suspension (TestClock does not move). */
const settle = Effect.repeatN(Effect.yieldNow(), 20)

describe("LlmBreaker (TestClock)", () => {
  it.effect("opens after LLM_BREAKER_FAILURES transient failures in a row; then no request starts", () =>
    Effect.gen(function* () {
      const breaker = yield* makeLlmBreaker({ failures: 3 })
      const req = yield* counter
      for (let i = 0; i < 2; i++) yield* Effect.either(breaker.guard(req.fail(503), isTransientLlmError))
      expect((yield* breaker.state).state).toBe("closed")
      expect(yield* gauge).toBe(0)
      yield* Effect.either(breaker.guard(req.fail(500), isTransientLlmError))
      expect(yield* breaker.state).toEqual({
        state: "open",
        consecutiveFailures: 3,
        openUntil: new Date(5_000).toISOString(),
        cooldownMs: 5_000,
      })
      expect(yield* gauge).toBe(1)
      const rejected = yield* Effect.either(breaker.guard(req.ok, isTransientLlmError))
      expect(rejected._tag === "Left" && rejected.left).toEqual(new LlmBreakerOpen({ retryAt: 5_000 }))
      expect(yield* Ref.get(req.started)).toBe(3)
    }),
  )

  it.effect("a success or a permanent error in between resets the count (failures must be in a row)", () =>
    Effect.gen(function* () {
      const breaker = yield* makeLlmBreaker({ failures: 3 })
      const req = yield* counter
      const run = (e: Effect.Effect<unknown, LlmError>) => Effect.either(breaker.guard(e, isTransientLlmError))
      yield* run(req.fail(500))
      yield* run(req.fail(500))
      yield* run(req.ok)
      yield* run(req.fail(500))
      yield* run(req.fail(500))
      yield* run(req.fail(400)) // the LLM answered: it is up
      yield* run(req.fail(500))
      yield* run(req.fail(500))
      expect(yield* breaker.state).toEqual({ state: "closed", consecutiveFailures: 2 })
    }),
  )

  it.effect("callers wait in awaitReady until the cool-down ends, then one probe decides; success closes", () =>
    Effect.gen(function* () {
      const breaker = yield* makeLlmBreaker({ failures: 1 })
      const req = yield* counter
      yield* Effect.either(breaker.guard(req.fail(502), isTransientLlmError))
      const waiters = yield* Effect.forEach(Array.from({ length: 3 }), () => Effect.fork(breaker.awaitReady))
      yield* settle
      yield* TestClock.adjust("4999 millis")
      yield* settle
      for (const w of waiters) expect(Option.isNone(yield* Fiber.poll(w))).toBe(true)
      yield* TestClock.adjust("1 millis")
      yield* Fiber.joinAll(waiters)
      expect((yield* breaker.state).state).toBe("half-open")
      // The probe is under way: a second request is refused, and awaitReady waits for the probe.
      const gate = yield* Deferred.make<void>()
      const probe = yield* Effect.fork(breaker.guard(Effect.zipRight(Deferred.await(gate), req.ok), isTransientLlmError))
      yield* settle
      expect((yield* breaker.state).state).toBe("probing")
      expect((yield* Effect.either(breaker.guard(req.ok, isTransientLlmError)))._tag).toBe("Left")
      const late = yield* Effect.fork(breaker.awaitReady)
      yield* settle
      expect(Option.isNone(yield* Fiber.poll(late))).toBe(true)
      yield* Deferred.succeed(gate, undefined)
      expect(yield* Fiber.join(probe)).toBe("answer")
      yield* Fiber.join(late)
      expect(yield* breaker.state).toEqual({ state: "closed", consecutiveFailures: 0 })
      expect(yield* gauge).toBe(0)
      expect(yield* Ref.get(req.started)).toBe(2)
    }),
  )

  it.effect("each failed probe doubles the cool-down, from 5 s up to 5 min", () =>
    Effect.gen(function* () {
      const breaker = yield* makeLlmBreaker({ failures: 1 })
      const req = yield* counter
      yield* Effect.either(breaker.guard(req.fail(500), isTransientLlmError))
      const seen: Array<number | undefined> = []
      for (let i = 0; i < 9; i++) {
        const s = yield* breaker.state
        seen.push(s.cooldownMs)
        yield* TestClock.adjust(Duration.millis(s.cooldownMs ?? 0))
        yield* breaker.awaitReady
        yield* Effect.either(breaker.guard(req.fail(504), isTransientLlmError))
      }
      expect(seen).toEqual([5_000, 10_000, 20_000, 40_000, 80_000, 160_000, 300_000, 300_000, 300_000])
      expect(yield* Ref.get(req.started)).toBe(10)
    }),
  )

  it.effect("an interrupted probe decides nothing: the next request may probe at once", () =>
    Effect.gen(function* () {
      const breaker = yield* makeLlmBreaker({ failures: 1 })
      const req = yield* counter
      yield* Effect.either(breaker.guard(req.fail(500), isTransientLlmError))
      yield* TestClock.adjust("5 seconds")
      const probe = yield* Effect.fork(breaker.guard(Effect.never, isTransientLlmError))
      yield* settle
      expect((yield* breaker.state).state).toBe("probing")
      yield* Fiber.interrupt(probe)
      expect((yield* breaker.state).state).toBe("half-open")
      expect((yield* breaker.state).cooldownMs).toBe(5_000)
      expect(yield* breaker.guard(req.ok, isTransientLlmError)).toBe("answer")
      expect((yield* breaker.state).state).toBe("closed")
    }),
  )

  it.effect("a run that waits in awaitReady before taking its deadline keeps all of it", () =>
    Effect.gen(function* () {
      const breaker = yield* makeLlmBreaker({ failures: 1 })
      const req = yield* counter
      yield* Effect.either(breaker.guard(req.fail(500), isTransientLlmError))
      // Fail the first probe too, so the breaker stays open for 5 s + 10 s, longer than the 12 s deadline.
      yield* TestClock.adjust("5 seconds")
      yield* Effect.either(breaker.guard(req.fail(500), isTransientLlmError))
      const deadline = Duration.seconds(12)
      const run = breaker.awaitReady.pipe(
        Effect.zipRight(
          breaker.guard(Effect.zipRight(Effect.sleep("2 seconds"), req.ok), isTransientLlmError).pipe(
            Effect.timeoutFail({ duration: deadline, onTimeout: () => "deadline" as const }),
          ),
        ),
      )
      const fiber = yield* Effect.fork(run)
      yield* settle
      yield* TestClock.adjust("10 seconds")
      yield* settle
      yield* TestClock.adjust("2 seconds")
      expect(yield* Fiber.join(fiber)).toBe("answer")
    }),
  )
})

describe("LlmBreaker against the real HTTP LLM stand-in", () => {
  it.live(
    "with every request failing, requests stop after the threshold until each probe; after recovery every run gets its answer once",
    () =>
      Effect.gen(function* () {
        const standIn = yield* makeLlmStandIn
        yield* standIn.setResponder(() => ({ status: 503 }))
        const http = yield* HttpClient.HttpClient
        const send = Effect.scoped(
          Effect.gen(function* () {
            const response = yield* http
              .execute(HttpClientRequest.post(`${standIn.url}/v1/chat/completions`).pipe(HttpClientRequest.bodyUnsafeJson({ messages: [] })))
              .pipe(Effect.mapError(() => new LlmTransportError({ reason: "transport" })))
            if (response.status >= 400) return yield* Effect.fail<LlmError>(new LlmHttpError({ status: response.status }))
            return yield* response.json.pipe(Effect.orDie)
          }),
        )
        const threshold = 4
        const breaker = yield* makeLlmBreaker({ failures: threshold, baseCooldown: "300 millis", maxCooldown: "2 seconds" })
        const successes = yield* Ref.make(0)
        // Requests the breaker let start (counted as they start, before they reach the stand-in).
        const started = yield* Ref.make(0)
        // A run: wait until requests may start, ask, retry transient failures (and a refused start) after a short pause.
        const run = breaker.awaitReady.pipe(
          Effect.zipRight(breaker.guard(Effect.zipRight(Ref.update(started, (n) => n + 1), send), isTransientLlmError)),
          Effect.retry({
            while: (e: LlmError | LlmBreakerOpen) => e._tag === "LlmBreakerOpen" || isTransientLlmError(e),
            schedule: Schedule.spaced("10 millis"),
          }),
          Effect.tap(() => Ref.update(successes, (n) => n + 1)),
        )
        const runs = yield* Effect.forEach(Array.from({ length: 6 }), () => Effect.fork(run))

        const untilState = (p: (s: LlmBreakerState) => boolean) =>
          Effect.repeat(breaker.state, { until: p, schedule: Schedule.spaced("5 millis") })
        yield* untilState((s) => s.state === "open" && s.cooldownMs === 300)
        const atOpen = yield* Ref.get(started)
        // Every request started before the breaker opened has reached the stand-in (and been answered).
        yield* Effect.repeat(
          Effect.zipWith(standIn.requests, standIn.inFlight, (r, f) => r.length === atOpen && f === 0),
          { until: (done) => done, schedule: Schedule.spaced("5 millis") },
        )
        expect(atOpen).toBeGreaterThanOrEqual(threshold)
        // While open, nothing reaches the LLM until the probe; the probe fails and the cool-down doubles.
        yield* untilState((s) => s.state === "open" && s.cooldownMs === 600)
        expect((yield* standIn.requests).length).toBe(atOpen + 1)
        yield* untilState((s) => s.state === "open" && s.cooldownMs === 1200)
        expect((yield* standIn.requests).length).toBe(atOpen + 2)
        expect(yield* gauge).toBe(1)
        for (const r of runs) expect(Option.isNone(yield* Fiber.poll(r))).toBe(true)

        // The LLM recovers: the next probe succeeds, the breaker closes, and every run completes once.
        yield* standIn.setResponder((r) => ({ ...defaultResponder(r), body: completion("ok") }))
        const answers = yield* Fiber.joinAll(runs)
        expect(answers).toHaveLength(6)
        expect(yield* Ref.get(successes)).toBe(6)
        const requests = yield* standIn.requests
        // One successful probe, then one request per other run: nothing sent twice.
        expect(requests.length).toBe(atOpen + 2 + 6)
        expect(yield* breaker.state).toEqual({ state: "closed", consecutiveFailures: 0 })
        expect(yield* gauge).toBe(0)
        expect(Exit.isSuccess(yield* Effect.exit(breaker.awaitReady))).toBe(true)
      }).pipe(Effect.provide(FetchHttpClient.layer), Effect.scoped),
    30_000,
  )
})
