/**
 * The encrypted input modules (SPEC §15): notes, tasks/todo, calendar, journal, kontext, profile.
 * Without a grant that opens, none is read and the prompt names them as unavailable. With one, an
 * input outside the grant's recordIds is a scope violation (never read); every other one is replayed
 * under the user's RLS scope and each `enc:1:` field decrypted. Every input tried gets one audit row,
 * written in the transaction that read it. The mission data key lives in this function's scope only.
 */
import type { EventLogSchema } from "./EventLogSchema.js"
import type * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Metric from "effect/Metric"
import { encryptedModule, grantScopeKey, hasGrant, renderEncrypted } from "../domain/grant.js"
import type { MissionInput } from "../domain/mission.js"
import { isApplicable, isLive, replayOrdered } from "../domain/replay.js"
import type { AuditEntry } from "./decryptAudit.js"
import { insertAuditRows } from "./decryptAudit.js"
import type { GrantKeyringShape } from "./GrantKeyring.js"
import { decryptRecord } from "./grantCrypto.js"
import type { ResolvedInput, RunContext, RunInputs, UnavailableInput } from "./InputResolvers.js"
import { decryptFailuresTotal, decryptsTotal, grantScopeViolationsTotal, grantSkipsTotal, inputsSkippedTotal } from "./metrics.js"
import { type RecordRef, readRecordRows, recordRefKey } from "./recordRows.js"
import { withUserScope } from "./withUserScope.js"
import { withSpanWhenTracing } from "./tracing.js"

export const isEncryptedModule = (module: string): boolean => encryptedModule(module) !== undefined

const unavailable = (input: MissionInput, reason: string): UnavailableInput => ({
  id: input.id,
  module: input.module,
  table: input.table,
  reason,
})

const countSkipped = (reason: string, n: number) =>
  n === 0 ? Effect.void : Metric.incrementBy(Metric.tagged(inputsSkippedTotal, "reason", reason), n)

interface Tried {
  readonly input: MissionInput
  readonly audit: AuditEntry
  readonly resolved?: ResolvedInput
  readonly fields: number
}

/** `inputs` are the mission's inputs of encrypted modules only. */
export const resolveEncryptedInputs = (
  keyring: GrantKeyringShape,
  userId: string,
  inputs: ReadonlyArray<MissionInput>,
  run: RunContext,
): Effect.Effect<RunInputs, SqlError, SqlClient.SqlClient | EventLogSchema> =>
  Effect.gen(function* () {
    if (inputs.length === 0) return { resolved: [], unavailable: [] }

    if (!hasGrant(run.grant)) {
      yield* Effect.logInfo(`${inputs.length} encrypted input(s) left out: the mission has no grant`).pipe(
        Effect.annotateLogs({ reason: "no-grant" }),
      )
      yield* countSkipped("no-grant", inputs.length)
      return { resolved: [], unavailable: inputs.map((i) => unavailable(i, "the mission has no grant for encrypted records")) }
    }

    const opening = yield* keyring.open(run.grant, run.missionId)
    if (opening._tag === "Rejected") {
      yield* Metric.increment(Metric.tagged(grantSkipsTotal, "reason", opening.reason))
      yield* Effect.logWarning(`mission grant not used (${opening.reason}): ${opening.detail}; the run goes on without its encrypted inputs`).pipe(
        Effect.annotateLogs({ grantSkipReason: opening.reason }),
      )
      yield* countSkipped("grant-unusable", inputs.length)
      return { resolved: [], unavailable: inputs.map((i) => unavailable(i, `the mission's grant is unusable (${opening.reason})`)) }
    }

    // The mission data key: held by this closure for the rest of this run's resolution, then dropped.
    const { key, allowed } = opening
    const audit = (input: MissionInput, status: AuditEntry["status"], reason: string | null): AuditEntry => ({
      missionId: run.missionId,
      iterationId: run.iterationId,
      tableName: input.table,
      recordId: input.id,
      status,
      reason,
    })

    const violations: Array<Tried> = []
    const covered: Array<{ input: MissionInput; ref: RecordRef }> = []
    for (const input of inputs) {
      const mod = encryptedModule(input.module)
      if (mod === undefined) continue
      if (!allowed.has(grantScopeKey(input))) {
        violations.push({ input, audit: audit(input, "scope-violation", "record-not-in-grant"), fields: 0 })
      } else covered.push({ input, ref: { appId: mod.appId, table: input.table, recordId: input.id } })
    }

    const tried = yield* withUserScope(userId, (sql) =>
      Effect.gen(function* () {
        const byRef = yield* readRecordRows(sql, userId, covered.map((c) => c.ref))
        const out: Array<Tried> = [...violations]
        for (const { input, ref } of covered) {
          const mod = encryptedModule(input.module)!
          const found = byRef.get(recordRefKey(ref))
          if (found === undefined || (found.rows.length === 0 && found.undecodable === 0)) {
            out.push({ input, audit: audit(input, "failed", "record-missing"), fields: 0 })
            continue
          }
          if (found.rows.length === 0 || !found.rows.some(isApplicable)) {
            out.push({ input, audit: audit(input, "failed", "record-unreadable"), fields: 0 })
            continue
          }
          const state = replayOrdered(found.rows)
          if (!isLive(state) || state.record === null) {
            out.push({ input, audit: audit(input, "failed", "record-deleted"), fields: 0 })
            continue
          }
          const decrypted = yield* Effect.either(decryptRecord(key, state.record))
          if (Either.isLeft(decrypted)) {
            out.push({ input, audit: audit(input, "failed", decrypted.left.reason), fields: 0 })
            continue
          }
          const { title, content } = renderEncrypted(mod, decrypted.right.record)
          out.push({
            input,
            audit: audit(input, "ok", null),
            fields: decrypted.right.fields,
            resolved: { id: input.id, module: input.module, table: input.table, title, content, confidential: true },
          })
        }
        // In the reading transaction: a read whose audit row cannot be written is not used.
        yield* insertAuditRows(sql, userId, out.map((t) => t.audit))
        return out
      }),
    ).pipe(withSpanWhenTracing("EncryptedInputs.resolve", { attributes: { inputs: inputs.length } }))

    const resolved: Array<ResolvedInput> = []
    const missing: Array<UnavailableInput> = []
    for (const t of tried) {
      const logged = Effect.annotateLogs({ inputModule: t.input.module, inputTable: t.input.table, inputId: t.input.id, reason: t.audit.reason ?? "ok" })
      if (t.audit.status === "scope-violation") {
        yield* Metric.increment(Metric.tagged(grantScopeViolationsTotal, "table", t.input.table))
        yield* Effect.logWarning("encrypted input outside the mission's grant: not read, audited").pipe(logged)
        missing.push(unavailable(t.input, "not covered by the mission's grant"))
      } else if (t.audit.status === "failed") {
        yield* Metric.increment(Metric.tagged(decryptFailuresTotal, "reason", t.audit.reason ?? "unknown"))
        yield* Effect.logWarning(`encrypted input could not be read under the grant: ${t.audit.reason}`).pipe(logged)
        missing.push(unavailable(t.input, `could not be read (${t.audit.reason})`))
      } else if (t.resolved !== undefined) {
        if (t.fields > 0) yield* Metric.incrementBy(Metric.tagged(decryptsTotal, "table", t.input.table), t.fields)
        yield* Effect.logDebug(`encrypted input read under the grant (${t.fields} field(s) decrypted)`).pipe(logged)
        resolved.push(t.resolved)
      }
    }
    yield* countSkipped("grant-scope-violation", violations.length)
    yield* countSkipped("decrypt-failed", missing.length - violations.length)
    // `covered` keeps the mission's order, and so does `resolved`.
    return { resolved, unavailable: missing }
  })
