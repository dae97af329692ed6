/**
 * Token usage and budgets (SPEC §14): every LLM answer's usage lands once in `mana_ai.token_usage`,
 * and before each LLM request `budgetCheck` says whether the run may ask, or when it may ask again.
 * The verdict itself is pure (`budgetVerdict`). The ledger runs on the runner's own tables (migration
 * 0003_token_usage). Per-user sums run inside the user's RLS scope; the process-wide sum reads
 * `token_usage_process`, which holds no user data (see the migration for why there is no cross-user
 * read of token_usage). Window times come from Effect's Clock, so tests move them with TestClock.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type * as Statement from "@effect/sql/Statement"
import type { SqlError } from "@effect/sql/SqlError"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import { TokenBudgetConfig } from "./AppConfig.js"
import { tokensUsedTotal } from "./metrics.js"
import { withSpanWhenTracing } from "./tracing.js"
import { transactionLossAsError, withUserScope } from "./withUserScope.js"

/** The rolling window every budget sums over. */
export const BUDGET_WINDOW_MS = 24 * 60 * 60 * 1000

/** One LLM answer's usage (prompt + completion), repair turns and rejected answers included. */
export interface UsageEntry {
  readonly userId: string
  /** null on the legacy path (no agent). */
  readonly agentId: string | null
  readonly missionId: string
  readonly iterationId: string
  /**
   * Identifies the answer, so recording it again (a retried write-back, or the same answer recorded on
   * its own and then in the write-back) counts it once. `answerKey(iterationId, attemptId, ordinal)`.
   */
  readonly answerKey: string
  readonly tokens: number
  readonly at: Date
}

/**
 * `attemptId`: fresh per run attempt (e.g. a UUID when the run starts), so a re-run of the same
 * scheduled time after a timeout counts its own answers; `ordinal`: the answer's index in that attempt.
 */
export const answerKey = (iterationId: string, attemptId: string, ordinal: number): string =>
  `${iterationId}/${attemptId}/${ordinal}`

export type BudgetScope =
  | { readonly _tag: "Agent"; readonly userId: string; readonly agentId: string }
  | { readonly _tag: "User"; readonly userId: string }
  /** Every runner on this database: the rows of token_usage_process. */
  | { readonly _tag: "Process" }

/** What the window holds for one scope, measured against one limit. */
export interface WindowSpend {
  readonly spent: number
  /**
   * When the spend drops below the limit by time alone: the instant the oldest rows that must leave
   * have left the window. None when it already is below, or when the limit is 0 (never by time).
   */
  readonly freeAt: Option.Option<Date>
}

export type BudgetKind = "agent" | "user" | "process"

export type BudgetVerdict =
  | { readonly _tag: "Ok" }
  | {
      readonly _tag: "Exhausted"
      /** The budget that stops the run (the one that frees last when several are spent). */
      readonly budget: BudgetKind
      readonly spent: number
      readonly limit: number
      /** Sleep until then (no database read needed before it); None: only a record change can free it. */
      readonly freeAt: Option.Option<Date>
    }

/** The budgets that apply to one run, and what each window holds. */
export interface BudgetReading {
  readonly budget: BudgetKind
  readonly limit: number
  readonly window: WindowSpend
}

/** At or over the limit stops the run; the verdict names the budget that frees last. */
const budgetVerdict = (readings: ReadonlyArray<BudgetReading>): BudgetVerdict => {
  const spent = readings.filter((r) => r.window.spent >= r.limit)
  if (spent.length === 0) return { _tag: "Ok" }
  const later = (a: BudgetReading, b: BudgetReading): BudgetReading => {
    if (Option.isNone(a.window.freeAt)) return a
    if (Option.isNone(b.window.freeAt)) return b
    return b.window.freeAt.value.getTime() > a.window.freeAt.value.getTime() ? b : a
  }
  const worst = spent.reduce(later)
  return { _tag: "Exhausted", budget: worst.budget, spent: worst.window.spent, limit: worst.limit, freeAt: worst.window.freeAt }
}

/** The agent fields the budget needs (see domain/agent.ts). */
export interface BudgetedAgent {
  readonly id: string
  /** undefined or null: no agent budget (the user's budget applies instead). */
  readonly maxTokensPerDay?: number | null | undefined
}

export interface TokenLedgerShape {
  /**
   * Inserts the entries (all of one user) inside the caller's RLS-scoped transaction: call it from the
   * body of `withUserScope(userId, …)`, e.g. the write-back's. Already recorded answers are skipped.
   * Returns the tokens newly recorded.
   */
  readonly insert: (entries: ReadonlyArray<UsageEntry>) => Effect.Effect<number, SqlError>
  /**
   * `insert` as a statement for a caller that sends it itself (the write-back on a basis), inserting
   * only where `onlyIf` holds (in SQL, so it could be pipelined); `booked` counts its rows in the metric.
   */
  readonly insertWhen: (entries: ReadonlyArray<UsageEntry>, onlyIf: Statement.Fragment) => Statement.Statement<{ readonly tokens: unknown }>
  readonly booked: (rows: ReadonlyArray<Readonly<Record<string, unknown>>>) => Effect.Effect<number>
  /** The same in a transaction of its own, scoped to `userId`: for a run that writes nothing. */
  readonly record: (userId: string, entries: ReadonlyArray<UsageEntry>) => Effect.Effect<number, SqlError>
  /** Tokens in the last 24 h (Clock time) for the scope. */
  readonly spentInWindow: (scope: BudgetScope) => Effect.Effect<number, SqlError>
  /** The window of one scope against `limit`: its spend and, when at or over, when it frees. */
  readonly window: (scope: BudgetScope, limit: number) => Effect.Effect<WindowSpend, SqlError>
  /**
   * Before each LLM request: the agent's budget when it has one, else USER_DAILY_TOKEN_BUDGET; and
   * LLM_DAILY_TOKEN_BUDGET for every run. At or over any of them: Exhausted, with when it frees.
   */
  readonly budgetCheck: (run: { readonly userId: string; readonly agent: BudgetedAgent | undefined }) => Effect.Effect<
    BudgetVerdict,
    SqlError
  >
  /** Deletes every user's rows older than 48 h (and the process rows); returns how many. */
  readonly prune: Effect.Effect<{ readonly usage: number; readonly process: number }, SqlError>
}

// float8: pg returns bigint sums as strings; a day's tokens fit a double exactly.
const WindowRow = Schema.Struct({ spent: Schema.Number, frees_at: Schema.NullOr(Schema.DateFromSelf) })
const decodeWindowRow = Schema.decodeUnknown(WindowRow)
const CountRow = Schema.Struct({ n: Schema.Number })
const decodeCountRow = Schema.decodeUnknown(CountRow)

export const makeTokenLedger = Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  const budgets = yield* TokenBudgetConfig

  const since = Effect.map(Clock.currentTimeMillis, (now) => new Date(now - BUDGET_WINDOW_MS))

  const insertWhen = (entries: ReadonlyArray<UsageEntry>, onlyIf: Statement.Fragment) => {
    const rows = entries.map(
      (e) =>
        sql`(${e.userId}, ${e.agentId}, ${e.missionId}, ${e.iterationId}, ${e.answerKey}, ${Math.max(0, Math.round(e.tokens))}, ${e.at})`,
    )
    // The process row is added by the same statement, only for a usage row that is new here.
    return sql<{ readonly tokens: unknown }>`
      WITH fresh AS (
        INSERT INTO mana_ai.token_usage (user_id, agent_id, mission_id, iteration_id, answer_key, tokens, at)
        SELECT v.user_id, v.agent_id, v.mission_id, v.iteration_id, v.answer_key, v.tokens::integer, v.at::timestamptz
        FROM (VALUES ${sql.csv(rows)}) AS v (user_id, agent_id, mission_id, iteration_id, answer_key, tokens, at)
        WHERE ${onlyIf}
        ON CONFLICT (user_id, answer_key) DO NOTHING
        RETURNING at, tokens)
      INSERT INTO mana_ai.token_usage_process (at, tokens)
      SELECT at, tokens FROM fresh
      RETURNING tokens`
  }

  // Counted when the statement succeeds: a write-back transaction that then rolls back over-counts
  // the metric (never the table), which is rare and errs towards showing spend.
  const booked = (rows: ReadonlyArray<Readonly<Record<string, unknown>>>) => {
    const tokens = rows.reduce((sum, r) => sum + Number(r.tokens), 0)
    return Effect.as(Metric.incrementBy(tokensUsedTotal, tokens), tokens)
  }

  const insert = (entries: ReadonlyArray<UsageEntry>): Effect.Effect<number, SqlError> =>
    entries.length === 0
      ? Effect.succeed(0)
      : insertWhen(entries, sql`true`).pipe(
          Effect.flatMap(booked),
          withSpanWhenTracing("TokenLedger.insert", { attributes: { "usage.entries": entries.length } }),
        )

  const inUserScope = <A>(userId: string, body: Effect.Effect<A, SqlError>): Effect.Effect<A, SqlError> =>
    withUserScope(userId, () => body).pipe(Effect.provideService(SqlClient.SqlClient, sql))

  const record = (userId: string, entries: ReadonlyArray<UsageEntry>) =>
    entries.length === 0 ? Effect.succeed(0) : inUserScope(userId, insert(entries))

  const windowQuery = (scope: BudgetScope, from: Date, limit: number) => {
    const source =
      scope._tag === "Process"
        ? sql`SELECT at, tokens FROM mana_ai.token_usage_process WHERE at > ${from}`
        : scope._tag === "User"
          ? sql`SELECT at, tokens FROM mana_ai.token_usage WHERE user_id = ${scope.userId} AND at > ${from}`
          : sql`SELECT at, tokens FROM mana_ai.token_usage
                WHERE user_id = ${scope.userId} AND agent_id = ${scope.agentId} AND at > ${from}`
    // frees_at: the time of the oldest row whose leaving (with all older ones) takes the spend below the limit.
    return sql`
      WITH w AS (
        SELECT at,
               sum(tokens) OVER (ORDER BY at ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS upto,
               sum(tokens) OVER () AS total
        FROM (${source}) AS s)
      SELECT coalesce(max(total), 0)::float8 AS spent,
             min(at) FILTER (WHERE total - upto < ${limit}) AS frees_at
      FROM w`.pipe(
      Effect.flatMap((rows) => decodeWindowRow(rows[0])),
      Effect.orDie,
      Effect.map(
        ({ spent, frees_at }): WindowSpend => ({
          spent,
          freeAt:
            spent < limit || frees_at === null ? Option.none() : Option.some(new Date(frees_at.getTime() + BUDGET_WINDOW_MS)),
        }),
      ),
    )
  }

  /** Per-user scopes read inside the user's RLS scope; the process scope needs none. */
  const scoped = <A>(scope: BudgetScope, body: Effect.Effect<A, SqlError>): Effect.Effect<A, SqlError> =>
    scope._tag === "Process" ? body : inUserScope(scope.userId, body)

  const window = (scope: BudgetScope, limit: number) =>
    Effect.flatMap(since, (from) => scoped(scope, windowQuery(scope, from, limit))).pipe(
      withSpanWhenTracing("TokenLedger.window", { attributes: { "budget.scope": scope._tag } }),
    )

  // A limit no sum reaches: the spend without computing when it frees.
  const spentInWindow = (scope: BudgetScope) =>
    Effect.map(window(scope, Number.MAX_SAFE_INTEGER), (w) => w.spent)

  type BudgetRun = { readonly userId: string; readonly agent: { readonly id: string; readonly maxTokensPerDay?: number | null | undefined } | undefined }
  // Made once (DEVELOPERS.md: no generator function made per call on a hot path; this is per LLM request).
  const budgetCheckSteps = Effect.fnUntraced(function* (run: BudgetRun) {
    const from = yield* since
    const agentLimit = run.agent?.maxTokensPerDay
    const own: Option.Option<{ budget: "agent" | "user"; scope: BudgetScope; limit: number }> =
      run.agent !== undefined && agentLimit !== undefined && agentLimit !== null
        ? Option.some({ budget: "agent", scope: { _tag: "Agent", userId: run.userId, agentId: run.agent.id }, limit: agentLimit })
        : Option.map(budgets.userDailyTokens, (limit) => ({ budget: "user", scope: { _tag: "User", userId: run.userId }, limit }))
    const readings: Array<BudgetReading> = []
    if (Option.isSome(own)) {
      const { budget, scope, limit } = own.value
      readings.push({ budget, limit, window: yield* scoped(scope, windowQuery(scope, from, limit)) })
    }
    if (Option.isSome(budgets.llmDailyTokens)) {
      const limit = budgets.llmDailyTokens.value
      readings.push({ budget: "process", limit, window: yield* windowQuery({ _tag: "Process" }, from, limit) })
    }
    return budgetVerdict(readings)
  })
  const budgetCheck = (run: BudgetRun) => budgetCheckSteps(run).pipe(withSpanWhenTracing("TokenLedger.budgetCheck"))

  // Outside any user scope (the setting is cleared for this transaction), so the user policy matches
  // no row and only the DELETE-only retention policy applies: every user's rows past 48 h, nothing else.
  // No WHERE on purpose: a WHERE would need a cross-user read, which the runner does not have.
  const prune = sql
    .withTransaction(
      Effect.gen(function* () {
        yield* sql`SELECT set_config('app.current_user_id', '', true)`
        const usage = yield* sql`WITH d AS (DELETE FROM mana_ai.token_usage RETURNING 1) SELECT count(*)::float8 AS n FROM d`
        const processRows = yield* sql`
          WITH d AS (DELETE FROM mana_ai.token_usage_process WHERE at < now() - interval '48 hours' RETURNING 1)
          SELECT count(*)::float8 AS n FROM d`
        const [u, p] = yield* Effect.all([decodeCountRow(usage[0]), decodeCountRow(processRows[0])]).pipe(Effect.orDie)
        return { usage: u.n, process: p.n }
      }),
    )
    .pipe(
      transactionLossAsError,
      Effect.tap(({ usage, process }) =>
        usage + process > 0 ? Effect.logDebug("Token usage pruned").pipe(Effect.annotateLogs({ usage, process })) : Effect.void,
      ),
      Effect.withSpan("TokenLedger.prune"),
    )

  return { insert, insertWhen, booked, record, spentInWindow, window, budgetCheck, prune } satisfies TokenLedgerShape
})

export class TokenLedger extends Effect.Service<TokenLedger>()("mana-ai/TokenLedger", { effect: makeTokenLedger }) {}

/** How often expired token usage is pruned (and once at start). */
const PRUNE_INTERVAL = Duration.hours(1)

/**
 * Prunes token usage older than 48 h at start and every PRUNE_INTERVAL, in the background of the
 * layer's scope. A failed prune (database away) is logged and tried again on the next round.
 */
export const TokenUsagePruneLive: Layer.Layer<never, never, TokenLedger> = Layer.scopedDiscard(
  Effect.flatMap(TokenLedger, (ledger) =>
    ledger.prune.pipe(
      Effect.catchAllCause((cause) => Effect.logWarning("Pruning token usage failed; trying again later", cause)),
      Effect.repeat(Schedule.spaced(PRUNE_INTERVAL)),
      Effect.forkScoped,
    ),
  ),
)
