/**
 * The operator page in a real browser: headless Chromium from Debian's `chromium` package, driven by
 * playwright-core, against the real Bun process on the embedded default (demo workload, offline
 * planner). The quarantined actor is one an earlier process left: quarantines survive restarts
 * (they live in mana_ai.actor_quarantines), so the test writes the row as that process would have,
 * restarts the process on the same .data, and the new process holds the user quarantined.
 *
 * Screenshots go to $OPERATOR_PAGE_SCREENSHOTS (default: a directory under the OS temp dir, printed).
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import pg from "pg"
import { type BrowserContext, chromium, type Page } from "playwright-core"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { eventually, type ManaProcess, request, startManaProcess } from "../support/ManaProcess.js"

const CHROMIUM = "/usr/bin/chromium"
const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
]
const DEMO_USERS = ["demo-alice", "demo-bob", "demo-carol"]
/**
 * How long a step may wait for the page to show something. A wide bound, not a measure: each wait ends
 * as soon as the page shows it (ticks are 500 ms apart, the page polls every few seconds), and 30 s
 * leaves room for a loaded 2-core machine running other suites beside this one.
 */
const UI_WAIT_MS = 30_000
/** Past the last instant a timestamp can hold (8.64e15 ms) once added to now: an unschedulable cadence. */
const TOO_LONG_MINUTES = 150_000_000_000
/** The reason an earlier process recorded when it quarantined demo-dave (its actor's run died). */
const KEPT_REASON = "ActorCrashed: run of mission demo-dave-poison died: Error: poison mission"

let workDir: string
let profileDir: string
let shotDir: string
let mana: ManaProcess | undefined
let context: BrowserContext | undefined
let key: string
let psqlUrl: string

const psqlUrlOf = (p: ManaProcess): string => {
  const line = p.logs().find((l) => typeof l.annotations?.psqlUrl === "string")
  return line?.annotations?.psqlUrl as string
}

const shot = (page: Page, name: string) => page.screenshot({ path: join(shotDir, `${name}.png`), fullPage: true })

/** As the sync server writes: one transaction scoped to the user (the runner role may insert there). */
const writeChange = async (
  userId: string,
  recordId: string,
  op: "insert" | "update",
  data: Record<string, unknown>,
  tableName = "aiMissions",
) => {
  const client = new pg.Client({ connectionString: psqlUrl })
  await client.connect()
  try {
    await client.query("BEGIN")
    await client.query("SELECT set_config('app.current_user_id', $1, true)", [userId])
    await client.query(
      `INSERT INTO sync_changes (app_id, table_name, record_id, user_id, op, data, client_id)
       VALUES ('ai', $5, $1, $2, $3, $4::jsonb, 'operator-page-test')`,
      [recordId, userId, op, JSON.stringify(data), tableName],
    )
    await client.query("COMMIT")
  } finally {
    await client.end()
  }
}

const mission = (title: string, cadence: unknown) => {
  const now = new Date().toISOString()
  return {
    title,
    objective: `${title}: keep it moving`,
    conceptMarkdown: "",
    state: "active",
    inputs: [],
    iterations: [],
    createdAt: now,
    updatedAt: now,
    cadence,
    nextRunAt: new Date(Date.now() - 60_000).toISOString(),
  }
}

beforeAll(async () => {
  workDir = mkdtempSync(join(tmpdir(), "mana-ai-page-"))
  profileDir = mkdtempSync(join(tmpdir(), "mana-ai-chromium-"))
  shotDir = process.env.OPERATOR_PAGE_SCREENSHOTS ?? join(tmpdir(), "mana-ai-operator-page")
  mkdirSync(shotDir, { recursive: true })
  console.log(`operator page screenshots: ${shotDir}`)
  const env = { TICK_INTERVAL_MS: "500" }
  // The process before this one: it seeds the demo and quarantines demo-dave as its supervisor does
  // (the row mana_ai.actor_quarantines keeps, written here on its psql URL), then stops.
  const earlier = await startManaProcess({ cwd: workDir, env })
  await eventually("/ready to answer 200", 60_000, async () => (await request(earlier, "GET", "/ready")).status === 200)
  const earlierClient = new pg.Client({ connectionString: psqlUrlOf(earlier) })
  await earlierClient.connect()
  try {
    await earlierClient.query("INSERT INTO mana_ai.actor_quarantines (user_id, reason) VALUES ($1, $2)", ["demo-dave", KEPT_REASON])
  } finally {
    await earlierClient.end()
  }
  expect((await earlier.stop("SIGTERM", 60_000)).code).toBe(0)

  const m = await startManaProcess({ cwd: workDir, env })
  mana = m
  await eventually("/ready to answer 200", 60_000, async () => (await request(m, "GET", "/ready")).status === 200)
  key = readFileSync(join(workDir, ".data", "service-key"), "utf8").trim()
  psqlUrl = psqlUrlOf(m)
  if (!existsSync(CHROMIUM)) return
  context = await chromium.launchPersistentContext(profileDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1400, height: 1000 },
  })
}, 90_000)

afterAll(async () => {
  await context?.close()
  if (mana !== undefined && mana.child.exitCode === null && mana.child.signalCode === null) mana.child.kill("SIGKILL")
  rmSync(workDir, { recursive: true, force: true })
  rmSync(profileDir, { recursive: true, force: true })
})

describe.skipIf(!existsSync(CHROMIUM))("the operator page in headless Chromium", () => {
  it("every JSON route the page uses answers 401 without the key and with a wrong one", async () => {
    const m = mana!
    const routes: ReadonlyArray<readonly ["GET" | "POST", string]> = [
      ["GET", "/internal/overview"],
      ["GET", "/internal/overview?offset=0&limit=50&detail=demo-alice"],
      ["GET", "/internal/missions/demo-alice"],
      ["POST", "/internal/actors/demo-alice/restart"],
      ["POST", "/internal/tick"],
    ]
    for (const [method, path] of routes) {
      for (const wrong of [undefined, "wrong-key-wrong-key-wrong", `${key}x`]) {
        const answer = await request(m, method, path, wrong)
        expect(answer.status, `${method} ${path}`).toBe(401)
        expect(answer.body).toEqual({ error: "unauthorized", reason: "missing or wrong X-Service-Key header" })
      }
    }
    // The page and its assets are public, and hold neither data nor key.
    for (const path of ["/", "/page/app.js", "/page/app.css"]) {
      const answer = await request(m, "GET", path)
      expect(answer.status, path).toBe(200)
      expect(answer.text).not.toContain(key)
      expect(answer.text).not.toContain("demo-alice")
    }
  })

  it("without the key or with a wrong one: a clear message and no data", async () => {
    const page = await context!.newPage()
    await page.goto(`${mana!.baseUrl}/`)
    await expect.poll(() => page.locator("#key-message").textContent()).toContain("No service key entered")
    expect(await page.locator("#dashboard").isHidden()).toBe(true)
    expect(await page.locator("#actors tbody tr").count()).toBe(0)
    await shot(page, "1-key-prompt")

    await page.fill("#key-input", "wrong-key-wrong-key-wrong")
    await page.click("#key-form button[type=submit]")
    await expect.poll(() => page.locator("#key-message").textContent()).toContain("refused this key (401 Unauthorized)")
    expect(await page.locator("#dashboard").isHidden()).toBe(true)
    expect(await page.locator("#actors tbody tr").count()).toBe(0)
    expect(await page.evaluate(() => (globalThis as any).sessionStorage.length)).toBe(0)
    expect(await page.locator("body").textContent()).not.toContain("demo-alice")
    await shot(page, "2-wrong-key")
    await page.close()
  })

  it("with the key: the demo users, a new iteration without a reload, a quarantine lifted, a tick started", async () => {
    const page = await context!.newPage()
    const urls: Array<string> = []
    const keyHeaders: Array<string | undefined> = []
    page.on("request", (r) => {
      urls.push(r.url())
      if (new URL(r.url()).pathname.startsWith("/internal/")) keyHeaders.push(r.headers()["x-service-key"])
    })
    await page.goto(`${mana!.baseUrl}/`)
    await page.fill("#key-input", key)
    await page.click("#key-form button[type=submit]")

    // The demo users, with the process panel: the breaker closed, no tokens spent (the offline planner).
    for (const user of DEMO_USERS) await page.locator(`#actors tr[data-user="${user}"]`).waitFor({ timeout: UI_WAIT_MS })
    expect(await page.locator("[data-testid=phase] dd").textContent()).toBe("ready")
    expect(await page.locator("[data-testid=breaker] dd").textContent()).toBe("closed · consecutiveFailures 0")
    expect(await page.locator("[data-testid=tokens] dd").textContent()).toBe("0 in 24 h")
    expect(await page.locator("[data-testid=llm-in-flight] dd").textContent()).toMatch(/^\d+$/)
    // The key is in this tab's session storage and nowhere in the page's HTML.
    expect(await page.evaluate(() => (globalThis as any).sessionStorage.getItem("mana-ai.service-key"))).toBe(key)
    expect(await page.content()).not.toContain(key)

    // A user's missions with their cadence, next run and last iterations.
    await page.click('#actors tr[data-user="demo-alice"] td')
    await page.locator('[data-mission="demo-alice-inbox"]').waitFor({ timeout: UI_WAIT_MS })
    expect(await page.locator('[data-mission="demo-alice-inbox"]').textContent()).toContain("every 180 min")
    await page.locator('[data-mission="demo-alice-inbox"] li[data-iteration]').first().waitFor({ timeout: UI_WAIT_MS })

    // A new mission is written to the event log; its iteration shows up while the page stays loaded.
    await page.evaluate(() => {
      ;(globalThis as any).stillTheSamePage = true
    })
    await writeChange("demo-alice", "demo-alice-page-check", "insert", mission("Page check", { kind: "interval", everyMinutes: 60 }))
    const fresh = page.locator('[data-mission="demo-alice-page-check"] li[data-iteration]')
    await fresh.first().waitFor({ timeout: UI_WAIT_MS })
    expect(await fresh.first().textContent()).toContain("Offline planner:")
    expect(await page.evaluate(() => (globalThis as any).stillTheSamePage)).toBe(true)
    await shot(page, "3-user-detail")

    // A cadence whose next run no timestamp can hold: the user's failures say it is skipped and why; the actor is not harmed.
    await writeChange("demo-alice", "demo-alice-far", "insert", mission("Far future", { kind: "interval", everyMinutes: TOO_LONG_MINUTES }))
    await expect
      .poll(() => page.locator("#detail-body").textContent(), { timeout: UI_WAIT_MS })
      .toContain("Mission skipped: malformedfield cadence: everyMinutes 150000000000 puts the next run past the latest instant a timestamp can hold")
    expect(await page.locator('[data-mission="demo-alice-far"]').textContent()).toContain("no iterations yet")
    expect(await page.locator('#actors tr[data-user="demo-alice"] [data-testid=state]').textContent()).not.toBe("quarantined")

    // A mission whose agent is paused is held, not run, and the page says why (SPEC §14).
    await writeChange(
      "demo-alice",
      "agent-page-paused",
      "insert",
      { name: "Resting", state: "paused", policy: { tools: {}, defaultForAi: "propose" }, maxConcurrentMissions: 1 },
      "agents",
    )
    await writeChange("demo-alice", "demo-alice-held", "insert", {
      ...mission("Held by its agent", { kind: "interval", everyMinutes: 60 }),
      agentId: "agent-page-paused",
    })
    await expect
      .poll(() => page.locator('[data-mission="demo-alice-held"]').textContent().catch(() => null), { timeout: UI_WAIT_MS })
      .toContain("held: its agent is paused, until the mission or its agent changes")
    expect(await page.locator('[data-mission="demo-alice-held"] li[data-iteration]').count()).toBe(0)

    // demo-dave, quarantined by the earlier process, is still quarantined here: listed first, with the kept reason.
    const daveState = page.locator('#actors tr[data-user="demo-dave"] [data-testid=state]')
    await expect.poll(() => daveState.textContent().catch(() => null), { timeout: UI_WAIT_MS }).toBe("quarantined")
    expect(await page.locator("#actors tbody tr").first().getAttribute("data-user")).toBe("demo-dave")
    expect(await page.locator('#actors tr[data-user="demo-dave"]').textContent()).toContain("poison mission")
    await expect.poll(() => page.locator("#failures tbody").textContent(), { timeout: UI_WAIT_MS }).toContain("users still quarantined")
    // A mission of its that falls due meanwhile is listed but does not run.
    await writeChange("demo-dave", "demo-dave-due", "insert", mission("Due while quarantined", { kind: "interval", everyMinutes: 60 }))
    await page.click('#actors tr[data-user="demo-dave"] td')
    await page.locator('[data-mission="demo-dave-due"]').waitFor({ timeout: UI_WAIT_MS })
    // Several ticks (500 ms apart) pass: still no iteration. A wait, not a bound: it cannot fail by being slow.
    await new Promise((resolve) => setTimeout(resolve, 2_000))
    expect(await page.locator('[data-mission="demo-dave-due"] li[data-iteration]').count()).toBe(0)
    expect(await daveState.textContent()).toBe("quarantined")
    await shot(page, "4-quarantined")

    // Lifted from the page: the actor comes back and the mission runs.
    await page.click('#actors tr[data-user="demo-dave"] button[data-action=restart]')
    await expect
      .poll(() => page.locator("#answer").textContent(), { timeout: UI_WAIT_MS })
      .toContain("POST /internal/actors/demo-dave/restart → 200")
    expect(await page.locator("#answer").textContent()).toContain('"restarted": true')
    await expect.poll(() => daveState.textContent(), { timeout: UI_WAIT_MS }).not.toBe("quarantined")
    await page.locator('[data-mission="demo-dave-due"] li[data-iteration]').first().waitFor({ timeout: UI_WAIT_MS })
    await shot(page, "5-quarantine-lifted")

    // A tick from the page, with the runner's answer shown.
    await page.click("#tick-button")
    await expect.poll(() => page.locator("#answer").textContent(), { timeout: 30_000 }).toContain("POST /internal/tick → 200")
    expect(await page.locator("#answer").textContent()).toContain('"dueMissionCount"')
    await shot(page, "6-tick")

    // Asked once: a reload in the same tab keeps the key.
    await page.reload()
    await page.locator('#actors tr[data-user="demo-bob"]').waitFor({ timeout: UI_WAIT_MS })
    expect(await page.locator("#key-panel").isHidden()).toBe(true)

    // The key never travelled in a URL, and every /internal request carried it as the header.
    expect(urls.length).toBeGreaterThan(5)
    for (const url of urls) expect(url).not.toContain(key)
    expect(keyHeaders.length).toBeGreaterThan(5)
    for (const header of keyHeaders) expect(header).toBe(key)

    // Forgetting it empties the page.
    await page.click("#forget-key")
    expect(await page.locator("#key-message").textContent()).toContain("No service key entered")
    expect(await page.locator("#actors tbody tr").count()).toBe(0)
    expect(await page.evaluate(() => (globalThis as any).sessionStorage.length)).toBe(0)
    await page.close()

    // Nor did it reach the log.
    expect(mana!.stdout()).not.toContain(key)
    expect(mana!.stderr()).not.toContain(key)
  }, 300_000)
})
