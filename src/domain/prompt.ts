/**
 * The planner prompt (SPEC §4): a system message with the rules and the tool catalogue, a user
 * message with the mission, its resolved inputs and the last iterations with the user's feedback.
 */
import type { Iteration, Mission } from "./mission.js"
import { MAX_PLAN_STEPS, RATIONALE_PARAM, type ToolCallLike } from "./planParser.js"
import type { Tool, ToolParam } from "./tools.js"

/** Structurally the LLM client's ChatMessage; declared here so the domain imports no service. */
export interface PromptMessage {
  readonly role: "system" | "user" | "assistant" | "tool"
  readonly content: string
  readonly toolCalls?: ReadonlyArray<ToolCallLike>
  readonly toolCallId?: string
}

/** Structurally the resolvers' ResolvedInput. */
export interface PromptInput {
  readonly id: string
  readonly module: string
  readonly table: string
  readonly title: string
  readonly content: string
}

export interface PromptRequest {
  readonly mission: Mission
  readonly resolvedInputs: ReadonlyArray<PromptInput>
  readonly tools: ReadonlyArray<Tool>
  /** When given, the user message states the current time so due dates can be sensible. */
  readonly now?: Date
  /** `tools`: the catalogue travels as OpenAI tools, so the system message asks for calls. Default `json`. */
  readonly mode?: "tools" | "json"
  /** Encrypted inputs this run could not read (SPEC §15): named, never shown. */
  readonly unavailableInputs?: ReadonlyArray<UnavailableInput>
}

/** Structurally the resolvers' UnavailableInput. */
export interface UnavailableInput {
  readonly id: string
  readonly module: string
  readonly table: string
  readonly reason: string
}

export const ENCRYPTED_PREFIX = "enc:1:"
export const ENCRYPTED_PLACEHOLDER = "[encrypted]"
const ITERATIONS_IN_PROMPT = 3

// Bounds keep one oversized field from crowding out the rest of the prompt.
const LIMITS = { title: 300, objective: 2_000, concept: 8_000, input: 2_000, feedback: 1_000, step: 300, params: 600, answer: 4_000 }

/** Ciphertext never reaches the LLM. */
export const shown = (value: string): string => (value.startsWith(ENCRYPTED_PREFIX) ? ENCRYPTED_PLACEHOLDER : value)

const clip = (value: string, max: number): string => (value.length > max ? `${value.slice(0, max)}… [truncated]` : value)

const text = (value: string, max: number): string => clip(shown(value), max)

const redactDeep = (value: unknown): unknown => {
  if (typeof value === "string") return shown(value)
  if (Array.isArray(value)) return value.map(redactDeep)
  if (typeof value === "object" && value !== null) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, redactDeep(v)]))
  }
  return value
}

const renderParam = (p: ToolParam): string => {
  const facts = [p.type, p.required === true ? "required" : "optional"]
  if (p.enum !== undefined) facts.push(`one of: ${p.enum.map((v) => JSON.stringify(v)).join(" | ")}`)
  if (p.format === "date") facts.push("format YYYY-MM-DD")
  if (p.format === "date-time") facts.push("format ISO-8601 date-time with offset")
  if (p.pattern !== undefined) facts.push(`matching /${p.pattern}/`)
  return `    - ${p.name} (${facts.join(", ")}): ${p.description}`
}

const renderCatalogue = (tools: ReadonlyArray<Tool>): string =>
  tools
    .map((t) => {
      const params = t.params.length === 0 ? ["    (no parameters)"] : t.params.map(renderParam)
      return [`- ${t.name} (module ${t.module}): ${t.description}`, "  parameters:", ...params].join("\n")
    })
    .join("\n")

const systemMessage = (tools: ReadonlyArray<Tool>): string =>
  [
    "You are the planner of a user's AI Mission: a long-lived goal the user keeps working on. You propose the next concrete steps that move the mission forward.",
    "",
    "Rules:",
    "- Use only the tools listed in the catalogue below, with only their listed parameters. Never invent a tool or a parameter.",
    `- Propose from 1 to ${MAX_PLAN_STEPS} steps.`,
    "- Every step carries a rationale: one or two sentences the user will read when deciding on the step.",
    "- Steps are proposals: the user approves or rejects each one before anything happens. Never claim that something was done.",
    "- Take the user's feedback on earlier iterations into account. Never repeat a proposal the user rejected unchanged.",
    "- Answer with exactly one fenced ```json block and no prose before or after it.",
    "",
    "Answer format:",
    "```json",
    '{"summary": "<one sentence: what this plan does>", "steps": [{"summary": "<short title of the step>", "toolName": "<a tool name from the catalogue>", "params": {"<parameter>": "<value>"}, "rationale": "<why this step helps, for the user>"}]}',
    "```",
    "",
    "Tool catalogue:",
    renderCatalogue(tools),
  ].join("\n")

/** The same text for every run: joined once. */
const TOOLS_SYSTEM_MESSAGE: string =
  [
    "You are the planner of a user's AI Mission: a long-lived goal the user keeps working on. You propose the next concrete steps that move the mission forward.",
    "",
    "Rules:",
    "- Propose each step by calling one of the tools you are given, with only its listed parameters. Never invent a tool or a parameter.",
    `- Propose from 1 to ${MAX_PLAN_STEPS} steps in all; one answer may hold several calls.`,
    `- Every call carries the parameter "${RATIONALE_PARAM}": one or two sentences the user will read when deciding on the step.`,
    "- Nothing is executed: each call is recorded as a proposal the user approves or rejects. Never claim that something was done.",
    "- Take the user's feedback on earlier iterations into account. Never repeat a proposal the user rejected unchanged.",
    "- When your proposals are complete, answer with one sentence that summarises the plan and no further tool calls.",
  ].join("\n")

const renderIteration = (it: Iteration, n: number): string => {
  const lines = [`Iteration ${n} (started ${it.startedAt}): ${it.overallStatus}`]
  if (it.summary !== undefined) lines.push(`  Summary: ${text(it.summary, LIMITS.step)}`)
  if (it.plan.length === 0) lines.push("  Steps: none")
  else {
    lines.push("  Steps:")
    for (const [i, step] of it.plan.entries()) {
      const intent =
        step.intent.kind === "toolCall"
          ? `${step.intent.toolName} ${clip(JSON.stringify(redactDeep(step.intent.params)), LIMITS.params)}`
          : `note: ${text(step.intent.body, LIMITS.step)}`
      lines.push(`  ${i + 1}. [${step.status}] ${text(step.summary, LIMITS.step)} — ${intent}`)
    }
  }
  lines.push(
    it.userFeedback === undefined || it.userFeedback.trim() === ""
      ? "  User feedback: none"
      : `  User feedback: ${text(it.userFeedback, LIMITS.feedback)}`,
  )
  return lines.join("\n")
}

const userMessage = (req: PromptRequest): string => {
  const { mission } = req
  const lines = [`Mission: ${text(mission.title, LIMITS.title)}`, `Objective: ${text(mission.objective, LIMITS.objective)}`]
  if (req.now !== undefined) lines.push(`Current time: ${req.now.toISOString()}`)
  if (mission.timezone !== undefined) lines.push(`User's time zone: ${mission.timezone}`)
  lines.push("", "Concept:", mission.conceptMarkdown.trim() === "" ? "(none)" : text(mission.conceptMarkdown, LIMITS.concept))
  lines.push("", "Resolved inputs:")
  if (req.resolvedInputs.length === 0) lines.push("(none)")
  for (const input of req.resolvedInputs) {
    lines.push(`- ${text(input.title, LIMITS.title)} (${input.module}/${input.table} ${input.id})`)
    lines.push(`  ${text(input.content, LIMITS.input).replace(/\n/g, "\n  ")}`)
  }
  const unavailable = req.unavailableInputs ?? []
  if (unavailable.length > 0) {
    lines.push("", "Unavailable inputs (encrypted; their content could not be read for this run, so do not guess it):")
    for (const u of unavailable) lines.push(`- ${u.module}/${u.table} ${u.id}: ${u.reason}`)
  }
  const total = mission.iterations.length
  const recent = mission.iterations.slice(-ITERATIONS_IN_PROMPT)
  lines.push("")
  if (recent.length === 0) lines.push("Earlier iterations: none")
  else {
    lines.push(`Earlier iterations (the last ${recent.length} of ${total}, oldest first):`)
    for (const [i, it] of recent.entries()) lines.push(renderIteration(it, total - recent.length + i + 1))
  }
  lines.push("", "Propose the next steps for this mission.")
  return lines.join("\n")
}

export const buildPrompt = (req: PromptRequest): ReadonlyArray<PromptMessage> => [
  { role: "system", content: req.mode === "tools" ? TOOLS_SYSTEM_MESSAGE : systemMessage(req.tools) },
  { role: "user", content: userMessage(req) },
]

/** What the runner answers each accepted tool call with (SPEC §4): nothing ran, the user reviews it. */
const RECORDED_RESULT = JSON.stringify({ success: true, message: "recorded; the user will review it" })

/** The assistant's turn as sent back: its text and its calls, long arguments cut short. */
const assistantTurn = (content: string, calls: ReadonlyArray<ToolCallLike>): PromptMessage => ({
  role: "assistant",
  content: clip(content, LIMITS.answer),
  toolCalls: calls.map((c) => ({
    id: c.id,
    name: typeof c.name === "string" ? clip(c.name, 100) : c.name,
    arguments: typeof c.arguments === "string" ? clip(c.arguments, LIMITS.answer) : c.arguments,
  })),
})

/** An accepted round: the answer, and each call answered as recorded. */
export const recordedRound = (content: string, calls: ReadonlyArray<ToolCallLike>): ReadonlyArray<PromptMessage> => [
  assistantTurn(content, calls),
  ...calls.map((c): PromptMessage => ({ role: "tool", toolCallId: c.id, content: RECORDED_RESULT })),
]

/**
 * The tools-mode repair turn: the rejected answer, and each of its calls answered by a `tool`
 * message carrying the parser's reason for it. An answer without calls gets a user turn instead.
 */
export const toolRepairRound = (
  content: string,
  calls: ReadonlyArray<ToolCallLike>,
  perCall: ReadonlyArray<string>,
  reason: string,
): ReadonlyArray<PromptMessage> =>
  calls.length === 0
    ? [
        { role: "assistant", content: clip(content, LIMITS.answer) },
        { role: "user", content: `Your answer was rejected: ${reason}. Propose the steps by calling the tools.` },
      ]
    : [
        assistantTurn(content, calls),
        ...calls.map(
          (c, i): PromptMessage => ({
            role: "tool",
            toolCallId: c.id,
            content: JSON.stringify({
              success: false,
              message: `rejected: ${perCall[i] ?? reason}. Nothing of this answer was recorded; call the tools again, using only their listed parameters and a non-empty ${RATIONALE_PARAM}.`,
            }),
          }),
        ),
      ]

/**
 * The repair turn: the original prompt, the rejected answer (truncated) as the assistant's turn, and
 * a user turn quoting the parser's reason.
 */
export const repairMessages = (
  previous: ReadonlyArray<PromptMessage>,
  answerText: string,
  reason: string,
): ReadonlyArray<PromptMessage> => [
  ...previous,
  { role: "assistant", content: clip(answerText, LIMITS.answer) },
  {
    role: "user",
    content: [
      `Your answer was rejected: ${reason}.`,
      "Answer again with exactly one fenced ```json block in the format above, using only the catalogue's tools and parameters, and no prose.",
    ].join("\n"),
  },
]
