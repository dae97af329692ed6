/**
 * The LLM breaker through the real Bun process (SPEC §14): the stand-in fails every request; after
 * LLM_BREAKER_FAILURES failures no further request starts until the probe after the cool-down (5 s);
 * the stand-in recovers, the probe closes the breaker and every due run is written exactly once.
 * /health and mana_ai_llm_breaker_open show the state; /internal/actors each user's token spend.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { iterationIdFor } from "../../src/domain/iteration.js"
import { defaultResponder } from "../support/LlmStandIn.js"
import { eventually, metricValue, request } from "../support/ManaProcess.js"
import { RIG_SERVICE_KEY, makeRig, type Rig } from "../support/ProcessRig.js"
import { missionInsertRow } from "../support/seed.js"

const past = (minutes: number) => new Date(Date.now() - minutes * 60_000).toISOString()
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
const until = (what: string, timeoutMs: number, check: () => Promise<boolean>) => eventually(what, timeoutMs, check, 100)

let rig: Rig

beforeAll(async () => {
  rig = await makeRig()
}, 120_000)

afterAll(async () => {
  if (rig !== undefined) await rig.close()
}, 120_000)

const FAILURES = 3

describe("the LLM breaker in the live process", () => {
  it("opens after LLM_BREAKER_FAILURES failures, sends nothing until the probe, then every due run is written once", async () => {
    const { run, standIn } = rig
    await run(standIn.reset)
    await run(standIn.setResponder(() => ({ status: 500, body: { error: "down" } })))
    const p = await rig.startRunner({ LLM_BREAKER_FAILURES: String(FAILURES), MISSION_TIMEOUT_MS: "4000", LLM_TIMEOUT_MS: "2000" })
    const health = async () => (await request(p, "GET", "/health")).body
    const gauge = async () => metricValue((await request(p, "GET", "/metrics")).text, "mana_ai_llm_breaker_open")
    expect((await health()).llmBreaker).toMatchObject({ state: "closed", consecutiveFailures: 0 })
    expect(await gauge()).toBe(0)

    const missions = ["brk-0", "brk-1", "brk-2"].map((u) => ({ user: u, id: `${u}-m`, nextRunAt: past(1) }))
    await rig.seed(missions.map((m) => missionInsertRow(m.user, m.id, { nextRunAt: m.nextRunAt })))
    const firstTick = rig.tick(p)

    await until("the breaker open", 20_000, async () => (await health()).llmBreaker?.state === "open")
    const atOpen = (await run(standIn.requests)).length
    // Three runs at once: the failures that opened it, plus at most the requests the other runs had
    // already started before it opened.
    expect(atOpen).toBeGreaterThanOrEqual(FAILURES)
    expect(atOpen).toBeLessThanOrEqual(FAILURES + missions.length - 1)
    expect(await gauge()).toBe(1)
    // The cool-down is 5 s: for 3 s of it, not one request, although three runs are retrying.
    await sleep(3_000)
    expect((await run(standIn.requests)).length).toBe(atOpen)
    expect((await health()).llmBreaker.state).toBe("open")

    // The LLM recovers; a fourth mission falls due while the breaker is still open.
    let answered = 0
    await run(
      standIn.setResponder((r) => {
        answered++
        return defaultResponder(r)
      }),
    )
    const late = { user: "brk-3", id: "brk-3-m", nextRunAt: past(1) }
    missions.push(late)
    await rig.seed([missionInsertRow(late.user, late.id, { nextRunAt: late.nextRunAt })])
    const ticks = [firstTick, rig.tick(p)]
    await until("every mission written", 60_000, async () => {
      if ((await rig.runnerRows("brk-")).length >= missions.length) return true
      // The runs that timed out while it was open back off; a tick starts them again.
      ticks.push(rig.tick(p))
      await sleep(1_000)
      return false
    })
    await Promise.all(ticks)
    const requests = await run(standIn.requests)
    // The probe: the first request after the ones that opened it, not before the cool-down ended.
    const probe = requests[atOpen]!
    expect(probe.receivedAt - requests[atOpen - 1]!.receivedAt).toBeGreaterThanOrEqual(4_500)
    console.log(
      `breaker: ${atOpen} failed requests opened it, probe ${probe.receivedAt - requests[atOpen - 1]!.receivedAt} ms after the last, ${answered} answers after recovery`,
    )
    expect((await health()).llmBreaker).toMatchObject({ state: "closed", consecutiveFailures: 0 })
    expect(await gauge()).toBe(0)

    await sleep(1_500) // anything racing behind would land now
    const rows = await rig.runnerRows("brk-")
    expect(rows).toHaveLength(missions.length)
    const byMission = new Map(rows.map((r) => [`${r.user_id}/${r.record_id}`, r]))
    for (const m of missions) {
      expect(byMission.get(`${m.user}/${m.id}`)?.data.iterations.map((it) => it.id)).toEqual([iterationIdFor(m.id, m.nextRunAt)])
    }

    // Every answer's usage (the stand-in's default: 200 tokens) is charged to its user's window.
    const actors = await request(p, "GET", "/internal/actors", RIG_SERVICE_KEY)
    expect(actors.status).toBe(200)
    const spend = (actors.body.actors as ReadonlyArray<{ userId: string; tokensInWindow: number }>).filter((a) =>
      a.userId.startsWith("brk-"),
    )
    expect(spend).toHaveLength(missions.length)
    expect(spend.reduce((n, a) => n + a.tokensInWindow, 0)).toBe(answered * 200)
    expect((await p.stop("SIGTERM", 15_000)).code).toBe(0)
  }, 180_000)
})
