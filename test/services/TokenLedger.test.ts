import { SqlClient } from "@effect/sql"
import { it } from "@effect/vitest"
import { Effect, Either, Exit, Layer, Option, Schedule, TestClock, TestServices } from "effect"
import { expect } from "vitest"
import { TokenBudgetConfig, type TokenBudgetConfigShape } from "../../src/services/AppConfig.js"
import { runMigrations } from "../../src/services/Migrations.js"
import { answerKey, BUDGET_WINDOW_MS, makeTokenLedger, TokenLedger, TokenUsagePruneLive, type UsageEntry } from "../../src/services/TokenLedger.js"
import { withUserScope } from "../../src/services/withUserScope.js"
import { RunnerSqlLive, TestDatabase, TestDatabaseLive } from "../support/TestDatabase.js"

const Db = Layer.provideMerge(RunnerSqlLive(4), TestDatabaseLive)
const L = Layer.provideMerge(Layer.effectDiscard(runMigrations), Db)

const HOUR = 60 * 60 * 1000
const T0 = Date.parse("2026-03-01T00:00:00.000Z")

let n = 0
const fresh = (prefix: string) => `${prefix}-${++n}-${Math.random().toString(36).slice(2, 8)}`

const ledgerWith = (budgets: Partial<TokenBudgetConfigShape> = {}) =>
  makeTokenLedger.pipe(Effect.provideService(TokenBudgetConfig, { ...TokenBudgetConfig.none, ...budgets }))

const entry = (user: string, overrides: Partial<UsageEntry> = {}): UsageEntry => ({
  userId: user,
  agentId: "agent-a",
  missionId: "mission-1",
  iterationId: "it-1",
  answerKey: answerKey("it-1", fresh("attempt"), 0),
  tokens: 100,
  at: new Date(T0),
  ...overrides,
})

/** Rows of the user as the database owner sees them (outside RLS). */
const ownerRows = (user: string) =>
  Effect.flatMap(TestDatabase, (db) =>
    Effect.promise(() =>
      db.ownerQuery("SELECT agent_id, mission_id, iteration_id, answer_key, tokens FROM mana_ai.token_usage WHERE user_id = $1 ORDER BY at, answer_key", [user]),
    ),
  )

/** Records `tokens` for the user at T0 + offset (Clock time). */
const spendAt = (user: string, offsetMs: number, tokens: number, overrides: Partial<UsageEntry> = {}) =>
  Effect.gen(function* () {
    const ledger = yield* ledgerWith()
    yield* ledger.record(user, [entry(user, { tokens, at: new Date(T0 + offsetMs), ...overrides })])
  })

it.layer(L, { timeout: 120_000 })("TokenLedger", (it) => {
  it.effect("recording the same answer twice counts it once, in both tables", () =>
    Effect.gen(function* () {
      yield* TestClock.setTime(T0 + HOUR)
      const user = fresh("u")
      const ledger = yield* ledgerWith()
      const answers = [entry(user, { tokens: 120 }), entry(user, { tokens: 80 })]
      expect(yield* ledger.record(user, answers)).toBe(200)
      // A retried write-back: the same answers again, and one new one.
      expect(yield* ledger.record(user, [...answers, entry(user, { tokens: 5 })])).toBe(5)
      expect(yield* ledger.spentInWindow({ _tag: "User", userId: user })).toBe(205)
      expect((yield* ownerRows(user)).map((r) => r.tokens).sort()).toEqual([120, 5, 80])
      const db = yield* TestDatabase
      const processRows = yield* Effect.promise(() =>
        db.ownerQuery("SELECT count(*)::int AS n, sum(tokens)::int AS t FROM mana_ai.token_usage_process WHERE at = $1", [new Date(T0)]),
      )
      // Other tests of this file also spend at T0; this one's three answers are among them exactly once.
      expect(Number(processRows[0]?.n)).toBeGreaterThanOrEqual(3)
    }),
  )

  it.effect("insert joins the caller's RLS-scoped transaction: a rollback leaves nothing, a commit records", () =>
    Effect.gen(function* () {
      yield* TestClock.setTime(T0 + HOUR)
      const user = fresh("u")
      const ledger = yield* ledgerWith()
      const rolledBack = yield* Effect.exit(
        withUserScope(user, () => Effect.zipRight(ledger.insert([entry(user, { tokens: 7 })]), Effect.fail("write-back failed" as const))),
      )
      expect(Exit.isFailure(rolledBack)).toBe(true)
      expect(yield* ownerRows(user)).toEqual([])
      const answer = entry(user, { tokens: 9, iterationId: "it-9", missionId: "m-9", agentId: null })
      expect(yield* withUserScope(user, () => ledger.insert([answer]))).toBe(9)
      expect(yield* ownerRows(user)).toEqual([
        { agent_id: null, mission_id: "m-9", iteration_id: "it-9", answer_key: answer.answerKey, tokens: 9 },
      ])
    }),
  )

  it.effect("RLS: no row for another user can be written or read in a user's scope, nor any outside one", () =>
    Effect.gen(function* () {
      yield* TestClock.setTime(T0 + HOUR)
      const [ann, bob] = [fresh("ann"), fresh("bob")]
      const ledger = yield* ledgerWith()
      yield* ledger.record(bob, [entry(bob, { tokens: 50 })])
      const forged = yield* Effect.either(withUserScope(ann, () => ledger.insert([entry(bob, { tokens: 1 })])))
      expect(Either.isLeft(forged)).toBe(true)
      const sql = yield* SqlClient.SqlClient
      const seenByAnn = yield* withUserScope(ann, () => sql`SELECT count(*)::int AS n FROM mana_ai.token_usage`)
      expect(seenByAnn).toEqual([{ n: 0 }])
      const seenOutside = yield* sql`SELECT count(*)::int AS n FROM mana_ai.token_usage`
      expect(seenOutside).toEqual([{ n: 0 }])
      expect(yield* ledger.spentInWindow({ _tag: "User", userId: ann })).toBe(0)
      expect(yield* ledger.spentInWindow({ _tag: "User", userId: bob })).toBe(50)
      const role = yield* sql<{ su: boolean; br: boolean }>`SELECT rolsuper AS su, rolbypassrls AS br FROM pg_roles WHERE rolname = current_user`
      expect(role).toEqual([{ su: false, br: false }])
    }),
  )

  it.effect("sums the last 24 h per agent, per user and process-wide; older rows leave the window", () =>
    Effect.gen(function* () {
      const [ann, bob] = [fresh("ann"), fresh("bob")]
      const base = 10 * 24 * HOUR // clear of the other tests' rows at T0
      yield* spendAt(ann, base, 100, { agentId: "writer" })
      yield* spendAt(ann, base + 2 * HOUR, 30, { agentId: "writer" })
      yield* spendAt(ann, base + 3 * HOUR, 7, { agentId: "reader" })
      yield* spendAt(ann, base + 4 * HOUR, 1, { agentId: null })
      yield* spendAt(bob, base + 5 * HOUR, 1000, { agentId: "writer" })
      const ledger = yield* ledgerWith()
      yield* TestClock.setTime(T0 + base + 6 * HOUR)
      expect(yield* ledger.spentInWindow({ _tag: "Agent", userId: ann, agentId: "writer" })).toBe(130)
      expect(yield* ledger.spentInWindow({ _tag: "Agent", userId: ann, agentId: "reader" })).toBe(7)
      expect(yield* ledger.spentInWindow({ _tag: "User", userId: ann })).toBe(138)
      expect(yield* ledger.spentInWindow({ _tag: "Process" })).toBe(1138)
      // 24 h after the first row it has left the window (the window is (now − 24 h, now]).
      yield* TestClock.setTime(T0 + base + BUDGET_WINDOW_MS)
      expect(yield* ledger.spentInWindow({ _tag: "Agent", userId: ann, agentId: "writer" })).toBe(30)
      expect(yield* ledger.spentInWindow({ _tag: "Process" })).toBe(1038)
      yield* TestClock.setTime(T0 + base + BUDGET_WINDOW_MS + 6 * HOUR)
      expect(yield* ledger.spentInWindow({ _tag: "Process" })).toBe(0)
    }),
  )

  it.effect("an agent budget: ok below it, exhausted at it, free again when enough of the window has passed", () =>
    Effect.gen(function* () {
      const user = fresh("u")
      const base = 20 * 24 * HOUR
      const agent = { id: "writer", maxTokensPerDay: 500 }
      // The user budget is lower but does not apply to a mission whose agent has a budget.
      const ledger = yield* ledgerWith({ userDailyTokens: Option.some(1) })
      yield* spendAt(user, base, 200, { agentId: "writer" })
      yield* spendAt(user, base + 1 * HOUR, 200, { agentId: "writer" })
      yield* TestClock.setTime(T0 + base + 2 * HOUR)
      expect(yield* ledger.budgetCheck({ userId: user, agent })).toEqual({ _tag: "Ok" })
      yield* spendAt(user, base + 2 * HOUR, 150, { agentId: "writer" })
      yield* TestClock.setTime(T0 + base + 3 * HOUR)
      // 550 ≥ 500. Dropping the first row (200) leaves 350 < 500: free when it leaves, at base + 24 h.
      const verdict = yield* ledger.budgetCheck({ userId: user, agent })
      expect(verdict).toEqual({
        _tag: "Exhausted",
        budget: "agent",
        spent: 550,
        limit: 500,
        freeAt: Option.some(new Date(T0 + base + BUDGET_WINDOW_MS)),
      })
      yield* TestClock.setTime(T0 + base + BUDGET_WINDOW_MS - 1)
      expect((yield* ledger.budgetCheck({ userId: user, agent }))._tag).toBe("Exhausted")
      yield* TestClock.setTime(T0 + base + BUDGET_WINDOW_MS)
      expect(yield* ledger.budgetCheck({ userId: user, agent })).toEqual({ _tag: "Ok" })
    }),
  )

  it.effect("free-again needs as many old rows to leave as it takes to get under the limit", () =>
    Effect.gen(function* () {
      const user = fresh("u")
      const base = 30 * 24 * HOUR
      const ledger = yield* ledgerWith()
      for (const [h, tokens] of [[0, 10], [1, 10], [2, 10], [3, 100]] as const) yield* spendAt(user, base + h * HOUR, tokens)
      yield* TestClock.setTime(T0 + base + 4 * HOUR)
      // 130 against 105: the rows at 0 h and 1 h must both leave (130 − 20 = 110 is still over; − 30 = 100 is under).
      const w = yield* ledger.window({ _tag: "Agent", userId: user, agentId: "agent-a" }, 105)
      expect(w).toEqual({ spent: 130, freeAt: Option.some(new Date(T0 + base + 2 * HOUR + BUDGET_WINDOW_MS)) })
    }),
  )

  it.effect("without an agent budget the user budget applies; a budget of 0 never frees by time", () =>
    Effect.gen(function* () {
      const user = fresh("u")
      const base = 40 * 24 * HOUR
      yield* spendAt(user, base, 300, { agentId: "free-agent" })
      yield* spendAt(user, base + HOUR, 300, { agentId: null })
      yield* TestClock.setTime(T0 + base + 2 * HOUR)
      const ledger = yield* ledgerWith({ userDailyTokens: Option.some(600) })
      for (const agent of [undefined, { id: "free-agent" }, { id: "free-agent", maxTokensPerDay: null }]) {
        const v = yield* ledger.budgetCheck({ userId: user, agent })
        expect(v).toEqual({ _tag: "Exhausted", budget: "user", spent: 600, limit: 600, freeAt: Option.some(new Date(T0 + base + BUDGET_WINDOW_MS)) })
      }
      expect(yield* ledger.budgetCheck({ userId: fresh("other"), agent: undefined })).toEqual({ _tag: "Ok" })
      const never = yield* ledger.budgetCheck({ userId: fresh("other"), agent: { id: "x", maxTokensPerDay: 0 } })
      expect(never).toEqual({ _tag: "Exhausted", budget: "agent", spent: 0, limit: 0, freeAt: Option.none() })
      // No budget at all: always ok.
      expect(yield* (yield* ledgerWith()).budgetCheck({ userId: user, agent: undefined })).toEqual({ _tag: "Ok" })
    }),
  )

  it.effect("the process budget counts every user's answers; the budget that frees last is named", () =>
    Effect.gen(function* () {
      const [ann, bob] = [fresh("ann"), fresh("bob")]
      const base = 50 * 24 * HOUR
      yield* spendAt(ann, base, 400)
      yield* spendAt(bob, base + HOUR, 400)
      yield* TestClock.setTime(T0 + base + 2 * HOUR)
      const ledger = yield* ledgerWith({ llmDailyTokens: Option.some(800) })
      expect(yield* ledger.budgetCheck({ userId: fresh("carol"), agent: undefined })).toEqual({
        _tag: "Exhausted",
        budget: "process",
        spent: 800,
        limit: 800,
        freeAt: Option.some(new Date(T0 + base + BUDGET_WINDOW_MS)),
      })
      // Ann's agent budget (frees at base + 24 h) and the process one: same instant, both spent.
      const both = yield* ledger.budgetCheck({ userId: ann, agent: { id: "agent-a", maxTokensPerDay: 100 } })
      expect(both._tag === "Exhausted" && both.freeAt).toEqual(Option.some(new Date(T0 + base + BUDGET_WINDOW_MS)))
      // A zero agent budget never frees by time, so it is the one named.
      const zero = yield* ledger.budgetCheck({ userId: ann, agent: { id: "agent-a", maxTokensPerDay: 0 } })
      expect(zero._tag === "Exhausted" && zero.budget).toBe("agent")
    }),
  )

  it.effect("prune deletes every user's rows older than 48 h and nothing newer", () =>
    Effect.gen(function* () {
      // Retention is enforced on the server's clock, so this test runs at the real time.
      const now = Date.now()
      yield* TestClock.setTime(now)
      const [ann, bob] = [fresh("ann"), fresh("bob")]
      const ledger = yield* ledgerWith()
      for (const user of [ann, bob]) {
        yield* ledger.record(user, [
          entry(user, { tokens: 1, at: new Date(now - 49 * HOUR) }),
          entry(user, { tokens: 2, at: new Date(now - 47 * HOUR) }),
          entry(user, { tokens: 3, at: new Date(now - HOUR) }),
        ])
      }
      const pruned = yield* ledger.prune
      expect(pruned.usage).toBeGreaterThanOrEqual(2)
      expect(pruned.process).toBeGreaterThanOrEqual(2)
      for (const user of [ann, bob]) expect((yield* ownerRows(user)).map((r) => r.tokens).sort()).toEqual([2, 3])
      const db = yield* TestDatabase
      const old = yield* Effect.promise(() =>
        db.ownerQuery("SELECT count(*)::int AS n FROM mana_ai.token_usage_process WHERE at < now() - interval '48 hours'"),
      )
      expect(old).toEqual([{ n: 0 }])
      const kept = yield* Effect.promise(() =>
        db.ownerQuery("SELECT count(*)::int AS n FROM mana_ai.token_usage_process WHERE at > $1", [new Date(now - 48 * HOUR)]),
      )
      expect(kept).toEqual([{ n: 4 }])
      // Inside a user's scope prune still deletes only expired rows (it clears the scope first).
      expect((yield* withUserScope(ann, () => ledger.prune)).usage).toBe(0)
      expect((yield* ownerRows(ann)).length).toBe(2)
    }),
  )
})

it.layer(L, { timeout: 120_000 })("TokenUsagePruneLive", (it) => {
  it.scoped("prunes at start and then every hour (TestClock), in the background", () =>
    Effect.gen(function* () {
      const user = fresh("u")
      const ledger = yield* ledgerWith()
      const now = Date.now()
      const expired = (tokens: number) => ledger.record(user, [entry(user, { tokens, at: new Date(now - 49 * HOUR) })])
      const count = Effect.map(ownerRows(user), (rows) => rows.length)
      // Real-time polling: the prune runs on its own fiber against a real database.
      const eventually = (n: number) =>
        TestServices.provideLive(
          Effect.repeat(count, { until: (c) => c === n, schedule: Schedule.spaced("20 millis").pipe(Schedule.upTo("10 seconds")) }),
        ).pipe(Effect.zipRight(count))
      yield* expired(1)
      yield* Layer.build(TokenUsagePruneLive.pipe(Layer.provide(Layer.succeed(TokenLedger, TokenLedger.make(ledger)))))
      expect(yield* eventually(0)).toBe(0)
      yield* expired(2)
      yield* TestClock.adjust("59 minutes")
      // Time for a (wrongly) woken prune to finish before looking.
      yield* TestServices.provideLive(Effect.sleep("300 millis"))
      expect(yield* count).toBe(1)
      yield* TestClock.adjust("1 minute")
      expect(yield* eventually(0)).toBe(0)
    }),
  )
})
