/**
 * Cluster mode with real runner processes (issue 19): the bundle `npm start` runs (`bun dist/main.js`)
 * twice with RUNNER_ADDRESS on
 * one database. Needs a Postgres server: the runners hold shard locks on their own sessions
 * (advisory locks) and ping each other; PGlite serves one session at a time, so on PGlite the file is
 * skipped.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest"
import { eventually, freePort, type ManaProcess, request } from "../support/ManaProcess.js"
import { makeRig, RIG_SERVICE_KEY, type Rig } from "../support/ProcessRig.js"
import { missionInsertRow, missionUpdateRow } from "../support/seed.js"

const onServer = process.env.TEST_DATABASE_URL !== undefined && process.env.TEST_DATABASE_URL !== ""

/** Users spread over the shards; each has MISSIONS due missions (each due once: hourly cadence). */
const USERS = 24
const MISSIONS = 2

let rig: Rig

/**
 * Due a minute ago, so the next slot of the hourly cadence is 59 minutes away. The seed's default
 * (2026-03-02T08:00Z) puts every next slot on the full hour: a test running across one ran its
 * missions twice (51 and 76 rows for 48 missions, 0 duplicate ids).
 */
const dueNow = () => ({ nextRunAt: new Date(Date.now() - 60_000).toISOString() })

const actorList = async (p: ManaProcess): Promise<ReadonlyArray<{ userId: string; inFlight: number }>> => {
  const r = await request(p, "GET", "/internal/actors", RIG_SERVICE_KEY)
  if (r.status !== 200) throw new Error(`/internal/actors answered ${r.status}`)
  return Array.isArray(r.body) ? r.body : r.body.actors
}

const actorsOf = async (p: ManaProcess): Promise<Set<string>> => new Set((await actorList(p)).map((a) => a.userId))

const health = async (p: ManaProcess) => (await request(p, "GET", "/health")).body

/** A user's LLM requests at the stand-in, as [received, closed] (the prompt carries "title of <user> "). */
const userRequests = (
  user: string,
  requests: ReadonlyArray<{ readonly body: unknown; readonly receivedAt: number; readonly closedAt: number | undefined }>,
) =>
  requests
    .filter((r) => JSON.stringify(r.body).includes(`title of ${user} `))
    .map((r) => [r.receivedAt, r.closedAt ?? Number.POSITIVE_INFINITY] as const)

const runnerEnv = async (extra: Record<string, string> = {}) => ({
  RUNNER_ADDRESS: `127.0.0.1:${await freePort()}`,
  CLUSTER_SHARDS: "60",
  TICK_ENABLED: "true",
  TICK_INTERVAL_MS: "300",
  PLANNER_MODE: "json",
  ...extra,
})

/** Both runners hold shards, together all of them, and see each other. */
const settled = async (runners: ReadonlyArray<ManaProcess>) => {
  const views = await Promise.all(runners.map(health))
  const owned = views.reduce((n, h) => n + (h.cluster?.shardsOwned ?? 0), 0)
  return (
    owned === 60 &&
    views.every((h) => h.cluster.shardsOwned > 0 && h.cluster.peers.filter((p: { healthy: boolean }) => p.healthy).length === runners.length)
  )
}

/** Runners of the current test: any still alive when it ends (a failure) is killed, so the next starts clean. */
const started: Array<ManaProcess> = []
const startRunner = async (env: Record<string, string>) => {
  const p = await rig.startRunner(env)
  started.push(p)
  return p
}

beforeAll(async () => {
  if (onServer) rig = await makeRig()
}, 120_000)

afterEach(async () => {
  for (const p of started.splice(0)) {
    if (p.child.exitCode === null && p.child.signalCode === null) {
      p.child.kill("SIGKILL")
      await p.exited
    }
  }
})

afterAll(async () => {
  if (rig !== undefined) await rig.close()
}, 120_000)

describe.skipIf(!onServer)("cluster runners on one database", () => {
  it.each([2, 3])("%i runners own disjoint users that together are all, and write every due run once", async (count) => {
    const users = Array.from({ length: USERS }, (_, u) => `own${count}-${u}`)
    await rig.seed(users.flatMap((user) => Array.from({ length: MISSIONS }, (_, k) => missionInsertRow(user, `${user}-m${k}`, dueNow()))))
    const runners: Array<ManaProcess> = []
    for (let i = 0; i < count; i++) runners.push(await startRunner(await runnerEnv()))
    await eventually("every runner holds shards", 60_000, () => settled(runners))
    await eventually("every due run written", 60_000, async () => (await rig.runnerRows(`own${count}-`)).length >= USERS * MISSIONS)
    const owners = async () => {
      const sets = await Promise.all(runners.map(actorsOf))
      return users.map((u) => sets.filter((set) => set.has(u)).length)
    }
    // While shards still move (a runner that joined last takes its share a little later), a user can
    // be on no runner for a moment: its old owner dropped it, its new one spawns it on its next pass.
    // Ownership is judged once it is steady: exactly one runner per user on two reads 1 s apart.
    const steadyOwners = async () => {
      if (!(await owners()).every((n) => n === 1)) return false
      await new Promise((resolve) => setTimeout(resolve, 1_000))
      return (await owners()).every((n) => n === 1)
    }
    await eventually("each user's actor on exactly one runner, steadily", 60_000, steadyOwners)
    for (const set of await Promise.all(runners.map(actorsOf))) expect(set.size).toBeGreaterThan(0)
    const audit = await rig.audit()
    expect(audit.duplicates).toBe(0)
    expect((await rig.runnerRows(`own${count}-`)).length).toBe(USERS * MISSIONS)
    // The tick covers this runner's users and says so.
    const [first, ...rest] = runners as [ManaProcess, ...Array<ManaProcess>]
    const tick = await rig.tick(first)
    expect(tick.body.cluster).toMatchObject({ covers: "users of this runner's shards", shards: 60 })
    // SIGTERM: the runner drains, stops, and its shards (and users) go to the others.
    const stopped = await first.stop("SIGTERM", 20_000)
    expect(stopped.code).toBe(0)
    expect(first.logs().at(-1)?.message).toBe("mana-ai stopped")
    await eventually("the others hold every shard", 30_000, async () => {
      const views = await Promise.all(rest.map(health))
      return views.reduce((n, h) => n + h.cluster.shardsOwned, 0) === 60
    })
    await eventually("and every user's actor, once", 30_000, async () => {
      const sets = await Promise.all(rest.map(actorsOf))
      return users.every((u) => sets.filter((set) => set.has(u)).length === 1)
    })
    for (const r of rest) await r.stop("SIGTERM", 20_000)
    // Shards moved at every join and stop: SqlRunnerStorage sent its lock statements for several at once
    // on one reserved connection, and they took turns in our queue (Database.ts), not in pg's deprecated one.
    for (const r of runners) expect(r.stderr()).not.toContain("already executing a query")
  }, 180_000)

  it("after a SIGKILL of one runner the other writes its users' due runs within 10 s, once each", async () => {
    const users = Array.from({ length: USERS }, (_, u) => `kill-${u}`)
    const later = "2099-01-01T00:00:00.000Z"
    await rig.seed(users.map((user) => missionInsertRow(user, `${user}-m`, { nextRunAt: later })))
    const envA = await runnerEnv()
    const a = await startRunner(envA)
    const b = await startRunner(await runnerEnv())
    await eventually("both runners hold shards", 60_000, () => settled([a, b]))
    await eventually("every user has an actor on one runner", 30_000, async () => {
      const [onA, onB] = await Promise.all([actorsOf(a), actorsOf(b)])
      return users.every((u) => onA.has(u) !== onB.has(u))
    })
    const onA = [...(await actorsOf(a))].filter((u) => u.startsWith("kill-"))
    expect(onA.length).toBeGreaterThan(0)
    a.child.kill("SIGKILL")
    const killedAt = Date.now()
    await a.exited
    // Due from now on: only the survivor can write them, the dead runner's users included.
    await rig.seed(users.map((user) => missionUpdateRow(user, `${user}-m`, { nextRunAt: new Date(killedAt - 1000).toISOString() })))
    // The survivor finds the dead runner by its liveness session and tells the cluster at once.
    await eventually("the survivor found the dead runner", 5_000, async () =>
      b.logs().some(
        (l) =>
          l.message === "a runner died: its run claims given back, the cluster told" &&
          String(l.annotations?.runners ?? "") === envA.RUNNER_ADDRESS,
      ),
    50)
    const foundMs = Date.now() - killedAt
    await eventually("the survivor wrote every due run", 10_000 - (Date.now() - killedAt), async () => {
      const rows = await rig.runnerRows("kill-")
      return users.every((u) => rows.some((r) => r.user_id === u))
    }, 100)
    const tookMs = Date.now() - killedAt
    expect(tookMs).toBeLessThan(10_000)
    const rows = await rig.runnerRows("kill-")
    expect(rows.length).toBe(USERS)
    expect((await rig.audit()).duplicates).toBe(0)
    const survivor = await actorsOf(b)
    expect(onA.filter((u) => !survivor.has(u))).toEqual([])
    const h = await health(b)
    expect(h.cluster.shardsOwned).toBe(60)
    process.stdout.write(
      `cluster failover: the dead runner found ${foundMs} ms and every due run of its ${onA.length} users written ${tookMs} ms after the kill\n`,
    )
    await b.stop("SIGTERM", 20_000)
  }, 180_000)

  it("a run under way on a runner SIGKILLed is run again by the other within 10 s, and written once", async () => {
    await rig.run(rig.standIn.reset)
    // Slow answers until the kill, so the victim's runs are surely under way when it dies; quick ones after.
    let slow = true
    await rig.run(rig.standIn.setResponder(() => ({ delayMs: slow ? 3_000 : 100 })))
    // Deadlines well beyond the slow answers: the survivor's own runs finish, none times out.
    const deadlines = { MISSION_TIMEOUT_MS: "20000", LLM_TIMEOUT_MS: "10000" }
    const a = await startRunner(await runnerEnv(deadlines))
    const b = await startRunner(await runnerEnv(deadlines))
    await eventually("both runners hold shards", 60_000, () => settled([a, b]))
    const users = Array.from({ length: USERS }, (_, u) => `flight-${u}`)
    await rig.seed(users.map((user) => missionInsertRow(user, `${user}-m`, dueNow())))
    // Kill the runner that has runs under way (both have, usually): its LLM requests are out, nothing written yet.
    let victim: ManaProcess | undefined
    await eventually("runs under way", 30_000, async () => {
      for (const p of [a, b]) {
        if ((await actorList(p)).some((x) => x.userId.startsWith("flight-") && x.inFlight > 0)) {
          victim = p
          return true
        }
      }
      return false
    }, 20)
    const killed = victim!
    const survivor = killed === a ? b : a
    const running = (await actorList(killed))
      .filter((x) => x.userId.startsWith("flight-") && x.inFlight > 0)
      .map((x) => x.userId)
    killed.child.kill("SIGKILL")
    const killedAt = Date.now()
    slow = false
    await killed.exited
    const writtenBefore = new Set((await rig.runnerRows("flight-")).map((r) => r.user_id))
    const cut = running.filter((u) => !writtenBefore.has(u))
    expect(cut.length).toBeGreaterThan(0)
    await eventually("every due run written", 10_000 - (Date.now() - killedAt), async () => {
      const rows = await rig.runnerRows("flight-")
      return users.every((u) => rows.some((r) => r.user_id === u))
    }, 100)
    const tookMs = Date.now() - killedAt
    expect((await rig.runnerRows("flight-")).length).toBe(USERS)
    expect((await rig.audit()).duplicates).toBe(0)
    process.stdout.write(`cluster failover: ${cut.length} runs cut by the kill written by the survivor ${tookMs} ms after it\n`)
    await survivor.stop("SIGTERM", 20_000)
  }, 180_000)

  it("USER_CONCURRENCY=1 holds per user during a handover: a runner joining while a user's run is under way elsewhere waits for it", async () => {
    await rig.run(rig.standIn.reset)
    // Slow answers: each user's 4 runs take 4 × 6 s on the runner that starts them, one at a time, so
    // the second runner (its start takes seconds on a loaded machine) joins while they are under way.
    await rig.run(rig.standIn.setResponder(() => ({ delayMs: 6_000 })))
    const env = { USER_CONCURRENCY: "1", GLOBAL_CONCURRENCY: "16", MISSION_TIMEOUT_MS: "30000", LLM_TIMEOUT_MS: "20000" }
    const a = await startRunner(await runnerEnv(env))
    await eventually("the first runner holds every shard", 60_000, async () => (await health(a)).cluster?.shardsOwned === 60)
    const users = Array.from({ length: 16 }, (_, u) => `hand-${u}`)
    await rig.seed(
      users.flatMap((user) =>
        Array.from({ length: 4 }, (_, k) => missionInsertRow(user, `${user}-m${k}`, { title: `title of ${user} `, ...dueNow() })),
      ),
    )
    // Every user has a run under way on the first runner; then the second joins and takes half the shards.
    await eventually("runs under way on the first runner", 30_000, async () =>
      (await actorList(a)).filter((x) => x.userId.startsWith("hand-") && x.inFlight > 0).length === users.length,
    )
    const b = await startRunner(await runnerEnv(env))
    await eventually("both runners hold shards", 60_000, () => settled([a, b]))
    const settledAt = Date.now()
    const movedWhileRunning = async () => {
      const onB = await actorsOf(b)
      return users.filter((u) => onB.has(u))
    }
    await eventually("every due run written", 120_000, async () => (await rig.runnerRows("hand-")).length >= users.length * 4, 200)
    const requests = await rig.run(rig.standIn.requests)
    const t0 = Math.min(...requests.map((r) => r.receivedAt))
    process.stdout.write(`cluster handover: the second runner held its shards ${settledAt - t0} ms after the first request\n`)
    // The users the second runner took start there once the first gave their leases back.
    await eventually("each user's actor on exactly one runner", 30_000, async () => {
      const [onA, onB] = await Promise.all([actorsOf(a), actorsOf(b)])
      return users.every((u) => onA.has(u) !== onB.has(u))
    })
    // The handover happened in the middle of the users' work: a user now on the second runner had
    // requests before both runners held their shards, and more after.
    const moved = await movedWhileRunning()
    expect(moved.length).toBeGreaterThan(0)
    expect(
      moved.some((u) => {
        const spans = userRequests(u, requests)
        return spans.some(([f]) => f < settledAt) && spans.some(([f]) => f > settledAt)
      }),
    ).toBe(true)
    let worst = 0
    for (const user of users) {
      const spans = userRequests(user, requests)
      expect(spans.length).toBeGreaterThanOrEqual(4)
      for (const [from] of spans) worst = Math.max(worst, spans.filter(([f, t]) => f <= from && from < t).length)
    }
    expect(worst).toBe(1)
    expect((await rig.runnerRows("hand-")).length).toBe(users.length * 4)
    expect((await rig.audit()).duplicates).toBe(0)
    await a.stop("SIGTERM", 30_000)
    await b.stop("SIGTERM", 30_000)
  }, 240_000)

  it("USER_CONCURRENCY=1 holds per user across the runners", async () => {
    await rig.run(rig.standIn.reset)
    await rig.run(rig.standIn.setResponder(() => ({ delayMs: 400 })))
    const a = await startRunner(await runnerEnv({ USER_CONCURRENCY: "1" }))
    const b = await startRunner(await runnerEnv({ USER_CONCURRENCY: "1" }))
    await eventually("both runners hold shards", 60_000, () => settled([a, b]))
    const users = Array.from({ length: 16 }, (_, u) => `conc-${u}`)
    await rig.seed(
      users.flatMap((user) =>
        Array.from({ length: 3 }, (_, k) => missionInsertRow(user, `${user}-m${k}`, { title: `title of ${user} `, ...dueNow() })),
      ),
    )
    await eventually("every due run written", 90_000, async () => (await rig.runnerRows("conc-")).length >= users.length * 3)
    const requests = await rig.run(rig.standIn.requests)
    const userOf = (body: unknown) => users.find((u) => JSON.stringify(body).includes(`title of ${u} `))
    let worst = 0
    for (const user of users) {
      const spans = requests.filter((r) => userOf(r.body) === user).map((r) => [r.receivedAt, r.closedAt ?? Number.POSITIVE_INFINITY] as const)
      expect(spans.length).toBeGreaterThanOrEqual(3)
      for (const [from] of spans) worst = Math.max(worst, spans.filter(([f, t]) => f <= from && from < t).length)
    }
    expect(worst).toBe(1)
    // Both runners ran some of them.
    const [onA, onB] = await Promise.all([actorsOf(a), actorsOf(b)])
    expect(users.filter((u) => onA.has(u)).length).toBeGreaterThan(0)
    expect(users.filter((u) => onB.has(u)).length).toBeGreaterThan(0)
    expect((await rig.audit()).duplicates).toBe(0)
    await a.stop("SIGTERM", 20_000)
    await b.stop("SIGTERM", 20_000)
  }, 180_000)
})
