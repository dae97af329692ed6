/**
 * The embedded default's demo workload (SPEC §11): a few users with missions of every cadence, one
 * with a goals input, most due at once. Written as the sync server writes: one transaction per
 * user that first scopes itself with set_config('app.current_user_id', …, true).
 */
import { EventLogSchema } from "../services/EventLogSchema.js"
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import * as Effect from "effect/Effect"
import { MISSIONS_APP_ID, MISSIONS_TABLE } from "../domain/mission.js"

export const DEMO_CLIENT_ID = "mana-ai-demo-seed"

export interface DemoRecord {
  readonly userId: string
  readonly appId: string
  readonly table: string
  readonly recordId: string
  readonly data: Readonly<Record<string, unknown>>
}

const minutes = (n: number) => n * 60_000

/** The records, relative to `now`: due missions have nextRunAt a few minutes ago. */
export const demoRecords = (now: Date): ReadonlyArray<DemoRecord> => {
  const at = (offsetMs: number) => new Date(now.getTime() + offsetMs).toISOString()
  const created = at(-minutes(60 * 24 * 7))
  const mission = (
    userId: string,
    recordId: string,
    fields: { title: string; objective: string; cadence: unknown; nextRunAt: string | null } & Record<string, unknown>,
  ): DemoRecord => ({
    userId,
    appId: MISSIONS_APP_ID,
    table: MISSIONS_TABLE,
    recordId,
    data: {
      conceptMarkdown: "",
      state: "active",
      inputs: [],
      iterations: [],
      createdAt: created,
      updatedAt: created,
      ...fields,
    },
  })
  return [
    {
      userId: "demo-alice",
      appId: "companion",
      table: "companionGoals",
      recordId: "demo-goal-run-10k",
      data: { title: "Run 10 km a week", currentValue: 6, target: { value: 10 }, period: "week", createdAt: created },
    },
    mission("demo-alice", "demo-alice-weekly-run", {
      title: "Build up to 10 km a week",
      objective: "Reach the weekly running goal without getting injured",
      conceptMarkdown: "Three short runs a week; add at most 10% distance per week.",
      cadence: { kind: "weekly", dayOfWeek: 1, atHour: 7, atMinute: 30 },
      inputs: [{ module: "goals", table: "companionGoals", id: "demo-goal-run-10k" }],
      nextRunAt: at(-minutes(5)),
    }),
    mission("demo-alice", "demo-alice-inbox", {
      title: "Keep the inbox small",
      objective: "Turn loose ends into tasks every few hours",
      cadence: { kind: "interval", everyMinutes: 180 },
      nextRunAt: at(-minutes(2)),
    }),
    mission("demo-alice", "demo-alice-evening", {
      title: "Plan tomorrow",
      objective: "Have tomorrow's top three tasks ready each evening",
      cadence: { kind: "daily", atHour: 18, atMinute: 0 },
      timezone: "Europe/Berlin",
      nextRunAt: at(minutes(60 * 6)),
    }),
    mission("demo-bob", "demo-bob-spanish", {
      title: "Learn Spanish",
      objective: "Hold a ten-minute conversation by the end of the year",
      cadence: { kind: "cron", expression: "0 9 * * 1-5" },
      nextRunAt: at(-minutes(10)),
    }),
    mission("demo-bob", "demo-bob-garden", {
      title: "Garden makeover",
      objective: "Plan the spring planting",
      cadence: { kind: "manual" },
      nextRunAt: at(-minutes(1)),
    }),
    mission("demo-carol", "demo-carol-lisbon", {
      title: "Trip to Lisbon",
      objective: "Book travel and plan three days in Lisbon",
      cadence: { kind: "interval", everyMinutes: 1440 },
      nextRunAt: at(-minutes(30)),
    }),
    mission("demo-carol", "demo-carol-paused", {
      title: "Repaint the hallway",
      objective: "Pick a colour and a weekend",
      state: "paused",
      cadence: { kind: "weekly", dayOfWeek: 6, atHour: 10 },
      nextRunAt: at(-minutes(60)),
    }),
  ]
}

/** Missions of the demo workload that are due at `now` (active, nextRunAt passed). */
export const demoDueMissions = (now: Date): ReadonlyArray<DemoRecord> =>
  demoRecords(now).filter(
    (r) =>
      r.table === MISSIONS_TABLE &&
      r.data.state === "active" &&
      typeof r.data.nextRunAt === "string" &&
      Date.parse(r.data.nextRunAt) <= now.getTime(),
  )

/**
 * Inserts each record that the user does not have yet (so a start interrupted half-way completes
 * the workload next time), one RLS-scoped transaction per user. Returns how many rows it wrote.
 */
export const seedDemoWorkload = (now: Date): Effect.Effect<number, SqlError, SqlClient.SqlClient | EventLogSchema> =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const { timeColumn } = yield* EventLogSchema
    const byUser = new Map<string, Array<DemoRecord>>()
    for (const r of demoRecords(now)) byUser.set(r.userId, [...(byUser.get(r.userId) ?? []), r])
    let written = 0
    for (const [userId, records] of byUser) {
      written += yield* sql.withTransaction(
        Effect.gen(function* () {
          yield* sql`SELECT set_config('app.current_user_id', ${userId}, true), set_config('app.current_user_space_ids', '', true)`
          let n = 0
          for (const r of records) {
            const existing = yield* sql`
              SELECT 1 FROM sync_changes
              WHERE user_id = ${userId} AND app_id = ${r.appId} AND table_name = ${r.table} AND record_id = ${r.recordId}
              LIMIT 1`
            if (existing.length > 0) continue
            const stamp = now.toISOString()
            const fieldTimestamps = Object.fromEntries(Object.keys(r.data).map((k) => [k, stamp]))
            yield* sql`
              INSERT INTO sync_changes (app_id, table_name, record_id, user_id, op, data, ${sql(timeColumn)}, client_id)
              VALUES (${r.appId}, ${r.table}, ${r.recordId}, ${userId}, 'insert',
                      ${JSON.stringify(r.data)}::jsonb, ${JSON.stringify(fieldTimestamps)}::jsonb, ${DEMO_CLIENT_ID})`
            n++
          }
          return n
        }),
      )
    }
    return written
  }).pipe(Effect.withSpan("demoWorkload.seed"))
