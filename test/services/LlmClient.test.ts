import { gzipSync } from "node:zlib"
import { FetchHttpClient } from "@effect/platform"
import { describe, expect, it } from "@effect/vitest"
import { Chunk, Duration, Effect, Either, Fiber, Layer, Logger, Metric, Option, TestClock, TestServices } from "effect"
import { GlobalLlmPermits } from "../../src/services/GlobalLlmPermits.js"
import { LlmClient } from "../../src/services/LlmClient.js"
import { llmRequestsTotal, llmTokensTotal } from "../../src/services/metrics.js"
import {
  type LlmStandInShape,
  type RecordedRequest,
  completion,
  llmConfigFor,
  makeLlmStandIn,
  toolCall,
  toolCallsCompletion,
} from "../support/LlmStandIn.js"

interface ClientOptions {
  readonly apiKey?: string
  readonly timeoutMs?: number
  readonly permits?: number
  readonly url?: string
}

/** The real client over fetch against the stand-in; a short backoff base keeps the file fast. */
const clientLayer = (standIn: LlmStandInShape, o: ClientOptions = {}) =>
  LlmClient.withOptions({ baseDelay: Duration.millis(100), maxDelay: Duration.seconds(2) }).pipe(
    Layer.provide(
      Layer.mergeAll(
        llmConfigFor(
          { url: o.url ?? standIn.url },
          { ...(o.apiKey === undefined ? {} : { apiKey: o.apiKey }), requestTimeout: Duration.millis(o.timeoutMs ?? 5_000) },
        ),
        Layer.effect(GlobalLlmPermits, GlobalLlmPermits.sized(o.permits ?? 4)),
        FetchHttpClient.layer,
      ),
    ),
  )

const messages = [
  { role: "system", content: "You are a test." },
  { role: "user", content: "Say hi." },
] as const

const complete = (standIn: LlmStandInShape, o: ClientOptions = {}, msgs: ReadonlyArray<{ role: "system" | "user"; content: string }> = messages) =>
  Effect.flatMap(LlmClient, (c) => c.complete(msgs)).pipe(Effect.provide(clientLayer(standIn, o)))

const counter = (metric: typeof llmRequestsTotal, key: string, value: string) =>
  Effect.map(Metric.value(Metric.tagged(metric, key, value)), (s) => s.count)

describe("LlmClient against the LLM stand-in", () => {
  it.scoped("returns choices[0].message.content and the usage, and sends model, temperature and messages", () =>
    Effect.gen(function* () {
      const standIn = yield* makeLlmStandIn
      yield* standIn.enqueue({ body: completion("hello there", { prompt_tokens: 11, completion_tokens: 7, total_tokens: 18 }) })
      const promptBefore = yield* counter(llmTokensTotal, "kind", "prompt")
      const result = yield* complete(standIn)
      expect(result.content).toBe("hello there")
      expect(result.usage).toEqual(Option.some({ promptTokens: 11, completionTokens: 7, totalTokens: 18 }))
      expect((yield* counter(llmTokensTotal, "kind", "prompt")) - promptBefore).toBe(11)
      const [req] = yield* standIn.requests
      expect(req?.method).toBe("POST")
      expect(req?.path).toBe("/v1/chat/completions")
      expect(req?.headers["content-type"]).toMatch(/application\/json/)
      expect(req?.body).toEqual({ model: "standin-model", temperature: 0.3, messages })
    }),
  )

  it.scoped("an answer without usage has none", () =>
    Effect.gen(function* () {
      const standIn = yield* makeLlmStandIn
      yield* standIn.enqueue({ body: completion("x") })
      expect((yield* complete(standIn)).usage).toEqual(Option.none())
    }),
  )

  it.scoped("sends Authorization: Bearer <key> when MANA_LLM_API_KEY is set, and no Authorization otherwise", () =>
    Effect.gen(function* () {
      const standIn = yield* makeLlmStandIn
      yield* complete(standIn, { apiKey: "sk-test-123" })
      yield* complete(standIn)
      const [withKey, without] = yield* standIn.requests
      expect(withKey?.headers.authorization).toBe("Bearer sk-test-123")
      expect(without?.headers.authorization).toBeUndefined()
    }),
  )

  it.live("never logs the API key, also while retrying", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const standIn = yield* makeLlmStandIn
        const lines: Array<string> = []
        const capture = Logger.replace(
          Logger.defaultLogger,
          Logger.make((entry) => {
            lines.push(JSON.stringify({ message: entry.message, annotations: [...entry.annotations], cause: String(entry.cause) }))
          }),
        )
        yield* standIn.enqueue({ status: 500 }, { status: 401, body: { error: "key sk-secret-987 rejected" } })
        yield* complete(standIn, { apiKey: "sk-secret-987" }).pipe(Effect.either, Effect.provide(capture))
        expect(lines.length).toBeGreaterThan(0)
        expect(lines.join("\n")).not.toContain("sk-secret-987")
      }),
    ),
  )

  it.live("retries a 500 and then succeeds", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const standIn = yield* makeLlmStandIn
        const before = yield* counter(llmRequestsTotal, "outcome", "http_5xx")
        yield* standIn.enqueue({ status: 500, body: { error: "boom" } }, { status: 503, body: "" }, { body: completion("ok") })
        expect((yield* complete(standIn)).content).toBe("ok")
        expect(yield* standIn.requests).toHaveLength(3)
        expect((yield* counter(llmRequestsTotal, "outcome", "http_5xx")) - before).toBe(2)
      }),
    ),
  )

  it.live("waits at least Retry-After (seconds) after a 429", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const standIn = yield* makeLlmStandIn
        yield* standIn.enqueue({ status: 429, headers: { "retry-after": "1" } }, { body: completion("after the wait") })
        const result = yield* complete(standIn)
        expect(result.content).toBe("after the wait")
        const [first, second] = yield* standIn.requests
        // The backoff alone would be ~100 ms; Retry-After makes it ≥ 1 s.
        expect((second?.receivedAt ?? 0) - (first?.closedAt ?? Number.POSITIVE_INFINITY)).toBeGreaterThanOrEqual(950)
      }),
    ),
  )

  it.live("honours Retry-After given as an HTTP date", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const standIn = yield* makeLlmStandIn
        // HTTP dates have whole seconds: two seconds ahead is at least one full second away.
        const at = new Date(Math.ceil(Date.now() / 1000) * 1000 + 2000).toUTCString()
        yield* standIn.enqueue({ status: 429, headers: { "retry-after": at } }, {})
        yield* complete(standIn)
        const [first, second] = yield* standIn.requests
        expect((second?.receivedAt ?? 0) - (first?.closedAt ?? Number.POSITIVE_INFINITY)).toBeGreaterThanOrEqual(1000)
      }),
    ),
  )

  it.scoped("a 400 is permanent: LlmHttpError, no retry", () =>
    Effect.gen(function* () {
      const standIn = yield* makeLlmStandIn
      yield* standIn.enqueue({ status: 400, body: { error: { message: "bad model" } } })
      const result = yield* Effect.either(complete(standIn))
      expect(Either.getLeft(result)).toEqual(Option.some(expect.objectContaining({ _tag: "LlmHttpError", status: 400 })))
      expect(yield* standIn.requests).toHaveLength(1)
    }),
  )

  it.live("transient errors are retried until the caller's deadline, with no attempt limit", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const standIn = yield* makeLlmStandIn
        yield* standIn.setResponder(() => ({ status: 502 }))
        // A deadline with a wide margin over the three attempts asked for (busy machines schedule late).
        const result = yield* complete(standIn).pipe(Effect.timeout(Duration.millis(5_000)), Effect.either)
        expect(Either.getLeft(result).pipe(Option.map((e) => e._tag))).toEqual(Option.some("TimeoutException"))
        expect((yield* standIn.requests).length).toBeGreaterThanOrEqual(3)
      }),
    ),
  )

  it.live("a refused connection is an LlmTransportError, retried", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const standIn = yield* makeLlmStandIn
        const closed = yield* Effect.scoped(Effect.map(makeLlmStandIn, (s) => s.url))
        const before = yield* counter(llmRequestsTotal, "outcome", "transport_error")
        yield* complete(standIn, { url: closed }).pipe(Effect.timeout(Duration.millis(3_000)), Effect.either)
        expect((yield* counter(llmRequestsTotal, "outcome", "transport_error")) - before).toBeGreaterThanOrEqual(2)
      }),
    ),
  )

  const invalid = (name: string, body: unknown, reason: RegExp) =>
    it.scoped(`${name} is an LlmInvalidResponse, not retried`, () =>
      Effect.gen(function* () {
        const standIn = yield* makeLlmStandIn
        yield* standIn.enqueue({ body })
        const result = yield* Effect.either(complete(standIn))
        const error = Either.getLeft(result)
        expect(error.pipe(Option.map((e) => e._tag))).toEqual(Option.some("LlmInvalidResponse"))
        expect(error.pipe(Option.map((e) => e.message), Option.getOrElse(() => ""))).toMatch(reason)
        expect(yield* standIn.requests).toHaveLength(1)
      }),
    )
  invalid("garbage instead of JSON", "<html>oops</html>", /not JSON/)
  invalid("a body without choices", { choices: [] }, /choices/)
  invalid("a null content without tool calls", { choices: [{ message: { role: "assistant", content: null } }] }, /content as a string or tool_calls; neither is there/)
  invalid("a numeric content", { choices: [{ message: { role: "assistant", content: 42 } }] }, /choices\.0\.message\.content/)
  invalid("tool_calls that are not an array", { choices: [{ message: { content: null, tool_calls: { id: "x" } } }] }, /choices\.0\.message\.tool_calls/)

  it.live("a 10 MB body is an LlmInvalidResponse; the read stops at the cap and the transfer is aborted", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const standIn = yield* makeLlmStandIn
        // Streamed without Content-Length, then declared up front: both paths must stop at 2 MB.
        yield* standIn.enqueue({ hugeBodyBytes: 10 * 1024 * 1024 }, { hugeBodyBytes: 10 * 1024 * 1024, declareLength: true })
        for (const _ of [1, 2]) {
          const error = Either.getLeft(yield* Effect.either(complete(standIn)))
          expect(error.pipe(Option.map((e) => e.message), Option.getOrElse(() => ""))).toMatch(
            /LLM answer is not a chat completion: the body exceeds 2097152 bytes/,
          )
        }
        yield* Effect.sleep(Duration.millis(200)) // the server sees the aborted connection a moment later
        const reqs = yield* standIn.requests
        expect(reqs.map((r) => r.abortedByClient)).toEqual([true, true])
      }),
    ),
  )

  it.live("a gzip body whose declared (compressed) length is small but which inflates past the cap is an LlmInvalidResponse", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const standIn = yield* makeLlmStandIn
        // 8 MB of a valid completion's JSON inflates from a few kilobytes: the cap counts inflated bytes.
        const inflated = JSON.stringify(completion("x".repeat(8 * 1024 * 1024)))
        const gz = gzipSync(Buffer.from(inflated))
        expect(gz.byteLength).toBeLessThan(2 * 1024 * 1024)
        yield* standIn.enqueue({ bytes: gz, headers: { "content-encoding": "gzip", "content-length": String(gz.byteLength) } })
        const error = Either.getLeft(yield* Effect.either(complete(standIn)))
        expect(error.pipe(Option.map((e) => e.message), Option.getOrElse(() => ""))).toMatch(
          /LLM answer is not a chat completion: the body exceeds 2097152 bytes/,
        )
      }),
    ),
  )

  it.live("with GlobalLlmPermits(1), two concurrent callers never have two requests in flight", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const standIn = yield* makeLlmStandIn
        yield* standIn.setResponder(() => ({ delayMs: 250, body: completion("slow") }))
        const layer = clientLayer(standIn, { permits: 1 })
        const results = yield* Effect.flatMap(LlmClient, (c) => Effect.all([c.complete(messages), c.complete(messages)], { concurrency: 2 })).pipe(
          Effect.provide(layer),
        )
        expect(results.map((r) => r.content)).toEqual(["slow", "slow"])
        expect(yield* standIn.maxInFlight).toBe(1)
        // Control: the same calls with two permits do overlap, so the assertion above can fail.
        yield* standIn.reset
        yield* standIn.setResponder(() => ({ delayMs: 250, body: completion("slow") }))
        yield* Effect.flatMap(LlmClient, (c) => Effect.all([c.complete(messages), c.complete(messages)], { concurrency: 2 })).pipe(
          Effect.provide(clientLayer(standIn, { permits: 2 })),
        )
        expect(yield* standIn.maxInFlight).toBe(2)
      }),
    ),
  )
})

// ---------------------------------------------------------------- TestClock: backoff and Retry-After

const HOUR_MS = 3_600_000

/**
 * The delay of the retry sleep the client registered with the TestClock, waiting (in real time) for
 * the HTTP exchange before it. The per-request timeout is set to an hour so its own sleep is told apart.
 */
const nextRetryDelay = Effect.gen(function* () {
  for (let i = 0; i < 1000; i++) {
    const now = yield* TestClock.currentTimeMillis
    const retry = Chunk.toReadonlyArray(yield* TestClock.sleeps()).filter((at) => at - now < HOUR_MS)
    if (retry.length > 0) return Math.min(...retry) - now
    yield* TestServices.provideLive(Effect.sleep("10 millis"))
  }
  return yield* Effect.dieMessage("the client never slept for a retry")
})

describe("LlmClient backoff on the TestClock", () => {
  it.scoped("a request hanging past LLM_TIMEOUT_MS is an LlmTimeout at exactly that time, aborted and retried", () =>
    Effect.gen(function* () {
      const standIn = yield* makeLlmStandIn
      const before = yield* counter(llmRequestsTotal, "outcome", "timeout")
      yield* standIn.enqueue({ hang: true }, { body: completion("second try") })
      const fiber = yield* Effect.fork(complete(standIn, { timeoutMs: 20_000 }))
      /** Waits in real time (a wide 30 s bound that measures nothing) for what the stand-in sees. */
      const seen = (check: (rs: ReadonlyArray<RecordedRequest>) => boolean) =>
        Effect.gen(function* () {
          for (let i = 0; i < 3_000 && !check(yield* standIn.requests); i++) yield* TestServices.provideLive(Effect.sleep("10 millis"))
          return yield* standIn.requests
        })
      yield* seen((rs) => rs.length === 1)
      // The timeout runs on the TestClock: not a millisecond early.
      yield* TestClock.adjust("19999 millis")
      yield* TestServices.provideLive(Effect.sleep("200 millis"))
      expect((yield* standIn.requests)[0]?.closedAt).toBeUndefined()
      yield* TestClock.adjust("1 millis")
      const [first] = yield* seen((rs) => rs[0]?.closedAt !== undefined)
      expect(first?.abortedByClient).toBe(true)
      yield* TestClock.adjust(Duration.millis(yield* nextRetryDelay))
      expect((yield* Fiber.join(fiber)).content).toBe("second try")
      const requests = yield* standIn.requests
      expect(requests).toHaveLength(2)
      expect(requests[1]?.abortedByClient).toBe(false)
      expect((yield* counter(llmRequestsTotal, "outcome", "timeout")) - before).toBe(1)
    }),
  )

  it.scoped("the permit is released during the backoff sleep: another caller's request runs meanwhile", () =>
    Effect.gen(function* () {
      const standIn = yield* makeLlmStandIn
      const who = (r: { body: unknown }) => (JSON.stringify(r.body).includes("caller-A") ? "A" : "B")
      yield* standIn.setResponder((r) =>
        who(r) === "A" && r.index === 0 ? { status: 429, headers: { "retry-after": "30" } } : { body: completion(who(r)) },
      )
      const client = yield* Effect.provide(LlmClient, clientLayer(standIn, { permits: 1, timeoutMs: HOUR_MS }))
      // A sleeps out its Retry-After (30 s on the TestClock, which only the test moves) ...
      const a = yield* Effect.fork(client.complete([{ role: "user", content: "caller-A" }]))
      expect(yield* nextRetryDelay).toBe(30_000)
      // ... and B, with the one permit, is served meanwhile, before the clock moves at all.
      const rb = yield* client.complete([{ role: "user", content: "caller-B" }])
      expect(rb.content).toBe("B")
      yield* TestClock.adjust("30 seconds")
      expect((yield* Fiber.join(a)).content).toBe("A")
      expect((yield* standIn.requests).map(who)).toEqual(["A", "B", "A"])
    }),
  )

  it.scoped("waits Retry-After after a 5xx as after a 429", () =>
    Effect.gen(function* () {
      const standIn = yield* makeLlmStandIn
      yield* standIn.enqueue({ status: 503, headers: { "retry-after": "20" } }, { body: completion("after the wait") })
      const fiber = yield* Effect.fork(complete(standIn, { timeoutMs: HOUR_MS }))
      // The backoff alone would be ~100 ms (base 100 ms, jittered); Retry-After: 20 makes it 20 s.
      expect(yield* nextRetryDelay).toBe(20_000)
      yield* TestClock.adjust("19 seconds")
      yield* TestServices.provideLive(Effect.sleep("100 millis"))
      expect(yield* standIn.requests).toHaveLength(1)
      yield* TestClock.adjust("1 second")
      expect((yield* Fiber.join(fiber)).content).toBe("after the wait")
      expect(yield* standIn.requests).toHaveLength(2)
    }),
  )

  it.scoped("the backoff doubles from its base and stops growing at maxDelay (jitter ±20 %)", () =>
    Effect.gen(function* () {
      const standIn = yield* makeLlmStandIn
      const failures = 7
      yield* standIn.enqueue(...Array.from({ length: failures }, () => ({ status: 500 })), { body: completion("at last") })
      const fiber = yield* Effect.fork(complete(standIn, { timeoutMs: HOUR_MS }))
      const delays: Array<number> = []
      for (let i = 0; i < failures; i++) {
        const delay = yield* nextRetryDelay
        delays.push(delay)
        yield* TestClock.adjust(Duration.millis(delay))
      }
      expect((yield* Fiber.join(fiber)).content).toBe("at last")
      // Base 100 ms, cap 2 s (clientLayer): 100, 200, 400, 800, 1600, then 2000 instead of 3200 and 6400.
      const nominal = [100, 200, 400, 800, 1600, 2000, 2000]
      delays.forEach((d, i) => {
        expect(d, `retry ${i + 1}`).toBeGreaterThanOrEqual(nominal[i]! * 0.8)
        expect(d, `retry ${i + 1}`).toBeLessThanOrEqual(nominal[i]! * 1.2)
      })
    }),
  )
})

describe("LlmClient, more branches", () => {
  it.scoped("usage without total_tokens counts prompt + completion", () =>
    Effect.gen(function* () {
      const standIn = yield* makeLlmStandIn
      yield* standIn.enqueue({ body: completion("x", { prompt_tokens: 5, completion_tokens: 3 }) })
      expect((yield* complete(standIn)).usage).toEqual(Option.some({ promptTokens: 5, completionTokens: 3, totalTokens: 8 }))
    }),
  )

  it.scoped("a request that cannot be built (an unusable URL) is a typed LlmRequestInvalid, not a defect, and is not retried", () =>
    Effect.gen(function* () {
      const standIn = yield* makeLlmStandIn
      const before = yield* counter(llmRequestsTotal, "outcome", "request_invalid")
      // Port 99999 passes a string check but no URL parser: the request cannot be built.
      const exit = yield* Effect.exit(complete(standIn, { url: "http://127.0.0.1:99999" }))
      expect(exit._tag === "Failure" && exit.cause._tag).toBe("Fail")
      const error = exit._tag === "Failure" && exit.cause._tag === "Fail" ? exit.cause.error : undefined
      expect(error?._tag).toBe("LlmRequestInvalid")
      expect(error?.message).toBe("LLM request could not be built: the URL is not valid")
      expect((yield* counter(llmRequestsTotal, "outcome", "request_invalid")) - before).toBe(1)
    }),
  )

  it.scoped("tools mode on the wire: tools and tool_choice sent, tool calls read back, tool turns sent as OpenAI has them", () =>
    Effect.gen(function* () {
      const standIn = yield* makeLlmStandIn
      yield* standIn.enqueue({
        body: toolCallsCompletion([toolCall("create_task", { title: "T", rationale: "R" }, "call_a"), toolCall("nope", "{oops", "call_b")]),
      })
      const tools = [
        { type: "function" as const, function: { name: "create_task", description: "d", parameters: { type: "object", properties: {} } } },
      ]
      const history = [
        { role: "system" as const, content: "S" },
        { role: "user" as const, content: "U" },
        { role: "assistant" as const, content: "", toolCalls: [{ id: "call_0", name: "create_task", arguments: '{"title":"A"}' }] },
        { role: "tool" as const, toolCallId: "call_0", content: "recorded" },
      ]
      const result = yield* Effect.flatMap(LlmClient, (c) => c.complete(history, { tools })).pipe(Effect.provide(clientLayer(standIn)))
      expect(result.content).toBe("")
      expect(result.toolCalls).toEqual([
        { id: "call_a", name: "create_task", arguments: '{"title":"T","rationale":"R"}' },
        { id: "call_b", name: "nope", arguments: "{oops" },
      ])
      const [req] = yield* standIn.requests
      expect(req?.body).toEqual({
        model: "standin-model",
        temperature: 0.3,
        tools,
        tool_choice: "auto",
        messages: [
          { role: "system", content: "S" },
          { role: "user", content: "U" },
          {
            role: "assistant",
            content: "",
            tool_calls: [{ id: "call_0", type: "function", function: { name: "create_task", arguments: '{"title":"A"}' } }],
          },
          { role: "tool", tool_call_id: "call_0", content: "recorded" },
        ],
      })
    }),
  )
})
