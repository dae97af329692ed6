/**
 * Input resolvers (SPEC §5): a registry keyed by module maps a module to the record it reads (app +
 * table) and how it renders that record for the prompt; developers add modules by passing their own
 * entries to `makeInputResolvers`. All inputs of one mission are read with one query in one
 * transaction scoped to the user, so RLS decides what is visible.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import type { MissionInput } from "../domain/mission.js"
import { isApplicable, isLive, replayOrdered } from "../domain/replay.js"
import { resolveEncryptedInputs, isEncryptedModule } from "./encryptedInputs.js"
import { EventLogSchema } from "./EventLogSchema.js"
import { GrantKeyring, makeGrantKeyring } from "./GrantKeyring.js"
import { inputsSkippedTotal } from "./metrics.js"
import { type RecordRef, type RecordRows, readRecordRows, recordRefKey } from "./recordRows.js"
import { withUserScope } from "./withUserScope.js"
import { withSpanWhenTracing } from "./tracing.js"

export interface ResolvedInput {
  readonly id: string
  readonly module: string
  readonly table: string
  readonly title: string
  readonly content: string
  /** Decrypted under a Mission Grant (SPEC §15): may reach the LLM request and nothing else. */
  readonly confidential?: boolean
}

/** An encrypted input left out of this run, and why (for the prompt: no value, no key). */
export interface UnavailableInput {
  readonly id: string
  readonly module: string
  readonly table: string
  readonly reason: string
}

/** What a run knows beyond its inputs: who it is for, and the mission's raw `grant` field (SPEC §15). */
export interface RunContext {
  readonly missionId: string
  readonly iterationId: string
  /** The replayed record's `grant`: absent or null means no grant. */
  readonly grant: unknown
}

export interface RunInputs {
  readonly resolved: ReadonlyArray<ResolvedInput>
  readonly unavailable: ReadonlyArray<UnavailableInput>
}

export interface InputResolversShape {
  /**
   * Resolves what it can, in one RLS-scoped transaction for `userId`. Inputs of modules without a
   * resolver, and records missing, deleted or unreadable, are left out with a logged reason and a
   * counted metric. Values starting `enc:1:` never appear in the result.
   */
  readonly resolve: (
    userId: string,
    inputs: ReadonlyArray<MissionInput>,
  ) => Effect.Effect<ReadonlyArray<ResolvedInput>, SqlError>
  /**
   * `resolve` plus the encrypted modules of SPEC §15: with a grant that opens, each encrypted input
   * the grant covers is read and decrypted, and every one tried is audited; the others are named in
   * `unavailable`.
   */
  readonly resolveForRun: (
    userId: string,
    inputs: ReadonlyArray<MissionInput>,
    run: RunContext,
    prefetched?: ReadonlyMap<string, RecordRows>,
  ) => Effect.Effect<RunInputs, SqlError>
  /**
   * The records the plain (not encrypted) inputs with a resolver read, so a caller can read them in
   * a query of its own (the run's mission read, issue 16) and hand the rows to resolveForRun as
   * `prefetched`, keyed by recordRefKey.
   */
  readonly plainRefs: (inputs: ReadonlyArray<MissionInput>) => ReadonlyArray<RecordRef>
}

/** Why an input is left out of the prompt; the `reason` tag of inputsSkippedTotal. */
export type InputSkipReason = "no-resolver" | "missing" | "deleted" | "unreadable"

export interface InputResolver {
  /** The app whose records this module reads (the input's `table` names the table). */
  readonly appId: string
  /**
   * Renders a live record (replayed, not deleted). Left: why it cannot be shown (logged, counted as
   * "unreadable"). Strings starting `enc:1:` must not be rendered; the service scrubs them anyway.
   */
  readonly render: (input: MissionInput, record: Readonly<Record<string, unknown>>) => Either.Either<ResolvedInput, string>
}

export type ResolverRegistry = Readonly<Record<string, InputResolver>>

export const CIPHERTEXT_PREFIX = "enc:1:"
export const ENCRYPTED_PLACEHOLDER = "[encrypted]"

export const isCiphertext = (u: unknown): boolean => typeof u === "string" && u.startsWith(CIPHERTEXT_PREFIX)

const readableString = (u: unknown): string | undefined =>
  typeof u === "string" && !isCiphertext(u) && u.trim().length > 0 ? u.trim() : undefined

const readableNumber = (u: unknown): number | undefined => {
  if (typeof u === "number" && Number.isFinite(u)) return u
  // Some clients store numbers as numeric strings; ciphertext is never a number.
  if (typeof u === "string" && u.trim() !== "" && !isCiphertext(u) && Number.isFinite(Number(u))) return Number(u)
  return undefined
}

const PERIODS: Readonly<Record<string, string>> = {
  day: "day",
  daily: "day",
  week: "week",
  weekly: "week",
  month: "month",
  monthly: "month",
  year: "year",
  yearly: "year",
}

/**
 * A goal (companion app): the title, and a progress line from currentValue, target.value and period,
 * e.g. "Progress: 3 / 10 per week". An encrypted title becomes "[encrypted]"; an encrypted (or
 * otherwise unreadable) number or period is dropped from the line. A goal with neither a readable
 * title nor a readable value has nothing to show and is "unreadable".
 */
const renderGoal = (input: MissionInput, record: Readonly<Record<string, unknown>>): Either.Either<ResolvedInput, string> => {
  const title = readableString(record.title) ?? (isCiphertext(record.title) ? ENCRYPTED_PLACEHOLDER : undefined)
  const current = readableNumber(record.currentValue)
  const target = typeof record.target === "object" && record.target !== null ? readableNumber((record.target as Record<string, unknown>).value) : undefined
  const periodRaw = readableString(record.period)
  const period = periodRaw === undefined ? undefined : (PERIODS[periodRaw.toLowerCase()] ?? periodRaw)
  if (title === undefined && current === undefined && target === undefined) {
    return Either.left("the goal has no readable title, currentValue or target")
  }
  const amount =
    current !== undefined && target !== undefined
      ? `${current} / ${target}`
      : current !== undefined
        ? `${current} (no target)`
        : target !== undefined
          ? `? / ${target}`
          : "not recorded"
  const progress = `Progress: ${amount}${period !== undefined && (current !== undefined || target !== undefined) ? ` per ${period}` : ""}`
  return Either.right({ id: input.id, module: input.module, table: input.table, title: title ?? "(untitled goal)", content: progress })
}

const goalsResolver: InputResolver = { appId: "companion", render: renderGoal }

/** The resolvers shipped with mana-ai. */
export const shippedResolvers: ResolverRegistry = { goals: goalsResolver }

const CIPHERTEXT_TOKEN = /enc:1:\S*/g

/** Last line of defence for resolvers added later: no ciphertext reaches the prompt, whatever they render. */
const scrubCiphertext = (r: ResolvedInput): ResolvedInput => ({
  ...r,
  title: r.title.replace(CIPHERTEXT_TOKEN, ENCRYPTED_PLACEHOLDER),
  content: r.content.replace(CIPHERTEXT_TOKEN, ENCRYPTED_PLACEHOLDER),
})

const skip = (input: MissionInput, reason: InputSkipReason, detail: string) =>
  Effect.logWarning(`mission input left out of the prompt: ${detail}`).pipe(
    Effect.annotateLogs({ inputModule: input.module, inputTable: input.table, inputId: input.id, reason }),
    Effect.zipRight(Metric.increment(Metric.tagged(inputsSkippedTotal, "reason", reason))),
  )

/** An input with the resolver for its module and the record it names. */
interface Routed {
  readonly input: MissionInput
  readonly resolver: InputResolver
  readonly ref: RecordRef
}

/** An input left out of the prompt: the input, why, and the sentence the log gives. */
type Skip = readonly [MissionInput, InputSkipReason, string]

/** Without a GrantKeyring in the context, grants count as not configured (SPEC §15). */
const grantsOff = makeGrantKeyring(Option.none())

export const makeInputResolvers = (registry: ResolverRegistry) =>
  Effect.map(
    Effect.all([SqlClient.SqlClient, EventLogSchema, Effect.serviceOption(GrantKeyring)]),
    ([sqlClient, eventLog, keyringOption]) => {
    const keyring = Option.getOrElse(keyringOption, () => grantsOff)
    const plainRefs: InputResolversShape["plainRefs"] = (inputs) => {
      const refs: Array<RecordRef> = []
      for (const input of inputs) {
        if (isEncryptedModule(input.module) || !Object.hasOwn(registry, input.module)) continue
        refs.push({ appId: registry[input.module]!.appId, table: input.table, recordId: input.id })
      }
      return refs
    }
    /**
     * The rows in hand rendered into prompt inputs, with what was left out and why. Plain JavaScript:
     * a run whose rows came with its mission (the usual case) resolves its inputs without run-loop
     * instructions per input, and logs only when something is left out (issue 16).
     */
    const renderAll = (
      routed: ReadonlyArray<Routed>,
      byRef: ReadonlyMap<string, RecordRows>,
    ): { readonly resolved: Array<ResolvedInput>; readonly skips: Array<Skip> } => {
      const resolved: Array<ResolvedInput> = []
      const skips: Array<Skip> = []
      for (const { input, resolver, ref } of routed) {
        const found = byRef.get(recordRefKey(ref))
        if (found === undefined || (found.rows.length === 0 && found.undecodable === 0)) {
          skips.push([input, "missing", "no such record in the user's event log"])
          continue
        }
        if (found.rows.length === 0 || !found.rows.some(isApplicable)) {
          skips.push([input, "unreadable", "the record's rows carry no readable data"])
          continue
        }
        const state = replayOrdered(found.rows)
        if (!isLive(state) || state.record === null) {
          skips.push([input, "deleted", "the record is deleted"])
          continue
        }
        const rendered = resolver.render(input, state.record)
        if (Either.isLeft(rendered)) {
          skips.push([input, "unreadable", rendered.left])
          continue
        }
        resolved.push(scrubCiphertext(rendered.right))
      }
      return { resolved, skips }
    }
    /** Each skip logged and counted, in the inputs' order (no instruction when nothing was left out). */
    const logSkips = (skips: ReadonlyArray<Skip>): Effect.Effect<void> =>
      skips.length === 0 ? Effect.void : Effect.forEach(skips, ([input, reason, detail]) => skip(input, reason, detail), { discard: true })
    const withSkipsLogged = ({ resolved, skips }: ReturnType<typeof renderAll>): Effect.Effect<Array<ResolvedInput>> =>
      skips.length === 0 ? Effect.succeed(resolved) : Effect.as(logSkips(skips), resolved)
    const resolveFrom = (
      userId: string,
      inputs: ReadonlyArray<MissionInput>,
      prefetched?: ReadonlyMap<string, RecordRows>,
    ): Effect.Effect<Array<ResolvedInput>, SqlError> => {
      // Routing first, in the inputs' order: a module without a resolver is skipped before any read.
      const routingSkips: Array<Skip> = []
      const routed: Array<Routed> = []
      for (const input of inputs) {
        const resolver = Object.hasOwn(registry, input.module) ? registry[input.module] : undefined
        if (resolver === undefined) {
          routingSkips.push([input, "no-resolver", `no resolver for module "${input.module}"`])
          continue
        }
        routed.push({ input, resolver, ref: { appId: resolver.appId, table: input.table, recordId: input.id } })
      }
      const resolved: Effect.Effect<Array<ResolvedInput>, SqlError> =
        routed.length === 0
          ? Effect.as(logSkips(routingSkips), [])
          : // Rows the caller already read (all of them, or the query below reads them all).
            prefetched !== undefined && routed.every((r) => prefetched.has(recordRefKey(r.ref)))
            ? Effect.suspend(() => {
                const rendered = renderAll(routed, prefetched)
                return withSkipsLogged({ resolved: rendered.resolved, skips: [...routingSkips, ...rendered.skips] })
              })
            : Effect.zipRight(
                logSkips(routingSkips),
                withUserScope(userId, (sql) => readRecordRows(sql, userId, routed.map((r) => r.ref))).pipe(
                  Effect.provideService(SqlClient.SqlClient, sqlClient),
                  Effect.provideService(EventLogSchema, eventLog),
                  Effect.flatMap((byRef) => withSkipsLogged(renderAll(routed, byRef))),
                ),
              )
      return resolved.pipe(withSpanWhenTracing("InputResolvers.resolve", { attributes: { userId, inputs: inputs.length } }))
    }
    const resolve: InputResolversShape["resolve"] = (userId, inputs) => resolveFrom(userId, inputs)
    const resolveForRun: InputResolversShape["resolveForRun"] = (userId, inputs, run, prefetched) => {
      const encrypted = inputs.filter((i) => isEncryptedModule(i.module))
      const plain = resolveFrom(userId, encrypted.length === 0 ? inputs : inputs.filter((i) => !isEncryptedModule(i.module)), prefetched)
      // No encrypted input (most missions): nothing to open, read or audit.
      if (encrypted.length === 0) return Effect.map(plain, (resolved) => ({ resolved, unavailable: [] }))
      return Effect.gen(function* () {
        const resolved = yield* plain
        const granted = yield* resolveEncryptedInputs(keyring, userId, encrypted, run).pipe(
          Effect.provideService(SqlClient.SqlClient, sqlClient),
          Effect.provideService(EventLogSchema, eventLog),
        )
        return { resolved: [...resolved, ...granted.resolved.map(scrubCiphertext)], unavailable: granted.unavailable }
      })
    }
    return { resolve, resolveForRun, plainRefs } satisfies InputResolversShape
  },
  )

/** The shipped registry (goals); a build with more modules provides `makeInputResolvers(registry)` under this tag. */
export class InputResolvers extends Effect.Service<InputResolvers>()("mana-ai/InputResolvers", {
  effect: makeInputResolvers(shippedResolvers),
}) {}
