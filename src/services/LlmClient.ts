/**
 * The live LlmClient (SPEC §4 "LLM"): POST {MANA_LLM_URL}/v1/chat/completions over the runtime's
 * fetch (Bun and Node alike). Each HTTP attempt holds one GlobalLlmPermits permit and has its own LLM_TIMEOUT_MS;
 * transient failures are retried with jittered exponential backoff (at least Retry-After) with no
 * attempt limit, so the caller's deadline is what ends a run of bad luck.
 */
import * as Clock from "effect/Clock"
import * as ConfigError from "effect/ConfigError"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberRef from "effect/FiberRef"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as ParseResult from "effect/ParseResult"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import { unsafeScheduleAlarm } from "../primitives/Deadline.js"
import { LlmConfig } from "./AppConfig.js"
import { GlobalLlmPermits } from "./GlobalLlmPermits.js"
import { LlmBreaker } from "./LlmBreaker.js"
import { llmRequestDuration, llmRequestsTotal, llmTokensTotal, updateMetrics } from "./metrics.js"
import { withSpanWhenTracing } from "./tracing.js"

export interface ChatMessage {
  readonly role: "system" | "user" | "assistant" | "tool"
  readonly content: string
  /** An assistant turn that called tools (tools mode): echoed back so each `tool` message has its call. */
  readonly toolCalls?: ReadonlyArray<ToolCall>
  /** A `tool` message: the id of the call it answers. */
  readonly toolCallId?: string
}

/**
 * One tool call of an answer, as the model sent it. Only the wire shape is checked here; name and
 * arguments are the model's text, which the planner's strict checks judge (a repair turn can follow).
 */
export interface ToolCall {
  readonly id: string
  readonly name: unknown
  /** Normally a string holding a JSON object; anything else is rejected by the planner. */
  readonly arguments: unknown
}

/** An OpenAI function tool: the catalogue as the model sees it in tools mode. */
export interface FunctionTool {
  readonly type: "function"
  readonly function: {
    readonly name: string
    readonly description: string
    readonly parameters: Readonly<Record<string, unknown>>
  }
}

export interface CompleteOptions {
  /** Sent as `tools` with `tool_choice: "auto"`; absent: a plain chat completion. */
  readonly tools?: ReadonlyArray<FunctionTool>
}

export interface TokenUsage {
  readonly promptTokens: number
  readonly completionTokens: number
  readonly totalTokens: number
}

export interface Completion {
  /** The assistant's text; "" when it sent only tool calls. */
  readonly content: string
  /** The answer's tool calls, in order ([] for a text answer). */
  readonly toolCalls: ReadonlyArray<ToolCall>
  readonly usage: Option.Option<TokenUsage>
}

/** One request took longer than LLM_TIMEOUT_MS. Transient. */
export class LlmTimeout extends Schema.TaggedError<LlmTimeout>()("LlmTimeout", { timeoutMs: Schema.Number }) {
  override get message() {
    return `LLM request timed out after ${this.timeoutMs} ms`
  }
}
/** 429. Transient; retryAfterMs from Retry-After when present. */
export class LlmRateLimited extends Schema.TaggedError<LlmRateLimited>()("LlmRateLimited", {
  retryAfterMs: Schema.optional(Schema.Number),
}) {
  override get message() {
    return "LLM rate limited (429)"
  }
}
/** Any other non-2xx. Transient for 5xx, permanent otherwise. */
export class LlmHttpError extends Schema.TaggedError<LlmHttpError>()("LlmHttpError", {
  status: Schema.Number,
  retryAfterMs: Schema.optional(Schema.Number),
}) {
  override get message() {
    return `LLM answered HTTP ${this.status}`
  }
}
/** Connection refused/reset, DNS, body read failure. Transient. */
export class LlmTransportError extends Schema.TaggedError<LlmTransportError>()("LlmTransportError", {
  reason: Schema.String,
}) {
  override get message() {
    return `LLM transport error: ${this.reason}`
  }
}
/** 2xx whose body is not a chat completion with a string content. Permanent. */
export class LlmInvalidResponse extends Schema.TaggedError<LlmInvalidResponse>()("LlmInvalidResponse", {
  reason: Schema.String,
}) {
  override get message() {
    return `LLM answer is not a chat completion: ${this.reason}`
  }
}

/** The HTTP request could not be built (an unusable URL, a body that cannot be encoded). Permanent. */
export class LlmRequestInvalid extends Schema.TaggedError<LlmRequestInvalid>()("LlmRequestInvalid", {
  reason: Schema.String,
}) {
  override get message() {
    return `LLM request could not be built: ${this.reason}`
  }
}

export type LlmError = LlmTimeout | LlmRateLimited | LlmHttpError | LlmTransportError | LlmInvalidResponse | LlmRequestInvalid

export const isTransientLlmError = (e: LlmError): boolean =>
  e._tag === "LlmTimeout" ||
  e._tag === "LlmRateLimited" ||
  e._tag === "LlmTransportError" ||
  (e._tag === "LlmHttpError" && e.status >= 500)

export interface LlmClientShape {
  /**
   * One chat completion. Transient errors are retried with jittered exponential backoff honouring
   * Retry-After, with no attempt limit: the caller's deadline (MISSION_TIMEOUT_MS) bounds it by
   * interruption. Each HTTP attempt holds one GlobalLlmPermits permit; backoff sleeps hold none.
   * Fails with the last error when it is permanent.
   */
  readonly complete: (messages: ReadonlyArray<ChatMessage>, options?: CompleteOptions) => Effect.Effect<Completion, LlmError>
}

export interface LlmClientOptions {
  /** First backoff delay; doubles per consecutive transient failure, jittered ±20 %. */
  readonly baseDelay: Duration.DurationInput
  /** Cap of the backoff before jitter (a longer Retry-After still wins). */
  readonly maxDelay: Duration.DurationInput
  /** Largest response body read; a larger one is an LlmInvalidResponse, not a memory spike. */
  readonly maxBodyBytes: number
}

const defaultLlmClientOptions: LlmClientOptions = {
  baseDelay: Duration.millis(500),
  maxDelay: Duration.seconds(30),
  maxBodyBytes: 2 * 1024 * 1024,
}

// ---------------------------------------------------------------- response decoding

// Name and arguments stay unknown: they are the model's text, judged by the planner's strict checks
// (with a repair turn), not a broken reply.
const WireToolCall = Schema.Struct({
  id: Schema.optional(Schema.String),
  function: Schema.Struct({ name: Schema.optional(Schema.Unknown), arguments: Schema.optional(Schema.Unknown) }),
})

const ChatCompletionBody = Schema.Struct({
  choices: Schema.NonEmptyArray(
    Schema.Struct({
      message: Schema.Struct({
        content: Schema.optional(Schema.NullOr(Schema.String)),
        tool_calls: Schema.optional(Schema.NullOr(Schema.Array(WireToolCall))),
      }),
    }),
  ),
  usage: Schema.optional(Schema.Unknown),
})

const decodeBody = Schema.decodeUnknownEither(ChatCompletionBody)

/** Names the fields that are wrong, never their values (they are LLM output). */
const fieldsAt = (error: ParseResult.ParseError): string =>
  [...new Set(ParseResult.ArrayFormatter.formatErrorSync(error).map((i) => i.path.join(".") || "(body)"))].join(", ")

type Body = typeof ChatCompletionBody.Type

const isPlainObject = (u: unknown): u is Readonly<Record<string, unknown>> =>
  typeof u === "object" && u !== null && !Array.isArray(u)

/**
 * The usual answer checked by hand (issue 16: the Schema decode cost more than the request): only
 * bodies it is sure ChatCompletionBody accepts, unchanged; anything else is left to the Schema, which
 * gives the verdict and names the wrong fields.
 */
const plainBody = (json: unknown): Body | undefined => {
  if (!isPlainObject(json)) return undefined
  const choices = json.choices
  if (!Array.isArray(choices) || choices.length === 0) return undefined
  for (const choice of choices) {
    if (!isPlainObject(choice) || !isPlainObject(choice.message)) return undefined
    const { content, tool_calls } = choice.message
    if (content !== undefined && content !== null && typeof content !== "string") return undefined
    if (tool_calls !== undefined && tool_calls !== null) {
      if (!Array.isArray(tool_calls)) return undefined
      for (const call of tool_calls) {
        if (!isPlainObject(call) || !isPlainObject(call.function)) return undefined
        if (call.id !== undefined && typeof call.id !== "string") return undefined
      }
    }
  }
  return json as unknown as Body
}

const isCount = (u: unknown): u is number => typeof u === "number" && Number.isInteger(u) && u >= 0

/** UsageBody by hand, for the same reason: None unless both counts (and a total, when given) are counts. */
const usageOf = (u: unknown): Option.Option<TokenUsage> => {
  if (!isPlainObject(u)) return Option.none()
  const { prompt_tokens, completion_tokens, total_tokens } = u
  if (!isCount(prompt_tokens) || !isCount(completion_tokens)) return Option.none()
  if (total_tokens !== undefined && !isCount(total_tokens)) return Option.none()
  return Option.some({
    promptTokens: prompt_tokens,
    completionTokens: completion_tokens,
    totalTokens: total_tokens ?? prompt_tokens + completion_tokens,
  })
}

const utf8 = new TextDecoder()

const toCompletion = (bytes: Uint8Array): Effect.Effect<Completion, LlmInvalidResponse> => {
  let json: unknown
  try {
    json = JSON.parse(utf8.decode(bytes))
  } catch {
    return Effect.fail(new LlmInvalidResponse({ reason: "the body is not JSON" }))
  }
  let body = plainBody(json)
  if (body === undefined) {
    const decoded = decodeBody(json)
    if (decoded._tag === "Left") {
      return Effect.fail(
        new LlmInvalidResponse({
          reason: `expected choices[0].message with content as a string or tool_calls; wrong or missing: ${fieldsAt(decoded.left)}`,
        }),
      )
    }
    body = decoded.right
  }
  const message = body.choices[0].message
  const toolCalls = (message.tool_calls ?? []).map(
    (c, i): ToolCall => ({ id: c.id ?? `call_${i}`, name: c.function.name, arguments: c.function.arguments }),
  )
  if (typeof message.content !== "string" && toolCalls.length === 0) {
    return Effect.fail(
      new LlmInvalidResponse({ reason: "expected choices[0].message with content as a string or tool_calls; neither is there" }),
    )
  }
  return Effect.succeed({ content: message.content ?? "", toolCalls, usage: usageOf(body.usage) })
}

/** What one HTTP exchange came to, before it is judged (statuses) and decoded (the body). */
type Exchange =
  | { readonly _tag: "Body"; readonly bytes: Uint8Array }
  | { readonly _tag: "Status"; readonly status: number; readonly retryAfter: string | undefined }
  | { readonly _tag: "TooLarge" }

/** Thrown inside the exchange when reading the body failed after the headers came. */
class BodyReadFailed {
  readonly _tag = "BodyReadFailed"
}

/**
 * Reads at most `max` bytes of the body; a longer one stops early and aborts the transfer (the
 * caller's controller). A declared length within the limit (the usual answer) is read whole; a body
 * longer than declared is cut by fetch; a compressed one is not (the length is the compressed size):
 * it is counted as it streams, so a gzip bomb stops at the cap.
 */
const readBody = async (response: Response, max: number, controller: AbortController): Promise<Exchange> => {
  const lengthHeader = response.headers.get("content-length")
  const declared = lengthHeader === null || lengthHeader === "" ? Number.NaN : Number(lengthHeader)
  if (Number.isFinite(declared) && declared > max) {
    controller.abort()
    return { _tag: "TooLarge" }
  }
  const encoding = response.headers.get("content-encoding")
  const identity = encoding === null || encoding === "" || encoding.toLowerCase() === "identity"
  try {
    if (Number.isFinite(declared) && identity) return { _tag: "Body", bytes: new Uint8Array(await response.arrayBuffer()) }
    const reader = response.body?.getReader()
    if (reader === undefined) return { _tag: "Body", bytes: new Uint8Array(0) }
    const chunks: Array<Uint8Array> = []
    let size = 0
    for (;;) {
      const { done, value } = await reader.read()
      if (done) break
      if (size + value.byteLength > max) {
        controller.abort()
        return { _tag: "TooLarge" }
      }
      chunks.push(value)
      size += value.byteLength
    }
    const out = new Uint8Array(size)
    let offset = 0
    for (const c of chunks) {
      out.set(c, offset)
      offset += c.byteLength
    }
    return { _tag: "Body", bytes: out }
  } catch (cause) {
    // Our own abort after a cut is not a read failure; anything else is.
    if (controller.signal.aborted) throw cause
    throw new BodyReadFailed()
  }
}

/** Retry-After as delta-seconds or an HTTP date, in milliseconds from `now`. */
const parseRetryAfter = (value: string | undefined, now: number): number | undefined => {
  if (value === undefined) return undefined
  const trimmed = value.trim()
  if (/^\d+(\.\d+)?$/.test(trimmed)) return Math.round(Number(trimmed) * 1000)
  const date = Date.parse(trimmed)
  return Number.isNaN(date) ? undefined : Math.max(0, date - now)
}

const outcomeOf = (exit: Exit.Exit<Completion, LlmError>): string => {
  if (Exit.isSuccess(exit)) return "success"
  const failure = exit.cause._tag === "Fail" ? exit.cause.error : undefined
  if (failure === undefined) return "interrupted"
  switch (failure._tag) {
    case "LlmTimeout":
      return "timeout"
    case "LlmRateLimited":
      return "rate_limited"
    case "LlmHttpError":
      return failure.status >= 500 ? "http_5xx" : "http_4xx"
    case "LlmTransportError":
      return "transport_error"
    case "LlmInvalidResponse":
      return "invalid_response"
    case "LlmRequestInvalid":
      return "request_invalid"
  }
}

// Tagged once: Metric.tagged builds and hashes a new key on every call (issue 16).
const promptTokensTotal = Metric.tagged(llmTokensTotal, "kind", "prompt")
const completionTokensTotal = Metric.tagged(llmTokensTotal, "kind", "completion")
const requestsByOutcome = new Map<string, typeof llmRequestsTotal>()
const requestsBy = (outcome: string): typeof llmRequestsTotal => {
  let metric = requestsByOutcome.get(outcome)
  if (metric === undefined) {
    metric = Metric.tagged(llmRequestsTotal, "outcome", outcome)
    requestsByOutcome.set(outcome, metric)
  }
  return metric
}

const retryAfterOf = (e: LlmError): number =>
  (e._tag === "LlmRateLimited" || e._tag === "LlmHttpError" ? e.retryAfterMs : undefined) ?? 0

// ---------------------------------------------------------------- the client

const makeLlmClient = (options: LlmClientOptions = defaultLlmClientOptions) =>
  Effect.gen(function* () {
    const config = yield* LlmConfig
    const permits = yield* GlobalLlmPermits
    // One per process (runnerServicesLayer); without it (unit tests of the client) nothing is guarded.
    const breaker = yield* Effect.serviceOption(LlmBreaker)
    if (Option.isNone(config.url)) {
      return yield* Effect.fail(
        ConfigError.MissingData(["MANA_LLM_URL"], "MANA_LLM_URL must be set to use the LLM planner, e.g. http://localhost:3025"),
      )
    }
    const endpoint = `${config.url.value.replace(/\/+$/, "")}/v1/chat/completions`
    // Checked once: a URL no parser accepts fails every request as LlmRequestInvalid (never a defect).
    const endpointValid = URL.canParse(endpoint)
    const timeoutMs = Duration.toMillis(config.requestTimeout)
    const headers: Record<string, string> = {
      accept: "application/json",
      "content-type": "application/json",
      ...Option.match(config.apiKey, { onNone: () => ({}), onSome: (key) => ({ authorization: `Bearer ${Redacted.value(key)}` }) }),
    }

    const serialisedTools = new WeakMap<ReadonlyArray<FunctionTool>, string>()
    const toolsJson = (tools: ReadonlyArray<FunctionTool>): string => {
      let json = serialisedTools.get(tools)
      if (json === undefined) {
        json = JSON.stringify(tools)
        serialisedTools.set(tools, json)
      }
      return json
    }

    /**
     * One HTTP exchange on the runtime's own fetch (issue 16: @effect/platform's HttpClient cost
     * several times the request's own CPU), within LLM_TIMEOUT_MS. Interruption (the run's deadline,
     * a drain) aborts the request; so does a body cut at the cap, and so does the timeout, which
     * fails it with LlmTimeout: an alarm on the fiber's Clock (TestClock in tests) that aborts the
     * request itself, so a request forks no fiber for its deadline (withDeadline forks one; the rest of
     * an attempt, judging the status and decoding the body, is synchronous).
     */
    const exchange = (body: string): Effect.Effect<Exchange, LlmTransportError | LlmTimeout> =>
      Effect.clockWith((clock) =>
        Effect.async<Exchange, LlmTransportError | LlmTimeout>((resume) => {
          const controller = new AbortController()
          let settled = false
          const cancelAlarm = unsafeScheduleAlarm(clock, timeoutMs, () => {
            if (settled) return
            settled = true
            controller.abort()
            resume(Effect.fail(new LlmTimeout({ timeoutMs })))
          })
          const settle = (result: Effect.Effect<Exchange, LlmTransportError>) => {
            if (settled) return
            settled = true
            cancelAlarm()
            resume(result)
          }
          const started = (() => {
            try {
              return fetch(endpoint, { method: "POST", headers, body, signal: controller.signal })
            } catch (cause) {
              return Promise.reject(cause)
            }
          })()
          started
            .then((response): Exchange | Promise<Exchange> => {
              const status = response.status
              if (status >= 200 && status < 300) return readBody(response, options.maxBodyBytes, controller)
              // The body of a refusal is not read: the connection is given up.
              controller.abort()
              return { _tag: "Status", status, retryAfter: response.headers.get("retry-after") ?? undefined }
            })
            .then(
              (exchanged) => settle(Effect.succeed(exchanged)),
              (cause) =>
                settle(
                  Effect.fail(
                    new LlmTransportError({
                      reason: cause instanceof BodyReadFailed ? "reading the response body failed" : transportReason(cause),
                    }),
                  ),
                ),
            )
          return Effect.sync(() => {
            settled = true
            cancelAlarm()
            controller.abort()
          })
        }),
      )

    const send = (messages: ReadonlyArray<ChatMessage>, extra: CompleteOptions): Effect.Effect<Completion, LlmError> => {
      if (!endpointValid) return Effect.fail(new LlmRequestInvalid({ reason: "the URL is not valid" }))
      let body: string
      try {
        const head = JSON.stringify({ model: config.model, temperature: config.temperature, messages: messages.map(wireMessage) })
        // The tool catalogue is the same array request after request: serialised once (issue 16).
        body = extra.tools === undefined ? head : `${head.slice(0, -1)},"tools":${toolsJson(extra.tools)},"tool_choice":"auto"}`
      } catch {
        return Effect.fail(new LlmRequestInvalid({ reason: "the request body cannot be encoded as JSON" }))
      }
      return exchange(body).pipe(
        Effect.flatMap((exchanged): Effect.Effect<Completion, LlmError> => {
          if (exchanged._tag === "Body") return toCompletion(exchanged.bytes)
          if (exchanged._tag === "TooLarge") {
            return Effect.fail(new LlmInvalidResponse({ reason: `the body exceeds ${options.maxBodyBytes} bytes` }))
          }
          const status = exchanged.status
          if (status !== 429 && status < 500) return Effect.fail(new LlmHttpError({ status }))
          return Effect.flatMap(Clock.currentTimeMillis, (now) => {
            const retryAfterMs = parseRetryAfter(exchanged.retryAfter, now)
            const fields = retryAfterMs === undefined ? {} : { retryAfterMs }
            return Effect.fail(status === 429 ? new LlmRateLimited(fields) : new LlmHttpError({ status, ...fields }))
          })
        }),
      )
    }

    /** One HTTP attempt, holding a global permit only while it runs, measured and counted. */
    const measured = (messages: ReadonlyArray<ChatMessage>, extra: CompleteOptions) =>
      permits.withPermit(
        Effect.clockWith((clock) => {
          const start = clock.unsafeCurrentTimeMillis()
          return send(messages, extra).pipe(
            Effect.onExit((exit) =>
              updateMetrics((labels) => {
                llmRequestDuration.unsafeUpdate((clock.unsafeCurrentTimeMillis() - start) / 1000, labels)
                requestsBy(outcomeOf(exit)).unsafeUpdate(1, labels)
              }),
            ),
          )
        }),
      )

    /**
     * The attempt under the process's breaker (SPEC §14): its outcome counts toward opening it; while
     * it is open no request is sent, the call waits (under the caller's deadline) until the cool-down
     * ends, and tries again, then as the probe or behind it. The wait is not a failure, so the
     * retry schedule below never sees it.
     */
    const attempt = (messages: ReadonlyArray<ChatMessage>, extra: CompleteOptions): Effect.Effect<Completion, LlmError> => {
      if (Option.isNone(breaker)) return measured(messages, extra)
      const b = breaker.value
      const guarded: Effect.Effect<Completion, LlmError> = b.guard(measured(messages, extra), isTransientLlmError).pipe(
        Effect.catchTag("LlmBreakerOpen", () => Effect.zipRight(b.awaitReady, Effect.suspend(() => guarded))),
      )
      return guarded
    }

    const schedule = Schedule.identity<LlmError>().pipe(
      Schedule.intersect(
        Schedule.exponential(options.baseDelay).pipe(Schedule.union(Schedule.spaced(options.maxDelay)), Schedule.jittered),
      ),
      Schedule.modifyDelayEffect(([error], delay) => {
        const wait = Duration.max(delay, Duration.millis(retryAfterOf(error)))
        // Effect.retry consults the schedule before its `while`, so a permanent error gets here too.
        if (!isTransientLlmError(error)) return Effect.succeed(wait)
        return Effect.logWarning("LLM request failed; retrying").pipe(
          Effect.annotateLogs({ error: error._tag, detail: error.message, retryInMs: Math.round(Duration.toMillis(wait)) }),
          Effect.as(wait),
        )
      }),
    )

    /**
     * Retries after a first transient failure, exactly as `Effect.retry({ schedule, while })` around
     * the first attempt would (its first evaluation fails with that error, so the schedule steps on
     * it), built only when needed: most requests succeed at once, and the retry's schedule driver
     * costs a request more CPU than the check (issue 16). A permanent first error fails at once, as
     * the retry's `while` would have it.
     */
    const retried = (first: LlmError, messages: ReadonlyArray<ChatMessage>, extra: CompleteOptions): Effect.Effect<Completion, LlmError> => {
      let pending: LlmError | undefined = first
      return Effect.retry(
        Effect.suspend(() => {
          if (pending === undefined) return attempt(messages, extra)
          const error = pending
          pending = undefined
          return Effect.fail(error)
        }),
        { schedule, while: isTransientLlmError },
      )
    }

    const complete = (messages: ReadonlyArray<ChatMessage>, extra: CompleteOptions = {}): Effect.Effect<Completion, LlmError> =>
      attempt(messages, extra).pipe(
        Effect.catchIf(isTransientLlmError, (first) => retried(first, messages, extra)),
        Effect.tap(({ usage }) => {
          if (Option.isNone(usage)) return Effect.void
          const u = usage.value
          // The counters as one instruction; the span's attributes only while there is a span (tracing on).
          return Effect.withFiberRuntime((fiber) => {
            const labels = fiber.getFiberRef(FiberRef.currentMetricLabels)
            promptTokensTotal.unsafeUpdate(u.promptTokens, labels)
            completionTokensTotal.unsafeUpdate(u.completionTokens, labels)
            return fiber.getFiberRef(FiberRef.currentTracerEnabled)
              ? Effect.annotateCurrentSpan({ "llm.prompt_tokens": u.promptTokens, "llm.completion_tokens": u.completionTokens })
              : Effect.void
          })
        }),
        withSpanWhenTracing("LlmClient.complete", {
          attributes: { "llm.model": config.model, "llm.messages": messages.length, "llm.tools": extra.tools?.length ?? 0 },
        }),
      )

    return { complete } satisfies LlmClientShape
  })

/** A message as the OpenAI wire format has it; `content` is always a plain string (SPEC §4). */
const wireMessage = (m: ChatMessage) => {
  if (m.role === "tool") return { role: "tool", tool_call_id: m.toolCallId ?? "", content: m.content }
  if (m.toolCalls !== undefined && m.toolCalls.length > 0) {
    return {
      role: m.role,
      content: m.content,
      tool_calls: m.toolCalls.map((c) => ({
        id: c.id,
        type: "function",
        function: {
          name: typeof c.name === "string" ? c.name : String(c.name ?? ""),
          arguments: typeof c.arguments === "string" ? c.arguments : (JSON.stringify(c.arguments) ?? ""),
        },
      })),
    }
  }
  return { role: m.role, content: m.content }
}

/** The cause of a fetch failure in a few words (e.g. ECONNREFUSED), without the request. */
const transportReason = (cause: unknown): string => {
  const inner = cause instanceof Error && cause.cause instanceof Error ? cause.cause : cause
  const code = typeof inner === "object" && inner !== null && "code" in inner ? String(inner.code) : undefined
  const message = inner instanceof Error ? inner.message : String(inner)
  return (code ?? message).slice(0, 200)
}

/** Needs LlmConfig and GlobalLlmPermits (and takes LlmBreaker when present); no dependencies, so tests give their own. */
export class LlmClient extends Effect.Service<LlmClient>()("mana-ai/LlmClient", { effect: makeLlmClient() }) {
  /** With other backoff bounds or body cap (tests). */
  static readonly withOptions = (options: Partial<LlmClientOptions>) =>
    Layer.effect(LlmClient, Effect.map(makeLlmClient({ ...defaultLlmClientOptions, ...options }), LlmClient.make))
}
