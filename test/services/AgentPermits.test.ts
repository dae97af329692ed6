import { FetchHttpClient, HttpClient, HttpClientRequest } from "@effect/platform"
import { it } from "@effect/vitest"
import { Effect, Fiber, Ref, TestClock } from "effect"
import { describe, expect } from "vitest"
import { makeAgentPermits } from "../../src/services/AgentPermits.js"
import { type RecordedRequest, makeLlmStandIn } from "../support/LlmStandIn.js"

/** The largest number of intervals [start, end) open at once. */
const maxOverlap = (intervals: ReadonlyArray<readonly [number, number]>): number => {
  const events = intervals.flatMap(([s, e]) => [[s, 1] as const, [e, -1] as const])
  events.sort((a, b) => a[0] - b[0] || a[1] - b[1]) // at the same instant an end comes before a start
  let open = 0
  let max = 0
  for (const [, d] of events) {
    open += d
    max = Math.max(max, open)
  }
  return max
}

describe("AgentPermits", () => {
  it.scoped("each agent runs at most maxConcurrentMissions missions at once; agents and users are apart", () =>
    Effect.gen(function* () {
      const permits = yield* makeAgentPermits()
      const inFlight = yield* Ref.make(new Map<string, number>())
      const maxSeen = yield* Ref.make(new Map<string, number>())
      const run = (userId: string, agentId: string, cap: number) =>
        permits.withPermit({ userId, agentId, cap })(
          Effect.gen(function* () {
            const k = `${userId}/${agentId}`
            const now = yield* Ref.updateAndGet(inFlight, (m) => new Map(m).set(k, (m.get(k) ?? 0) + 1))
            yield* Ref.update(maxSeen, (m) => new Map(m).set(k, Math.max(m.get(k) ?? 0, now.get(k) ?? 0)))
            yield* Effect.sleep("1 second")
            yield* Ref.update(inFlight, (m) => new Map(m).set(k, (m.get(k) ?? 1) - 1))
          }),
        )
      const runs = [
        ...Array.from({ length: 7 }, () => run("ann", "writer", 2)),
        ...Array.from({ length: 4 }, () => run("ann", "reader", 1)),
        // Another user's agent with the same id is another agent.
        ...Array.from({ length: 3 }, () => run("bob", "writer", 3)),
      ]
      const fiber = yield* Effect.fork(Effect.all(runs, { concurrency: "unbounded" }))
      for (let s = 0; s < 4; s++) yield* TestClock.adjust("1 second")
      yield* Fiber.join(fiber)
      expect(Object.fromEntries(yield* Ref.get(maxSeen))).toEqual({ "ann/writer": 2, "ann/reader": 1, "bob/writer": 3 })
    }),
  )

  it.scoped("a raised cap takes effect for the next runs", () =>
    Effect.gen(function* () {
      const permits = yield* makeAgentPermits()
      const active = yield* Ref.make(0)
      const max = yield* Ref.make(0)
      const body = Effect.gen(function* () {
        const n = yield* Ref.updateAndGet(active, (x) => x + 1)
        yield* Ref.update(max, (m) => Math.max(m, n))
        yield* Effect.sleep("1 second")
        yield* Ref.update(active, (x) => x - 1)
      })
      const first = yield* Effect.fork(Effect.all(Array.from({ length: 3 }, () => permits.withPermit({ userId: "u", agentId: "a", cap: 1 })(body)), { concurrency: "unbounded" }))
      for (let s = 0; s < 3; s++) yield* TestClock.adjust("1 second")
      yield* Fiber.join(first)
      expect(yield* Ref.get(max)).toBe(1)
      yield* Ref.set(max, 0)
      const second = yield* Effect.fork(Effect.all(Array.from({ length: 6 }, () => permits.withPermit({ userId: "u", agentId: "a", cap: 3 })(body)), { concurrency: "unbounded" }))
      for (let s = 0; s < 2; s++) yield* TestClock.adjust("1 second")
      yield* Fiber.join(second)
      expect(yield* Ref.get(max)).toBe(3)
    }),
  )

  it.live("with more due runs than the cap, the real LLM stand-in sees at most the cap per agent at once", () =>
    Effect.gen(function* () {
      const standIn = yield* makeLlmStandIn
      yield* standIn.setResponder(() => ({ delayMs: 60 }))
      const permits = yield* makeAgentPermits()
      const http = yield* HttpClient.HttpClient
      const ask = (agentId: string, cap: number) =>
        permits.withPermit({ userId: "ann", agentId, cap })(
          Effect.scoped(
            http
              .execute(HttpClientRequest.post(`${standIn.url}/v1/chat/completions`).pipe(HttpClientRequest.bodyUnsafeJson({ agentId })))
              .pipe(Effect.flatMap((r) => r.text)),
          ),
        )
      yield* Effect.all([...Array.from({ length: 8 }, () => ask("writer", 2)), ...Array.from({ length: 5 }, () => ask("reader", 1))], {
        concurrency: "unbounded",
      })
      const requests = yield* standIn.requests
      const per = (agentId: string) =>
        requests
          .filter((r: RecordedRequest) => (r.body as { agentId?: string } | undefined)?.agentId === agentId)
          // The stand-in answers 60 ms after a request arrives, so each run held its permit at least
          // from arrival for 55 ms (margin for timer rounding): overlaps here are real overlaps.
          .map((r) => [r.receivedAt, r.receivedAt + 55] as const)
      expect(per("writer")).toHaveLength(8)
      expect(per("reader")).toHaveLength(5)
      expect(maxOverlap(per("writer"))).toBe(2)
      expect(maxOverlap(per("reader"))).toBe(1)
    }).pipe(Effect.provide(FetchHttpClient.layer), Effect.scoped),
  )
})
