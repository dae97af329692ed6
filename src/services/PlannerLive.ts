/**
 * Planner implementations (SPEC §4, §11). PlannerLive: prompt → LLM → strict checks, in PLANNER_MODE
 * `tools` (native tool calls over up to PLANNER_MAX_ROUNDS rounds) or `json` (one fenced answer), with
 * up to PLANNER_REPAIR_ATTEMPTS repair turns carrying the parser's reason. PlannerOffline: the deterministic
 * offline planner, for embedded mode without MANA_LLM_URL.
 */
import type { SqlError } from "@effect/sql/SqlError"
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Ref from "effect/Ref"
import * as Schedule from "effect/Schedule"
import { OFFLINE_SUMMARY_PREFIX, offlinePlan } from "../domain/offlinePlanner.js"
import {
  MAX_PLAN_STEPS,
  type PlannedStep,
  type Rejection,
  checkSummaryText,
  parsePlan,
  validatePlan,
  validateToolCalls,
} from "../domain/planParser.js"
import { catalogueFor, personaText } from "../domain/agent.js"
import { type PromptMessage, buildPrompt, recordedRound, repairMessages, toolRepairRound } from "../domain/prompt.js"
import { type Tool, functionTools } from "../domain/tools.js"
import { LlmConfig, TokenBudgetConfig } from "./AppConfig.js"
import { type ChatMessage, type CompleteOptions, type FunctionTool, LlmClient, type TokenUsage } from "./LlmClient.js"
import { parseFailuresTotal, planRejectionsTotal, plannerRounds } from "./metrics.js"
import { BudgetExhausted, PlanRejected, Planner, type PlannerInput, type PlannerResult } from "./Planner.js"
import { TokenLedger, type UsageEntry, answerKey } from "./TokenLedger.js"
import { ToolCatalog } from "./ToolCatalog.js"
import { withSpanWhenTracing } from "./tracing.js"

/**
 * A dropped connection under the ledger's read or write must not cost the run (nor the answer already
 * paid for): a few quick retries, inside the run's deadline. Safe: the check only reads, and the
 * record is keyed by the answer (a commit whose acknowledgement was lost is not counted twice).
 */
const ledgerRetry = Schedule.exponential("50 millis").pipe(Schedule.intersect(Schedule.recurs(4)))

/** The agent's persona (plain text only, SPEC §14) appended to the system message. */
const withPersona = (prompt: ReadonlyArray<PromptMessage>, persona: string | undefined): ReadonlyArray<PromptMessage> =>
  persona === undefined
    ? prompt
    : prompt.map((m, i) => (i === 0 && m.role === "system" ? { ...m, content: `${m.content}\n\n${persona}` } : m))

/** Needs LlmClient, ToolCatalog and LlmConfig; with a TokenLedger, runs with a `run` context are budgeted. */
export const PlannerLive = Layer.effect(
  Planner,
  Effect.gen(function* () {
    const llm = yield* LlmClient
    const { tools: allTools } = yield* ToolCatalog
    const { repairAttempts, plannerMode, maxRounds } = yield* LlmConfig
    const ledger = yield* Effect.serviceOption(TokenLedger)
    const budgets = yield* Effect.serviceOption(TokenBudgetConfig)
    // The same catalogue (no agent, or an agent's filtered copy) is offered as the same array every
    // time, built once: the LLM client then serialises it once too (issue 16).
    const offeredTools = new WeakMap<ReadonlyArray<Tool>, ReadonlyArray<FunctionTool>>()
    const offeredFor = (tools: ReadonlyArray<Tool>): ReadonlyArray<FunctionTool> => {
      let offered = offeredTools.get(tools)
      if (offered === undefined) {
        offered = functionTools(tools)
        offeredTools.set(tools, offered)
      }
      return offered
    }

    /** Whether any budget applies to this run (unknown configuration: assume so). */
    const budgeted = (input: PlannerInput): boolean =>
      (input.agent?.maxTokensPerDay !== undefined && input.agent.maxTokensPerDay !== null) ||
      Option.match(budgets, {
        onNone: () => true,
        onSome: (b) => Option.isSome(b.userDailyTokens) || Option.isSome(b.llmDailyTokens),
      })

    /** Usage records of one run still being written (they run beside the next LLM request). */
    type Pending = Array<Fiber.RuntimeFiber<number, SqlError>>
    const joinAll = (pending: Pending) => Effect.suspend(() => Effect.forEach(pending.splice(0), Fiber.join, { discard: true }))
    const awaitAll = (pending: Pending) => Effect.suspend(() => Effect.forEach(pending.splice(0), Fiber.await, { discard: true }))

    /**
     * Runs one plan with its usage records: every record has landed before the plan returns (a
     * failed record fails the run); on failure they are awaited; on interruption they finish alone.
     */
    const withUsage = <A, E>(body: (pending: Pending) => Effect.Effect<A, E>): Effect.Effect<A, E | SqlError> =>
      Effect.suspend(() => {
        const pending: Pending = []
        return body(pending).pipe(
          Effect.tap(() => joinAll(pending)),
          Effect.onError(() => awaitAll(pending)),
        )
      })

    /**
     * One LLM request of a run (SPEC §14): the budget checked before it (repair turns and tool rounds
     * alike), the answer's usage recorded under a key of its own, so a retried write-back or a re-run
     * cannot count it twice. `ordinal` counts the run's answers. With `run.heldUsage` the answer is
     * held for the write-back transaction (with a budget: until a next request follows it; without one:
     * with the run's other answers); otherwise (and once a next budgeted request follows) it is written
     * beside that request (a daemon fiber: it lands even if the run is
     * interrupted), awaited before the next budget check reads the window, so the check always sees it.
     */
    const ask = Effect.fnUntraced(function* (input: PlannerInput, pending: Pending, ordinal: number, messages: ReadonlyArray<ChatMessage>, options?: CompleteOptions) {
      const run = input.run
      if (run === undefined || Option.isNone(ledger)) return yield* llm.complete(messages, options)
      const record = (entries: ReadonlyArray<UsageEntry>) =>
        Effect.forkDaemon(ledger.value.record(run.userId, entries).pipe(Effect.retry(ledgerRetry)))
      const isBudgeted = budgeted(input)
      // The answer held back for the write-back is followed by this request: with a budget it is
      // recorded now, so the check below sees it. Without one nothing reads the window before the
      // write-back, so every answer of the run waits for the write-back transaction (a tools-mode
      // run saves a transaction of its own per answer).
      if (run.heldUsage !== undefined && isBudgeted) {
        const held = yield* Ref.getAndSet(run.heldUsage, [])
        if (held.length > 0) pending.push(yield* record(held))
      }
      const verdict = isBudgeted
        ? yield* Effect.zipRight(joinAll(pending), ledger.value.budgetCheck({ userId: run.userId, agent: input.agent }).pipe(Effect.retry(ledgerRetry)))
        : ({ _tag: "Ok" } as const)
      if (verdict._tag === "Exhausted") {
        return yield* new BudgetExhausted({
          budget: verdict.budget,
          spent: verdict.spent,
          limit: verdict.limit,
          ...Option.match(verdict.freeAt, { onNone: () => ({}), onSome: (d) => ({ freeAtMs: d.getTime() }) }),
        })
      }
      const answer = yield* llm.complete(messages, options)
      if (Option.isSome(answer.usage)) {
        const entry: UsageEntry = {
          userId: run.userId,
          agentId: input.agent?.id ?? null,
          missionId: input.mission.id,
          iterationId: run.iterationId,
          answerKey: answerKey(run.iterationId, run.attemptId, ordinal),
          tokens: answer.usage.value.totalTokens,
          at: new Date(yield* Clock.currentTimeMillis),
        }
        if (run.heldUsage !== undefined) yield* Ref.update(run.heldUsage, (held) => [...held, entry])
        else pending.push(yield* record([entry]))
      }
      return answer
    })

    /** Counts and logs one rejected answer; fails with PlanRejected once the repair turns are used up. */
    const rejectedAnswer = Effect.fnUntraced(function* (missionId: string, rejection: Rejection, rejected: number) {
      yield* Metric.increment(parseFailuresTotal)
      yield* Metric.increment(Metric.tagged(planRejectionsTotal, "kind", rejection.kind))
      yield* Effect.logWarning("planner answer rejected").pipe(
        Effect.annotateLogs({ missionId, kind: rejection.kind, reason: rejection.reason, answer: rejected + 1 }),
      )
      if (rejected >= repairAttempts) {
        return yield* new PlanRejected({ kind: rejection.kind, reason: rejection.reason, attempts: rejected + 1 })
      }
    })

    /** The run's first messages in `mode`: the prompt (SPEC §4) with the agent's persona (SPEC §14). */
    const promptFor = (
      input: PlannerInput,
      tools: ReturnType<typeof catalogueFor>,
      now: Date,
      mode: "json" | "tools",
    ) =>
      withPersona(
        buildPrompt({
          mission: input.mission,
          resolvedInputs: input.resolvedInputs,
          tools,
          now,
          mode,
          ...(input.unavailableInputs === undefined ? {} : { unavailableInputs: input.unavailableInputs }),
        }),
        personaText(input.agent),
      )

    const planJson = Effect.fnUntraced(function* (input: PlannerInput, now: Date, pending: Pending) {
      const tools = catalogueFor(allTools, input.agent)
      const prompt = promptFor(input, tools, now, "json")
      const usage: Array<TokenUsage> = []
      let messages = prompt
      for (let rejected = 0; ; rejected++) {
        const answer = yield* ask(input, pending, rejected, messages)
        if (Option.isSome(answer.usage)) usage.push(answer.usage.value)
        const parsed = parsePlan(answer.content, tools)
        if (Either.isRight(parsed)) {
          return { plan: parsed.right, usage, rejectedAnswers: rejected } satisfies PlannerResult
        }
        yield* rejectedAnswer(input.mission.id, parsed.left, rejected)
        // Each repair turn builds on the original prompt and the latest answer only, so it stays small.
        messages = repairMessages(prompt, answer.content, parsed.left.reason)
      }
    })

    /**
     * Tools mode (SPEC §4): each round's calls become steps in order, each answered as recorded, until
     * an answer has no calls, the plan holds MAX_PLAN_STEPS, or PLANNER_MAX_ROUNDS rounds were asked.
     * A rejected answer is all-or-nothing and gets a repair turn that is not a round.
     */
    const planTools = Effect.fnUntraced(function* (input: PlannerInput, now: Date, pending: Pending) {
      const tools = catalogueFor(allTools, input.agent)
      const offered: ReadonlyArray<FunctionTool> = offeredFor(tools)
      let messages = promptFor(input, tools, now, "tools")
      const usage: Array<TokenUsage> = []
      let answers = 0
      const steps: Array<PlannedStep> = []
      let summary = ""
      let rejected = 0
      let rounds = 0
      while (rounds < maxRounds && steps.length < MAX_PLAN_STEPS) {
        const answer = yield* ask(input, pending, answers++, messages, { tools: offered })
        if (Option.isSome(answer.usage)) usage.push(answer.usage.value)
        const text = checkSummaryText(answer.content)
        const checked: Either.Either<ReadonlyArray<PlannedStep>, { rejection: Rejection; perCall: ReadonlyArray<string> }> =
          Either.isLeft(text)
            ? Either.left({ rejection: text.left, perCall: answer.toolCalls.map(() => text.left.reason) })
            : answer.toolCalls.length === 0 && text.right === "" && steps.length === 0
              ? Either.left({ rejection: { kind: "empty-answer", reason: "the answer holds neither tool calls nor text" }, perCall: [] })
              : validateToolCalls(answer.toolCalls, steps.length, tools)
        if (Either.isLeft(checked)) {
          yield* rejectedAnswer(input.mission.id, checked.left.rejection, rejected)
          rejected++
          messages = [
            ...messages,
            ...toolRepairRound(answer.content, answer.toolCalls, checked.left.perCall, checked.left.rejection.reason),
          ]
          continue
        }
        rounds++
        if (Either.isRight(text) && text.right !== "") summary = text.right
        if (answer.toolCalls.length === 0) {
          // Legitimate ("nothing to do"), but also what a model or proxy that ignores `tools` does.
          if (steps.length === 0) {
            yield* Effect.logWarning("planner answer has no tool calls: a plan with no steps").pipe(
              Effect.annotateLogs({ missionId: input.mission.id }),
            )
          }
          break
        }
        steps.push(...checked.right)
        messages = [...messages, ...recordedRound(answer.content, answer.toolCalls)]
      }
      yield* Metric.update(plannerRounds, rounds)
      const plan = {
        summary: summary !== "" ? summary : steps.length === 0 ? "Nothing to propose." : `${steps.length === 1 ? "One step" : `${steps.length} steps`} proposed.`,
        steps,
      }
      return { plan, usage, rejectedAnswers: rejected } satisfies PlannerResult
    })

    const plan = (input: PlannerInput) =>
      Effect.flatMap(Clock.currentTimeMillis, (ms) =>
        withUsage((pending) => (plannerMode === "tools" ? planTools(input, new Date(ms), pending) : planJson(input, new Date(ms), pending))),
      ).pipe(withSpanWhenTracing("Planner.plan", { attributes: { "mission.id": input.mission.id, "planner.mode": plannerMode } }))

    return Planner.of({ plan })
  }),
)

/** Needs ToolCatalog. Validates its own plan against the catalogue in force, so a TOOLS_FILE without create_task yields an empty plan, not an invalid one. */
export const PlannerOffline = Layer.effect(
  Planner,
  Effect.gen(function* () {
    const { tools: allTools } = yield* ToolCatalog
    const plan = (input: PlannerInput) =>
      Effect.sync((): PlannerResult => {
        const tools = catalogueFor(allTools, input.agent)
        // Its plan is written to the event log in clear: decrypted inputs (SPEC §15) must not reach it.
        const readable = input.resolvedInputs.filter((i) => i.confidential !== true)
        const draft = validatePlan(offlinePlan(input.mission, readable), tools).pipe(
          Either.getOrElse(() => ({
            summary: `${OFFLINE_SUMMARY_PREFIX} the tool catalogue has no tool this planner can use; nothing proposed.`,
            steps: [],
          })),
        )
        return { plan: draft, usage: [], rejectedAnswers: 0 }
      }).pipe(withSpanWhenTracing("Planner.plan", { attributes: { "mission.id": input.mission.id, planner: "offline" } }))
    return Planner.of({ plan })
  }),
)
