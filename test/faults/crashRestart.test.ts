/**
 * SIGKILL on the real Bun process at the two moments that matter, then a restart:
 * - after the LLM answered and before the write-back reached Postgres (the process's connection runs
 *   through a TcpProxy that freezes the write-back's INSERT, so the kill lands exactly there);
 * - while the LLM call is in flight.
 * A new process plans each mission again and writes it once. It waits for the dead process's claim
 * to expire first (MISSION_TIMEOUT_MS + the runner's 60 s margin), which is why this file is slow.
 */
import { Effect } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { iterationIdFor } from "../../src/domain/iteration.js"
import { record } from "../support/FaultLedger.js"
import { messagesOf } from "../support/LlmStandIn.js"
import type { ManaProcess } from "../support/ManaProcess.js"
import { makeRig, type Rig } from "../support/ProcessRig.js"
import { missionInsertRow } from "../support/seed.js"

const MISSION_TIMEOUT_MS = 4_000
const CLAIM_TTL_MS = MISSION_TIMEOUT_MS + 60_000
const tally = { faults: {} as Record<string, number>, runs: 0 }
const fault = (kind: string, n = 1) => {
  tally.faults[kind] = (tally.faults[kind] ?? 0) + n
}
const past = (minutes: number) => new Date(Date.now() - minutes * 60_000).toISOString()
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

let rig: Rig

const sigkill = async (p: ManaProcess) => {
  p.child.kill("SIGKILL")
  return p.exited
}

beforeAll(async () => {
  rig = await makeRig()
}, 120_000)

afterAll(async () => {
  if (rig === undefined) return
  const audit = await rig.audit()
  record({ suite: "crashRestart", faults: tally.faults, runs: tally.runs, iterationsWritten: audit.runnerRows, duplicates: audit.duplicates })
  await rig.close()
}, 120_000)

describe("SIGKILL and restart of the real Bun process", () => {
  it("killed after the LLM answered but before the write-back, and killed during the LLM call: a new process plans each again and writes it once", async () => {
    const { run, standIn, proxy } = rig
    const a = { user: "kill-a", id: "kill-a-m", nextRunAt: past(2) }
    const b = { user: "kill-b", id: "kill-b-m", nextRunAt: past(2) }
    await rig.seed([missionInsertRow(a.user, a.id, { nextRunAt: a.nextRunAt })])
    await run(standIn.reset)

    // 1. The write-back's INSERT is frozen on its way to Postgres; the LLM has answered by then.
    const first = await rig.startRunner({ MISSION_TIMEOUT_MS: String(MISSION_TIMEOUT_MS) }, { viaProxy: true })
    const trap = await run(proxy.holdClientMessage({ match: "INSERT INTO sync_changes" }))
    const tick = rig.tick(first).catch(() => undefined)
    await run(trap.caught.pipe(Effect.timeout("30 seconds"), Effect.orDie))
    const answered = await run(standIn.requests)
    // One run asked (its first request holds only the prompt); in tools mode it asked again for the
    // summary once the calls were answered. Every answer arrived before the write-back started.
    expect(answered.filter((r) => messagesOf(r).length === 2)).toHaveLength(1)
    for (const r of answered) {
      expect(r.closedAt).toBeDefined()
      expect(r.abortedByClient).toBe(false)
    }
    expect((await sigkill(first)).signal).toBe("SIGKILL")
    await tick
    fault("process:sigkill-between-llm-answer-and-write-back")
    await sleep(500) // the server sees the connection go and rolls the transaction back
    expect(await rig.runnerRows(a.user)).toHaveLength(0)

    // 2. Another mission; this process dies while its LLM request still waits for an answer.
    await rig.seed([missionInsertRow(b.user, b.id, { nextRunAt: b.nextRunAt })])
    await run(standIn.setResponder(() => ({ delayMs: 30_000 })))
    const second = await rig.startRunner({ MISSION_TIMEOUT_MS: String(MISSION_TIMEOUT_MS) })
    const tick2 = rig.tick(second).catch(() => undefined)
    // kill-a is still claimed by the dead process, so the call in flight is kill-b's.
    const deadline = Date.now() + 20_000
    while ((await run(standIn.inFlight)) === 0 && Date.now() < deadline) await sleep(50)
    expect(await run(standIn.inFlight)).toBeGreaterThan(0)
    expect((await sigkill(second)).signal).toBe("SIGKILL")
    await tick2
    fault("process:sigkill-during-llm-call")
    expect(await rig.runnerRows(b.user)).toHaveLength(0)

    // 3. A fresh process: once the dead processes' claims expire, both missions are planned again, once.
    await run(standIn.reset)
    const third = await rig.startRunner({ MISSION_TIMEOUT_MS: String(MISSION_TIMEOUT_MS) })
    const started = Date.now()
    for (;;) {
      await rig.tick(third)
      if ((await rig.runnerRows(a.user)).length === 1 && (await rig.runnerRows(b.user)).length === 1) break
      expect(Date.now() - started).toBeLessThan(CLAIM_TTL_MS + 30_000)
      await sleep(2_000)
    }
    expect((await run(standIn.requests)).length).toBeGreaterThanOrEqual(2) // each mission asked the LLM again
    tally.runs += 4 // two runs killed, two run again
    // More ticks change nothing: still exactly one row each, holding this slot's iteration.
    for (let i = 0; i < 3; i++) await rig.tick(third)
    for (const m of [a, b]) {
      const rows = await rig.runnerRows(m.user)
      expect(rows).toHaveLength(1)
      expect(rows[0]!.data.iterations.map((it) => it.id)).toEqual([iterationIdFor(m.id, m.nextRunAt)])
    }
    expect((await third.stop("SIGTERM", 15_000)).code).toBe(0)
    const audit = await rig.audit()
    expect(audit.duplicates).toBe(0)
  }, 240_000)
})
