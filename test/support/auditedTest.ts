/**
 * Per-test fault audit (kept apart from FaultLedger.ts, which the global setup imports and which so
 * must not import vitest).
 */
import { Effect } from "effect"
import { expect } from "vitest"
import { auditMissions, recordEffect } from "./FaultLedger.js"

/** A test file's running figures (what its tests injected, ran and rejected). */
export interface Tally {
  readonly runs: number
  readonly rejected: number
  readonly faults: Readonly<Record<string, number>>
}

/**
 * One test's body, then the audit of what it stored: the test fails on a duplicate iteration written
 * while it ran, and records its own figures. Each test so passes or fails on its own, run alone or
 * with the file, instead of one "across the suite" test that passes vacuously when run by itself.
 */
export const audited = <A, E, R>(
  suite: string,
  tally: () => Tally,
  body: Effect.Effect<A, E, R>,
  /** Writes the runner acknowledged (Written outcomes) so far: each one this test adds must be stored. */
  acknowledged?: () => ReadonlyArray<{ readonly key: string; readonly iterationId: string }>,
) =>
  Effect.gen(function* () {
    const before = { tally: structuredClone(tally()), audit: yield* auditMissions, acknowledged: acknowledged?.().length ?? 0 }
    const result = yield* body
    const audit = yield* auditMissions
    const after = tally()
    const duplicates = audit.duplicates - before.audit.duplicates
    expect(audit.missionsWithRepeatedIds.filter((k) => !before.audit.missionsWithRepeatedIds.includes(k))).toEqual([])
    expect(duplicates).toBe(0)
    const mine = acknowledged?.().slice(before.acknowledged) ?? []
    const lost = mine.filter((a) => !(audit.byMission.get(a.key) ?? []).includes(a.iterationId))
    expect(lost).toEqual([])
    const faults: Record<string, number> = {}
    for (const [kind, n] of Object.entries(after.faults)) {
      const added = n - (before.tally.faults[kind] ?? 0)
      if (added > 0) faults[kind] = added
    }
    yield* recordEffect({
      suite,
      faults,
      runs: after.runs - before.tally.runs,
      iterationsWritten: audit.runnerRows - before.audit.runnerRows,
      duplicates,
      badInputsRejected: after.rejected - before.tally.rejected,
      ...(acknowledged === undefined ? {} : { acknowledgedWrites: mine.length, acknowledgedWritesLost: lost.length }),
    })
    return result
  })
