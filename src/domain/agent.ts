/**
 * Agents (SPEC §14): records `app_id 'ai'`, `table_name 'agents'`, replayed like missions. A mission's
 * `agentId` puts it under an agent's tool policy, persona, concurrency cap and daily token budget.
 * Pure: the decode, the policy, the persona text, the run decision and the AI actor identity.
 */
import * as Data from "effect/Data"
import * as Either from "effect/Either"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import { ENCRYPTED_PREFIX } from "./prompt.js"
import type { Tool } from "./tools.js"

export const AGENTS_APP_ID = "ai"
export const AGENTS_TABLE = "agents"

export const ToolPolicy = Schema.Literal("auto", "propose", "deny").annotations({
  message: () => ({ message: "must be auto, propose or deny", override: true }),
})
export type ToolPolicy = typeof ToolPolicy.Type

const PolicyMap = Schema.Record({ key: Schema.String, value: ToolPolicy })

const AgentPolicy = Schema.Struct({
  tools: PolicyMap,
  defaultsByModule: Schema.optional(PolicyMap),
  defaultForAi: ToolPolicy,
})
export type AgentPolicy = typeof AgentPolicy.Type

const AgentState = Schema.Literal("active", "paused", "archived").annotations({
  message: () => ({ message: "must be active, paused or archived", override: true }),
})
export type AgentState = typeof AgentState.Type

// A negative or fractional budget is a broken record, never "no budget": only absence (or null) means none.
// `override` on the outermost schema: one readable line per field, without the value.
const TokenBudget = Schema.NullOr(Schema.Number.pipe(Schema.int(), Schema.nonNegative())).annotations({
  message: () => ({ message: "must be a whole number ≥ 0 (absent means no budget)", override: true }),
})

const ConcurrencyCap = Schema.Number.pipe(Schema.int(), Schema.greaterThanOrEqualTo(1)).annotations({
  message: () => ({ message: "must be a whole number ≥ 1", override: true }),
})

const NullableText = Schema.optionalWith(
  Schema.NullOr(Schema.String).annotations({ message: () => ({ message: "must be text", override: true }) }),
  { exact: true },
)

/**
 * The replayed agent record. Unknown fields are kept (the index signature), so nothing the app adds
 * later is lost when a record passes through the runner.
 */
export const Agent = Schema.Struct(
  {
    id: Schema.String,
    name: Schema.String.annotations({ message: () => ({ message: "must be text", override: true }) }),
    state: AgentState,
    policy: AgentPolicy,
    maxTokensPerDay: Schema.optionalWith(TokenBudget, { exact: true }),
    maxConcurrentMissions: Schema.optionalWith(ConcurrencyCap, { default: () => 1, exact: true }),
    systemPrompt: NullableText,
    memory: NullableText,
    deletedAt: NullableText,
  },
  Schema.Record({ key: Schema.String, value: Schema.Unknown }),
)
export type Agent = typeof Agent.Type

/** An agent record that does not decode: only its missions are skipped, with this reason. */
export class AgentMalformed extends Data.TaggedError("AgentMalformed")<{
  readonly agentId: string
  /** Names the field(s), never their values: `maxTokensPerDay: must be a whole number ≥ 0 …`. */
  readonly reason: string
}> {
  override get message() {
    return `agent ${this.agentId} is malformed: ${this.reason}`
  }
}

const decodeAgentEither = Schema.decodeUnknownEither(Agent, { errors: "all" })

const reasonOf = (error: ParseResult.ParseError): string => {
  const issues = ParseResult.ArrayFormatter.formatErrorSync(error)
  // One line per field (a union reports each member); a missing key's message is Effect's "is missing".
  const byPath = new Map<string, string>()
  for (const i of issues) {
    const path = i.path.join(".")
    if (!byPath.has(path)) byPath.set(path, path === "" ? i.message : `${path}: ${i.message}`)
  }
  return [...byPath.values()].join("; ") || "not an agent record"
}

/** Decodes a replayed record (`{...data, id}`) into an Agent, or an AgentMalformed naming the fields. */
export const decodeAgent = (agentId: string, record: unknown): Either.Either<Agent, AgentMalformed> => {
  if (typeof record !== "object" || record === null || Array.isArray(record)) {
    return Either.left(new AgentMalformed({ agentId, reason: "the record is not an object" }))
  }
  return Either.mapLeft(decodeAgentEither({ ...record, id: agentId }), (e) => new AgentMalformed({ agentId, reason: reasonOf(e) }))
}

/** A deleted agent (replay removed it, or `deletedAt` is set) counts as absent: the legacy path. */
const isDeleted = (agent: Agent): boolean =>
  agent.deletedAt !== undefined && agent.deletedAt !== null && agent.deletedAt !== ""

// ---------------------------------------------------------------- which agent a mission runs under

export type AgentResolution =
  /** No agentId, or the agent does not exist or is deleted: no agent limits, the legacy actor. */
  | { readonly _tag: "Legacy" }
  | { readonly _tag: "Agent"; readonly agent: Agent }
  /** The agent's record does not decode: the mission is skipped with this reason. */
  | { readonly _tag: "Malformed"; readonly error: AgentMalformed }

/** The mission's `agentId` from its raw replayed record (Mission's schema does not carry it). */
export const missionAgentId = (missionRecord: unknown): string | undefined => {
  if (typeof missionRecord !== "object" || missionRecord === null) return undefined
  const id = (missionRecord as { readonly agentId?: unknown }).agentId
  return typeof id === "string" && id.trim() !== "" ? id : undefined
}

/**
 * `agentId`: the mission's; `agentRecord`: that agent's replayed record from the same user, or
 * undefined when there is none (never written, or deleted in the log).
 */
export const resolveAgent = (agentId: string | undefined, agentRecord: unknown): AgentResolution => {
  if (agentId === undefined || agentRecord === undefined || agentRecord === null) return { _tag: "Legacy" }
  const decoded = decodeAgent(agentId, agentRecord)
  if (Either.isLeft(decoded)) {
    // A deleted record need not decode: deletion wins over a broken shape.
    const deletedAt = (agentRecord as { readonly deletedAt?: unknown }).deletedAt
    if (typeof deletedAt === "string" && deletedAt !== "") return { _tag: "Legacy" }
    return { _tag: "Malformed", error: decoded.left }
  }
  return isDeleted(decoded.right) ? { _tag: "Legacy" } : { _tag: "Agent", agent: decoded.right }
}

// ---------------------------------------------------------------- tool policy

/** `tools[name] ?? defaultsByModule[module] ?? defaultForAi`. */
export const policyFor = (policy: AgentPolicy, tool: Pick<Tool, "name" | "module">): ToolPolicy =>
  (Object.hasOwn(policy.tools, tool.name) ? policy.tools[tool.name] : undefined) ??
  (policy.defaultsByModule !== undefined && Object.hasOwn(policy.defaultsByModule, tool.module)
    ? policy.defaultsByModule[tool.module]
    : undefined) ??
  policy.defaultForAi

/**
 * The catalogue offered for one mission: on the legacy path all of it; under an agent only the tools
 * its policy says `propose` for (`auto` runs on the device, `deny` never). Pass the result to the
 * prompt and to the parser alike, so a step naming a denied tool is rejected like an unknown tool.
 */
export const catalogueFor = (tools: ReadonlyArray<Tool>, agent: Agent | undefined): ReadonlyArray<Tool> =>
  agent === undefined ? tools : tools.filter((t) => policyFor(agent.policy, t) === "propose")

/** The names a parser may accept for this mission. */
export const allowedToolNames = (tools: ReadonlyArray<Tool>, agent: Agent | undefined): ReadonlySet<string> =>
  new Set(catalogueFor(tools, agent).map((t) => t.name))

// ---------------------------------------------------------------- persona

/** Longest persona/memory text put into the system message (characters). */
const PERSONA_MAX = 4000

const plainText = (value: string | null | undefined): string | undefined => {
  if (value === undefined || value === null) return undefined
  const trimmed = value.trim()
  // Ciphertext never reaches the LLM; without a grant (SPEC §15) it is simply left out.
  if (trimmed === "" || trimmed.startsWith(ENCRYPTED_PREFIX)) return undefined
  return trimmed.length > PERSONA_MAX ? `${trimmed.slice(0, PERSONA_MAX)}…` : trimmed
}

/**
 * The agent's part of the system message: its `systemPrompt` and `memory` when they are plain text.
 * undefined when there is nothing to add (legacy path, both absent, empty or encrypted).
 */
export const personaText = (agent: Agent | undefined): string | undefined => {
  if (agent === undefined) return undefined
  const prompt = plainText(agent.systemPrompt)
  const memory = plainText(agent.memory)
  const parts: Array<string> = []
  if (prompt !== undefined) parts.push(`You act as the agent "${agent.name}". Its instructions:\n${prompt}`)
  if (memory !== undefined) parts.push(`What the agent remembers:\n${memory}`)
  return parts.length === 0 ? undefined : parts.join("\n\n")
}

// ---------------------------------------------------------------- run decision and identity

/** The label values of mana_ai_agent_decisions_total{decision}. */
export type AgentDecision = "ran" | "skipped-paused" | "skipped-archived" | "skipped-budget"

/**
 * Whether a mission under this agent may run at all (the budget is checked separately, before each
 * LLM request). Archived wins over paused. The legacy path always runs.
 */
export const runDecision = (agent: Agent | undefined): Extract<AgentDecision, "ran" | "skipped-paused" | "skipped-archived"> => {
  if (agent === undefined) return "ran"
  if (agent.state === "archived") return "skipped-archived"
  if (agent.state === "paused") return "skipped-paused"
  return "ran"
}
