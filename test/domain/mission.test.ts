/**
 * Missions as today's app writes them decode (SPEC §3, §14, §15): agentId and grant are kept,
 * `timezone: null` is absent, a missing `iterations` is empty, and the iteration phases and fields
 * the app added are read.
 */
import { Either, Schema } from "effect"
import { describe, expect, it } from "vitest"
import { Mission, aiActorFor } from "../../src/domain/mission.js"

const decode = Schema.decodeUnknownEither(Mission)

const base = {
  id: "m1",
  title: "Get fit",
  objective: "Run a 10k",
  conceptMarkdown: "",
  state: "active",
  nextRunAt: "2026-03-02T08:00:00.000Z",
  inputs: [],
  cadence: { kind: "daily", atHour: 8, atMinute: 0 },
  iterations: [],
  createdAt: "2026-03-01T00:00:00.000Z",
  updatedAt: "2026-03-01T00:00:00.000Z",
}

const ok = (record: unknown) => {
  const decoded = decode(record)
  if (Either.isLeft(decoded)) throw new Error(String(decoded.left))
  return decoded.right
}

describe("Mission as today's app writes it", () => {
  it("keeps agentId and the grant (opaque)", () => {
    const grant = { wrappedKey: "abc", derivation: { version: "v1", missionId: "m1", tables: ["notes"], recordIds: ["notes:n1"] }, issuedAt: "x", expiresAt: "y" }
    const m = ok({ ...base, agentId: "agent-1", grant })
    expect(m.agentId).toBe("agent-1")
    expect(m.grant).toEqual(grant)
  })

  it("timezone null is absent; a zone is kept", () => {
    const m = ok({ ...base, timezone: null })
    expect("timezone" in m).toBe(false)
    expect(ok({ ...base, timezone: "Europe/Berlin" }).timezone).toBe("Europe/Berlin")
  })

  it("a missing iterations field means none yet; a non-array is refused", () => {
    const { iterations: _, ...withoutIterations } = base
    expect(ok(withoutIterations).iterations).toEqual([])
    expect(Either.isLeft(decode({ ...base, iterations: "none" }))).toBe(true)
  })

  it("reads the app's iteration phases and progress fields (staging-proposals, currentPhase, phaseStartedAt, phaseDetail, cancelRequested)", () => {
    const iteration = {
      id: "it",
      startedAt: "2026-03-02T08:00:00.000Z",
      plan: [],
      overallStatus: "running",
      currentPhase: "staging-proposals",
      phaseStartedAt: "2026-03-02T08:00:01.000Z",
      phaseDetail: "staging 2/5",
      cancelRequested: false,
      errorDetails: { name: "X", message: "y", phase: "staging-proposals", stack: "kept in the stored record" },
    }
    const m = ok({ ...base, iterations: [iteration] })
    expect(m.iterations[0]).toMatchObject({ currentPhase: "staging-proposals", phaseDetail: "staging 2/5", cancelRequested: false })
    expect(m.iterations[0]!.errorDetails?.phase).toBe("staging-proposals")
    expect(Either.isLeft(decode({ ...base, iterations: [{ ...iteration, currentPhase: "dreaming" }] }))).toBe(true)
  })
})

describe("aiActorFor (today's write-back actor, SPEC §6)", () => {
  it("names the agent, or the legacy principal and Mana; cuts the rationale at 200 code points", () => {
    expect(aiActorFor({ agent: { id: "a1", name: "Coach" }, missionId: "m", iterationId: "i", summary: "short" })).toEqual({
      kind: "ai",
      principalId: "a1",
      displayName: "Coach",
      missionId: "m",
      iterationId: "i",
      rationale: "short",
    })
    const legacy = aiActorFor({ agent: null, missionId: "m", iterationId: "i", summary: undefined })
    expect(legacy).toMatchObject({ principalId: "legacy:ai-default", displayName: "Mana", rationale: "" })
    const emoji = "😀".repeat(250)
    expect(aiActorFor({ agent: null, missionId: "m", iterationId: "i", summary: emoji }).rationale).toBe("😀".repeat(200))
  })
})
