/**
 * A real HTTP server (node:http on 127.0.0.1, a free port) standing in for the OpenAI-compatible LLM,
 * as a scoped resource. Replies are scripted per request (status, headers, body, delay, hang, huge
 * body); without a script it answers with a valid plan for the default catalogue in the mode the
 * request asks for: a fenced JSON answer, or (a request with `tools`) the plan's tool calls and,
 * once they are answered, the summary as text. Every request is recorded (headers + parsed body),
 * and so is the largest number of requests in flight at once.
 *
 * Tools mode misbehaviours are built with `toolCallsCompletion` and `toolCall` (malformed or
 * non-object `arguments`, unknown tools, too many calls, empty rationales, parallel calls) and
 * `completion(text)` (a text-only answer).
 *
 *   const standIn = yield* makeLlmStandIn               // or: it.layer(LlmStandIn.layer) + yield* LlmStandIn
 *   yield* standIn.enqueue({ status: 500 }, { body: completion(planAnswer(defaultPlan)) })
 *   ... point LlmConfig at standIn.url (see llmConfigFor) ...
 *   expect((yield* standIn.requests)[0]?.headers.authorization).toBe("Bearer sk-test")
 */
import { createServer, type IncomingMessage, type ServerResponse } from "node:http"
import type { AddressInfo } from "node:net"
import { Context, Duration, Effect, Layer, Option, Redacted, type Scope } from "effect"
import { LlmConfig, type LlmConfigShape } from "../../src/services/AppConfig.js"

export interface StandInReply {
  /** Default 200. */
  readonly status?: number
  readonly headers?: Readonly<Record<string, string>>
  /** A string is sent as is; anything else as JSON. Default: a completion of `defaultPlan`. */
  readonly body?: unknown
  /** Wait this long (real time) before answering. */
  readonly delayMs?: number
  /** Never answer: the connection stays open until the client gives up or the stand-in closes. */
  readonly hang?: boolean
  /** Answer 200 with a valid completion JSON of about this many bytes, streamed in chunks (no Content-Length unless declareLength). */
  readonly hugeBodyBytes?: number
  readonly declareLength?: boolean
  /** Sent as these bytes, as they are (e.g. a gzip body with its Content-Encoding in `headers`). */
  readonly bytes?: Uint8Array
}

export interface RecordedRequest {
  /** 0-based arrival order. */
  readonly index: number
  readonly method: string
  readonly path: string
  readonly headers: Readonly<Record<string, string | undefined>>
  /** The parsed JSON body, or undefined when it was not JSON. */
  readonly body: unknown
  readonly receivedAt: number
  /** When the exchange ended (answered, or closed by either side). */
  readonly closedAt: number | undefined
  /** True when the connection closed before the reply was complete (client timeout, abort, cap). */
  readonly abortedByClient: boolean
}

/** A chat message as a recorded request carries it (tools mode adds tool_calls and tool_call_id). */
export interface SentMessage {
  readonly role: string
  readonly content: string
  readonly tool_calls?: ReadonlyArray<{ readonly id: string; readonly type: string; readonly function: { readonly name: string; readonly arguments: string } }>
  readonly tool_call_id?: string
}

/** The chat messages a recorded request sent ([] when its body had none). */
export const messagesOf = (request: RecordedRequest | undefined): ReadonlyArray<SentMessage> => {
  const body = request?.body
  return typeof body === "object" && body !== null && "messages" in body && Array.isArray(body.messages) ? body.messages : []
}

export type Responder = (request: RecordedRequest) => StandInReply

export interface LlmStandInShape {
  /** Base URL, for MANA_LLM_URL. */
  readonly url: string
  /** Replies for the next requests, in order; once used up, the responder answers. */
  readonly enqueue: (...replies: ReadonlyArray<StandInReply>) => Effect.Effect<void>
  /** Replaces the fallback responder (default: `defaultResponder`). */
  readonly setResponder: (responder: Responder) => Effect.Effect<void>
  readonly requests: Effect.Effect<ReadonlyArray<RecordedRequest>>
  readonly inFlight: Effect.Effect<number>
  readonly maxInFlight: Effect.Effect<number>
  /** Forgets the script, the recordings and the in-flight maximum; restores the default responder. */
  readonly reset: Effect.Effect<void>
}

// ---------------------------------------------------------------- answer builders

export interface StandInUsage {
  readonly prompt_tokens: number
  readonly completion_tokens: number
  readonly total_tokens?: number
}

/** An OpenAI chat-completion body whose first choice says `content`. */
export const completion = (content: string, usage?: StandInUsage) => ({
  id: "chatcmpl-standin",
  object: "chat.completion",
  choices: [{ index: 0, message: { role: "assistant", content }, finish_reason: "stop" }],
  ...(usage === undefined ? {} : { usage }),
})

/** A plan as the prompt asks for it: one fenced json block. */
export const planAnswer = (plan: unknown): string => `\`\`\`json\n${JSON.stringify(plan, null, 2)}\n\`\`\``

/** A valid plan for the default catalogue. */
export const defaultPlan = {
  summary: "Two small steps toward the objective",
  steps: [
    {
      summary: "Block time for the next step",
      toolName: "create_task",
      params: { title: "Work on the mission for 30 minutes", priority: "medium", dueDate: "2030-01-15" },
      rationale: "A concrete, time-boxed task keeps the mission moving.",
    },
    {
      summary: "Find a quiet place",
      toolName: "create_place",
      params: { name: "City library", category: "study" },
      rationale: "A regular place makes the habit easier to keep.",
    },
  ],
}

export const defaultUsage: StandInUsage = { prompt_tokens: 120, completion_tokens: 80, total_tokens: 200 }

// ---------------------------------------------------------------- tools mode

export interface StandInToolCall {
  readonly id: string
  readonly type: "function"
  readonly function: { readonly name: unknown; readonly arguments: unknown }
}

let callCounter = 0

/**
 * One tool call. `args`: an object is sent as its JSON text (as OpenAI does); a string is sent as is
 * (so malformed JSON, "[]" or "42" can be tried); `{ raw: x }` sends x itself (a non-string).
 */
export const toolCall = (name: unknown, args: unknown, id = `call_standin_${++callCounter}`): StandInToolCall => ({
  id,
  type: "function",
  function: {
    name,
    arguments:
      typeof args === "string" ? args : typeof args === "object" && args !== null && "raw" in args ? args.raw : JSON.stringify(args),
  },
})

/** An OpenAI chat-completion body whose first choice calls tools; `content` null unless given. */
export const toolCallsCompletion = (calls: ReadonlyArray<StandInToolCall>, content: string | null = null, usage?: StandInUsage) => ({
  id: "chatcmpl-standin",
  object: "chat.completion",
  choices: [{ index: 0, message: { role: "assistant", content, tool_calls: calls }, finish_reason: "tool_calls" }],
  ...(usage === undefined ? {} : { usage }),
})

interface JsonPlan {
  readonly summary: string
  readonly steps: ReadonlyArray<{ readonly toolName: string; readonly params: object; readonly rationale: string }>
}

/** A JSON-mode plan as the tool calls a tools-mode model would make (rationale among the arguments). */
export const planCalls = (plan: JsonPlan): ReadonlyArray<StandInToolCall> =>
  plan.steps.map((s) => toolCall(s.toolName, { ...s.params, rationale: s.rationale }))

/** Whether a recorded request offered tools (PLANNER_MODE=tools). */
export const offersTools = (request: RecordedRequest | undefined): boolean => {
  const body = request?.body
  return typeof body === "object" && body !== null && "tools" in body && Array.isArray(body.tools)
}

/** The tools a recorded request offered ([] in JSON mode). */
export const toolsOf = (request: RecordedRequest | undefined): ReadonlyArray<{ readonly type: string; readonly function: any }> => {
  const body = request?.body
  return typeof body === "object" && body !== null && "tools" in body && Array.isArray(body.tools) ? body.tools : []
}

/**
 * A responder that answers with `plan` in whichever mode the request asks for: JSON mode, one fenced
 * answer; tools mode, the plan's calls, then (once the last message answers a call) the summary as text.
 */
export const planResponder =
  (plan: JsonPlan, usage: StandInUsage | undefined = defaultUsage): Responder =>
  (request) => {
    if (!offersTools(request)) return { body: completion(planAnswer(plan), usage) }
    const last = messagesOf(request).at(-1)
    return last?.role === "tool"
      ? { body: completion(plan.summary, usage) }
      : { body: toolCallsCompletion(planCalls(plan), null, usage) }
  }

export const defaultResponder: Responder = planResponder(defaultPlan)

/** An LlmConfig pointing at the stand-in; tests override what they exercise. */
export const llmConfigFor = (
  standIn: Pick<LlmStandInShape, "url">,
  overrides: Partial<Omit<LlmConfigShape, "apiKey">> & { readonly apiKey?: string } = {},
) => {
  const { apiKey, ...rest } = overrides
  return Layer.succeed(LlmConfig, {
    url: Option.some(standIn.url),
    apiKey: apiKey === undefined ? Option.none() : Option.some(Redacted.make(apiKey)),
    model: "standin-model",
    temperature: 0.3,
    requestTimeout: Duration.seconds(10),
    repairAttempts: 1,
    toolsFile: Option.none(),
    plannerMode: "tools" as const,
    maxRounds: 3,
    ...rest,
  })
}

// ---------------------------------------------------------------- the server

const HUGE_CHUNK = 64 * 1024

const writeHuge = (res: ServerResponse, bytes: number, declareLength: boolean) => {
  const head = '{"choices":[{"message":{"role":"assistant","content":"'
  const tail = '"}}]}'
  const fill = Math.max(0, bytes - head.length - tail.length)
  res.writeHead(200, {
    "content-type": "application/json",
    ...(declareLength ? { "content-length": String(head.length + fill + tail.length) } : {}),
  })
  res.write(head)
  const chunk = "x".repeat(HUGE_CHUNK)
  let left = fill
  // Honour backpressure so a client that stops reading does not make the stand-in buffer 10 MB.
  const pump = () => {
    while (left > 0 && !res.destroyed) {
      const piece = left >= HUGE_CHUNK ? chunk : chunk.slice(0, left)
      left -= piece.length
      if (!res.write(piece)) {
        res.once("drain", pump)
        return
      }
    }
    if (!res.destroyed) res.end(tail)
  }
  pump()
}

export const makeLlmStandIn: Effect.Effect<LlmStandInShape, never, Scope.Scope> = Effect.gen(function* () {
  // Per-instance state, touched only from node's event loop callbacks and Effect.sync reads.
  let script: Array<StandInReply> = []
  let responder: Responder = defaultResponder
  let recorded: Array<RecordedRequest> = []
  let inFlight = 0
  let maxInFlight = 0
  const timers = new Set<ReturnType<typeof setTimeout>>()

  const reply = (res: ServerResponse, r: StandInReply, record: RecordedRequest) => {
    if (res.destroyed) return
    if (r.hugeBodyBytes !== undefined) return writeHuge(res, r.hugeBodyBytes, r.declareLength === true)
    if (r.bytes !== undefined) {
      res.writeHead(r.status ?? 200, { "content-type": "application/json", ...r.headers })
      res.end(Buffer.from(r.bytes))
      return
    }
    const raw = r.body === undefined ? defaultResponder(record).body : r.body
    const text = typeof raw === "string" ? raw : JSON.stringify(raw)
    res.writeHead(r.status ?? 200, { "content-type": "application/json", ...r.headers })
    res.end(text)
  }

  const handle = (req: IncomingMessage, res: ServerResponse) => {
    const list = recorded // a reset while this request runs must not let it write into the new list
    const index = list.length
    const receivedAt = Date.now()
    let record: RecordedRequest = {
      index,
      method: req.method ?? "",
      path: req.url ?? "",
      headers: { ...req.headers } as Record<string, string | undefined>,
      body: undefined,
      receivedAt,
      closedAt: undefined,
      abortedByClient: false,
    }
    list.push(record)
    const update = (patch: Partial<RecordedRequest>) => {
      record = { ...record, ...patch }
      list[index] = record
    }
    inFlight++
    maxInFlight = Math.max(maxInFlight, inFlight)
    res.on("close", () => {
      inFlight--
      update({ closedAt: Date.now(), abortedByClient: !res.writableFinished })
    })
    const chunks: Array<Buffer> = []
    req.on("data", (c: Buffer) => chunks.push(c))
    req.on("end", () => {
      let body: unknown
      try {
        body = JSON.parse(Buffer.concat(chunks).toString("utf8"))
      } catch {
        body = undefined
      }
      update({ body })
      const r = script.shift() ?? responder(record)
      if (r.hang === true) return
      if (r.delayMs !== undefined && r.delayMs > 0) {
        // A real server on real time: the client under test is what Effect's clock drives.
        const t = setTimeout(() => {
          timers.delete(t)
          reply(res, r, record)
        }, r.delayMs)
        timers.add(t)
        res.on("close", () => {
          clearTimeout(t)
          timers.delete(t)
        })
        return
      }
      reply(res, r, record)
    })
  }

  const server = yield* Effect.acquireRelease(
    Effect.async<ReturnType<typeof createServer>>((resume) => {
      const s = createServer(handle)
      s.listen(0, "127.0.0.1", () => resume(Effect.succeed(s)))
    }),
    (s) =>
      Effect.async<void>((resume) => {
        for (const t of timers) clearTimeout(t)
        s.close(() => resume(Effect.void))
        s.closeAllConnections()
      }),
  )
  const { port } = server.address() as AddressInfo

  return {
    url: `http://127.0.0.1:${port}`,
    enqueue: (...replies) =>
      Effect.sync(() => {
        script.push(...replies)
      }),
    setResponder: (r) =>
      Effect.sync(() => {
        responder = r
      }),
    requests: Effect.sync(() => [...recorded]),
    inFlight: Effect.sync(() => inFlight),
    maxInFlight: Effect.sync(() => maxInFlight),
    reset: Effect.sync(() => {
      script = []
      responder = defaultResponder
      recorded = []
      maxInFlight = inFlight
    }),
  }
})

export class LlmStandIn extends Context.Tag("test/LlmStandIn")<LlmStandIn, LlmStandInShape>() {
  static readonly layer = Layer.scoped(LlmStandIn, makeLlmStandIn)
}
