/**
 * OpenAI-compatible chat client (SPEC §4 "LLM").
 * CONTRACT — implementation: LlmClientLive (HttpClient from @effect/platform).
 */
import { Context, Schema, type Effect, type Option } from "effect"

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

export class LlmClient extends Context.Tag("mana-ai/LlmClient")<LlmClient, LlmClientShape>() {}
