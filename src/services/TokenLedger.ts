/**
 * Token usage and budgets (SPEC §14): every LLM answer's usage lands once in `mana_ai.token_usage`,
 * and before each LLM request `budgetCheck` says whether the run may ask, or when it may ask again.
 * CONTRACT — implementation: TokenLedgerLive. The verdict itself is pure (`budgetVerdict`).
 */
import type { SqlError } from "@effect/sql/SqlError"
import { Context, type Effect, Option } from "effect"

/** The rolling window every budget sums over. */
export const BUDGET_WINDOW_MS = 24 * 60 * 60 * 1000
/** Rows older than this are pruned. */
export const RETENTION_MS = 48 * 60 * 60 * 1000

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
export const budgetVerdict = (readings: ReadonlyArray<BudgetReading>): BudgetVerdict => {
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

export class TokenLedger extends Context.Tag("mana-ai/TokenLedger")<TokenLedger, TokenLedgerShape>() {}
