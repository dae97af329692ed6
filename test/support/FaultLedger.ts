/**
 * The fault suite's figures: faults injected, runs, iterations written, duplicates, acknowledged
 * writes lost. Each test file appends JSON lines to a file in the directory the global setup
 * (test/support/faultLedgerSetup.ts) names in MANA_FAULT_LEDGER_DIR; the setup's teardown adds
 * them up and prints one summary at the end of the run. Without that variable nothing is written.
 *
 * Duplicates and lost writes are measured, not declared: `auditMissions` reads what is stored.
 */
import { appendFileSync, mkdirSync } from "node:fs"
import path from "node:path"
import { Effect } from "effect"
import { MISSIONS_APP_ID, MISSIONS_TABLE, RUNNER_CLIENT_ID } from "../../src/domain/mission.js"
import { TestDatabase } from "./TestDatabase.js"

export interface LedgerEntry {
  readonly suite: string
  /** Fault kind → how many were injected. */
  readonly faults?: Readonly<Record<string, number>>
  readonly runs?: number
  readonly iterationsWritten?: number
  readonly duplicates?: number
  readonly acknowledgedWrites?: number
  readonly acknowledgedWritesLost?: number
  readonly badInputsRejected?: number
}

export const LEDGER_ENV = "MANA_FAULT_LEDGER_DIR"

/** Appends one entry (a no-op outside a run with the global setup). */
export const record = (entry: LedgerEntry): void => {
  const dir = process.env[LEDGER_ENV]
  if (dir === undefined || dir === "") return
  mkdirSync(dir, { recursive: true })
  appendFileSync(path.join(dir, `ledger-${process.pid}.jsonl`), `${JSON.stringify(entry)}\n`)
}

export const recordEffect = (entry: LedgerEntry) => Effect.sync(() => record(entry))

export interface MissionAudit {
  /** Runner rows in the log. */
  readonly runnerRows: number
  /** Distinct iteration ids those rows appended. */
  readonly distinctIterations: number
  /** Runner rows that appended an iteration id another runner row had appended already, plus ids twice in a replayed list. */
  readonly duplicates: number
  /** Missions one of whose runner rows holds the same iteration id twice in its list. */
  readonly missionsWithRepeatedIds: ReadonlyArray<string>
  /** (user, mission) → iteration ids appended by the runner, in log order. */
  readonly byMission: ReadonlyMap<string, ReadonlyArray<string>>
}

export const missionKey = (userId: string, missionId: string) => `${userId}\u0001${missionId}`

/**
 * Reads every mission row as the owner and counts the runner's appends. The appended iteration of a
 * runner row is the last element of its `data.iterations` (SPEC §6: all, after appending).
 */
export const auditMissions: Effect.Effect<MissionAudit, never, TestDatabase> = Effect.flatMap(TestDatabase, (db) =>
  Effect.promise(async () => {
    const rows = await db.ownerQuery(
      `SELECT id::text AS id, user_id, record_id, op, data, ${db.generation} AS field_timestamps, created_at, client_id
       FROM sync_changes WHERE app_id = $1 AND table_name = $2 ORDER BY created_at, id`,
      [MISSIONS_APP_ID, MISSIONS_TABLE],
    )
    const byMission = new Map<string, Array<string>>()
    let runnerRows = 0
    let duplicates = 0
    const seen = new Set<string>()
    for (const r of rows) {
      const key = missionKey(String(r.user_id), String(r.record_id))
      if (r.client_id !== RUNNER_CLIENT_ID) continue
      runnerRows++
      const data = r.data as { iterations?: Array<{ id?: unknown }> } | null
      const last = Array.isArray(data?.iterations) ? data.iterations.at(-1) : undefined
      const id = typeof last?.id === "string" ? last.id : `<no id in row ${String(r.id)}>`
      if (seen.has(`${key}\u0001${id}`)) duplicates++
      seen.add(`${key}\u0001${id}`)
      byMission.set(key, [...(byMission.get(key) ?? []), id])
    }
    // Each runner row holds the whole list it wrote (SPEC §6): an id twice in one is a duplicate as
    // stored, read straight from the row (no replay, which is code under test).
    const repeated: Array<string> = []
    for (const r of rows) {
      if (r.client_id !== RUNNER_CLIENT_ID) continue
      const its = (r.data as { iterations?: unknown } | null)?.iterations
      if (!Array.isArray(its)) continue
      const ids = its.map((i: { id?: unknown }) => String(i?.id))
      if (new Set(ids).size !== ids.length) {
        repeated.push(missionKey(String(r.user_id), String(r.record_id)))
        duplicates += ids.length - new Set(ids).size
      }
    }
    return { runnerRows, distinctIterations: seen.size, duplicates, missionsWithRepeatedIds: repeated, byMission }
  }),
)

/** How many of `acknowledged` sync_changes ids are not in the table (each must be there). */
export const countLost = (acknowledged: ReadonlyArray<string>): Effect.Effect<number, never, TestDatabase> =>
  acknowledged.length === 0
    ? Effect.succeed(0)
    : Effect.flatMap(TestDatabase, (db) =>
        Effect.promise(async () => {
          const rows = await db.ownerQuery(
            "SELECT count(*)::int AS n FROM sync_changes WHERE id = ANY($1::uuid[])",
            [[...new Set(acknowledged)]],
          )
          return new Set(acknowledged).size - Number(rows[0]?.n ?? 0)
        }),
      )

