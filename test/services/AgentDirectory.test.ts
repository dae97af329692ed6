import { it } from "@effect/vitest"
import { Effect, Layer, Option } from "effect"
import { expect } from "vitest"
import { makeAgentDirectory } from "../../src/services/AgentDirectory.js"
import { insertChange } from "../support/eventLogRows.js"
import { RunnerSqlLive, TestDatabase, TestDatabaseLive } from "../support/TestDatabase.js"

const Db = Layer.provideMerge(RunnerSqlLive(4), TestDatabaseLive)

let n = 0
const fresh = (prefix: string) => `${prefix}-${++n}-${Math.random().toString(36).slice(2, 8)}`

const agentData = (overrides: Record<string, unknown> = {}) => ({
  name: "Researcher",
  role: "Finds sources",
  state: "active",
  policy: { tools: {}, defaultForAi: "propose" },
  maxConcurrentMissions: 1,
  createdAt: "2026-03-01T00:00:00.000Z",
  updatedAt: "2026-03-01T00:00:00.000Z",
  ...overrides,
})

const agentRow = (user: string, id: string, data: unknown, extra: { op?: "insert" | "update" | "delete"; createdAt?: string; fieldTimestamps?: unknown } = {}) =>
  insertChange({ user, app: "ai", table: "agents", id, data, ...extra })

/** The database server's clock, so rows inserted at an explicit time sit where a late commit would. */
const serverNow = Effect.flatMap(TestDatabase, (db) =>
  Effect.promise(async () => new Date(String((await db.ownerQuery("SELECT now()::text AS t"))[0]?.t)).getTime()),
)

it.layer(Db, { timeout: 120_000 })("AgentDirectory (as the runner role, through the narrow read path)", (it) => {
  it.effect("discovers every user's agents, replays them, and keeps users apart", () =>
    Effect.gen(function* () {
      const [ann, bob] = [fresh("ann"), fresh("bob")]
      yield* agentRow(ann, "agent-1", agentData({ name: "Ann's researcher" }))
      yield* agentRow(bob, "agent-1", agentData({ name: "Bob's writer", state: "paused" }))
      yield* agentRow(ann, "agent-2", agentData({ name: "Ann's planner" }))
      // A mission row and another table of app ai are not agents.
      yield* insertChange({ user: ann, id: "m-1", data: { title: "not an agent" } })
      const dir = yield* makeAgentDirectory()
      const changed = yield* dir.refresh
      expect(changed.map((k) => `${k.userId}/${k.agentId}`).sort()).toEqual([`${ann}/agent-1`, `${ann}/agent-2`, `${bob}/agent-1`].sort())
      const annAgent = yield* dir.resolve(ann, "agent-1")
      expect(annAgent._tag === "Agent" && annAgent.agent.name).toBe("Ann's researcher")
      const bobAgent = yield* dir.resolve(bob, "agent-1")
      expect(bobAgent._tag === "Agent" && bobAgent.agent.state).toBe("paused")
      expect((yield* dir.agentsOf(ann)).map((a) => a.name).sort()).toEqual(["Ann's planner", "Ann's researcher"])
      expect(yield* dir.resolve(ann, "agent-404")).toEqual({ _tag: "Legacy" })
      expect(yield* dir.resolve(ann, undefined)).toEqual({ _tag: "Legacy" })
      // Nothing new: nothing changed.
      expect(yield* dir.refresh).toEqual([])
    }),
  )

  it.effect("an update reaches the next refresh as a change of that one agent (field-level LWW, unknown fields kept)", () =>
    Effect.gen(function* () {
      const user = fresh("u")
      yield* agentRow(user, "a", agentData({ maxTokensPerDay: 100, scopeTagIds: ["t1"] }), {
        fieldTimestamps: { maxTokensPerDay: "2026-03-01T00:00:00Z", state: "2026-03-01T00:00:00Z" },
      })
      yield* agentRow(user, "b", agentData())
      const dir = yield* makeAgentDirectory()
      yield* dir.refresh
      yield* agentRow(user, "a", { state: "paused", maxTokensPerDay: 5000 }, {
        op: "update",
        fieldTimestamps: { state: "2026-03-02T00:00:00Z", maxTokensPerDay: "2026-03-02T00:00:00Z" },
      })
      // An older write of state (a device that was offline) loses to the newer one.
      yield* agentRow(user, "a", { state: "archived" }, { op: "update", fieldTimestamps: { state: "2026-03-01T12:00:00Z" } })
      expect(yield* dir.refresh).toEqual([{ userId: user, agentId: "a" }])
      const r = yield* dir.resolve(user, "a")
      expect(r._tag).toBe("Agent")
      if (r._tag === "Agent") {
        expect(r.agent.state).toBe("paused")
        expect(r.agent.maxTokensPerDay).toBe(5000)
        expect(r.agent.scopeTagIds).toEqual(["t1"])
      }
    }),
  )

  it.effect("a deleted agent (op delete, or deletedAt) means the legacy path; a broken one is malformed with a reason", () =>
    Effect.gen(function* () {
      const user = fresh("u")
      yield* agentRow(user, "gone", agentData())
      yield* agentRow(user, "soft", agentData())
      yield* agentRow(user, "broken", agentData({ maxTokensPerDay: -10 }))
      const dir = yield* makeAgentDirectory()
      yield* dir.refresh
      expect((yield* dir.resolve(user, "gone"))._tag).toBe("Agent")
      yield* agentRow(user, "gone", null, { op: "delete" })
      yield* agentRow(user, "soft", { deletedAt: "2026-03-03T00:00:00Z" }, { op: "update" })
      const changed = yield* dir.refresh
      expect(changed.map((k) => k.agentId).sort()).toEqual(["gone", "soft"])
      expect(yield* dir.resolve(user, "gone")).toEqual({ _tag: "Legacy" })
      expect(yield* dir.resolve(user, "soft")).toEqual({ _tag: "Legacy" })
      expect(Option.isNone(yield* dir.record(user, "soft"))).toBe(true)
      const broken = yield* dir.resolve(user, "broken")
      expect(broken._tag === "Malformed" && broken.error.reason).toMatch(/^maxTokensPerDay: must be a whole number ≥ 0/)
      expect((yield* dir.agentsOf(user)).map((a) => a.id)).toEqual(["broken"])
    }),
  )

  it.effect("a row that commits late (created_at behind the cursor, within the look-back) is still applied, in log order", () =>
    Effect.gen(function* () {
      const user = fresh("u")
      const now = yield* serverNow
      yield* agentRow(user, "late", agentData({ name: "v1" }), { createdAt: new Date(now - 60_000).toISOString() })
      const dir = yield* makeAgentDirectory({ lookback: "2 minutes" })
      yield* dir.refresh
      yield* agentRow(user, "late", { name: "v3" }, { op: "update", createdAt: new Date(now + 1_000).toISOString() })
      yield* dir.refresh
      // Committed now, but its transaction started 30 s ago: behind the cursor, older than v3.
      yield* agentRow(user, "late", { name: "v2", role: "late field" }, { op: "update", createdAt: new Date(now - 30_000).toISOString() })
      expect(yield* dir.refresh).toEqual([{ userId: user, agentId: "late" }])
      const r = yield* dir.record(user, "late")
      // v3 is newer than v2 by row time, so the name stays v3; the late row's new field is applied.
      expect(Option.map(r, (a) => [a.name, a.role])).toEqual(Option.some(["v3", "late field"]))
      expect(yield* dir.refresh).toEqual([])
    }),
  )
})
