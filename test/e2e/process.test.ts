/**
 * The real Bun process, run from the bundle as `npm start` runs it (dist/main.js), against a real
 * database as the runner role (the Postgres server when TEST_DATABASE_URL is set; otherwise PGlite
 * served on a loopback port, so `npm test` passes on a fresh machine) and the HTTP LLM stand-in. It runs in sync-database mode: SYNC_DATABASE_URL,
 * MANA_LLM_URL and MANA_SERVICE_KEY set, TICK_ENABLED=false so only /internal/tick runs missions.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { Context, Effect, Exit, Layer, Redacted, Scope } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { LlmStandIn, type LlmStandInShape } from "../support/LlmStandIn.js"
import { eventually, type ManaProcess, metricValue, request, startManaProcess } from "../support/ManaProcess.js"
import { type Change, insertChanges, missionInsertRow } from "../support/seed.js"
import { TestDatabase, TestDatabaseLive, type TestDatabaseShape } from "../support/TestDatabase.js"
import { STARTUP_JIT_SCALE } from "../../src/layers/jitPolicy.js"

const KEY = "e2e-service-key-0123456789abcdef"
// Wide enough to see /ready say 503 during the drain on a busy machine.
const GRACE_MS = 5_000
const USERS = ["e2e-ana", "e2e-ben", "e2e-cleo"]

/** The process writes the modules it loaded here at exit (test/support/loadedModulesProbe.ts). */
const LOADED_MODULES_DIR = mkdtempSync(join(tmpdir(), "mana-e2e-modules-"))
const LOADED_MODULES_FILE = join(LOADED_MODULES_DIR, "loaded.txt")
const LOADED_MODULES_PROBE = fileURLToPath(new URL("../support/loadedModulesProbe.ts", import.meta.url))
/** Written by scripts/bundle.ts beside the bundle: every file the bundler read. */
const BUNDLE_INPUTS = fileURLToPath(new URL("../../dist/inputs.json", import.meta.url))

let scope: Scope.CloseableScope
let db: TestDatabaseShape
let standIn: LlmStandInShape
let mana: ManaProcess | undefined

const run = <A>(effect: Effect.Effect<A>) => Effect.runPromise(effect)
const seed = (changes: ReadonlyArray<Change>) => run(insertChanges(changes).pipe(Effect.provideService(TestDatabase, db)))

const past = (minutes: number) => new Date(Date.now() - minutes * 60_000).toISOString()
const future = (minutes: number) => new Date(Date.now() + minutes * 60_000).toISOString()

/** Rows the runner wrote, per mission (as the owner: outside any RLS scope). */
const runnerRows = async () =>
  db.ownerQuery(
    `SELECT user_id, record_id, data, ${db.generation} AS field_times, actor, schema_version,
            ${db.generation === "field_meta" ? "origin" : "NULL::text AS origin"} FROM sync_changes
     WHERE client_id = 'mana-ai-runner' ORDER BY created_at, id`,
  )

beforeAll(async () => {
  scope = await run(Scope.make())
  const context = await run(Layer.buildWithScope(Layer.merge(TestDatabaseLive, LlmStandIn.layer), scope))
  db = Context.get(context, TestDatabase)
  standIn = Context.get(context, LlmStandIn)
  // Two due missions per user, one not yet due, one paused.
  await seed([
    ...USERS.flatMap((u) => [
      missionInsertRow(u, `${u}-m1`, { nextRunAt: past(5) }),
      missionInsertRow(u, `${u}-m2`, { nextRunAt: past(1), cadence: { kind: "daily", atHour: 7, atMinute: 0 } }),
    ]),
    missionInsertRow("e2e-ana", "e2e-ana-later", { nextRunAt: future(60) }),
    missionInsertRow("e2e-ben", "e2e-ben-paused", { nextRunAt: past(5), state: "paused" }),
  ])
}, 120_000)

afterAll(async () => {
  // E2E_LOG_DIR=/tmp/x keeps the process's output for a look after a failure.
  if (process.env.E2E_LOG_DIR !== undefined && mana !== undefined) {
    writeFileSync(`${process.env.E2E_LOG_DIR}/process.stdout.log`, mana.stdout())
    writeFileSync(`${process.env.E2E_LOG_DIR}/process.stderr.log`, mana.stderr())
  }
  if (mana !== undefined && mana.child.exitCode === null && mana.child.signalCode === null) mana.child.kill("SIGKILL")
  await run(Scope.close(scope, Exit.void))
  rmSync(LOADED_MODULES_DIR, { recursive: true, force: true })
}, 60_000)

describe("the resident Bun process", () => {
  it("refuses a malformed setting with one line on stderr naming it, and a non-zero exit", async () => {
    const bad = await startManaProcess({ env: { USER_CONCURRENCY: "lots", LOG_FORMAT: "json" } })
    const exited = await bad.exited
    expect(exited.code).not.toBe(0)
    const lines = bad.stderr().trim().split("\n")
    expect(lines).toHaveLength(1)
    expect(lines[0]).toContain("USER_CONCURRENCY must be a whole number ≥ 1")
    expect(bad.stderr()).not.toMatch(/^\s+at /m)
  })

  it("with a database but no LLM URL or service key, refuses to start and names both", async () => {
    const bad = await startManaProcess({ env: { SYNC_DATABASE_URL: "postgres://runner:secret-pw@127.0.0.1:1/x" } })
    const exited = await bad.exited
    expect(exited.code).not.toBe(0)
    expect(bad.stderr()).toContain("MANA_LLM_URL is required")
    expect(bad.stderr()).toContain("MANA_SERVICE_KEY is required")
    expect(bad.stderr()).not.toContain("secret-pw")
  })

  it("starts against the database: /ready turns 200, /health reports itself", async () => {
    mana = await startManaProcess({
      env: {
        SYNC_DATABASE_URL: Redacted.value(db.runnerUrl),
        MANA_LLM_URL: standIn.url,
        MANA_LLM_API_KEY: "sk-e2e-llm-key",
        MANA_SERVICE_KEY: KEY,
        TICK_ENABLED: "false",
        DB_POOL_MAX: "4",
        SHUTDOWN_GRACE_MS: String(GRACE_MS),
        LLM_TIMEOUT_MS: "30000",
        BUN_OPTIONS: `--preload ${LOADED_MODULES_PROBE}`,
        LOADED_MODULES_FILE,
      },
    })
    const m = mana
    await eventually("/ready to answer 200", 60_000, async () => (await request(m, "GET", "/ready")).status === 200)
    const health = await request(m, "GET", "/health")
    expect(health.status).toBe(200)
    expect(health.body).toMatchObject({ ok: true, service: "mana-ai", version: "0.3.0", tick: { enabled: false, running: false } })
    // Every untagged series is there from the start, at 0.
    const metrics = (await request(m, "GET", "/metrics")).text
    expect(metrics).toMatch(/^mana_ai_plans_written_back_total 0$/m)
    expect(metrics).toMatch(/^mana_ai_runs_in_flight 0$/m)
  }, 90_000)

  it("answers 401 on /internal without the key and with a wrong one", async () => {
    const m = mana as ManaProcess
    for (const [method, path] of [
      ["POST", "/internal/tick"],
      ["GET", "/internal/actors"],
      ["GET", "/internal/missions/e2e-ana"],
      ["POST", "/internal/actors/e2e-ana/restart"],
    ] as const) {
      for (const key of [undefined, "not-the-key-not-the-key", KEY.slice(0, -1)]) {
        const response = await request(m, method, path, key)
        expect(response.status, `${method} ${path}`).toBe(401)
        expect(response.body).toMatchObject({ error: "unauthorized" })
      }
    }
    expect((await request(m, "GET", "/internal/actors", KEY)).status).toBe(200)
  })

  it("POST /internal/tick writes each due mission's iteration once and the metrics move", async () => {
    const m = mana as ManaProcess
    const before = (await request(m, "GET", "/metrics")).text
    const tick = await request(m, "POST", "/internal/tick", KEY)
    expect(tick.status).toBe(200)
    expect(tick.body).toMatchObject({ dueMissionCount: 6, plansProduced: 6, plansWrittenBack: 6, parseFailures: 0, errors: [] })

    const rows = await runnerRows()
    expect(rows.map((r) => `${r.user_id}/${r.record_id}`).sort()).toEqual(
      USERS.flatMap((u) => [`${u}/${u}-m1`, `${u}/${u}-m2`]).sort(),
    )
    for (const row of rows) {
      const data = row.data as { iterations: ReadonlyArray<{ source: string; overallStatus: string }>; nextRunAt: string }
      expect(data.iterations).toHaveLength(1)
      expect(data.iterations[0]).toMatchObject({ source: "server", overallStatus: "awaiting-review" })
      expect(Date.parse(data.nextRunAt)).toBeGreaterThan(Date.now() - 60_000)
      // The write shape of the generation found at start (SPEC §6).
      expect(Object.keys(row.field_times as object).sort()).toEqual(["iterations", "nextRunAt"])
      expect(row.schema_version).toBe(1)
      if (db.generation === "field_meta") {
        expect(row.origin).toBe("agent")
        expect(row.actor).toEqual({
          kind: "ai",
          principalId: "legacy:ai-default",
          displayName: "Mana",
          missionId: row.record_id,
          iterationId: (data.iterations[0] as unknown as { id: string }).id,
          rationale: expect.any(String),
        })
      } else {
        expect(row.origin).toBeNull()
        expect(row.actor).toEqual({ kind: "system", source: "mission-runner" })
      }
    }
    // Every request to the LLM carried its key; the runner never sent the service key there.
    const sent = await run(standIn.requests)
    expect(sent.length).toBeGreaterThanOrEqual(6)
    for (const r of sent) {
      expect(r.headers.authorization).toBe("Bearer sk-e2e-llm-key")
      expect(JSON.stringify(r)).not.toContain(KEY)
    }

    const missions = await request(m, "GET", "/internal/missions/e2e-ana", KEY)
    expect(missions.status).toBe(200)
    const byId = new Map<string, any>(missions.body.missions.map((r: any) => [r.id, r]))
    expect(byId.get("e2e-ana-m1").iterations).toHaveLength(1)
    expect(byId.get("e2e-ana-later").iterations).toHaveLength(0)
    expect(byId.get("e2e-ana-m1").objective).toBe("Run a 10k by summer")

    const after = (await request(m, "GET", "/metrics")).text
    expect(after).toMatch(/^# TYPE mana_ai_/m)
    expect(metricValue(after, "mana_ai_plans_written_back_total") - metricValue(before, "mana_ai_plans_written_back_total")).toBe(6)
    expect(metricValue(after, "mana_ai_plans_produced_total") - metricValue(before, "mana_ai_plans_produced_total")).toBe(6)
    expect(metricValue(after, "mana_ai_ticks_total") - metricValue(before, "mana_ai_ticks_total")).toBe(1)

    const actors = await request(m, "GET", "/internal/actors", KEY)
    expect(actors.body.actors.map((a: { userId: string }) => a.userId).sort()).toEqual([...USERS].sort())

    // Logs name the run's user and mission, and carry no secret.
    const runLines = m.logs().filter((l) => l.annotations?.missionId === "e2e-ana-m1")
    expect(runLines.length).toBeGreaterThan(0)
    expect(runLines.every((l) => l.annotations?.userId === "e2e-ana")).toBe(true)
    const password = new URL(Redacted.value(db.runnerUrl)).password
    for (const secret of [KEY, "sk-e2e-llm-key", ...(password === "" ? [] : [password])]) {
      expect(m.stdout()).not.toContain(secret)
      expect(m.stderr()).not.toContain(secret)
    }
  }, 60_000)

  it("a tick during a tick answers overlap-skipped; SIGTERM during runs drains, exits 0 and leaves no partial write", async () => {
    const m = mana as ManaProcess
    await seed(USERS.map((u) => missionInsertRow(u, `${u}-slow`, { nextRunAt: past(2) })))
    // Slower than the grace period: these runs are still waiting on the LLM when the drain ends.
    await run(standIn.setResponder(() => ({ delayMs: GRACE_MS * 4 })))
    const first = request(m, "POST", "/internal/tick", KEY).catch((e: unknown) => ({ status: 0, body: String(e), text: "" }))
    await eventually("runs to reach the LLM", 20_000, async () => (await run(standIn.inFlight)) > 0, 50)

    const overlapping = await request(m, "POST", "/internal/tick", KEY)
    expect(overlapping.status).toBe(200)
    expect(overlapping.body.errors).toEqual(["overlap-skipped"])
    expect((await request(m, "GET", "/health")).body.tick.running).toBe(true)

    const stopping = m.stop("SIGTERM", GRACE_MS + 20_000)
    await eventually("/ready to say 503 while draining", GRACE_MS, async () => (await request(m, "GET", "/ready")).status === 503, 50)
    const exited = await stopping
    expect(exited.code).toBe(0)
    expect(exited.tookMs).toBeLessThan(GRACE_MS + 20_000)
    await first

    // No partial write, no duplicate: every mission has at most one runner row, each with distinct iteration ids.
    const rows = await runnerRows()
    const perMission = new Map<string, number>()
    for (const row of rows) {
      const id = `${row.user_id}/${row.record_id}`
      perMission.set(id, (perMission.get(id) ?? 0) + 1)
      const iterations = (row.data as { iterations: ReadonlyArray<{ id: string }> }).iterations
      expect(new Set(iterations.map((i) => i.id)).size).toBe(iterations.length)
    }
    for (const [id, count] of perMission) expect(count, id).toBe(1)
    for (const u of USERS) expect(perMission.get(`${u}/${u}-m1`)).toBe(1)
    expect(m.stdout()).toContain("shutting down")
    expect(m.logs().at(-1)?.message).toBe("mana-ai stopped")
  }, 60_000)

  it("ran its missions from the bundle, which has no fast-check in it: effect's FastCheck module is a stub (issue 16 item 5)", () => {
    const lines = readFileSync(LOADED_MODULES_FILE, "utf8").split("\n")
    const loaded = lines.filter((l) => !l.startsWith("setJITPolicy("))
    // The process ran the bundle `npm start` runs, and loaded no module of fast-check at run time.
    expect(loaded.some((p) => p.replaceAll("\\", "/").endsWith("/dist/main.js"))).toBe(true)
    expect(loaded.filter((p) => /[\\/](fast-check|pure-rand)[\\/]/.test(p))).toEqual([])
    // What the bundler put in it (dist/inputs.json, from its metafile): the live composition, the run, and
    // effect/Schema, which imports FastCheck; none of fast-check's or pure-rand's files.
    const inputs = Object.keys((JSON.parse(readFileSync(BUNDLE_INPUTS, "utf8")) as { files: Record<string, string> }).files)
    for (const module of ["src/layers/live.ts", "src/services/MissionRunner.ts", "effect/dist/esm/Schema.js"]) {
      expect(inputs.some((p) => p.replaceAll("\\", "/").endsWith(module)), module).toBe(true)
    }
    expect(inputs.filter((p) => /[\\/](fast-check|pure-rand)[\\/]/.test(p))).toEqual([])
    // The bundle is split where launch.ts imports by mode: this live process loaded the chunk that holds
    // live.ts, and neither the cluster's (RUNNER_ADDRESS unset) nor the OTLP tracer's (no endpoint set).
    const outputs = (JSON.parse(readFileSync(BUNDLE_INPUTS, "utf8")) as { outputs: Record<string, ReadonlyArray<string>> }).outputs
    const chunkWith = (module: string) => {
      const found = Object.entries(outputs).filter(([, files]) => files.some((f) => f.replaceAll("\\", "/").endsWith(module)))
      expect(found.length, module).toBe(1)
      return found[0]![0]
    }
    const loadedChunk = (chunk: string) => loaded.some((p) => p.replaceAll("\\", "/").endsWith(`/dist/${chunk}`))
    expect(loadedChunk(chunkWith("src/layers/live.ts"))).toBe(true)
    expect(loadedChunk(chunkWith("@effect/cluster/dist/esm/Sharding.js"))).toBe(false)
    expect(loadedChunk(chunkWith("@effect/opentelemetry/dist/esm/OtlpTracer.js"))).toBe(false)
    expect(chunkWith("src/layers/embedded.ts")).not.toBe(chunkWith("src/layers/live.ts"))
    // The bundle answered effect's FastCheck when it was built, so withoutFastCheck.ts, which registers the
    // same answer as a runtime plugin from source, is in no output (a registered plugin cost 0.6–1.0 MB idle).
    expect(Object.entries(outputs).filter(([, files]) => files.some((f) => f.endsWith("withoutFastCheck.ts")))).toEqual([])
    expect(Object.values(outputs).some((files) => files.some((f) => f.endsWith("fastCheckStub.ts")))).toBe(true)
    // startupJit.ts's body ran before any of effect's modules (the bundle keeps main.ts's order), and the
    // normal policy came back once the process served and had work (its missions ran).
    expect(lines.filter((l) => l.startsWith("setJITPolicy("))).toEqual([
      `setJITPolicy(${STARTUP_JIT_SCALE}) effect loaded: no`,
      "setJITPolicy(1) effect loaded: yes",
    ])
  })
})
