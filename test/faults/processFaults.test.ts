/**
 * Process faults on the real Bun process (node_modules/.bin/bun src/main.ts) against a real database
 * as the runner role and the HTTP LLM stand-in:
 *
 * - SIGKILL after the LLM answered and before the write-back reached Postgres (the process's
 *   connection runs through a TcpProxy that freezes the INSERT), and SIGKILL while the LLM call is in
 *   flight; a new process plans the mission again and writes it once.
 * - Two runner processes on one database at once: every due run is written exactly once.
 * - The database unreachable for seconds, and (on a server) the process's backends terminated, under
 *   a live process: it recovers by itself, same pid, no actor quarantined, nothing lost or doubled.
 */
import { Context, Effect, Exit, Layer, Redacted, Scope } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { iterationIdFor } from "../../src/domain/iteration.js"
import { auditMissions, record } from "../support/FaultLedger.js"
import { LlmStandIn, type LlmStandInShape } from "../support/LlmStandIn.js"
import { eventually, type ManaProcess, request, startManaProcess } from "../support/ManaProcess.js"
import { type Change, insertChanges, missionInsertRow } from "../support/seed.js"
import { TcpProxy, type TcpProxyShape, targetOf } from "../support/TcpProxy.js"
import { TestDatabase, TestDatabaseLive, type TestDatabaseShape } from "../support/TestDatabase.js"

const KEY = "faults-service-key-0123456789abcdef"
const MISSION_TIMEOUT_MS = 4_000
/** A crashed process's claim outlives it by the run's deadline plus the runner's 60 s margin. */
const CLAIM_TTL_MS = MISSION_TIMEOUT_MS + 60_000
const ON_SERVER = (process.env.TEST_DATABASE_URL ?? "") !== ""

let scope: Scope.CloseableScope
let db: TestDatabaseShape
let standIn: LlmStandInShape
let proxy: TcpProxyShape
const processes: Array<ManaProcess> = []
const tally = { faults: {} as Record<string, number>, runs: 0 }
const fault = (kind: string, n = 1) => {
  tally.faults[kind] = (tally.faults[kind] ?? 0) + n
}

const run = <A>(effect: Effect.Effect<A>) => Effect.runPromise(effect)
const seed = (changes: ReadonlyArray<Change>) => run(insertChanges(changes).pipe(Effect.provideService(TestDatabase, db)))
const past = (minutes: number) => new Date(Date.now() - minutes * 60_000).toISOString()
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

const runnerRowsOf = async (userPrefix: string) =>
  (await db.ownerQuery(
    `SELECT user_id, record_id, data FROM sync_changes
     WHERE client_id = 'mana-ai-runner' AND user_id LIKE $1 || '%' ORDER BY created_at, id`,
    [userPrefix],
  )) as ReadonlyArray<{ user_id: string; record_id: string; data: { iterations: ReadonlyArray<{ id: string }> } }>

const startRunner = async (env: Readonly<Record<string, string>> = {}, viaProxy = false) => {
  const url = viaProxy ? Redacted.value(proxy.rewrite(db.runnerUrl)) : Redacted.value(db.runnerUrl)
  const p = await startManaProcess({
    env: {
      SYNC_DATABASE_URL: url,
      MANA_LLM_URL: standIn.url,
      MANA_SERVICE_KEY: KEY,
      TICK_ENABLED: "false",
      DB_POOL_MAX: "4",
      MISSION_TIMEOUT_MS: String(MISSION_TIMEOUT_MS),
      LLM_TIMEOUT_MS: "3000",
      SHUTDOWN_GRACE_MS: "2000",
      LOG_LEVEL: "info",
      ...env,
    },
  })
  processes.push(p)
  await eventually("/ready", 60_000, async () => (await request(p, "GET", "/ready")).status === 200)
  return p
}

const sigkill = async (p: ManaProcess) => {
  p.child.kill("SIGKILL")
  return p.exited
}

beforeAll(async () => {
  scope = await run(Scope.make())
  const context = await run(
    Layer.buildWithScope(
      Layer.provideMerge(
        Layer.unwrapEffect(Effect.map(TestDatabase, (d) => TcpProxy.layer(targetOf(d.runnerUrl)))),
        Layer.merge(TestDatabaseLive, LlmStandIn.layer),
      ),
      scope,
    ),
  )
  db = Context.get(context, TestDatabase)
  standIn = Context.get(context, LlmStandIn)
  proxy = Context.get(context, TcpProxy)
}, 120_000)

afterAll(async () => {
  for (const p of processes) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill("SIGKILL")
  await Promise.all(processes.map((p) => p.exited))
  if (db !== undefined) {
    const audit = await run(auditMissions.pipe(Effect.provideService(TestDatabase, db)))
    record({
      suite: "processFaults",
      faults: tally.faults,
      runs: tally.runs,
      iterationsWritten: audit.runnerRows,
      duplicates: audit.duplicates,
    })
  }
  await run(Scope.close(scope, Exit.void))
}, 120_000)

describe("process faults on the real Bun process", () => {
  it("SIGKILL after the LLM answered but before the write-back, and SIGKILL during the LLM call: a new process plans each again and writes it once", async () => {
    await seed([missionInsertRow("kill-a", "kill-a-m", { nextRunAt: past(2) })])
    await run(standIn.reset)

    // 1. The write-back's INSERT is frozen on its way to Postgres; the LLM has answered by then.
    const first = await startRunner({}, true)
    const trap = await run(proxy.holdClientMessage({ match: "INSERT INTO sync_changes" }))
    const tick = request(first, "POST", "/internal/tick", KEY).catch(() => undefined)
    await run(trap.caught.pipe(Effect.timeout("30 seconds"), Effect.orDie))
    const answered = await run(standIn.requests)
    expect(answered).toHaveLength(1)
    expect(answered[0]!.closedAt).toBeDefined()
    expect(answered[0]!.abortedByClient).toBe(false)
    expect((await sigkill(first)).signal).toBe("SIGKILL")
    await tick
    fault("process:sigkill-between-llm-answer-and-write-back")
    await sleep(500) // the server sees the connection go and rolls the transaction back
    expect(await runnerRowsOf("kill-a")).toHaveLength(0)

    // 2. Another mission; this process dies while its LLM request is still waiting for an answer.
    await seed([missionInsertRow("kill-b", "kill-b-m", { nextRunAt: past(2) })])
    await run(standIn.setResponder(() => ({ delayMs: 30_000 })))
    const second = await startRunner()
    const tick2 = request(second, "POST", "/internal/tick", KEY).catch(() => undefined)
    // kill-a is still claimed by the dead process, so the call in flight is kill-b's.
    await eventually("the LLM call of kill-b", 20_000, async () => (await run(standIn.inFlight)) > 0, 50)
    expect((await sigkill(second)).signal).toBe("SIGKILL")
    await tick2
    fault("process:sigkill-during-llm-call")
    expect(await runnerRowsOf("kill-b")).toHaveLength(0)

    // 3. A fresh process: once the dead processes' claims expire, both missions are planned again, once.
    await run(standIn.reset)
    const third = await startRunner()
    const started = Date.now()
    let ticks = 0
    await eventually("both missions written by the new process", CLAIM_TTL_MS + 30_000, async () => {
      const t = await request(third, "POST", "/internal/tick", KEY)
      ticks++
      tally.runs += Number(t.body?.dueMissionCount ?? 0)
      return (await runnerRowsOf("kill-a")).length === 1 && (await runnerRowsOf("kill-b")).length === 1
    }, 2_000)
    expect(Date.now() - started).toBeLessThan(CLAIM_TTL_MS + 30_000)
    expect(ticks).toBeGreaterThanOrEqual(1)
    const replanned = await run(standIn.requests)
    expect(replanned.length).toBeGreaterThanOrEqual(2) // each mission asked the LLM again
    // A few more ticks change nothing: still exactly one row each.
    for (let i = 0; i < 3; i++) await request(third, "POST", "/internal/tick", KEY)
    for (const prefix of ["kill-a", "kill-b"]) {
      const rows = await runnerRowsOf(prefix)
      expect(rows).toHaveLength(1)
      expect(rows[0]!.data.iterations).toHaveLength(1)
      expect(rows[0]!.data.iterations[0]!.id).toBe(iterationIdFor(`${prefix}-m`, (await seededNextRunAt(prefix))))
    }
    expect((await third.stop("SIGTERM", 15_000)).code).toBe(0)
  }, 240_000)

  it("two runner processes on one database at once: every due run is written exactly once", async () => {
    await run(standIn.reset)
    // Replies take 40–240 ms, so the two processes' runs overlap.
    await run(standIn.setResponder((r) => ({ delayMs: 40 + ((r.index * 37) % 200) })))
    const env = { TICK_ENABLED: "true", TICK_INTERVAL_MS: "300", USER_CONCURRENCY: "2" }
    const a = await startRunner(env)
    const b = await startRunner(env)
    const users = Array.from({ length: 10 }, (_, i) => `twin-${i}`)
    const missions = users.flatMap((u) => [0, 1, 2, 3].map((k) => ({ user: u, id: `${u}-m${k}`, nextRunAt: past(1 + k) })))
    await seed(missions.map((m) => missionInsertRow(m.user, m.id, { nextRunAt: m.nextRunAt })))
    fault("process:two-runners-one-database")
    // Both also take explicit ticks at the same moments.
    for (let i = 0; i < 3; i++) {
      await Promise.all([request(a, "POST", "/internal/tick", KEY), request(b, "POST", "/internal/tick", KEY)])
    }
    await eventually("every mission written", 90_000, async () => (await runnerRowsOf("twin-")).length >= missions.length, 500)
    await sleep(2_000) // anything racing behind would land now
    const rows = await runnerRowsOf("twin-")
    tally.runs += missions.length
    expect(rows).toHaveLength(missions.length)
    const byMission = new Map(rows.map((r) => [`${r.user_id}/${r.record_id}`, r]))
    expect(byMission.size).toBe(missions.length)
    for (const m of missions) {
      const row = byMission.get(`${m.user}/${m.id}`)
      expect(row?.data.iterations.map((it) => it.id)).toEqual([iterationIdFor(m.id, m.nextRunAt)])
    }
    const llmCalls = (await run(standIn.requests)).length
    // Claims keep the second process from spending an LLM call on a run the first has in hand.
    expect(llmCalls).toBeLessThanOrEqual(missions.length + 4)
    const [ea, eb] = await Promise.all([a.stop("SIGTERM", 15_000), b.stop("SIGTERM", 15_000)])
    expect([ea.code, eb.code]).toEqual([0, 0])
  }, 180_000)

  it("the database unreachable for 4 s, and its backends terminated, under a live process: it recovers by itself, nothing lost or doubled", async () => {
    await run(standIn.reset)
    const p = await startRunner({ TICK_ENABLED: "true", TICK_INTERVAL_MS: "500", RESTART_MAX: "3" }, true)
    const pid = p.child.pid
    await seed(["out-0", "out-1"].map((u) => missionInsertRow(u, `${u}-m`, { nextRunAt: past(1) })))
    await eventually("the first missions written", 30_000, async () => (await runnerRowsOf("out-")).length === 2, 250)

    // The outage: connections cut, new ones refused; missions keep arriving at the sync server meanwhile.
    await run(proxy.setMode("refuse"))
    fault("db:outage-under-live-process", await run(proxy.dropAll))
    await seed(["out-2", "out-3", "out-4"].map((u) => missionInsertRow(u, `${u}-m`, { nextRunAt: past(1) })))
    expect((await request(p, "GET", "/health")).status).toBe(200)
    await sleep(4_000)
    await run(proxy.resume)
    await eventually("the missions of the outage written", 45_000, async () => (await runnerRowsOf("out-")).length === 5, 250)

    if (ON_SERVER) {
      // Terminate the process's backends while a run waits on the LLM.
      await run(standIn.setResponder(() => ({ delayMs: 1_000 })))
      await seed([missionInsertRow("out-5", "out-5-m", { nextRunAt: past(1) })])
      await eventually("the LLM call of out-5", 20_000, async () => (await run(standIn.inFlight)) > 0, 50)
      const killed = await db.ownerQuery(
        `SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity
         WHERE usename = $1 AND datname = current_database() AND pid <> pg_backend_pid()`,
        [db.runnerRole],
      )
      fault("db:pg_terminate_backend-under-live-process", Number(killed[0]?.n ?? 0))
      await eventually("out-5 written", 45_000, async () => (await runnerRowsOf("out-")).length === 6, 250)
    }

    const expected = ON_SERVER ? 6 : 5
    await sleep(1_500)
    const rows = await runnerRowsOf("out-")
    tally.runs += expected
    expect(rows).toHaveLength(expected)
    expect(new Set(rows.map((r) => r.user_id)).size).toBe(expected)
    // The same process throughout: never restarted, no actor quarantined, ready again.
    expect(p.child.pid).toBe(pid)
    expect(p.child.exitCode).toBeNull()
    const actors = await request(p, "GET", "/internal/actors", KEY)
    expect(actors.status).toBe(200)
    expect(actors.body.actors.filter((a: { state: string }) => a.state === "quarantined")).toEqual([])
    expect((await request(p, "GET", "/ready")).status).toBe(200)
    expect((await p.stop("SIGTERM", 15_000)).code).toBe(0)
  }, 180_000)
})

const seededNextRunAt = async (prefix: string): Promise<string> => {
  const rows = await db.ownerQuery(
    `SELECT data->>'nextRunAt' AS next FROM sync_changes WHERE user_id = $1 AND op = 'insert'`,
    [prefix],
  )
  return String(rows[0]?.next)
}
