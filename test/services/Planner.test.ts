import { FetchHttpClient, FileSystem, Path } from "@effect/platform"
import { NodeContext } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Either, Layer, Metric, Option } from "effect"
import type { Mission } from "../../src/domain/mission.js"
import { OFFLINE_SUMMARY_PREFIX } from "../../src/domain/offlinePlanner.js"
import { type Tool, defaultTools } from "../../src/domain/tools.js"
import type { LlmConfigShape } from "../../src/services/AppConfig.js"
import { GlobalLlmPermits } from "../../src/services/GlobalLlmPermits.js"
import { llmClientLayer } from "../../src/services/LlmClientLive.js"
import { parseFailuresTotal } from "../../src/services/metrics.js"
import { Planner } from "../../src/services/Planner.js"
import { PlannerLive, PlannerOffline } from "../../src/services/PlannerLive.js"
import { ToolCatalog } from "../../src/services/ToolCatalog.js"
import { type LlmStandInShape, completion, defaultPlan, llmConfigFor, makeLlmStandIn, messagesOf, planAnswer } from "../support/LlmStandIn.js"

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
  const llmConfig = llmConfigFor(standIn, { requestTimeout: Duration.seconds(5), ...config })
  const client = llmClientLayer({ baseDelay: Duration.millis(50) }).pipe(
    Layer.provide(Layer.mergeAll(llmConfig, Layer.effect(GlobalLlmPermits, GlobalLlmPermits.make(2)), FetchHttpClient.layer)),
  )
  return PlannerLive.pipe(Layer.provide(Layer.mergeAll(client, catalogue, llmConfig)))
}

const plan = <E>(layer: Layer.Layer<Planner, E>) => Effect.flatMap(Planner, (p) => p.plan(input)).pipe(Effect.provide(layer))

const parseFailures = Effect.map(Metric.value(parseFailuresTotal), (s) => s.count)

const badAnswer = completion(
  planAnswer({ summary: "x", steps: [{ summary: "Go", toolName: "launch_rocket", params: {}, rationale: "Because." }] }),
  { prompt_tokens: 5, completion_tokens: 3 },
)

describe("PlannerLive", () => {
  it.scoped("a valid first answer becomes the plan, with its usage", () =>
    Effect.gen(function* () {
      const standIn = yield* makeLlmStandIn
      const result = yield* plan(plannerLayer(standIn))
      expect(result.planner).toBe("llm")
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
        Option.some(expect.objectContaining({ _tag: "PlanRejected", attempts: 2, reason: expect.stringMatching(/no JSON/) })),
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
      const catalogue = ToolCatalog.layer.pipe(Layer.provide(Layer.mergeAll(toolsFileConfig(file), NodeContext.layer)))
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
  Effect.provide(ToolCatalog, ToolCatalog.layer.pipe(Layer.provide(Layer.mergeAll(toolsFileConfig(file), NodeContext.layer))))

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
  broken("is not a catalogue", JSON.stringify([logHabit]), /is not a tool catalogue/)
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
      expect(a.planner).toBe("offline")
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
