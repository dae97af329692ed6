/**
 * The service as operators start it: `npm start` (which checks the bundle, dist/main.js, rebuilds it if
 * any file it was built from changed, and execs Bun on it), against a real database as
 * the runner role and the HTTP LLM stand-in. Empty variables count as unset (SPEC §10); a tick that
 * outlasts Bun's default 10 s idle timeout still gets its answer (SPEC §9); SIGTERM sent to npm
 * reaches the service, which drains, and npm exits 0 too (SPEC §8). The start script runs Bun with
 * JavaScriptCore's FTL tier off unless the operator says otherwise (README "Set up").
 */
import { readdirSync, readFileSync } from "node:fs"
import { Context, Effect, Exit, Layer, Redacted, Scope } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { LlmStandIn, type LlmStandInShape } from "../support/LlmStandIn.js"
import { eventually, type ManaProcess, metricValue, request, startManaProcess } from "../support/ManaProcess.js"
import { insertChanges, missionInsertRow } from "../support/seed.js"
import { TestDatabase, TestDatabaseLive, type TestDatabaseShape } from "../support/TestDatabase.js"

const KEY = "npm-start-service-key-0123456789"
/** Past Bun's default idle timeout (10 s, checked in 4 s steps: a request idle 14 s is cut for sure). */
const LLM_DELAY_MS = 16_000

let scope: Scope.CloseableScope
let db: TestDatabaseShape
let standIn: LlmStandInShape
let mana: ManaProcess | undefined

const run = <A>(effect: Effect.Effect<A>) => Effect.runPromise(effect)

/** The environment of the Bun process `npm start` execs (a descendant of npm running dist/main.js), from /proc. */
const serviceEnvironment = (m: ManaProcess): Record<string, string> | undefined => {
  const queue = [m.child.pid ?? 0]
  while (queue.length > 0) {
    const pid = queue.shift()!
    try {
      const argv = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0")
      if (argv.some((a) => a.endsWith("dist/main.js"))) {
        return Object.fromEntries(
          readFileSync(`/proc/${pid}/environ`, "utf8").split("\0").filter((e) => e.includes("=")).map((e) => [e.slice(0, e.indexOf("=")), e.slice(e.indexOf("=") + 1)]),
        )
      }
      for (const task of readdirSync(`/proc/${pid}/task`)) {
        const children = readFileSync(`/proc/${pid}/task/${task}/children`, "utf8").trim()
        if (children !== "") queue.push(...children.split(/\s+/).map(Number))
      }
    } catch {
      // gone meanwhile
    }
  }
  return undefined
}

beforeAll(async () => {
  scope = await run(Scope.make())
  const context = await run(Layer.buildWithScope(Layer.merge(TestDatabaseLive, LlmStandIn.layer), scope))
  db = Context.get(context, TestDatabase)
  standIn = Context.get(context, LlmStandIn)
  await run(
    insertChanges([missionInsertRow("npm-ana", "npm-m1", { nextRunAt: new Date(Date.now() - 60_000).toISOString() })]).pipe(
      Effect.provideService(TestDatabase, db),
    ),
  )
}, 120_000)

afterAll(async () => {
  if (mana !== undefined && mana.child.exitCode === null && mana.child.signalCode === null) mana.child.kill("SIGKILL")
  await run(Scope.close(scope, Exit.void))
}, 60_000)

describe("npm start", () => {
  it("starts with empty variables taken as unset: /ready turns 200", async () => {
    mana = await startManaProcess({
      viaNpmStart: true,
      env: {
        SYNC_DATABASE_URL: Redacted.value(db.runnerUrl),
        MANA_LLM_URL: standIn.url,
        MANA_SERVICE_KEY: KEY,
        TICK_ENABLED: "false",
        DB_POOL_MAX: "4",
        SHUTDOWN_GRACE_MS: "2000",
        LLM_TIMEOUT_MS: "30000",
        MISSION_TIMEOUT_MS: "60000",
        // One LLM request per run (tools mode would ask again after the calls), so one slow answer makes the long tick.
        PLANNER_MODE: "json",
        // Set but empty: each means unset (a malformed value would stop the start).
        MANA_LLM_API_KEY: "",
        OTEL_EXPORTER_OTLP_ENDPOINT: "",
        TOOLS_FILE: "",
        RESTART_WINDOW_MS: "",
        LLM_MODEL: "",
        USER_CONCURRENCY: "",
      },
    })
    const m = mana
    await eventually("/ready to answer 200", 60_000, async () => (await request(m, "GET", "/ready")).status === 200)
    expect((await request(m, "GET", "/health")).body).toMatchObject({ ok: true, tick: { enabled: false } })
  }, 90_000)

  // Measured in the fourteenth session (README, Benchmarks): 5–7 MB less RSS after 1,000 runs and half
  // the compiler threads' CPU per run, at the same throughput.
  it.runIf(process.platform === "linux")("runs Bun with JavaScriptCore's FTL tier off, unless the operator sets BUN_JSC_useFTLJIT", async () => {
    expect(serviceEnvironment(mana as ManaProcess)?.BUN_JSC_useFTLJIT).toBe("0")
    const other = await startManaProcess({
      viaNpmStart: true,
      env: { SYNC_DATABASE_URL: Redacted.value(db.runnerUrl), MANA_LLM_URL: standIn.url, MANA_SERVICE_KEY: KEY, TICK_ENABLED: "false", DB_POOL_MAX: "2", BUN_JSC_useFTLJIT: "1" },
    })
    try {
      await eventually("the second process's /ready", 60_000, async () => (await request(other, "GET", "/ready")).status === 200)
      expect(serviceEnvironment(other)?.BUN_JSC_useFTLJIT).toBe("1")
    } finally {
      expect(await other.stop("SIGTERM", 20_000)).toMatchObject({ code: 0 })
    }
  }, 90_000)

  it("the memory trimmer runs in the started process: start-up's quiet spell drops its code (/metrics)", async () => {
    const m = mana as ManaProcess
    const shrinks = async () => metricValue((await request(m, "GET", "/metrics")).text, 'mana_ai_memory_trims_total{kind="shrink"}')
    await eventually("start-up's Bun.shrink() in /metrics", 30_000, async () => (await shrinks()) >= 1)
  }, 60_000)

  it("a tick longer than Bun's 10 s idle timeout still answers with its report", async () => {
    const m = mana as ManaProcess
    await run(standIn.setResponder(() => ({ delayMs: LLM_DELAY_MS })))
    const started = Date.now()
    const tick = await request(m, "POST", "/internal/tick", KEY)
    const tookMs = Date.now() - started
    expect(tick.status).toBe(200)
    expect(tick.body).toMatchObject({ dueMissionCount: 1, plansProduced: 1, plansWrittenBack: 1, errors: [] })
    // It really outlasted the idle timeout: the stand-in held the one LLM answer that long.
    expect(tookMs).toBeGreaterThanOrEqual(LLM_DELAY_MS)
    const sent = await run(standIn.requests)
    expect(sent).toHaveLength(1)
    // LLM_MODEL="" took the default; MANA_LLM_API_KEY="" sent no Authorization header.
    expect((sent[0]!.body as { model: string }).model).toBe("gpt-4o-mini")
    expect(sent[0]!.headers.authorization).toBeUndefined()
  }, 60_000)

  it("SIGTERM sent to npm reaches the service: it drains and stops, and npm exits 0", async () => {
    const m = mana as ManaProcess
    const exited = await m.stop("SIGTERM", 20_000)
    expect(exited).toMatchObject({ code: 0, signal: null })
    expect(m.logs().at(-1)?.message).toBe("mana-ai stopped")
    // Nothing is left listening on the service's port.
    await expect(fetch(`${m.baseUrl}/health`)).rejects.toThrow()
  }, 30_000)
})
