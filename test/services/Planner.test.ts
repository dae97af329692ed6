import { FetchHttpClient, FileSystem, Path } from "@effect/platform"
import { NodeContext } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Either, Layer, Metric, Option } from "effect"
import type { Mission } from "../../src/domain/mission.js"
import { OFFLINE_SUMMARY_PREFIX } from "../../src/domain/offlinePlanner.js"
import { type Tool, defaultTools } from "../../src/domain/tools.js"
import type { LlmConfigShape } from "../../src/services/AppConfig.js"
import { GlobalLlmPermits } from "../../src/services/GlobalLlmPermits.js"
import { LlmClient } from "../../src/services/LlmClient.js"
import { parseFailuresTotal } from "../../src/services/metrics.js"
import { Planner } from "../../src/services/Planner.js"
import { PlannerLive, PlannerOffline } from "../../src/services/PlannerLive.js"
import { ToolCatalog } from "../../src/services/ToolCatalog.js"
import {
  type LlmStandInShape,
  completion,
  defaultPlan,
  llmConfigFor,
  makeLlmStandIn,
  messagesOf,
  planAnswer,
  toolCall,
  toolCallsCompletion,
  toolsOf,
} from "../support/LlmStandIn.js"

const mission: Mission = {
  id: "m-42",
  title: "Learn Spanish",
  objective: "Hold a 10 minute conversation by June",
  conceptMarkdown: "Practise daily.",
  state: "active",
  nextRunAt: null,
  inputs: [],
  cadence: { kind: "daily", atHour: 7, atMinute: 30 },
  iterations: [],
}

const input = { mission, resolvedInputs: [] }

/** The real planner over the real LLM client, talking HTTP to the stand-in. */
const plannerLayer = <E = never>(
  standIn: LlmStandInShape,
  config: Partial<Omit<LlmConfigShape, "apiKey">> = {},
  catalogue: Layer.Layer<ToolCatalog, E> = ToolCatalog.builtin,
) => {
  const llmConfig = llmConfigFor(standIn, { requestTimeout: Duration.seconds(5), plannerMode: "json", ...config })
  const client = LlmClient.withOptions({ baseDelay: Duration.millis(50) }).pipe(
    Layer.provide(Layer.mergeAll(llmConfig, Layer.effect(GlobalLlmPermits, GlobalLlmPermits.sized(2)), FetchHttpClient.layer)),
  )
  return PlannerLive.pipe(Layer.provide(Layer.mergeAll(client, catalogue, llmConfig)))
}

const plan = <E>(layer: Layer.Layer<Planner, E>) => Effect.flatMap(Planner, (p) => p.plan(input)).pipe(Effect.provide(layer))

const parseFailures = Effect.map(Metric.value(parseFailuresTotal), (s) => s.count)

const badAnswer = completion(
  planAnswer({ summary: "x", steps: [{ summary: "Go", toolName: "launch_rocket", params: {}, rationale: "Because." }] }),
  { prompt_tokens: 5, completion_tokens: 3 },
)

describe("PlannerLive, PLANNER_MODE=json", () => {
  it.scoped("a valid first answer becomes the plan, with its usage", () =>
    Effect.gen(function* () {
      const standIn = yield* makeLlmStandIn
      const result = yield* plan(plannerLayer(standIn))
      expect(result.rejectedAnswers).toBe(0)
      expect(result.plan.summary).toBe(defaultPlan.summary)
      expect(result.plan.steps.map((s) => s.toolName)).toEqual(["create_task", "create_place"])
      expect(result.usage).toEqual([{ promptTokens: 120, completionTokens: 80, totalTokens: 200 }])
      const [req] = yield* standIn.requests
      const sent = messagesOf(req)
      expect(sent.map((m) => m.role)).toEqual(["system", "user"])
      expect(sent[0]?.content).toContain("- create_task (module todo)")
      expect(sent[1]?.content).toContain("Mission: Learn Spanish")
    }),
  )

  it.scoped("a rejected answer gets a repair turn quoting the parser's reason; the repaired answer is the plan", () =>
    Effect.gen(function* () {
      const standIn = yield* makeLlmStandIn
      const before = yield* parseFailures
      yield* standIn.enqueue({ body: badAnswer }, {})
      const result = yield* plan(plannerLayer(standIn))
      expect(result.rejectedAnswers).toBe(1)
      expect(result.plan.steps).toHaveLength(2)
      expect(result.usage).toHaveLength(2)
      expect((yield* parseFailures) - before).toBe(1)
      const reqs = yield* standIn.requests
      expect(reqs).toHaveLength(2)
      const repair = messagesOf(reqs[1])
      expect(repair.map((m) => m.role)).toEqual(["system", "user", "assistant", "user"])
      expect(repair[2]?.content).toContain("launch_rocket")
      expect(repair[3]?.content).toContain('Your answer was rejected: step 1: tool "launch_rocket" is not in the catalogue')
    }),
  )

  it.scoped("an answer still rejected after the repair turn is PlanRejected with the reason and the attempts", () =>
    Effect.gen(function* () {
      const standIn = yield* makeLlmStandIn
      const before = yield* parseFailures
      yield* standIn.enqueue({ body: badAnswer }, { body: completion("Sorry, I cannot help with that.") })
      const error = Either.getLeft(yield* Effect.either(plan(plannerLayer(standIn))))
      expect(error).toEqual(
        Option.some(expect.objectContaining({ _tag: "PlanRejected", kind: "no-json", attempts: 2, reason: expect.stringMatching(/no JSON/) })),
      )
      expect((yield* parseFailures) - before).toBe(2)
      expect(yield* standIn.requests).toHaveLength(2)
    }),
  )

  it.scoped("PLANNER_REPAIR_ATTEMPTS=0: the first rejection is final", () =>
    Effect.gen(function* () {
      const standIn = yield* makeLlmStandIn
      yield* standIn.enqueue({ body: badAnswer })
      const error = Either.getLeft(yield* Effect.either(plan(plannerLayer(standIn, { repairAttempts: 0 }))))
      expect(error.pipe(Option.map((e) => e._tag === "PlanRejected" && e.attempts))).toEqual(Option.some(1))
      expect(yield* standIn.requests).toHaveLength(1)
    }),
  )

  it.scoped("a permanent LLM error ends planning with that error", () =>
    Effect.gen(function* () {
      const standIn = yield* makeLlmStandIn
      yield* standIn.enqueue({ status: 401 })
      const error = Either.getLeft(yield* Effect.either(plan(plannerLayer(standIn))))
      expect(error.pipe(Option.map((e) => e._tag))).toEqual(Option.some("LlmHttpError"))
    }),
  )

  it.scoped("plans against the catalogue from TOOLS_FILE: the prompt lists only its tools and the parser allows only them", () =>
    Effect.gen(function* () {
      const standIn = yield* makeLlmStandIn
      const file = yield* writeToolsFile(JSON.stringify({ tools: [logHabit] }))
      const catalogue = ToolCatalog.Default.pipe(Layer.provide(Layer.mergeAll(toolsFileConfig(file), NodeContext.layer)))
      const layer = plannerLayer(standIn, {}, catalogue)
      yield* standIn.enqueue(
        {},
        {
          body: completion(
            planAnswer({ summary: "Track it", steps: [{ summary: "Log", toolName: "log_habit", params: { habit: "spanish", minutes: 15 }, rationale: "Tracking builds the habit." }] }),
          ),
        },
      )
      const result = yield* plan(layer)
      expect(result.rejectedAnswers).toBe(1)
      expect(result.plan.steps[0]?.params).toEqual({ habit: "spanish", minutes: 15 })
      const [first] = yield* standIn.requests
      const system = messagesOf(first)[0]?.content ?? ""
      expect(system).toContain("- log_habit (module habits): Log minutes spent on a habit.")
      expect(system).toContain("- minutes (number, required): Minutes spent.")
      expect(system).not.toContain("create_task")
    }).pipe(Effect.provide(NodeContext.layer)),
  )
})

// ---------------------------------------------------------------- tools mode

/** SPEC §4's answer to an accepted call, spelled out here rather than imported from the code under test. */
const RECORDED = '{"success":true,"message":"recorded; the user will review it"}'

const toolsLayer = <E = never>(
  standIn: LlmStandInShape,
  config: Partial<Omit<LlmConfigShape, "apiKey">> = {},
  catalogue: Layer.Layer<ToolCatalog, E> = ToolCatalog.builtin,
) => plannerLayer(standIn, { plannerMode: "tools", ...config }, catalogue)

const task = (title: string, rationale = `Because ${title} helps.`) => toolCall("create_task", { title, rationale })
const usage = { prompt_tokens: 10, completion_tokens: 5, total_tokens: 15 }

describe("PlannerLive, PLANNER_MODE=tools", () => {
  it.scoped("offers the catalogue as tools with tool_choice auto; calls become steps in order; the final text is the summary", () =>
    Effect.gen(function* () {
      const standIn = yield* makeLlmStandIn
      const result = yield* plan(toolsLayer(standIn))
      expect(result.rejectedAnswers).toBe(0)
      expect(result.plan).toEqual({
        summary: "Two small steps toward the objective",
        steps: [
          {
            summary: "create_task: Work on the mission for 30 minutes",
            toolName: "create_task",
            params: { title: "Work on the mission for 30 minutes", priority: "medium", dueDate: "2030-01-15" },
            rationale: "A concrete, time-boxed task keeps the mission moving.",
          },
          {
            summary: "create_place: City library",
            toolName: "create_place",
            params: { name: "City library", category: "study" },
            rationale: "A regular place makes the habit easier to keep.",
          },
        ],
      })
      expect(result.usage).toHaveLength(2)
      const [first, second] = yield* standIn.requests
      const body = first?.body as Record<string, unknown>
      expect(body.tool_choice).toBe("auto")
      expect(toolsOf(first).map((t) => t.function.name)).toEqual(["create_task", "complete_task", "create_event", "create_place"])
      for (const t of toolsOf(first)) {
        expect(t.type).toBe("function")
        expect(t.function.parameters.required).toContain("rationale")
        expect(t.function.parameters.properties.rationale.type).toBe("string")
      }
      const sent = messagesOf(first)
      expect(sent.map((m) => m.role)).toEqual(["system", "user"])
      expect(sent[0]?.content).toContain('Every call carries the parameter "rationale"')
      expect(sent[0]?.content).not.toContain("```json")
      // The second round: the answer echoed with its calls, each answered as recorded.
      const again = messagesOf(second)
      expect(again.map((m) => m.role)).toEqual(["system", "user", "assistant", "tool", "tool"])
      const calls = again[2]?.tool_calls ?? []
      expect(calls.map((c) => c.function.name)).toEqual(["create_task", "create_place"])
      expect(again.slice(3).map((m) => [m.tool_call_id, m.content])).toEqual(calls.map((c) => [c.id, RECORDED]))
      for (const m of again) expect(typeof m.content).toBe("string")
    }),
  )

  it.scoped("steps gathered over several rounds form one plan, in order", () =>
    Effect.gen(function* () {
      const standIn = yield* makeLlmStandIn
      yield* standIn.enqueue(
        { body: toolCallsCompletion([task("First")], "Starting.", usage) },
        { body: toolCallsCompletion([task("Second"), task("Third")], null, usage) },
        { body: completion("Three tasks to get going.", usage) },
      )
      const result = yield* plan(toolsLayer(standIn))
      expect(result.plan.summary).toBe("Three tasks to get going.")
      expect(result.plan.steps.map((s) => s.params.title)).toEqual(["First", "Second", "Third"])
      expect(result.usage).toHaveLength(3)
      expect(yield* standIn.requests).toHaveLength(3)
    }),
  )

  it.scoped("PLANNER_MAX_ROUNDS bounds the rounds: after the last one the runner stops asking", () =>
    Effect.gen(function* () {
      const standIn = yield* makeLlmStandIn
      let n = 0
      yield* standIn.setResponder(() => ({ body: toolCallsCompletion([task(`Task ${++n}`)]) }))
      const result = yield* plan(toolsLayer(standIn, { maxRounds: 2 }))
      expect(yield* standIn.requests).toHaveLength(2)
      expect(result.plan.steps.map((s) => s.params.title)).toEqual(["Task 1", "Task 2"])
      expect(result.plan.summary).toBe("2 steps proposed.")
    }),
  )

  it.scoped("once the plan holds 5 steps the runner asks no more", () =>
    Effect.gen(function* () {
      const standIn = yield* makeLlmStandIn
      yield* standIn.enqueue(
        { body: toolCallsCompletion([1, 2, 3].map((i) => task(`A${i}`))) },
        { body: toolCallsCompletion([1, 2].map((i) => task(`B${i}`)), "Five tasks.") },
      )
      const result = yield* plan(toolsLayer(standIn, { maxRounds: 5 }))
      expect(yield* standIn.requests).toHaveLength(2)
      expect(result.plan.steps).toHaveLength(5)
      expect(result.plan.summary).toBe("Five tasks.")
    }),
  )

  it.scoped("too many calls in all: the repair turn answers each call with the reason; nothing of that answer is kept", () =>
    Effect.gen(function* () {
      const standIn = yield* makeLlmStandIn
      yield* standIn.enqueue(
        { body: toolCallsCompletion([1, 2, 3].map((i) => task(`A${i}`))) },
        { body: toolCallsCompletion([1, 2, 3].map((i) => task(`B${i}`))) },
        { body: toolCallsCompletion([task("C1")]) },
        { body: completion("Done.") },
      )
      const result = yield* plan(toolsLayer(standIn, { maxRounds: 5 }))
      expect(result.rejectedAnswers).toBe(1)
      expect(result.plan.steps.map((s) => s.params.title)).toEqual(["A1", "A2", "A3", "C1"])
      const repair = messagesOf((yield* standIn.requests)[2])
      const toolAnswers = repair.slice(-3)
      expect(toolAnswers.map((m) => m.role)).toEqual(["tool", "tool", "tool"])
      for (const m of toolAnswers) {
        expect(JSON.parse(m.content)).toMatchObject({
          success: false,
          message: expect.stringContaining("rejected: the plan would have 6 steps; at most 5 are allowed in all (3 already recorded)"),
        })
      }
    }),
  )

  const misbehaviour = (name: string, bad: unknown, kind: string, reason: RegExp) =>
    it.scoped(`${name}: one repair turn answering each call with its reason, then PlanRejected (${kind}) naming no model text`, () =>
      Effect.gen(function* () {
        const standIn = yield* makeLlmStandIn
        const before = yield* parseFailures
        yield* standIn.enqueue({ body: bad }, { body: bad })
        const error = Either.getLeft(yield* Effect.either(plan(toolsLayer(standIn))))
        expect(error.pipe(Option.map((e) => e._tag === "PlanRejected" && [e.kind, e.attempts]))).toEqual(Option.some([kind, 2]))
        const message = error.pipe(Option.map((e) => e.message), Option.getOrElse(() => ""))
        expect(message).not.toMatch(/launch_rocket|secretParam/)
        expect((yield* parseFailures) - before).toBe(2)
        const requests = yield* standIn.requests
        expect(requests).toHaveLength(2)
        const repair = messagesOf(requests[1])
        const lastUser = repair.findLastIndex((m) => m.role === "assistant")
        const answers = repair.slice(lastUser + 1)
        expect(answers.length).toBeGreaterThan(0)
        expect(answers.some((m) => reason.test(m.content))).toBe(true)
      }),
    )
  misbehaviour("malformed arguments", toolCallsCompletion([toolCall("create_task", '{"title": "x", "rationale": ')]), "invalid-arguments", /arguments are not valid JSON/)
  misbehaviour("arguments that are not a JSON object", toolCallsCompletion([toolCall("create_task", '["title"]')]), "invalid-arguments", /arguments must be a JSON object, not array/)
  misbehaviour("an unknown tool", toolCallsCompletion([toolCall("launch_rocket", { rationale: "r" })]), "unknown-tool", /tool \\"launch_rocket\\" is not in the catalogue/)
  misbehaviour("an unknown parameter", toolCallsCompletion([toolCall("create_task", { title: "t", secretParam: 1, rationale: "r" })]), "unknown-parameter", /unknown parameter \\"secretParam\\"/)
  misbehaviour("an empty rationale", toolCallsCompletion([toolCall("create_task", { title: "t", rationale: "" })]), "empty-rationale", /rationale is missing or empty/)
  misbehaviour("too many calls", toolCallsCompletion([1, 2, 3, 4, 5, 6].map((i) => task(`T${i}`))), "too-many-steps", /the plan would have 6 steps/)
  misbehaviour("an empty answer", completion(""), "empty-answer", /neither tool calls nor text/)

  it.scoped("parallel calls with one bad one: the good ones are answered 'not recorded', the bad one with its reason; the repaired answer is the plan", () =>
    Effect.gen(function* () {
      const standIn = yield* makeLlmStandIn
      yield* standIn.enqueue(
        { body: toolCallsCompletion([task("Good", "Fine."), toolCall("create_place", { name: "Gym", rationale: "  " })]) },
        { body: toolCallsCompletion([task("Good", "Fine."), toolCall("create_place", { name: "Gym", rationale: "Close by." })]) },
        { body: completion("A task and a place.") },
      )
      const result = yield* plan(toolsLayer(standIn))
      expect(result.rejectedAnswers).toBe(1)
      expect(result.plan.steps.map((s) => [s.toolName, s.rationale])).toEqual([
        ["create_task", "Fine."],
        ["create_place", "Close by."],
      ])
      const repair = messagesOf((yield* standIn.requests)[1])
      const [good, bad] = repair.slice(-2).map((m) => JSON.parse(m.content).message as string)
      expect(good).toMatch(/not recorded, because another call of this answer was rejected/)
      expect(bad).toMatch(/call 2 \(create_place\): rationale is missing or empty/)
    }),
  )

  it.scoped("a text-only answer is a plan with no steps and that text as its summary", () =>
    Effect.gen(function* () {
      const standIn = yield* makeLlmStandIn
      yield* standIn.enqueue({ body: completion("Nothing to do until the user reports progress.", usage) })
      const result = yield* plan(toolsLayer(standIn))
      expect(result.plan).toEqual({ summary: "Nothing to do until the user reports progress.", steps: [] })
      expect(yield* standIn.requests).toHaveLength(1)
    }),
  )

  it.scoped("TOOLS_FILE in the app's shape: only its propose tools are offered, with their own parameter names", () =>
    Effect.gen(function* () {
      const standIn = yield* makeLlmStandIn
      const file = yield* writeToolsFile(JSON.stringify(appCatalogue))
      const catalogue = ToolCatalog.Default.pipe(Layer.provide(Layer.mergeAll(toolsFileConfig(file), NodeContext.layer)))
      yield* standIn.enqueue(
        {
          body: toolCallsCompletion([
            toolCall("create_event", { title: "Run", startTime: "2030-01-01T07:00:00Z", endTime: "2030-01-01T08:00:00Z", rationale: "Early." }),
          ]),
        },
        { body: completion("One run.") },
      )
      const result = yield* plan(toolsLayer(standIn, {}, catalogue))
      expect(result.plan.steps[0]?.params).toEqual({ title: "Run", startTime: "2030-01-01T07:00:00Z", endTime: "2030-01-01T08:00:00Z" })
      const [first] = yield* standIn.requests
      expect(toolsOf(first).map((t) => t.function.name)).toEqual(["create_event", "create_place"])
      expect(toolsOf(first)[1]?.function.parameters.required).toEqual(["name", "latitude", "longitude", "rationale"])
    }).pipe(Effect.provide(NodeContext.layer)),
  )
})

// ---------------------------------------------------------------- TOOLS_FILE

const logHabit: Tool = {
  name: "log_habit",
  module: "habits",
  description: "Log minutes spent on a habit.",
  params: [
    { name: "habit", type: "string", required: true, description: "Which habit." },
    { name: "minutes", type: "number", required: true, description: "Minutes spent." },
  ],
}

const writeToolsFile = (content: string) =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const dir = yield* fs.makeTempDirectoryScoped({ prefix: "tools-" })
    const file = path.join(dir, "tools.json")
    yield* fs.writeFileString(file, content)
    return file
  })

const toolsFileConfig = (file: string | undefined) =>
  llmConfigFor({ url: "http://127.0.0.1:1" }, { toolsFile: file === undefined ? Option.none() : Option.some(file) })

const loadCatalogue = (file: string | undefined) =>
  Effect.provide(ToolCatalog, ToolCatalog.Default.pipe(Layer.provide(Layer.mergeAll(toolsFileConfig(file), NodeContext.layer))))

const appParam = (name: string, type = "string", required = true, description = name) => ({ name, type, required, description })
const appTool = (name: string, defaultPolicy: string) => ({ name, module: "m", description: name, defaultPolicy, parameters: [] as Array<unknown> })

/** A slice of the app's own catalogue (shared-ai AI_TOOL_CATALOG): propose, auto and deny tools. */
const appCatalogue = [
  { name: "get_events", module: "calendar", description: "Termine lesen", defaultPolicy: "auto", parameters: [] },
  {
    name: "create_event",
    module: "calendar",
    description: "Termin anlegen",
    defaultPolicy: "propose",
    parameters: [
      { name: "title", type: "string", required: true, description: "Titel" },
      { name: "startTime", type: "string", required: true, description: "Beginn (ISO)" },
      { name: "endTime", type: "string", required: true, description: "Ende (ISO)" },
    ],
  },
  { name: "delete_all_events", module: "calendar", description: "Alles löschen", defaultPolicy: "deny", parameters: [] },
  {
    name: "create_place",
    module: "places",
    description: "Ort speichern",
    defaultPolicy: "propose",
    parameters: [
      { name: "name", type: "string", required: true, description: "Name" },
      { name: "latitude", type: "number", required: true, description: "Breite" },
      { name: "longitude", type: "number", required: true, description: "Länge" },
      { name: "kind", type: "string", required: false, description: "Art", enum: ["cafe", "gym"] },
    ],
  },
]

describe("ToolCatalog", () => {
  it.effect("without TOOLS_FILE it is the built-in catalogue", () =>
    Effect.gen(function* () {
      const catalogue = yield* loadCatalogue(undefined)
      expect(catalogue.source).toBe("builtin")
      expect(catalogue.tools).toEqual(defaultTools)
    }),
  )

  it.scoped("TOOLS_FILE replaces it", () =>
    Effect.gen(function* () {
      const file = yield* writeToolsFile(JSON.stringify({ tools: [logHabit] }, null, 2))
      const catalogue = yield* loadCatalogue(file)
      expect(catalogue.tools).toEqual([logHabit])
      expect(catalogue.source).toBe(file)
    }).pipe(Effect.provide(NodeContext.layer)),
  )

  const broken = (name: string, content: string | undefined, problem: RegExp) =>
    it.scoped(`a TOOLS_FILE that ${name} stops the start with an error naming TOOLS_FILE and the problem`, () =>
      Effect.gen(function* () {
        const file = content === undefined ? "/nonexistent/mana-ai/tools.json" : yield* writeToolsFile(content)
        const error = Either.getLeft(yield* Effect.either(loadCatalogue(file)))
        expect(error.pipe(Option.map((e) => e._tag))).toEqual(Option.some("ToolCatalogError"))
        const message = error.pipe(Option.map((e) => e.message), Option.getOrElse(() => ""))
        expect(message).toContain(`TOOLS_FILE (${file}):`)
        expect(message).toMatch(problem)
      }).pipe(Effect.provide(NodeContext.layer)),
    )
  broken("is missing", undefined, /cannot be read/)
  broken("is not JSON", "{ tools: [", /is not valid JSON/)
  broken("is an array of our tools (neither shape)", JSON.stringify([logHabit]), /is not an app tool catalogue: at \[0\]\.defaultPolicy: is missing/)
  broken("is neither shape", JSON.stringify({ catalogue: [logHabit] }), /is neither a tool catalogue \(\{"tools": \[\.\.\.\]\}\) nor an app tool catalogue/)
  broken("is a JSON string", JSON.stringify("tools"), /is neither a tool catalogue/)
  broken(
    "is the app's shape with an unknown policy",
    JSON.stringify([appTool("create_event", "propose"), { ...appTool("x", "propose"), defaultPolicy: "ask" }]),
    /is not an app tool catalogue: at \[1\]\.defaultPolicy: must be one of auto, propose, deny/,
  )
  broken(
    "is the app's shape with no propose tool",
    JSON.stringify([appTool("get_events", "auto"), appTool("delete_everything", "deny")]),
    /no tool with defaultPolicy "propose"/,
  )
  broken(
    "is the app's shape with a parameter listed twice in a propose tool",
    JSON.stringify([appTool("get_events", "auto"), { ...appTool("create_event", "propose"), parameters: [appParam("title"), appParam("title")] }]),
    /at \[1\]: tool "create_event" lists parameter "title" twice/,
  )
  broken(
    "offers a tool with a parameter named rationale",
    JSON.stringify({ tools: [{ ...logHabit, params: [{ name: "rationale", type: "string", description: "why" }] }] }),
    /tool "log_habit" has a parameter named "rationale", which the runner reserves/,
  )

  it.scoped("accepts the app's catalogue shape and keeps only its propose tools, in order", () =>
    Effect.gen(function* () {
      const file = yield* writeToolsFile(JSON.stringify(appCatalogue))
      const catalogue = yield* loadCatalogue(file)
      expect(catalogue.tools).toEqual([
        {
          name: "create_event",
          module: "calendar",
          description: "Termin anlegen",
          params: [
            { name: "title", type: "string", required: true, description: "Titel" },
            { name: "startTime", type: "string", required: true, description: "Beginn (ISO)" },
            { name: "endTime", type: "string", required: true, description: "Ende (ISO)" },
          ],
        },
        {
          name: "create_place",
          module: "places",
          description: "Ort speichern",
          params: [
            { name: "name", type: "string", required: true, description: "Name" },
            { name: "latitude", type: "number", required: true, description: "Breite" },
            { name: "longitude", type: "number", required: true, description: "Länge" },
            { name: "kind", type: "string", required: false, description: "Art", enum: ["cafe", "gym"] },
          ],
        },
      ])
    }).pipe(Effect.provide(NodeContext.layer)),
  )
  broken(
    "has a parameter of an unknown type",
    JSON.stringify({ tools: [{ ...logHabit, params: [{ name: "on", type: "date", description: "d" }] }] }),
    /at tools\[0\]\.params\[0\]\.type: must be one of string, number, boolean, object, array/,
  )
  broken("lists a tool twice", JSON.stringify({ tools: [logHabit, logHabit] }), /"log_habit" is listed twice/)
  broken("has an invalid pattern", JSON.stringify({ tools: [{ ...logHabit, params: [{ name: "x", type: "string", pattern: "([", description: "d" }] }] }), /params\[0\]\.pattern: is not a valid regular expression/)
  broken("has an unexpected key", JSON.stringify({ tools: [{ ...logHabit, handler: "rm -rf" }] }), /handler/)
})

describe("PlannerOffline", () => {
  it.effect("plans deterministically without any LLM, labelled as offline", () =>
    Effect.gen(function* () {
      const planner = yield* Planner
      const a = yield* planner.plan(input)
      expect(a.plan.summary).toBe('Offline planner: one task proposed for "Learn Spanish" (no language model configured).')
      expect(a.plan.summary.startsWith(OFFLINE_SUMMARY_PREFIX)).toBe(true)
      expect(a.plan.steps.map((s) => [s.toolName, s.params])).toEqual([
        ["create_task", { title: "Next step: Learn Spanish", priority: "medium", description: "Objective: Hold a 10 minute conversation by June" }],
      ])
      expect(a.usage).toEqual([])
      expect(a.rejectedAnswers).toBe(0)
    }).pipe(Effect.provide(PlannerOffline.pipe(Layer.provide(ToolCatalog.builtin)))),
  )

  it.effect("with a catalogue it cannot use, proposes nothing rather than an invalid plan", () =>
    Effect.gen(function* () {
      const result = yield* Effect.flatMap(Planner, (p) => p.plan(input))
      expect(result.plan.steps).toEqual([])
      expect(result.plan.summary.startsWith(OFFLINE_SUMMARY_PREFIX)).toBe(true)
    }).pipe(Effect.provide(PlannerOffline.pipe(Layer.provide(ToolCatalog.fromTools([logHabit]))))),
  )
})
