/**
 * An idle runner stays in JavaScriptCore's lower tiers (issue 16 item 5, `src/layers/jitPolicy.ts`):
 * the bundle, as `npm start` runs it, in sync-database mode on an event log with no missions, with
 * discovery passes every 200 ms, an empty tick, /metrics and /ready polled, never puts the JIT's
 * thresholds back to normal; the first mission that arrives does (a discovery page applied, then its
 * run). `test/support/loadedModulesProbe.ts` records each `setJITPolicy` the process calls.
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { Context, Effect, Exit, Layer, Redacted, Scope } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { STARTUP_JIT_SCALE } from "../../src/layers/jitPolicy.js"
import { LlmStandIn, type LlmStandInShape } from "../support/LlmStandIn.js"
import { eventually, type ManaProcess, metricValue, request, startManaProcess } from "../support/ManaProcess.js"
import { insertChanges, missionInsertRow } from "../support/seed.js"
import { TestDatabase, TestDatabaseLive, type TestDatabaseShape } from "../support/TestDatabase.js"

const KEY = "e2e-idle-jit-key-0123456789abcdef"
const PROBE = fileURLToPath(new URL("../support/loadedModulesProbe.ts", import.meta.url))
const dir = mkdtempSync(join(tmpdir(), "mana-e2e-idle-jit-"))

let scope: Scope.CloseableScope
let db: TestDatabaseShape
let standIn: LlmStandInShape
const started: Array<ManaProcess> = []

const run = <A>(effect: Effect.Effect<A>) => Effect.runPromise(effect)

beforeAll(async () => {
  scope = await run(Scope.make())
  const context = await run(Layer.buildWithScope(Layer.merge(TestDatabaseLive, LlmStandIn.layer), scope))
  db = Context.get(context, TestDatabase)
  standIn = Context.get(context, LlmStandIn)
}, 120_000)

afterAll(async () => {
  for (const m of started) if (m.child.exitCode === null && m.child.signalCode === null) m.child.kill("SIGKILL")
  await run(Scope.close(scope, Exit.void))
  rmSync(dir, { recursive: true, force: true })
}, 60_000)

const startRunner = async (file: string) => {
  const m = await startManaProcess({
    env: {
      SYNC_DATABASE_URL: Redacted.value(db.runnerUrl),
      MANA_LLM_URL: standIn.url,
      MANA_SERVICE_KEY: KEY,
      TICK_INTERVAL_MS: "200",
      DB_POOL_MAX: "4",
      BUN_OPTIONS: `--preload ${PROBE}`,
      LOADED_MODULES_FILE: file,
    },
  })
  started.push(m)
  await eventually("/ready to answer 200", 60_000, async () => (await request(m, "GET", "/ready")).status === 200)
  return m
}

const policies = (file: string) => readFileSync(file, "utf8").split("\n").filter((l) => l.startsWith("setJITPolicy("))

describe("the JIT policy of the running process", () => {
  it("with nothing to do (discovery passes, an empty tick, /metrics) the thresholds stay raised", async () => {
    const file = join(dir, "idle.txt")
    const m = await startRunner(file)
    const passes = async () => metricValue((await request(m, "GET", "/metrics")).text, "mana_ai_discovery_duration_seconds_count")
    const before = await passes()
    const tick = await request(m, "POST", "/internal/tick", KEY)
    expect(tick.status).toBe(200)
    expect(tick.body.plansWrittenBack).toBe(0)
    for (let i = 0; i < 5; i++) expect((await request(m, "GET", "/metrics")).status).toBe(200)
    // Several of the loop's own passes, each finding nothing.
    await eventually("discovery passes to go on", 20_000, async () => (await passes()) >= before + 5)
    expect(await m.stop("SIGTERM", 30_000)).toMatchObject({ code: 0 })
    expect(policies(file)).toEqual([`setJITPolicy(${STARTUP_JIT_SCALE}) effect loaded: no`])
  }, 120_000)

  it("a mission that arrives puts them back, once, and runs", async () => {
    const file = join(dir, "work.txt")
    const m = await startRunner(file)
    await run(
      insertChanges([missionInsertRow("idle-jit-user", "idle-jit-m1", { nextRunAt: new Date(Date.now() - 60_000).toISOString() })]).pipe(
        Effect.provideService(TestDatabase, db),
      ),
    )
    await eventually(
      "the mission's plan written back",
      30_000,
      async () => metricValue((await request(m, "GET", "/metrics")).text, "mana_ai_plans_written_back_total") >= 1,
    )
    expect(await m.stop("SIGTERM", 30_000)).toMatchObject({ code: 0 })
    expect(policies(file)).toEqual([`setJITPolicy(${STARTUP_JIT_SCALE}) effect loaded: no`, "setJITPolicy(1) effect loaded: yes"])
  }, 120_000)
})
