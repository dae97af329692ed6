/**
 * 2. Discovery: the steady-state refresh plus due query with no new rows, at several sizes of
 * mission history, and the first (bootstrap) refresh at each size. One database; each size
 * starts from an empty event log and empty runner tables.
 */
import { Context, Effect, Layer } from "effect"
import { MissionStore } from "../../src/services/MissionStore.js"
import { storeLayer } from "../support/app.js"
import type { BenchDatabase } from "../support/benchDatabase.js"
import type { Figure } from "../support/report.js"
import { seedMissionHistory } from "../support/seed.js"
import { nowMs, round, roundSummary, summarize } from "../support/stats.js"

export interface DiscoveryOptions {
  readonly sizes: ReadonlyArray<number>
  /** Steady-state samples per size. */
  readonly samples: number
  readonly log: (line: string) => Effect.Effect<void>
}

const ROWS_PER_MISSION = 20

const label = (n: number) => (n >= 1_000_000 ? `${n / 1_000_000}M` : n >= 1000 ? `${n / 1000}k` : String(n))

export const measureDiscovery = (db: BenchDatabase, options: DiscoveryOptions) =>
  Effect.gen(function* () {
    const figures: Array<Figure> = []
    const steadyBySize = new Map<number, number>()
    for (const size of options.sizes) {
      yield* db.ownerQuery(
        "TRUNCATE sync_changes; DROP SCHEMA mana_ai CASCADE; CREATE SCHEMA mana_ai AUTHORIZATION " + `"${db.runnerRole}"`,
      )
      const t0 = nowMs()
      const missions = yield* seedMissionHistory(db, { rows: size, rowsPerMission: ROWS_PER_MISSION, endingSecondsAgo: 600 })
      yield* options.log(`discovery ${label(size)}: seeded ${size} rows (${missions} missions) in ${round((nowMs() - t0) / 1000, 1)} s`)

      const result = yield* Effect.scoped(
        Effect.gen(function* () {
          const ctx = yield* Layer.build(storeLayer(db))
          const store = Context.get(ctx, MissionStore)
          const b0 = nowMs()
          const boot = yield* store.refresh
          const bootstrapMs = nowMs() - b0
          yield* options.log(`discovery ${label(size)}: bootstrap read ${boot.rowsRead} rows in ${round(bootstrapMs / 1000, 2)} s`)
          const refreshMs: Array<number> = []
          const dueMs: Array<number> = []
          const totalMs: Array<number> = []
          let rowsRead = 0
          let dueFound = 0
          for (let i = 0; i < options.samples; i++) {
            const s0 = nowMs()
            const r = yield* store.refresh
            const s1 = nowMs()
            const due = yield* store.due(new Date())
            const s2 = nowMs()
            rowsRead += r.rowsRead
            dueFound += due.length
            refreshMs.push(s1 - s0)
            dueMs.push(s2 - s1)
            totalMs.push(s2 - s0)
          }
          return { bootstrapMs, bootRows: boot.rowsRead, bootChanged: boot.changed.length, refreshMs, dueMs, totalMs, rowsRead, dueFound }
        }),
      ).pipe(Effect.orDie)

      const total = summarize(result.totalMs)
      steadyBySize.set(size, total.p50)
      const isTop = size === Math.max(...options.sizes)
      figures.push({
        id: `discovery.steady.${size}`,
        label: `2. discovery steady refresh+due, ${label(size)} rows (p50)`,
        value: total.p50,
        unit: "ms",
        ...(isTop ? { target: { op: "<", value: 50, text: "< 50 ms" } } : {}),
        detail: {
          historyRows: size,
          missions,
          samples: options.samples,
          totalMs: roundSummary(total),
          refreshMs: roundSummary(summarize(result.refreshMs)),
          dueMs: roundSummary(summarize(result.dueMs)),
          rowsReadInSteadyState: result.rowsRead,
          dueFound: result.dueFound,
        },
      })
      figures.push({
        id: `discovery.bootstrap.${size}`,
        label: `2. discovery bootstrap refresh, ${label(size)} rows`,
        value: result.bootstrapMs / 1000,
        unit: "s",
        detail: {
          historyRows: size,
          rowsRead: result.bootRows,
          missions: result.bootChanged,
          rowsPerSecond: round(result.bootRows / (result.bootstrapMs / 1000), 0),
        },
      })
    }
    const sizes = [...options.sizes].sort((a, b) => a - b)
    if (sizes.length >= 2) {
      const smallest = sizes[0]!
      const largest = sizes[sizes.length - 1]!
      figures.push({
        id: "discovery.steady.growth",
        label: `2. discovery steady ${label(largest)} ÷ ${label(smallest)}`,
        value: steadyBySize.get(largest)! / steadyBySize.get(smallest)!,
        unit: "×",
        target: { op: "<=", value: 2, text: "≤ 2×" },
      })
    }
    return figures
  })
