/**
 * Planner implementations (SPEC §4, §11). PlannerLive: prompt → LLM → strict parser, with up to
 * PLANNER_REPAIR_ATTEMPTS repair turns quoting the parser's reason. PlannerOffline: the deterministic
 * offline planner, for embedded mode without MANA_LLM_URL.
 */
import { Clock, Effect, Either, Layer, Metric, Option } from "effect"
import { OFFLINE_SUMMARY_PREFIX, offlinePlan } from "../domain/offlinePlanner.js"
import { parsePlan, validatePlan } from "../domain/planParser.js"
import { buildPrompt, repairMessages } from "../domain/prompt.js"
import { LlmConfig } from "./AppConfig.js"
import { LlmClient, type TokenUsage } from "./LlmClient.js"
import { parseFailuresTotal } from "./metrics.js"
import { PlanRejected, Planner, type PlannerInput, type PlannerResult } from "./Planner.js"
import { ToolCatalog } from "./ToolCatalog.js"

/** Needs LlmClient, ToolCatalog and LlmConfig. */
export const PlannerLive = Layer.effect(
  Planner,
  Effect.gen(function* () {
    const llm = yield* LlmClient
    const { tools } = yield* ToolCatalog
    const { repairAttempts } = yield* LlmConfig

    const plan = (input: PlannerInput) =>
      Effect.gen(function* () {
        const now = new Date(yield* Clock.currentTimeMillis)
        const prompt = buildPrompt({
          mission: input.mission,
          resolvedInputs: input.resolvedInputs,
          tools,
          now,
          ...(input.unavailableInputs === undefined ? {} : { unavailableInputs: input.unavailableInputs }),
        })
        const usage: Array<TokenUsage> = []
        let messages = prompt
        for (let rejected = 0; ; rejected++) {
          const answer = yield* llm.complete(messages)
          if (Option.isSome(answer.usage)) usage.push(answer.usage.value)
          const parsed = parsePlan(answer.content, tools)
          if (Either.isRight(parsed)) {
            return { plan: parsed.right, usage, planner: "llm", rejectedAnswers: rejected } satisfies PlannerResult
          }
          const { reason } = parsed.left
          yield* Metric.increment(parseFailuresTotal)
          yield* Effect.logWarning("planner answer rejected").pipe(
            Effect.annotateLogs({ missionId: input.mission.id, reason, answer: rejected + 1 }),
          )
          if (rejected >= repairAttempts) return yield* new PlanRejected({ reason, attempts: rejected + 1 })
          // Each repair turn builds on the original prompt and the latest answer only, so it stays small.
          messages = repairMessages(prompt, answer.content, reason)
        }
      }).pipe(Effect.withSpan("Planner.plan", { attributes: { "mission.id": input.mission.id } }))

    return Planner.of({ plan })
  }),
)

/** Needs ToolCatalog. Validates its own plan against the catalogue in force, so a TOOLS_FILE without create_task yields an empty plan, not an invalid one. */
export const PlannerOffline = Layer.effect(
  Planner,
  Effect.gen(function* () {
    const { tools } = yield* ToolCatalog
    const plan = (input: PlannerInput) =>
      Effect.sync((): PlannerResult => {
        // Its plan is written to the event log in clear: decrypted inputs (SPEC §15) must not reach it.
        const readable = input.resolvedInputs.filter((i) => i.confidential !== true)
        const draft = validatePlan(offlinePlan(input.mission, readable), tools).pipe(
          Either.getOrElse(() => ({
            summary: `${OFFLINE_SUMMARY_PREFIX} the tool catalogue has no tool this planner can use; nothing proposed.`,
            steps: [],
          })),
        )
        return { plan: draft, usage: [], planner: "offline", rejectedAnswers: 0 }
      }).pipe(Effect.withSpan("Planner.plan", { attributes: { "mission.id": input.mission.id, planner: "offline" } }))
    return Planner.of({ plan })
  }),
)
