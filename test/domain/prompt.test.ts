import { Either } from "effect"
import { describe, expect, it } from "vitest"
import type { Iteration, Mission } from "../../src/domain/mission.js"
import { OFFLINE_SUMMARY_PREFIX, offlinePlan } from "../../src/domain/offlinePlanner.js"
import { parsePlan } from "../../src/domain/planParser.js"
import { buildPrompt, repairMessages } from "../../src/domain/prompt.js"
import { defaultTools } from "../../src/domain/tools.js"

const iteration = (n: number, overrides: Partial<Iteration> = {}): Iteration => ({
  id: `it-${n}`,
  startedAt: `2025-01-0${n}T08:00:00.000Z`,
  plan: [
    {
      id: `it-${n}-0`,
      summary: `Proposal number ${n}`,
      intent: { kind: "toolCall", toolName: "create_task", params: { title: `Task ${n}` } },
      status: "planned",
    },
  ],
  summary: `Plan summary ${n}`,
  overallStatus: "awaiting-review",
  source: "server",
  ...overrides,
})

const mission = (overrides: Partial<Mission> = {}): Mission => ({
  id: "m-1",
  title: "Write a novel",
  objective: "Finish the first draft by summer",
  conceptMarkdown: "# Concept\nWrite **500 words** a day.",
  state: "active",
  nextRunAt: null,
  inputs: [],
  cadence: { kind: "daily", atHour: 8, atMinute: 0 },
  iterations: [],
  ...overrides,
})

const goal = { id: "g-1", module: "goals", table: "companionGoals", title: "Words written", content: "Progress: 12000 of 50000 words (24%) this month" }

const messages = (m: Mission, inputs = [goal]) => {
  const msgs = buildPrompt({ mission: m, resolvedInputs: inputs, tools: defaultTools })
  expect(msgs.map((x) => x.role)).toEqual(["system", "user"])
  return { system: msgs[0]?.content ?? "", user: msgs[1]?.content ?? "" }
}

describe("buildPrompt: the system message", () => {
  const { system } = messages(mission())

  it("states the planner's rules", () => {
    expect(system).toMatch(/You are the planner/)
    expect(system).toMatch(/Use only the tools listed/)
    expect(system).toMatch(/from 1 to 5 steps/)
    expect(system).toMatch(/rationale: one or two sentences the user will read/)
    expect(system).toMatch(/Steps are proposals: the user approves or rejects each one/)
    expect(system).toMatch(/feedback on earlier iterations/)
    expect(system).toMatch(/Never repeat a proposal the user rejected unchanged/)
    expect(system).toMatch(/exactly one fenced ```json block and no prose/)
  })

  it("renders every tool with each parameter's name, type, required flag, enum, format and description", () => {
    for (const t of defaultTools) expect(system).toContain(`- ${t.name} (module ${t.module}): ${t.description}`)
    expect(system).toContain("- title (string, required): Short title of the task.")
    expect(system).toContain('- priority (string, optional, one of: "low" | "medium" | "high"): How urgent the task is.')
    expect(system).toContain("- dueDate (string, optional, format YYYY-MM-DD): Due date as YYYY-MM-DD.")
    expect(system).toContain("- taskId (string, required): Id of the task to complete.")
    expect(system).toContain("- startIso (string, required, format ISO-8601 date-time with offset)")
    expect(system).toContain("- category (string, optional): Kind of place")
  })

  it("lists only the given catalogue", () => {
    const only = buildPrompt({ mission: mission(), resolvedInputs: [], tools: defaultTools.slice(3) })[0]?.content ?? ""
    expect(only).toContain("create_place")
    expect(only).not.toContain("create_task")
  })
})

describe("buildPrompt: the user message", () => {
  it("carries title, objective, concept and the resolved inputs", () => {
    const { user } = messages(mission())
    expect(user).toContain("Mission: Write a novel")
    expect(user).toContain("Objective: Finish the first draft by summer")
    expect(user).toContain("Write **500 words** a day.")
    expect(user).toContain("Words written (goals/companionGoals g-1)")
    expect(user).toContain("Progress: 12000 of 50000 words (24%) this month")
    expect(user).toContain("Earlier iterations: none")
  })

  it("says so when there are no inputs", () => {
    expect(messages(mission(), []).user).toMatch(/Resolved inputs:\n\(none\)/)
  })

  it("puts a mission field starting enc:1: in as [encrypted]", () => {
    const { user } = messages(
      mission({
        title: "enc:1:AAAAtitle",
        objective: "enc:1:BBBBobjective",
        conceptMarkdown: "enc:1:CCCCconcept",
        iterations: [iteration(1, { userFeedback: "enc:1:DDDDfeedback", summary: "enc:1:EEEE" })],
      }),
    )
    expect(user).toContain("Mission: [encrypted]")
    expect(user).toContain("Objective: [encrypted]")
    expect(user).toContain("Concept:\n[encrypted]")
    expect(user).toContain("User feedback: [encrypted]")
    expect(user).not.toMatch(/enc:1:/)
  })

  it("shows the last 3 iterations, each step's status and the user's feedback", () => {
    const iterations = [
      iteration(1, { userFeedback: "oldest feedback" }),
      iteration(2, {
        overallStatus: "rejected",
        userFeedback: "Too vague, give me a concrete chapter task",
        plan: [
          { id: "it-2-0", summary: "Write more", intent: { kind: "toolCall", toolName: "create_task", params: { title: "Write more" } }, status: "rejected" },
          { id: "it-2-1", summary: "Visit library", intent: { kind: "toolCall", toolName: "create_place", params: { name: "Library" } }, status: "approved" },
        ],
      }),
      iteration(3, { overallStatus: "failed", plan: [], summary: "LLM timed out" }),
      iteration(4, { userFeedback: "Looks good" }),
    ]
    const { user } = messages(mission({ iterations }))
    expect(user).toContain("the last 3 of 4")
    expect(user).not.toContain("Iteration 1 ")
    expect(user).not.toContain("oldest feedback")
    expect(user).toContain("Iteration 2 (started 2025-01-02T08:00:00.000Z): rejected")
    expect(user).toContain('1. [rejected] Write more — create_task {"title":"Write more"}')
    expect(user).toContain('2. [approved] Visit library — create_place {"name":"Library"}')
    expect(user).toContain("User feedback: Too vague, give me a concrete chapter task")
    expect(user).toContain("Iteration 3 (started 2025-01-03T08:00:00.000Z): failed\n  Summary: LLM timed out\n  Steps: none\n  User feedback: none")
    expect(user).toContain("User feedback: Looks good")
    expect(user.indexOf("Iteration 2")).toBeLessThan(user.indexOf("Iteration 4"))
  })

  it("is exactly this text for a mission with one input and no iterations (nothing of the moment in it)", () => {
    expect(messages(mission()).user).toBe(
      [
        "Mission: Write a novel",
        "Objective: Finish the first draft by summer",
        "",
        "Concept:",
        "# Concept",
        "Write **500 words** a day.",
        "",
        "Resolved inputs:",
        "- Words written (goals/companionGoals g-1)",
        "  Progress: 12000 of 50000 words (24%) this month",
        "",
        "Earlier iterations: none",
        "",
        "Propose the next steps for this mission.",
      ].join("\n"),
    )
  })
})

describe("repairMessages", () => {
  it("appends the rejected answer (truncated) and a turn quoting the parser's reason", () => {
    const base = buildPrompt({ mission: mission(), resolvedInputs: [], tools: defaultTools })
    const answer = "x".repeat(20_000)
    const repaired = repairMessages(base, answer, 'step 1: tool "delete_all" is not in the catalogue')
    expect(repaired.slice(0, 2)).toEqual(base)
    expect(repaired.map((m) => m.role)).toEqual(["system", "user", "assistant", "user"])
    expect(repaired[2]?.content.length).toBeLessThan(5_000)
    expect(repaired[3]?.content).toContain('Your answer was rejected: step 1: tool "delete_all" is not in the catalogue.')
    expect(repaired[3]?.content).toContain("exactly one fenced ```json block")
  })
})

describe("offlinePlan", () => {
  const parsedOk = (m: Mission, inputs = [goal]) => {
    const draft = offlinePlan(m, inputs)
    const reparsed = parsePlan(JSON.stringify(draft), defaultTools)
    expect(Either.getOrThrow(reparsed)).toEqual(draft)
    return draft
  }

  it("produces a valid 1–2 step plan for the default catalogue, labelled as offline", () => {
    const draft = parsedOk(mission())
    expect(draft.summary.startsWith(OFFLINE_SUMMARY_PREFIX)).toBe(true)
    expect(draft.steps).toHaveLength(2)
    expect(draft.steps[0]?.params).toMatchObject({ title: "Next step: Write a novel" })
    expect(draft.steps[1]?.params).toMatchObject({ title: "Review progress: Words written" })
    expect(parsedOk(mission(), []).steps).toHaveLength(1)
  })

  it("is exactly this plan for a mission with one goal (no clock, no randomness)", () => {
    expect(offlinePlan(mission(), [goal])).toEqual({
      summary: 'Offline planner: 2 tasks proposed for "Write a novel" (no language model configured).',
      steps: [
        {
          summary: "Next step: Write a novel",
          toolName: "create_task",
          params: { title: "Next step: Write a novel", priority: "medium", description: "Objective: Finish the first draft by summer" },
          rationale:
            "Without a language model configured, the offline planner proposes one concrete task toward the objective so the mission keeps moving; adjust it as you like.",
        },
        {
          summary: "Review progress: Words written",
          toolName: "create_task",
          params: { title: "Review progress: Words written", priority: "low", description: "Progress: 12000 of 50000 words (24%) this month" },
          rationale: "This input is linked to the mission; checking it keeps the next steps grounded in where things stand.",
        },
      ],
    })
  })

  it("quotes no ciphertext and stays valid with long or encrypted fields", () => {
    const draft = parsedOk(mission({ title: "enc:1:xyz", objective: "enc:1:abc" }), [{ ...goal, title: "y".repeat(1000), content: "enc:1:q" }])
    expect(JSON.stringify(draft)).not.toContain("enc:1:")
    expect(String(draft.steps[1]?.params.title).length).toBeLessThanOrEqual(120)
  })
})
