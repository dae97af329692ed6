/**
 * A tick during a long discovery pass (SPEC §9; issue 16 item 7), on the real Bun process against a
 * real database (server or PGlite) as the runner role. The pass is made long by a TcpProxy in front of
 * the database that holds back the discovery cursor's DECLARE until the test lets it go, so the pass
 * sits inside its transaction for as long as the test likes.
 * - The discovery loop's pass is under way: a tick answers overlap-skipped at once, not after the pass.
 * - A tick's own pass is under way and its HTTP client hangs up: the next tick answers overlap-skipped
 *   at once, and once the pass ends a tick runs normally again.
 */
import { Effect } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { eventually, request } from "../support/ManaProcess.js"
import { makeRig, RIG_SERVICE_KEY, type Rig } from "../support/ProcessRig.js"
import { missionInsertRow } from "../support/seed.js"

/** Far above any honest answer time on a loaded machine; a tick that waits for the held pass never answers. */
const ANSWER_WITHIN_MS = 20_000

let rig: Rig

const future = (minutes: number) => new Date(Date.now() + minutes * 60_000).toISOString()

/** The tick's answer, or a rejection naming what it waited for once ANSWER_WITHIN_MS passed. */
const tickAnswered = (p: Parameters<typeof request>[0], what: string) =>
  Promise.race([
    request(p, "POST", "/internal/tick", RIG_SERVICE_KEY),
    new Promise<never>((_, reject) =>
      setTimeout(() => reject(new Error(`${what}: no answer within ${ANSWER_WITHIN_MS} ms`)), ANSWER_WITHIN_MS).unref(),
    ),
  ])

beforeAll(async () => {
  rig = await makeRig()
  // Not due: the passes below have rows to read (so they DECLARE their cursor) and nothing to run.
  await rig.seed([missionInsertRow("tick-u1", "tick-m1", { nextRunAt: future(600) })])
}, 120_000)

afterAll(async () => {
  await rig?.close()
}, 120_000)

describe("a tick during a long discovery pass", () => {
  it("while the discovery loop's pass is under way, a tick answers overlap-skipped at once", async () => {
    const { run, proxy } = rig
    const hold = await run(proxy.holdClientMessage({ match: "DECLARE mana_ai_discovery" }))
    // The loop's first pass starts with the process; a long interval keeps it the only one.
    const p = await rig.startRunner({ TICK_ENABLED: "true", TICK_INTERVAL_MS: "600000" }, { viaProxy: true })
    await run(hold.caught.pipe(Effect.timeout("60 seconds"), Effect.orDie))

    const during = await tickAnswered(p, "a tick during the loop's discovery pass")
    expect(during.status).toBe(200)
    expect(during.body.errors).toEqual(["overlap-skipped"])

    await run(hold.release)
    // The pass ends; a tick then runs its own pass and answers in full.
    await eventually("a tick that runs once the pass ended", 60_000, async () => {
      const after = await tickAnswered(p, "a tick after the pass")
      return after.status === 200 && after.body.errors.length === 0
    })
    expect((await p.stop("SIGTERM", 20_000)).code).toBe(0)
  }, 180_000)

  it("a tick whose client hung up during its pass leaves the next tick an immediate overlap-skipped, then ticks run again", async () => {
    const { run, proxy } = rig
    await rig.seed([missionInsertRow("tick-u2", "tick-m2", { nextRunAt: future(600) })])
    const p = await rig.startRunner({}, { viaProxy: true }) // TICK_ENABLED=false: only ticks discover
    const hold = await run(proxy.holdClientMessage({ match: "DECLARE mana_ai_discovery" }))

    const gone = new AbortController()
    const first = fetch(`${p.baseUrl}/internal/tick`, {
      method: "POST",
      headers: { "X-Service-Key": RIG_SERVICE_KEY },
      signal: gone.signal,
    }).catch((e: unknown) => e)
    await run(hold.caught.pipe(Effect.timeout("60 seconds"), Effect.orDie))
    gone.abort()
    expect(await first).toBeInstanceOf(Error)

    const next = await tickAnswered(p, "the tick after the one whose client hung up")
    expect(next.status).toBe(200)
    expect(next.body.errors).toEqual(["overlap-skipped"])

    await run(hold.release)
    await eventually("a tick that runs once the abandoned pass ended", 60_000, async () => {
      const after = await tickAnswered(p, "a tick after the abandoned pass")
      return after.status === 200 && after.body.errors.length === 0
    })
    // The abandoned tick's pass was not cut short: both missions are discovered.
    const missions = await request(p, "GET", "/internal/missions/tick-u2", RIG_SERVICE_KEY)
    expect(missions.status).toBe(200)
    expect(JSON.stringify(missions.body)).toContain("tick-m2")
    expect((await p.stop("SIGTERM", 20_000)).code).toBe(0)
  }, 180_000)
})
