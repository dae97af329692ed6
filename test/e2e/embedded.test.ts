/**
 * The bundle `npm start` runs (`bun dist/main.js`) with no SYNC_DATABASE_URL, in an empty working
 * directory (PGlite, left out of the bundle, still resolves from dist/ up to node_modules; sql/ is read
 * from the app's root, not the working directory): the embedded default
 * (PGlite under ./.data, the demo workload, the offline planner), started twice on the same data.
 */
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import pg from "pg"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { eventually, type ManaProcess, request, startManaProcess } from "../support/ManaProcess.js"

const DUE = ["demo-alice-weekly-run", "demo-alice-inbox", "demo-bob-spanish", "demo-bob-garden", "demo-carol-lisbon"]
const NOT_DUE = ["demo-alice-evening", "demo-carol-paused"]
const USERS = ["demo-alice", "demo-bob", "demo-carol"]

let workDir: string
let mana: ManaProcess | undefined

const dump = (name: string) => {
  if (process.env.E2E_LOG_DIR !== undefined && mana !== undefined) {
    writeFileSync(`${process.env.E2E_LOG_DIR}/${name}.stdout.log`, mana.stdout())
    writeFileSync(`${process.env.E2E_LOG_DIR}/${name}.stderr.log`, mana.stderr())
  }
}

beforeAll(() => {
  workDir = mkdtempSync(join(tmpdir(), "mana-ai-embedded-"))
})

afterAll(() => {
  if (mana !== undefined && mana.child.exitCode === null && mana.child.signalCode === null) mana.child.kill("SIGKILL")
  rmSync(workDir, { recursive: true, force: true })
})

/** Starts the process in workDir and waits for /health (within 45 s: a wide margin for a busy machine) and /ready. */
const start = async () => {
  const started = Date.now()
  const m = await startManaProcess({ cwd: workDir, env: {} })
  mana = m
  await eventually("/health to answer", 45_000, async () => (await request(m, "GET", "/health")).status === 200, 100)
  expect(Date.now() - started).toBeLessThan(45_000)
  await eventually("/ready to answer 200", 60_000, async () => (await request(m, "GET", "/ready")).status === 200)
  return m
}

const psqlUrl = (m: ManaProcess): string => {
  const line = m.logs().find((l) => typeof l.annotations?.psqlUrl === "string")
  if (line === undefined) throw new Error("no psql URL was printed")
  return line.annotations?.psqlUrl as string
}

const iterationsByMission = async (m: ManaProcess, key: string) => {
  const result = new Map<string, ReadonlyArray<{ id: string; source?: string; summary?: string }>>()
  for (const user of USERS) {
    const response = await request(m, "GET", `/internal/missions/${user}`, key)
    expect(response.status).toBe(200)
    for (const record of response.body.missions) result.set(record.id, record.iterations)
  }
  return result
}

const queryAt = async (url: string, text: string) => {
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  try {
    return (await client.query(text)).rows
  } finally {
    await client.end()
  }
}

describe("the embedded default", () => {
  let firstIterations: Map<string, string>

  it("first start: seeds the demo, and within one tick writes the due missions' iterations", async () => {
    const m = await start()
    const health = await request(m, "GET", "/health")
    expect(health.body).toMatchObject({ ok: true, service: "mana-ai", tick: { enabled: true } })

    const keyPath = join(workDir, ".data", "service-key")
    expect(statSync(keyPath).mode & 0o777).toBe(0o600)
    const key = readFileSync(keyPath, "utf8").trim()
    expect(m.stdout()).toContain(keyPath)
    expect(m.stdout()).not.toContain(key)
    expect(m.stdout()).toMatch(/OFFLINE planner/)

    expect((await request(m, "POST", "/internal/tick")).status).toBe(401)
    // A tick asked while the loop's first pass is still under way (on a loaded machine it can take
    // longer than the tick waits for it) answers overlap-skipped (SPEC §9): ask again until one runs.
    let tick = await request(m, "POST", "/internal/tick", key)
    await eventually("a tick that runs", 60_000, async () => {
      if (tick.status === 200 && !tick.body.errors.includes("overlap-skipped")) return true
      tick = await request(m, "POST", "/internal/tick", key)
      return false
    })
    expect(tick.status).toBe(200)
    expect(tick.body.errors).toEqual([])

    const iterations = await iterationsByMission(m, key)
    for (const id of DUE) {
      expect(iterations.get(id), id).toHaveLength(1)
      expect(iterations.get(id)?.[0]).toMatchObject({ source: "server" })
      expect(iterations.get(id)?.[0]?.summary).toMatch(/^Offline planner:/)
    }
    for (const id of NOT_DUE) expect(iterations.get(id), id).toHaveLength(0)
    firstIterations = new Map(DUE.map((id) => [id, iterations.get(id)?.[0]?.id as string]))

    // psql's view at the printed URL: the runner's rows are in today's sync_changes (SPEC §13), in its write shape.
    const rows = await queryAt(
      psqlUrl(m),
      "SELECT record_id, origin, field_meta, actor->>'kind' AS actor_kind FROM sync_changes WHERE client_id = 'mana-ai-runner' ORDER BY record_id",
    )
    expect(rows.map((r) => r.record_id)).toEqual([...DUE].sort())
    for (const r of rows) {
      expect(r).toMatchObject({ origin: "agent", actor_kind: "ai" })
      expect(Object.keys(r.field_meta).sort()).toEqual(["iterations", "nextRunAt"])
    }
    const seededTimes = await queryAt(psqlUrl(m), "SELECT count(*)::int AS n FROM sync_changes WHERE field_meta <> '{}'::jsonb")
    expect(seededTimes[0]?.n).toBeGreaterThan(DUE.length)

    const stopped = await m.stop("SIGTERM", 40_000)
    expect(stopped.code).toBe(0)
    dump("embedded-first")
  }, 120_000)

  it("second start on the same .data: no re-seed, the iterations are still there", async () => {
    const m = await start()
    expect(m.stdout()).toContain("already seeded")
    const key = readFileSync(join(workDir, ".data", "service-key"), "utf8").trim()
    const iterations = await iterationsByMission(m, key)
    for (const id of DUE) expect(iterations.get(id)?.[0]?.id, id).toBe(firstIterations.get(id))
    const seeded = await queryAt(
      psqlUrl(m),
      "SELECT count(*)::int AS n FROM sync_changes WHERE client_id = 'mana-ai-demo-seed' AND table_name = 'aiMissions'",
    )
    expect(seeded[0]?.n).toBe(DUE.length + NOT_DUE.length)
    const stopped = await m.stop("SIGINT", 40_000)
    expect(stopped.code).toBe(0)
    dump("embedded-second")
  }, 120_000)
})
