import { Either, Schema } from "effect"
import { describe, expect, it } from "vitest"
import { type PlanDraft, parsePlan } from "../../src/domain/planParser.js"
import { type Tool, ToolCatalogFile, defaultTools } from "../../src/domain/tools.js"

const fenced = (value: unknown) => `\`\`\`json\n${JSON.stringify(value, null, 2)}\n\`\`\``

const step = (overrides: Record<string, unknown> = {}) => ({
  summary: "Draft the outline",
  toolName: "create_task",
  params: { title: "Draft the outline", priority: "high", dueDate: "2025-03-01" },
  rationale: "An outline makes the next writing session easy to start.",
  ...overrides,
})

const plan = (steps: ReadonlyArray<unknown>, summary: unknown = "Start writing") => ({ summary, steps })

const accepted = (text: string, tools: ReadonlyArray<Tool> = defaultTools): PlanDraft => {
  const result = parsePlan(text, tools)
  if (Either.isLeft(result)) throw new Error(`expected a plan, got: ${result.left.reason}`)
  return result.right
}

const rejected = (text: string, tools: ReadonlyArray<Tool> = defaultTools): string => {
  const result = parsePlan(text, tools)
  if (Either.isRight(result)) throw new Error(`expected a rejection, got a plan: ${JSON.stringify(result.right)}`)
  expect(result.left._tag).toBe("PlanParseError")
  return result.left.reason
}

describe("parsePlan accepts", () => {
  it("one fenced json block, prose around it ignored", () => {
    const draft = accepted(`Here you go:\n${fenced(plan([step()]))}\nGood luck!`)
    expect(draft).toEqual({
      summary: "Start writing",
      steps: [
        {
          summary: "Draft the outline",
          toolName: "create_task",
          params: { title: "Draft the outline", priority: "high", dueDate: "2025-03-01" },
          rationale: "An outline makes the next writing session easy to start.",
        },
      ],
    })
  })

  it("a bare JSON object", () => {
    const draft = accepted(`  ${JSON.stringify(plan([step(), step({ toolName: "complete_task", params: { taskId: "t-1" } })]))}\n`)
    expect(draft.steps.map((s) => s.toolName)).toEqual(["create_task", "complete_task"])
  })

  it("zero steps as an empty plan", () => {
    expect(accepted(fenced(plan([], "Nothing to do this time")))).toEqual({ summary: "Nothing to do this time", steps: [] })
  })

  it("five steps, every default tool, optional parameters left out", () => {
    const draft = accepted(
      fenced(
        plan([
          step({ params: { title: "Only a title" } }),
          step({ toolName: "complete_task", params: { taskId: "t-1" } }),
          step({ toolName: "create_event", params: { title: "Review", startIso: "2025-03-01T09:00:00+01:00", endIso: "2025-03-01T10:00:00Z" } }),
          step({ toolName: "create_place", params: { name: "Library", category: "study" } }),
          step({ toolName: "create_place", params: { name: "Gym" } }),
        ]),
      ),
    )
    expect(draft.steps).toHaveLength(5)
  })

  it("a fence without a language tag", () => {
    expect(accepted(`\`\`\`\n${JSON.stringify(plan([step()]))}\n\`\`\``).steps).toHaveLength(1)
  })
})

describe("parsePlan rejects, with a reason naming the problem", () => {
  const cases: ReadonlyArray<readonly [string, string, RegExp]> = [
    ["no JSON", "I think you should write more.", /no JSON/],
    ["invalid JSON", '```json\n{"summary": "x", "steps": [\n```', /not valid JSON/],
    ["two json blocks", `${fenced(plan([]))}\n${fenced(plan([]))}`, /2 json blocks/],
    ["a JSON value that is not an object", "```json\n[1, 2]\n```", /must be an object.*not array/],
    ["a missing summary", fenced({ steps: [] }), /summary is missing or not a string/],
    ["a summary that is not a string", fenced(plan([], 42)), /summary is missing or not a string/],
    ["steps not an array", fenced({ summary: "x", steps: { a: 1 } }), /steps must be an array, not object/],
    ["more than five steps", fenced(plan([step(), step(), step(), step(), step(), step()])), /6 steps; at most 5/],
    ["a tool outside the catalogue", fenced(plan([step({ toolName: "delete_everything" })])), /step 1: tool "delete_everything" is not in the catalogue/],
    ["an empty rationale", fenced(plan([step(), step({ rationale: "   " })])), /step 2 \(create_task\): rationale is missing or empty/],
    ["a missing rationale", fenced(plan([step({ rationale: undefined })])), /rationale is missing or empty/],
    ["a missing required parameter", fenced(plan([step({ params: { priority: "low" } })])), /required parameter "title" is missing/],
    ["a parameter of the wrong type", fenced(plan([step({ params: { title: 7 } })])), /parameter "title" must be of type string, not number/],
    ["null for an optional parameter", fenced(plan([step({ params: { title: "t", dueDate: null } })])), /parameter "dueDate" must be of type string, not null/],
    ["a parameter outside its enum", fenced(plan([step({ params: { title: "t", priority: "urgent" } })])), /parameter "priority" must be one of low, medium, high/],
    ["a date outside its format", fenced(plan([step({ params: { title: "t", dueDate: "01.03.2025" } })])), /parameter "dueDate" must be a calendar date YYYY-MM-DD/],
    ["an impossible calendar date", fenced(plan([step({ params: { title: "t", dueDate: "2025-02-30" } })])), /calendar date/],
    ["a date-time without a time", fenced(plan([step({ toolName: "create_event", params: { title: "t", startIso: "2025-03-01" } })])), /parameter "startIso" must be an ISO-8601 date-time/],
    ["an unknown parameter", fenced(plan([step({ params: { title: "t", assignee: "bob" } })])), /unknown parameter "assignee"/],
    ["params that are not an object", fenced(plan([step({ params: "title=t" })])), /params must be an object, not string/],
    ["an empty required string", fenced(plan([step({ params: { title: "  " } })])), /parameter "title" must not be empty/],
    ["a step that is not an object", fenced(plan(["create a task"])), /step 1 is not an object/],
    ["a NUL character in a parameter", fenced(plan([step({ params: { title: "a\u0000b" } })])), /answer\.steps\[0\]\.params\.title holds a NUL character/],
    ["an unpaired surrogate in a summary", fenced(plan([step({ summary: "a\ud800b" })])), /answer\.steps\[0\]\.summary holds .*unpaired surrogate/],
  ]
  for (const [name, text, reason] of cases) {
    it(name, () => expect(rejected(text)).toMatch(reason))
  }

  it("a pattern from the catalogue", () => {
    const tools = Schema.decodeUnknownSync(ToolCatalogFile)({
      tools: [{ name: "tag", module: "m", description: "d", params: [{ name: "code", type: "string", pattern: "^[A-Z]{3}$", description: "d" }] }],
    }).tools
    expect(accepted(fenced(plan([step({ toolName: "tag", params: { code: "ABC" } })])), tools).steps).toHaveLength(1)
    expect(rejected(fenced(plan([step({ toolName: "tag", params: { code: "abcd" } })])), tools)).toMatch(/must match the pattern/)
  })

  it("quotes no more than a short, printable piece of a name taken from the answer", () => {
    const reason = rejected(fenced(plan([step({ toolName: `${"x".repeat(500)}\u0000\nsecret` })])))
    expect(reason.length).toBeLessThan(200)
    expect(reason).not.toContain("secret")
    expect(reason).not.toContain("\u0000")
  })

  it("never repeats the answer's text in an invalid-JSON reason", () => {
    const reason = rejected('```json\n{"summary": "my private diary entry", oops}\n```')
    expect(reason).not.toContain("diary")
  })
})

describe("the default catalogue", () => {
  it("decodes as a TOOLS_FILE document", () => {
    expect(Schema.decodeUnknownSync(ToolCatalogFile)({ tools: defaultTools }).tools.map((t) => t.name)).toEqual([
      "create_task",
      "complete_task",
      "create_event",
      "create_place",
    ])
  })
})
