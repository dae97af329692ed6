/**
 * The budget protocol a run follows (SPEC §14), on the real stack: before each LLM request the
 * ledger's budgetCheck, then the real LlmClient against the HTTP stand-in, then the answer's usage
 * recorded. This is how the planner is to use the building blocks; the test measures the overshoot.
 */
import { FetchHttpClient } from "@effect/platform"
import { it } from "@effect/vitest"
import { Clock, Duration, Effect, Layer, Option } from "effect"
import { expect } from "vitest"
import { TokenBudgetConfig } from "../../src/services/AppConfig.js"
import { GlobalLlmPermits } from "../../src/services/GlobalLlmPermits.js"
import { LlmClient } from "../../src/services/LlmClient.js"
import { runMigrations } from "../../src/services/Migrations.js"
import { answerKey, TokenLedger } from "../../src/services/TokenLedger.js"
import { LlmStandIn, completion, llmConfigFor } from "../support/LlmStandIn.js"
import { RunnerSqlLive, TestDatabaseLive } from "../support/TestDatabase.js"

const USAGE = { prompt_tokens: 150, completion_tokens: 50 } // 200 tokens per answer

const Db = Layer.provideMerge(RunnerSqlLive(8), TestDatabaseLive)
const Env = Layer.mergeAll(
  Layer.provideMerge(TokenLedger.Default, Layer.merge(Layer.succeed(TokenBudgetConfig, TokenBudgetConfig.none), Layer.provideMerge(Layer.effectDiscard(runMigrations), Db))),
  LlmStandIn.layer,
)

const clientFor = Layer.unwrapEffect(
  Effect.map(LlmStandIn, (standIn) =>
    LlmClient.withOptions({ baseDelay: Duration.millis(50), maxDelay: Duration.millis(200) }).pipe(
      Layer.provide(
        Layer.mergeAll(llmConfigFor(standIn), Layer.effect(GlobalLlmPermits, GlobalLlmPermits.sized(16)), FetchHttpClient.layer),
      ),
    ),
  ),
)

/**
 * One run: up to `answers` LLM requests (the first answer, then repair turns), each after a budget
 * check; every answer's usage is recorded at once. Returns how many requests it made and why it stopped.
 */
const run = (userId: string, agent: { id: string; maxTokensPerDay: number }, runId: string, answers: number) =>
  Effect.gen(function* () {
    const ledger = yield* TokenLedger
    const llm = yield* LlmClient
    for (let i = 0; i < answers; i++) {
      const verdict = yield* ledger.budgetCheck({ userId, agent })
      if (verdict._tag === "Exhausted") return { requests: i, stopped: "skipped-budget" as const }
      const answer = yield* llm.complete([{ role: "user", content: `run ${runId} turn ${i}` }])
      const tokens = Option.match(answer.usage, { onNone: () => 0, onSome: (u) => u.totalTokens })
      yield* ledger.record(userId, [
        { userId, agentId: agent.id, missionId: `m-${runId}`, iterationId: `it-${runId}`, answerKey: answerKey(`it-${runId}`, runId, i), tokens, at: new Date(yield* Clock.currentTimeMillis) },
      ])
    }
    return { requests: answers, stopped: "done" as const }
  })

it.layer(Env, { timeout: 120_000 })("token budget around real LLM requests", (it) => {
  it.effect("a run stops before the repair turn once the budget is spent (overshoot below one answer)", () =>
    Effect.gen(function* () {
      const standIn = yield* LlmStandIn
      yield* standIn.setResponder(() => ({ body: completion("not json", USAGE) }))
      const before = (yield* standIn.requests).length
      // 300 tokens: the first answer (200) leaves it under, the second (400) is at/over, so no third.
      const result = yield* run("solo", { id: "agent-solo", maxTokensPerDay: 300 }, "r1", 3)
      expect(result).toEqual({ requests: 2, stopped: "skipped-budget" })
      expect((yield* standIn.requests).length - before).toBe(2)
      const spent = yield* Effect.flatMap(TokenLedger, (l) => l.spentInWindow({ _tag: "Agent", userId: "solo", agentId: "agent-solo" }))
      expect(spent).toBe(400)
    }).pipe(Effect.provide(clientFor)),
  )

  it.effect("concurrent runs of one agent overshoot its budget by at most one answer per run", () =>
    Effect.gen(function* () {
      const standIn = yield* LlmStandIn
      // Slow answers, so the concurrent runs' checks all pass before any usage lands: the worst case.
      yield* standIn.setResponder(() => ({ body: completion("ok", USAGE), delayMs: 150 }))
      const before = (yield* standIn.requests).length
      const agent = { id: "agent-busy", maxTokensPerDay: 1_000 }
      const concurrentRuns = 6
      const results = yield* Effect.all(
        Array.from({ length: concurrentRuns }, (_, i) => run("busy", agent, `c${i}`, 5)),
        { concurrency: "unbounded" },
      )
      const requests = results.reduce((n, r) => n + r.requests, 0)
      expect((yield* standIn.requests).length - before).toBe(requests)
      const spent = yield* Effect.flatMap(TokenLedger, (l) => l.spentInWindow({ _tag: "Agent", userId: "busy", agentId: agent.id }))
      // Every answer recorded once; each run stopped as skipped-budget once the window held ≥ 1000.
      expect(spent).toBe(requests * 200)
      expect(results.every((r) => r.stopped === "skipped-budget")).toBe(true)
      const overshoot = spent - agent.maxTokensPerDay
      expect(overshoot).toBeGreaterThanOrEqual(0)
      expect(overshoot).toBeLessThanOrEqual(concurrentRuns * 200)
      console.log(`budget overshoot: ${concurrentRuns} concurrent runs, limit ${agent.maxTokensPerDay}, spent ${spent} (${requests} answers), overshoot ${overshoot}`)
    }).pipe(Effect.provide(clientFor)),
  )
})
