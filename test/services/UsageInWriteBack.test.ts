/**
 * SPEC §14, issue 12 item 5: every LLM answer's usage lands in mana_ai.token_usage exactly once, and
 * for a run that writes back, the answer(s) not yet recorded are inserted inside the write-back
 * transaction. On the real stack: the runner's pool reaches the test database through a TcpProxy
 * the test owns, the LLM is the HTTP stand-in, nothing is doubled.
 *
 * What is right when the write-back does not commit: the LLM spend happened either way, so the run
 * records those answers on its own afterwards (keyed per answer, ON CONFLICT DO NOTHING: a write-back
 * whose COMMIT landed but whose acknowledgement was lost is not counted twice). A re-run is a new
 * attempt with answers of its own, each counted once.
 */
import { layer } from "@effect/vitest"
import { Duration, Effect, Either, Layer, Option } from "effect"
import { expect } from "vitest"
import { MissionRunner } from "../../src/services/MissionRunner.js"
import { insertChange, missionData, runnerRows } from "../support/eventLogRows.js"
import { LlmStandIn, completion, defaultPlan, planAnswer } from "../support/LlmStandIn.js"
import { missionOf, runnerServices, snapshotOf } from "../support/RunnerStack.js"
import { TcpProxy } from "../support/TcpProxy.js"
import { TestDatabase } from "../support/TestDatabase.js"
import { ProxiedPool, ProxiedWorld } from "../support/ProxiedDatabase.js"

const REJECTED = { prompt_tokens: 150, completion_tokens: 50 } // 200 tokens
const ACCEPTED = { prompt_tokens: 250, completion_tokens: 50 } // 300 tokens

const Base = ProxiedWorld
// json: one request per answer, each with a scripted usage, so the tokens are counted exactly.
const stack = (tokenBudget?: { readonly userDailyTokens: Option.Option<number> }) =>
  runnerServices({
    sql: ProxiedPool,
    plannerMode: "json",
    repairAttempts: 1,
    missionTimeout: Duration.seconds(6),
    llmTimeout: "2 seconds",
    ...(tokenBudget === undefined ? {} : { tokenBudget }),
  }).pipe(Layer.provideMerge(Base))
const Stack = stack()
/** A user budget far from spent: every request of a run is checked against the window first. */
const BudgetedStack = stack({ userDailyTokens: Option.some(1_000_000_000) })

let n = 0
const fresh = (prefix: string) => `${prefix}-${++n}-${Math.random().toString(36).slice(2, 8)}`

const insertMission = (user: string) =>
  Effect.gen(function* () {
    const missionId = fresh("mission")
    yield* insertChange({ user, id: missionId, data: missionData({}) })
    return missionId
  })

interface UsageRow {
  readonly answer_key: string
  readonly tokens: number
  readonly tx: string
}

/** As the owner: the usage rows of one mission, with the transaction that wrote each (xmin). */
const usageRows = (user: string, missionId: string) =>
  Effect.flatMap(TestDatabase, (db) =>
    Effect.promise(
      async () =>
        (await db.ownerQuery(
          `SELECT answer_key, tokens::int AS tokens, xmin::text AS tx FROM mana_ai.token_usage
           WHERE user_id = $1 AND mission_id = $2 ORDER BY at, answer_key`,
          [user, missionId],
        )) as unknown as ReadonlyArray<UsageRow>,
    ),
  )

/** As the owner: the transaction that wrote the runner's row(s) of one mission. */
const iterationTx = (user: string, missionId: string) =>
  Effect.flatMap(TestDatabase, (db) =>
    Effect.promise(async () => {
      const rows = await db.ownerQuery(
        `SELECT xmin::text AS tx FROM sync_changes
         WHERE user_id = $1 AND app_id = 'ai' AND table_name = 'aiMissions' AND record_id = $2 AND client_id = 'mana-ai-runner'`,
        [user, missionId],
      )
      return rows.map((r) => String(r.tx))
    }),
  )

/** One run: a rejected answer (200 tokens), then an accepted one (300); its usage rows and the iteration's transaction. */
const rejectedThenAccepted = (prefix: string) =>
  Effect.gen(function* () {
    const standIn = yield* LlmStandIn
    yield* standIn.reset
    const user = fresh(prefix)
    const missionId = yield* insertMission(user)
    yield* standIn.enqueue(
      { body: completion("not a plan", REJECTED) },
      { body: completion(planAnswer(defaultPlan), ACCEPTED) },
    )
    const runner = yield* MissionRunner
    const outcome = yield* runner.run({ userId: user, mission: missionOf(yield* snapshotOf(user, missionId)) })
    expect(outcome).toMatchObject({ _tag: "Written", parseFailures: 1 })
    expect((yield* standIn.requests).length).toBe(2)

    const [written] = yield* iterationTx(user, missionId)
    const usage = yield* usageRows(user, missionId)
    expect(usage.map((u) => u.tokens)).toEqual([200, 300])
    return { usage, written }
  })

layer(Stack, { timeout: 120_000, excludeTestServices: true })("token usage and the write-back transaction", (it) => {
  it.effect("without a budget every answer's usage commits in the write-back's transaction, the rejected one too; each once", () =>
    Effect.gen(function* () {
      const { usage, written } = yield* rejectedThenAccepted("wb-tx")
      // No budget applies, so nothing read the window between the answers: both were inserted by the
      // transaction that appended the iteration (no transaction of their own).
      expect(usage[0]?.tx).toBe(written)
      expect(usage[1]?.tx).toBe(written)
      expect(new Set(usage.map((u) => u.answer_key)).size).toBe(2)
    }),
  )

  it.effect("a database outage between the last answer and the write-back: nothing written, the answer counted once (not lost); the re-run's answer once", () =>
    Effect.gen(function* () {
      const proxy = yield* TcpProxy
      const standIn = yield* LlmStandIn
      yield* standIn.reset
      const user = fresh("wb-fault")
      const missionId = yield* insertMission(user)
      const mission = missionOf(yield* snapshotOf(user, missionId))
      const runner = yield* MissionRunner

      // The database goes away the moment the answer is sent: the write-back cannot reach it.
      let served = 0
      yield* standIn.setResponder(() => {
        served++
        if (served === 1) Effect.runFork(proxy.outage({ mode: "refuse", forMs: 2_000 }))
        return { body: completion(planAnswer(defaultPlan), ACCEPTED) }
      })
      const first = yield* Effect.either(runner.run({ userId: user, mission }))
      expect(Either.isLeft(first), "the write-back failed").toBe(true)
      expect(yield* runnerRows(user, missionId)).toHaveLength(0)
      // Recorded on its own once the database was back: the spend happened.
      expect((yield* usageRows(user, missionId)).map((u) => u.tokens)).toEqual([300])

      // The mission stays due; the re-run asks again, writes once, and counts its own answer once.
      const second = yield* runner.run({ userId: user, mission })
      expect(second).toMatchObject({ _tag: "Written" })
      expect(served).toBe(2)
      expect(yield* runnerRows(user, missionId)).toHaveLength(1)
      const usage = yield* usageRows(user, missionId)
      expect(usage.map((u) => u.tokens)).toEqual([300, 300])
      expect(usage[1]?.tx).toBe((yield* iterationTx(user, missionId))[0])

      // Run again: already written, no request, nothing counted again.
      const third = yield* runner.run({ userId: user, mission })
      expect(third._tag).toBe("Skipped")
      expect(served).toBe(2)
      expect(yield* usageRows(user, missionId)).toHaveLength(2)
    }),
  )
})

layer(BudgetedStack, { timeout: 120_000, excludeTestServices: true })("token usage and the write-back transaction, with a budget", (it) => {
  it.effect("a rejected answer is recorded on its own before the repair turn's budget check; the accepted one in the write-back transaction", () =>
    Effect.gen(function* () {
      const { usage, written } = yield* rejectedThenAccepted("wb-budget")
      expect(usage[1]?.tx).toBe(written)
      // The budget check before the repair turn had to see the rejected answer: recorded on its own.
      expect(usage[0]?.tx).not.toBe(written)
      expect(new Set(usage.map((u) => u.answer_key)).size).toBe(2)
    }),
  )
})
