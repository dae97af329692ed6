import { Either, Schema } from "effect"
import { describe, expect, it } from "vitest"
import {
  type PlanDraft,
  type RejectionKind,
  describeRejection,
  parsePlan,
  parseToolCall,
  validateToolCalls,
} from "../../src/domain/planParser.js"
import { type Tool, ToolCatalogFile, defaultTools, functionTools } from "../../src/domain/tools.js"

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

// ---------------------------------------------------------------- tools mode

const call = (name: unknown, args: unknown, id = "call_1") => ({ id, name, arguments: typeof args === "string" ? args : JSON.stringify(args) })
const taskArgs = { title: "Draft the outline", priority: "high", rationale: "An outline makes the next session easy to start." }

describe("parseToolCall (PLANNER_MODE=tools)", () => {
  it("turns a call into a step: rationale stripped from the arguments into the step's rationale", () => {
    const step = parseToolCall(call("create_task", taskArgs), 0, defaultTools)
    expect(step).toEqual(
      Either.right({
        summary: "create_task: Draft the outline",
        toolName: "create_task",
        params: { title: "Draft the outline", priority: "high" },
        rationale: "An outline makes the next session easy to start.",
      }),
    )
  })

  const cases: ReadonlyArray<readonly [string, { name: unknown; arguments: unknown }, RejectionKind, RegExp]> = [
    ["malformed JSON arguments", { name: "create_task", arguments: '{"title": "x", ' }, "invalid-arguments", /call 1 \(create_task\): arguments are not valid JSON/],
    ["arguments that are a JSON array", { name: "create_task", arguments: "[1, 2]" }, "invalid-arguments", /arguments must be a JSON object, not array/],
    ["arguments that are a JSON number", { name: "create_task", arguments: "42" }, "invalid-arguments", /arguments must be a JSON object, not number/],
    ["arguments that are JSON null", { name: "create_task", arguments: "null" }, "invalid-arguments", /arguments must be a JSON object, not null/],
    ["arguments sent as an object instead of a string", { name: "create_task", arguments: { title: "x" } }, "invalid-arguments", /arguments must be a string holding a JSON object, not object/],
    ["no arguments at all", { name: "create_task", arguments: undefined }, "invalid-arguments", /not undefined/],
    ["an unknown tool", { name: "delete_all_data", arguments: "{}" }, "unknown-tool", /tool "delete_all_data" is not in the catalogue \(create_task, complete_task, create_event, create_place\)/],
    ["a missing tool name", { name: undefined, arguments: "{}" }, "unknown-tool", /the tool name is missing/],
    ["an empty rationale", { name: "create_task", arguments: JSON.stringify({ ...taskArgs, rationale: "  " }) }, "empty-rationale", /rationale is missing or empty/],
    ["no rationale", { name: "create_place", arguments: JSON.stringify({ name: "Library" }) }, "empty-rationale", /rationale is missing or empty/],
    ["an unknown parameter", { name: "create_place", arguments: JSON.stringify({ name: "L", rationale: "r", latitude: 1 }) }, "unknown-parameter", /unknown parameter "latitude"/],
    ["a missing required parameter", { name: "create_event", arguments: JSON.stringify({ title: "T", rationale: "r" }) }, "missing-parameter", /required parameter "startIso" is missing/],
    ["a parameter of the wrong type", { name: "create_task", arguments: JSON.stringify({ title: 42, rationale: "r" }) }, "invalid-parameter", /parameter "title" must be of type string, not number/],
    ["a parameter outside its enum", { name: "create_task", arguments: JSON.stringify({ title: "T", priority: "urgent", rationale: "r" }) }, "invalid-parameter", /parameter "priority" must be one of low, medium, high/],
    ["a NUL character in a value", { name: "create_task", arguments: JSON.stringify({ title: "a\u0000b", rationale: "r" }) }, "unstorable-text", /NUL character/],
  ]
  for (const [name, c, kind, reason] of cases) {
    it(`rejects ${name} as ${kind}`, () => {
      const result = parseToolCall({ id: "call_1", ...c }, 0, defaultTools)
      expect(Either.isLeft(result) && result.left.kind).toBe(kind)
      expect(Either.isLeft(result) && result.left.reason).toMatch(reason)
    })
  }
})

describe("validateToolCalls", () => {
  it("keeps parallel calls in order", () => {
    const calls = [call("create_task", taskArgs, "a"), call("create_place", { name: "Library", rationale: "Quiet." }, "b")]
    const steps = validateToolCalls(calls, 0, defaultTools)
    expect(Either.map(steps, (s) => s.map((x) => x.toolName))).toEqual(Either.right(["create_task", "create_place"]))
  })

  it("rejects more than 5 steps in all, counting steps of earlier rounds, and answers every call with that reason", () => {
    const calls = [1, 2, 3].map((i) => call("create_task", taskArgs, `c${i}`))
    const result = validateToolCalls(calls, 3, defaultTools)
    expect(Either.isLeft(result) && result.left.rejection.kind).toBe("too-many-steps")
    expect(Either.isLeft(result) && result.left.perCall).toEqual([
      "the plan would have 6 steps; at most 5 are allowed in all (3 already recorded)",
      "the plan would have 6 steps; at most 5 are allowed in all (3 already recorded)",
      "the plan would have 6 steps; at most 5 are allowed in all (3 already recorded)",
    ])
    expect(Either.isRight(validateToolCalls(calls.slice(0, 2), 3, defaultTools))).toBe(true)
  })

  it("is all or nothing: one bad call rejects the answer; each call gets its own reason", () => {
    const result = validateToolCalls([call("create_task", taskArgs, "a"), call("launch_rocket", { rationale: "r" }, "b")], 0, defaultTools)
    expect(Either.isLeft(result) && result.left.rejection.kind).toBe("unknown-tool")
    expect(Either.isLeft(result) && result.left.perCall[0]).toMatch(/not recorded, because another call of this answer was rejected/)
    expect(Either.isLeft(result) && result.left.perCall[1]).toMatch(/call 2: tool "launch_rocket" is not in the catalogue/)
  })
})

describe("describeRejection", () => {
  it("names the kind of every rejection without quoting the answer", () => {
    expect(describeRejection("unknown-tool")).toBe("it named a tool outside the catalogue")
    expect(describeRejection("invalid-arguments")).toBe("a tool call's arguments were not a JSON object")
    expect(describeRejection("unknown-parameter")).toBe("a step used a parameter its tool does not have")
  })
})

describe("functionTools", () => {
  it("offers each tool as an OpenAI function with the added required rationale", () => {
    const place = functionTools(defaultTools).find((t) => t.function.name === "create_place")
    expect(place).toEqual({
      type: "function",
      function: {
        name: "create_place",
        description: "Save a place to the user's places.",
        parameters: {
          type: "object",
          properties: {
            name: { type: "string", description: "Name of the place." },
            category: { type: "string", description: "Kind of place, e.g. cafe, gym, office." },
            rationale: { type: "string", description: expect.stringContaining("the user reads") },
          },
          required: ["name", "rationale"],
          additionalProperties: false,
        },
      },
    })
    const task = functionTools(defaultTools).find((t) => t.function.name === "create_task")
    expect(task?.function.parameters.properties).toMatchObject({
      priority: { type: "string", enum: ["low", "medium", "high"] },
      dueDate: { type: "string", format: "date" },
    })
  })
})
