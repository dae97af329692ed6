import { Either } from "effect"
import { describe, expect, it } from "vitest"
import {
  type Agent,
  allowedToolNames,
  catalogueFor,
  decodeAgent,
  missionAgentId,
  personaText,
  policyFor,
  resolveAgent,
  runDecision,
} from "../../src/domain/agent.js"
import { defaultTools } from "../../src/domain/tools.js"

/** An agent record as today's app writes it (fields from upstream's agents/types.ts). */
const record = (overrides: Record<string, unknown> = {}) => ({
  id: "agent-1",
  createdAt: "2026-04-20T10:00:00.000Z",
  updatedAt: "2026-04-20T10:00:00.000Z",
  name: "Researcher",
  role: "Finds sources",
  avatar: "🔎",
  policy: { tools: {}, defaultForAi: "propose" },
  maxConcurrentMissions: 2,
  state: "active",
  ...overrides,
})

const accepted = (raw: unknown): Agent => {
  const result = decodeAgent("agent-1", raw)
  if (Either.isLeft(result)) throw new Error(`expected an agent, got: ${result.left.reason}`)
  return result.right
}

const rejected = (raw: unknown): string => {
  const result = decodeAgent("agent-1", raw)
  if (Either.isRight(result)) throw new Error(`expected a rejection, got ${JSON.stringify(result.right)}`)
  expect(result.left._tag).toBe("AgentMalformed")
  expect(result.left.agentId).toBe("agent-1")
  return result.left.reason
}

describe("decodeAgent accepts", () => {
  it("today's record, keeping fields the runner does not know", () => {
    const agent = accepted(record({ scopeTagIds: ["t1"], defaultWritingStyleId: "s1" }))
    expect(agent.name).toBe("Researcher")
    expect(agent.maxConcurrentMissions).toBe(2)
    expect(agent.role).toBe("Finds sources")
    expect(agent.scopeTagIds).toEqual(["t1"])
    expect(agent.defaultWritingStyleId).toBe("s1")
  })

  it("maxConcurrentMissions absent: 1", () => {
    const { maxConcurrentMissions: _omit, ...rest } = record()
    expect(accepted(rest).maxConcurrentMissions).toBe(1)
  })

  it.each([
    ["absent", undefined, undefined],
    ["null (no budget)", null, null],
    ["0 (never runs)", 0, 0],
    ["a whole number", 50_000, 50_000],
  ])("maxTokensPerDay %s", (_name, value, expected) => {
    const raw = value === undefined ? record() : record({ maxTokensPerDay: value })
    expect(accepted(raw).maxTokensPerDay).toBe(expected)
  })

  it("the record id wins over data.id", () => {
    expect(accepted(record({ id: "something-else" })).id).toBe("agent-1")
  })
})

describe("decodeAgent rejects, naming the field", () => {
  it.each([
    ["a negative budget", { maxTokensPerDay: -1 }, /^maxTokensPerDay: must be a whole number ≥ 0/],
    ["a fractional budget", { maxTokensPerDay: 10.5 }, /^maxTokensPerDay: must be a whole number ≥ 0/],
    ["a budget as text", { maxTokensPerDay: "1000" }, /^maxTokensPerDay: /],
    ["a concurrency cap of 0", { maxConcurrentMissions: 0 }, /^maxConcurrentMissions: must be a whole number ≥ 1/],
    ["a fractional concurrency cap", { maxConcurrentMissions: 1.5 }, /^maxConcurrentMissions: /],
    ["an unknown state", { state: "sleeping" }, /^state: must be active, paused or archived/],
    ["a missing name", { name: undefined }, /^name: /],
    ["a missing policy", { policy: undefined }, /^policy: /],
    ["an unknown policy value", { policy: { tools: { create_task: "maybe" }, defaultForAi: "propose" } }, /^policy\.tools\.create_task: must be auto, propose or deny/],
    ["a missing defaultForAi", { policy: { tools: {} } }, /^policy\.defaultForAi: /],
    ["a bad module default", { policy: { tools: {}, defaultsByModule: { todo: 1 }, defaultForAi: "deny" } }, /^policy\.defaultsByModule\.todo: /],
  ])("%s", (_name, overrides, reason) => {
    const raw: Record<string, unknown> = record(overrides)
    for (const [k, v] of Object.entries(overrides)) if (v === undefined) delete raw[k]
    expect(rejected(raw)).toMatch(reason)
  })

  it("a record that is not an object", () => {
    expect(rejected("agent")).toBe("the record is not an object")
  })

  it("every wrong field at once", () => {
    const reason = rejected(record({ maxTokensPerDay: -5, state: "gone" }))
    expect(reason).toContain("maxTokensPerDay")
    expect(reason).toContain("state")
  })
})

describe("resolveAgent", () => {
  it.each([
    ["no agentId", undefined, record(), "Legacy"],
    ["an agent that does not exist", "agent-1", undefined, "Legacy"],
    ["a deleted agent", "agent-1", record({ deletedAt: "2026-04-21T00:00:00Z" }), "Legacy"],
    ["a deleted agent whose record is broken", "agent-1", record({ deletedAt: "2026-04-21T00:00:00Z", state: "?" }), "Legacy"],
    ["an active agent", "agent-1", record(), "Agent"],
    ["a paused agent (still resolved; runDecision skips it)", "agent-1", record({ state: "paused" }), "Agent"],
    ["an agent with a negative budget", "agent-1", record({ maxTokensPerDay: -1 }), "Malformed"],
  ])("%s → %s", (_name, agentId, raw, tag) => {
    expect(resolveAgent(agentId, raw)._tag).toBe(tag)
  })

  it("a malformed agent carries the reason", () => {
    const r = resolveAgent("agent-1", record({ maxTokensPerDay: 1.25 }))
    expect(r._tag === "Malformed" && r.error.reason).toMatch(/^maxTokensPerDay/)
  })

  it.each([
    [{ agentId: "a-7" }, "a-7"],
    [{ agentId: "" }, undefined],
    [{ agentId: 7 }, undefined],
    [{}, undefined],
    [null, undefined],
  ])("missionAgentId(%j) = %s", (mission, expected) => {
    expect(missionAgentId(mission)).toBe(expected)
  })
})

describe("policyFor: tools[name] ?? defaultsByModule[module] ?? defaultForAi", () => {
  const policy = {
    tools: { create_task: "deny", create_event: "propose" },
    defaultsByModule: { todo: "propose", calendar: "deny", places: "auto" },
    defaultForAi: "deny",
  } as const
  it.each([
    ["the tool's own entry wins over its module", { name: "create_task", module: "todo" }, "deny"],
    ["the tool's own entry wins over a denying module", { name: "create_event", module: "calendar" }, "propose"],
    ["the module default when the tool has none", { name: "complete_task", module: "todo" }, "propose"],
    ["auto from the module", { name: "create_place", module: "places" }, "auto"],
    ["defaultForAi when neither says", { name: "send_mail", module: "mail" }, "deny"],
    ["a tool named like an Object.prototype key falls through", { name: "toString", module: "mail" }, "deny"],
  ])("%s", (_name, tool, expected) => {
    expect(policyFor(policy, tool)).toBe(expected)
  })

  it("without defaultsByModule", () => {
    expect(policyFor({ tools: {}, defaultForAi: "propose" }, { name: "x", module: "todo" })).toBe("propose")
  })
})

describe("catalogueFor offers only propose tools", () => {
  it("the legacy path gets the whole catalogue", () => {
    expect(catalogueFor(defaultTools, undefined)).toEqual(defaultTools)
  })

  it("auto and deny are not offered; the parser's allowed names are the same set", () => {
    const agent = accepted(
      record({
        policy: { tools: { create_task: "auto", create_place: "propose" }, defaultsByModule: { calendar: "deny" }, defaultForAi: "propose" },
      }),
    )
    expect(catalogueFor(defaultTools, agent).map((t) => t.name)).toEqual(["complete_task", "create_place"])
    expect([...allowedToolNames(defaultTools, agent)].sort()).toEqual(["complete_task", "create_place"])
  })

  it("an agent that denies everything is offered nothing", () => {
    expect(catalogueFor(defaultTools, accepted(record({ policy: { tools: {}, defaultForAi: "deny" } })))).toEqual([])
  })
})

describe("personaText", () => {
  it.each([
    ["the legacy path", undefined, undefined],
    ["neither field", {}, undefined],
    ["both encrypted", { systemPrompt: "enc:1:AAAA.BBBB", memory: "enc:1:CCCC.DDDD" }, undefined],
    ["empty text", { systemPrompt: "   ", memory: "" }, undefined],
    ["null", { systemPrompt: null, memory: null }, undefined],
  ])("%s: nothing", (_name, overrides, expected) => {
    expect(personaText(overrides === undefined ? undefined : accepted(record(overrides)))).toBe(expected)
  })

  it("plain systemPrompt and memory both join", () => {
    const text = personaText(accepted(record({ systemPrompt: "Be brief.", memory: "Prefers mornings." })))
    expect(text).toBe(
      'You act as the agent "Researcher". Its instructions:\nBe brief.\n\nWhat the agent remembers:\nPrefers mornings.',
    )
  })

  it("a plain prompt joins while an encrypted memory stays out", () => {
    const text = personaText(accepted(record({ systemPrompt: "Be brief.", memory: "enc:1:SECRET.CIPHER" })))
    expect(text).toContain("Be brief.")
    expect(text).not.toContain("enc:1:")
    expect(text).not.toContain("remembers")
  })
})

describe("runDecision", () => {
  it.each([
    ["legacy", undefined, "ran"],
    ["active", "active", "ran"],
    ["paused", "paused", "skipped-paused"],
    ["archived", "archived", "skipped-archived"],
  ] as const)("%s → %s", (_name, state, expected) => {
    expect(runDecision(state === undefined ? undefined : accepted(record({ state })))).toBe(expected)
  })
})
