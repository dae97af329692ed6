/**
 * OpenAI-compatible chat client (SPEC §4 "LLM").
 * CONTRACT — implementation: LlmClientLive (HttpClient from @effect/platform).
 */
import { Context, Schema, type Effect, type Option } from "effect"

export interface ChatMessage {
  readonly role: "system" | "user" | "assistant"
  readonly content: string
}

export interface TokenUsage {
  readonly promptTokens: number
  readonly completionTokens: number
  readonly totalTokens: number
}

export interface Completion {
  readonly content: string
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

export type LlmError = LlmTimeout | LlmRateLimited | LlmHttpError | LlmTransportError | LlmInvalidResponse

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
  readonly complete: (messages: ReadonlyArray<ChatMessage>) => Effect.Effect<Completion, LlmError>
}

export class LlmClient extends Context.Tag("mana-ai/LlmClient")<LlmClient, LlmClientShape>() {}
