/**
 * The real Bun process under faults that need no restart:
 * - two runner processes on one database at once: every due run is written exactly once;
 * - the database unreachable for 4 s, and (on a server) the process's backends terminated while a
 *   run waits on the LLM: it recovers by itself, same pid, no actor quarantined, nothing lost or doubled.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { iterationIdFor } from "../../src/domain/iteration.js"
import { record } from "../support/FaultLedger.js"
import { messagesOf } from "../support/LlmStandIn.js"
import { request } from "../support/ManaProcess.js"
import { RIG_SERVICE_KEY, makeRig, type Rig } from "../support/ProcessRig.js"
import { missionInsertRow } from "../support/seed.js"

const tally = { faults: {} as Record<string, number>, runs: 0 }
const fault = (kind: string, n = 1) => {
  tally.faults[kind] = (tally.faults[kind] ?? 0) + n
}
const past = (minutes: number) => new Date(Date.now() - minutes * 60_000).toISOString()
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
const until = async (what: string, timeoutMs: number, check: () => Promise<boolean>) => {
  const deadline = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await sleep(250)
  }
}

let rig: Rig

beforeAll(async () => {
  rig = await makeRig()
}, 120_000)

afterAll(async () => {
  if (rig === undefined) return
  const audit = await rig.audit()
  record({ suite: "liveProcess", faults: tally.faults, runs: tally.runs, iterationsWritten: audit.runnerRows, duplicates: audit.duplicates })
  await rig.close()
}, 120_000)

describe("the live Bun process under faults", () => {
  it("two runner processes on one database at once: every due run is written exactly once", async () => {
    const { run, standIn } = rig
    await run(standIn.reset)
    // Replies take 40–240 ms, so the two processes' runs overlap.
    await run(standIn.setResponder((r) => ({ delayMs: 40 + ((r.index * 37) % 200) })))
    // Deadlines far above the replies: a run timed out on a busy machine would be retried and ask the LLM
    // again, which is not what this test counts (two processes racing for the same run).
    const env = { TICK_ENABLED: "true", TICK_INTERVAL_MS: "300", USER_CONCURRENCY: "2", MISSION_TIMEOUT_MS: "30000", LLM_TIMEOUT_MS: "20000" }
    const [a, b] = await Promise.all([rig.startRunner(env), rig.startRunner(env)])
    const missions = Array.from({ length: 10 }, (_, i) => `twin-${i}`).flatMap((u) =>
      [0, 1, 2, 3].map((k) => ({ user: u, id: `${u}-m${k}`, nextRunAt: past(1 + k) })),
    )
    await rig.seed(missions.map((m) => missionInsertRow(m.user, m.id, { nextRunAt: m.nextRunAt })))
    fault("process:two-runners-one-database")
    // Both also take explicit ticks at the same moments.
    for (let i = 0; i < 3; i++) await Promise.all([rig.tick(a!), rig.tick(b!)])
    await until("every mission written", 90_000, async () => (await rig.runnerRows("twin-")).length >= missions.length)
    await sleep(2_000) // anything racing behind would land now
    const rows = await rig.runnerRows("twin-")
    tally.runs += missions.length
    expect(rows).toHaveLength(missions.length)
    const byMission = new Map(rows.map((r) => [`${r.user_id}/${r.record_id}`, r]))
    expect(byMission.size).toBe(missions.length)
    for (const m of missions) {
      expect(byMission.get(`${m.user}/${m.id}`)?.data.iterations.map((it) => it.id)).toEqual([iterationIdFor(m.id, m.nextRunAt)])
    }
    // Claims keep the second process from spending an LLM call on a run the first has in hand. A run's
    // first request holds only the prompt (system, user); tools mode's later rounds carry more.
    const runsAsked = (await run(standIn.requests)).filter((r) => messagesOf(r).length === 2)
    expect(runsAsked.length).toBeLessThanOrEqual(missions.length + 4)
    const [ea, eb] = await Promise.all([a!.stop("SIGTERM", 15_000), b!.stop("SIGTERM", 15_000)])
    expect([ea.code, eb.code]).toEqual([0, 0])
  }, 180_000)

  it("the database unreachable for 4 s, and its backends terminated, under a live process: it recovers by itself", async () => {
    const { run, standIn, proxy } = rig
    await run(standIn.reset)
    const p = await rig.startRunner({ TICK_ENABLED: "true", TICK_INTERVAL_MS: "500", RESTART_MAX: "3" }, { viaProxy: true })
    const pid = p.child.pid
    await rig.seed(["out-0", "out-1"].map((u) => missionInsertRow(u, `${u}-m`, { nextRunAt: past(1) })))
    await until("the first missions written", 30_000, async () => (await rig.runnerRows("out-")).length === 2)

    // The outage: connections cut, new ones refused; missions keep arriving at the sync server meanwhile.
    await run(proxy.setMode("refuse"))
    fault("db:outage-under-live-process", await run(proxy.dropAll))
    await rig.seed(["out-2", "out-3", "out-4"].map((u) => missionInsertRow(u, `${u}-m`, { nextRunAt: past(1) })))
    expect((await request(p, "GET", "/health")).status).toBe(200)
    await sleep(4_000)
    await run(proxy.resume)
    await until("the missions of the outage written", 45_000, async () => (await rig.runnerRows("out-")).length === 5)

    if (rig.onServer) {
      // Terminate the process's backends while a run waits on the LLM.
      await run(standIn.setResponder(() => ({ delayMs: 1_000 })))
      await rig.seed([missionInsertRow("out-5", "out-5-m", { nextRunAt: past(1) })])
      await until("the LLM call of out-5", 20_000, async () => (await run(standIn.inFlight)) > 0)
      fault("db:pg_terminate_backend-under-live-process", await rig.terminateRunnerBackends())
      await until("out-5 written", 45_000, async () => (await rig.runnerRows("out-")).length === 6)
    }

    const expected = rig.onServer ? 6 : 5
    await sleep(1_500)
    const rows = await rig.runnerRows("out-")
    tally.runs += expected
    expect(rows).toHaveLength(expected)
    expect(new Set(rows.map((r) => r.user_id)).size).toBe(expected)
    // The same process throughout: never restarted, no actor quarantined, ready again.
    expect(p.child.pid).toBe(pid)
    expect(p.child.exitCode).toBeNull()
    const actors = await request(p, "GET", "/internal/actors", RIG_SERVICE_KEY)
    expect(actors.status).toBe(200)
    expect(actors.body.actors.filter((a: { state: string }) => a.state === "quarantined")).toEqual([])
    expect((await request(p, "GET", "/ready")).status).toBe(200)
    expect((await p.stop("SIGTERM", 15_000)).code).toBe(0)
  }, 180_000)
})
