/**
 * No secret leaves the process in a log line, an error body or a span: the real Bun process runs at
 * LOG_LEVEL trace and debug, LOG_FORMAT json and logfmt, with OTLP export to a local sink, while the
 * test provokes every path that logs: wrong and missing service keys, an LLM answering 401, 500s and
 * garbage, a database outage mid-tick, a refused start, SIGTERM. stdout, stderr, every HTTP body and
 * every exported span are searched for the service key, the LLM key and the database password
 * (also URL-encoded and base64), and the output is checked to be verbose, so silence cannot pass.
 */
import { randomBytes } from "node:crypto"
import { Effect, Exit, Redacted, Scope } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { record } from "../support/FaultLedger.js"
import { encryptValue, generateRunnerKeyPair, makeGrant } from "../support/grantFixtures.js"
import { type LlmStandInShape, completion, makeLlmStandIn } from "../support/LlmStandIn.js"
import { eventually, type ManaProcess, request, startManaProcess } from "../support/ManaProcess.js"
import { type Change, insertChanges, missionInsertRow } from "../support/seed.js"
import { insertChange } from "../support/eventLogRows.js"
import { makeRig, type Rig } from "../support/ProcessRig.js"
import type { TcpProxyShape } from "../support/TcpProxy.js"
import { TestDatabase, type TestDatabaseShape } from "../support/TestDatabase.js"

let scope: Scope.CloseableScope
let rig: Rig
let db: TestDatabaseShape
let llm: LlmStandInShape
let otlp: LlmStandInShape
let proxy: TcpProxyShape
const tally = { faults: {} as Record<string, number>, runs: 0 }
const fault = (kind: string, n = 1) => {
  tally.faults[kind] = (tally.faults[kind] ?? 0) + n
}

const run = <A>(effect: Effect.Effect<A>) => Effect.runPromise(effect)
const seed = (changes: ReadonlyArray<Change>) => run(insertChanges(changes).pipe(Effect.provideService(TestDatabase, db)))
const past = () => new Date(Date.now() - 60_000).toISOString()
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
const secret = (prefix: string) => `${prefix}${randomBytes(18).toString("hex")}`

/** The database URL the process gets: through the proxy, with a password (PGlite ignores it, the server checks it). */
const databaseUrl = () => {
  const u = new URL(Redacted.value(proxy.rewrite(db.runnerUrl)))
  if (u.password === "") u.password = secret("pgpw-")
  return u
}

/** Every form a secret could take in output. */
const formsOf = (s: string) => [s, encodeURIComponent(s), Buffer.from(s).toString("base64"), s.slice(0, 24)]

beforeAll(async () => {
  // The shared rig (database, LLM stand-in, TcpProxy); a second stand-in is the OTLP/HTTP sink.
  rig = await makeRig()
  db = rig.db
  llm = rig.standIn
  proxy = rig.proxy
  scope = await run(Scope.make())
  // It records every span batch posted to it.
  otlp = await run(Scope.extend(makeLlmStandIn, scope))
}, 120_000)

afterAll(async () => {
  if (rig !== undefined) {
    const audit = await rig.audit()
    expect(audit.duplicates).toBe(0)
    record({ suite: "secretsInLogs", faults: tally.faults, runs: tally.runs, iterationsWritten: audit.runnerRows, duplicates: audit.duplicates })
  }
  if (scope !== undefined) await run(Scope.close(scope, Exit.void))
  await rig?.close()
}, 60_000)

const CONFIGS = [
  { level: "trace", format: "json" },
  { level: "debug", format: "logfmt" },
  { level: "debug", format: "json" },
  { level: "trace", format: "logfmt" },
] as const

describe("no secret in any log line, error body or span", () => {
  for (const [n, { level, format }] of CONFIGS.entries()) {
    it(`LOG_LEVEL=${level} LOG_FORMAT=${format}: stdout, stderr, bodies and spans hold no secret`, async () => {
      const serviceKey = secret("svc-")
      const llmKey = secret("sk-llm-")
      const url = databaseUrl()
      const password = decodeURIComponent(url.password)
      await run(Effect.all([llm.reset, otlp.reset]))
      const users = [`sec${n}-ok`, `sec${n}-401`, `sec${n}-500`, `sec${n}-garbage`, `sec${n}-outage`]
      // The prompt carries the objective, so it tells the stand-in which fault to answer with.
      const objectives = ["sec-ok", "sec-401", "sec-500", "sec-garbage"]
      await seed(users.slice(0, 4).map((u, i) => missionInsertRow(u, `${u}-m`, { nextRunAt: past(), objective: `Objective ${objectives[i]}` })))
      // Per user: a plan, a 401, 500s past the deadline, garbage twice.
      await run(
        llm.setResponder((r) => {
          const text = JSON.stringify(r.body)
          if (text.includes("sec-401")) return { status: 401, body: { error: { message: `bad key ${llmKey}` } } }
          if (text.includes("sec-500")) return { status: 500, body: "upstream exploded" }
          if (text.includes("sec-garbage")) return { body: completion(`no plan, but here is a key: ${llmKey}`) }
          return {}
        }),
      )
      const bodies: Array<string> = []
      const mana: ManaProcess = await startManaProcess({
        env: {
          SYNC_DATABASE_URL: url.toString(),
          MANA_LLM_URL: llm.url,
          MANA_LLM_API_KEY: llmKey,
          MANA_SERVICE_KEY: serviceKey,
          TICK_ENABLED: "false",
          DB_POOL_MAX: "3",
          MISSION_TIMEOUT_MS: "2500",
          LLM_TIMEOUT_MS: "1000",
          SHUTDOWN_GRACE_MS: "1500",
          LOG_LEVEL: level,
          LOG_FORMAT: format,
          OTEL_EXPORTER_OTLP_ENDPOINT: otlp.url,
        },
      })
      try {
        await eventually("/ready", 60_000, async () => (await request(mana, "GET", "/ready")).status === 200)
        const call = async (method: "GET" | "POST", path: string, key?: string, headers: Record<string, string> = {}) => {
          const res = await fetch(`${mana.baseUrl}${path}`, {
            method,
            headers: { ...(key === undefined ? {} : { "X-Service-Key": key }), ...headers },
          })
          const text = await res.text()
          // The request line is ours, not the service's answer: record its path only.
          bodies.push(`${method} ${path.split("?")[0]} ${res.status} ${JSON.stringify([...res.headers])} ${text}`)
          return { status: res.status, text }
        }
        for (const path of ["/health", "/ready", "/metrics"]) await call("GET", path)
        // Wrong keys of every shape: each a 401, none echoed.
        // (Surrounding spaces are not a different key: HTTP strips them from header values.)
        for (const key of [undefined, "", serviceKey.slice(0, -1), `${serviceKey}x`, serviceKey.toUpperCase(), `${serviceKey},${serviceKey}`]) {
          expect({ key, status: (await call("POST", "/internal/tick", key)).status }).toEqual({ key, status: 401 })
          expect({ key, status: (await call("GET", `/internal/missions/${users[0]}`, key)).status }).toEqual({ key, status: 401 })
        }
        // A key in the query string is not accepted (401), and neither the access log (path only) nor
        // a span (none for a URL with a query) records it: the real key here.
        expect((await call("GET", `/internal/actors?key=${serviceKey}`)).status).toBe(401)
        expect((await call("GET", "/internal/actors", undefined, { Authorization: `Bearer ${serviceKey}` })).status).toBe(401)
        fault("security:wrong-or-missing-service-key", 14)

        // A tick meeting a 401, 500s until the deadline, and garbage twice from the LLM.
        const tick = await call("POST", "/internal/tick", serviceKey)
        expect(tick.status).toBe(200)
        tally.runs += 4
        fault("llm:401-500-garbage-during-secret-scan", 3)
        await call("GET", `/internal/missions/${users[0]}`, serviceKey)
        await call("GET", "/internal/actors", serviceKey)

        // The database goes away mid-tick: its errors are logged and answered, without the password.
        await seed([missionInsertRow(users[4]!, `${users[4]}-m`, { nextRunAt: past() })])
        await run(proxy.setMode("refuse"))
        await run(proxy.dropAll)
        fault("db:outage-during-secret-scan")
        await call("POST", "/internal/tick", serviceKey)
        await call("GET", `/internal/missions/${users[4]}`, serviceKey)
        await sleep(300)
        await run(proxy.resume)
        await call("POST", "/internal/tick", serviceKey)
        tally.runs++
        const stopped = await mana.stop("SIGTERM", 20_000)
        expect(stopped.code).toBe(0)
      } finally {
        if (mana.child.exitCode === null && mana.child.signalCode === null) mana.child.kill("SIGKILL")
        await run(proxy.resume)
      }
      await sleep(200)

      if (process.env.SECRETS_DUMP_DIR) {
        const { writeFileSync } = await import("node:fs")
        writeFileSync(`${process.env.SECRETS_DUMP_DIR}/${level}-${format}.out`, `${mana.stdout()}\n--- stderr\n${mana.stderr()}\n--- bodies\n${bodies.join("\n")}\n--- spans\n${JSON.stringify((await run(otlp.requests)).map((r) => r.body))}\n--- secrets ${serviceKey} ${llmKey} ${password}\n`)
      }
      // The output is verbose at this level (so the search below searched something), in the chosen format.
      const out = mana.stdout()
      const err = mana.stderr()
      const lines = out.split("\n").filter((l) => l.trim() !== "")
      expect(lines.length).toBeGreaterThan(30)
      const levelMark = format === "json" ? /"logLevel":"(DEBUG|TRACE)"/ : /level=(DEBUG|TRACE)/
      expect(out).toMatch(levelMark)
      if (format === "json") expect(lines.every((l) => l.startsWith("{"))).toBe(true)
      else expect(lines.filter((l) => /^timestamp=/.test(l)).length).toBe(lines.length)
      // The faults really happened: the LLM saw the 401 path and the database errors were logged.
      expect(out + err).toMatch(/401/)
      expect(out + err).toMatch(/SqlError|ECONNREFUSED|not reachable|connect/i)
      const spans = JSON.stringify((await run(otlp.requests)).map((r) => r.body))
      expect((await run(otlp.requests)).length).toBeGreaterThan(0)

      for (const [name, value] of [["MANA_SERVICE_KEY", serviceKey], ["MANA_LLM_API_KEY", llmKey], ["database password", password]] as const) {
        for (const form of formsOf(value)) {
          expect({ name, where: "stdout", found: out.includes(form) }).toEqual({ name, where: "stdout", found: false })
          expect({ name, where: "stderr", found: err.includes(form) }).toEqual({ name, where: "stderr", found: false })
          expect({ name, where: "http bodies", found: bodies.some((b) => b.includes(form)) }).toEqual({ name, where: "http bodies", found: false })
          expect({ name, where: "spans", found: spans.includes(form) }).toEqual({ name, where: "spans", found: false })
        }
      }
      // The LLM got its own key and never the service key or the database password.
      for (const r of await run(llm.requests)) {
        expect(r.headers.authorization).toBe(`Bearer ${llmKey}`)
        expect(JSON.stringify(r)).not.toContain(serviceKey)
        expect(JSON.stringify(r)).not.toContain(password)
      }
    }, 120_000)
  }

  it("with a Mission Grant at LOG_LEVEL=trace and tracing on: no plaintext, mission key, wrapped key or runner key in stdout, stderr, spans or metrics", async () => {
    const serviceKey = secret("svc-")
    await run(Effect.all([llm.reset, otlp.reset]))
    const runnerKey = await generateRunnerKeyPair()
    const user = "sec-grant"
    const missionId = `sec-grant-m-${randomBytes(4).toString("hex")}`
    const plaintexts = { title: secret("plain-title-"), content: secret("plain-content-"), outside: secret("plain-outside-") }
    const fixture = await makeGrant({ publicKey: runnerKey.publicKey, missionId, recordIds: ["notes:n1", "notes:tampered"] })
    const enc = (v: string) => encryptValue(fixture.missionKey, v)
    const tampered = (await enc(secret("plain-tampered-"))).replace(/.(==?)?$/, (m) => (m.startsWith("A") ? `B${m.slice(1)}` : `A${m.slice(1)}`))
    const inDb = <A>(e: Effect.Effect<A, never, TestDatabase>) => run(e.pipe(Effect.provideService(TestDatabase, db)))
    await inDb(insertChange({ user, app: "notes", table: "notes", id: "n1", data: { title: await enc(plaintexts.title), content: await enc(plaintexts.content) } }))
    await inDb(insertChange({ user, app: "notes", table: "notes", id: "n2", data: { content: await enc(plaintexts.outside) } }))
    await inDb(insertChange({ user, app: "notes", table: "notes", id: "tampered", data: { content: tampered } }))
    await seed([
      missionInsertRow(user, missionId, {
        nextRunAt: past(),
        inputs: ["n1", "n2", "tampered"].map((id) => ({ module: "notes", table: "notes", id })),
        grant: fixture.grant,
      }),
    ])
    const mana = await startManaProcess({
      env: {
        SYNC_DATABASE_URL: databaseUrl().toString(),
        MANA_LLM_URL: llm.url,
        MANA_SERVICE_KEY: serviceKey,
        MANA_AI_PRIVATE_KEY_PEM: runnerKey.privatePem,
        TICK_ENABLED: "false",
        DB_POOL_MAX: "3",
        LOG_LEVEL: "trace",
        LOG_FORMAT: "json",
        OTEL_EXPORTER_OTLP_ENDPOINT: otlp.url,
      },
    })
    let metrics = ""
    let audit = ""
    try {
      await eventually("/ready", 60_000, async () => (await request(mana, "GET", "/ready")).status === 200)
      const tick = await fetch(`${mana.baseUrl}/internal/tick`, { method: "POST", headers: { "X-Service-Key": serviceKey } })
      expect(tick.status).toBe(200)
      tally.runs++
      metrics = await (await fetch(`${mana.baseUrl}/metrics`)).text()
      audit = await (await fetch(`${mana.baseUrl}/internal/audit/${user}`, { headers: { "X-Service-Key": serviceKey } })).text()
      expect((await mana.stop("SIGTERM", 20_000)).code).toBe(0)
    } finally {
      if (mana.child.exitCode === null && mana.child.signalCode === null) mana.child.kill("SIGKILL")
    }
    await sleep(200)
    fault("grant:plaintext-scan")

    // Something happened to search: the LLM got the decrypted note, the audit and metrics moved.
    const prompts = JSON.stringify((await run(llm.requests)).map((r) => r.body))
    expect(prompts).toContain(plaintexts.content)
    expect(prompts).not.toContain(plaintexts.outside)
    expect(JSON.parse(audit).rows.map((r: { status: string }) => r.status).sort()).toEqual(["failed", "ok", "scope-violation"])
    expect(metrics).toMatch(/^mana_ai_decrypts_total\{table="notes"\} 2$/m)
    expect(metrics).toMatch(/^mana_ai_grant_scope_violations_total\{table="notes"\} 1$/m)
    const out = mana.stdout()
    const err = mana.stderr()
    expect(out.split("\n").filter((l) => l.trim() !== "").length).toBeGreaterThan(15)
    expect(out).toMatch(/"logLevel":"(DEBUG|TRACE)"/)
    expect(out).toContain("Mission Grants: on (RSA key from MANA_AI_PRIVATE_KEY_PEM)")
    const spans = JSON.stringify((await run(otlp.requests)).map((r) => r.body))
    expect(spans).toContain("EncryptedInputs.resolve")

    const pemLines = runnerKey.privatePem.split("\n").filter((l) => l !== "" && !l.startsWith("-----"))
    const forbidden: ReadonlyArray<readonly [string, string]> = [
      ...Object.entries(plaintexts).flatMap(([k, v]) => formsOf(v).map((f) => [`plaintext ${k}`, f] as const)),
      ["mission key (hex)", Buffer.from(fixture.missionKey).toString("hex")],
      ["mission key (base64)", Buffer.from(fixture.missionKey).toString("base64")],
      ["wrapped key", String(fixture.grant.wrappedKey)],
      ["wrapped key (prefix)", String(fixture.grant.wrappedKey).slice(0, 24)],
      ...pemLines.map((l, i) => [`runner key line ${i}`, l] as const),
    ]
    for (const [name, form] of forbidden) {
      for (const [where, text] of [["stdout", out], ["stderr", err], ["spans", spans], ["metrics", metrics]] as const) {
        expect({ name, where, found: text.includes(form) }).toEqual({ name, where, found: false })
      }
    }
  }, 120_000)

  it("a refused start and an unreachable database at LOG_LEVEL=debug name the problem without the secrets", async () => {
    const serviceKey = secret("svc-")
    const llmKey = secret("sk-llm-")
    const password = secret("pw-")
    for (const format of ["json", "logfmt"]) {
      const refused = await startManaProcess({
        env: {
          SYNC_DATABASE_URL: `postgres://runner:${password}@127.0.0.1:1/nowhere`,
          MANA_LLM_URL: llm.url,
          MANA_LLM_API_KEY: llmKey,
          MANA_SERVICE_KEY: serviceKey,
          DB_POOL_MAX: "lots",
          LOG_LEVEL: "debug",
          LOG_FORMAT: format,
        },
      })
      expect((await refused.exited).code).not.toBe(0)
      expect(refused.stderr()).toContain("DB_POOL_MAX")
      const unreachable = await startManaProcess({
        env: {
          SYNC_DATABASE_URL: `postgres://runner:${password}@127.0.0.1:1/nowhere?password=${password}`,
          MANA_LLM_URL: llm.url,
          MANA_LLM_API_KEY: llmKey,
          MANA_SERVICE_KEY: serviceKey,
          LOG_LEVEL: "debug",
          LOG_FORMAT: format,
        },
      })
      await eventually("a log line about the unreachable database", 20_000, async () => /not reachable|ECONNREFUSED/i.test(unreachable.stdout() + unreachable.stderr()))
      await sleep(1_500)
      await unreachable.stop("SIGKILL", 10_000).catch(() => undefined)
      fault("db:unreachable-at-start")
      for (const p of [refused, unreachable]) {
        for (const value of [serviceKey, llmKey, password]) {
          for (const form of formsOf(value)) {
            expect(p.stdout().includes(form) || p.stderr().includes(form)).toBe(false)
          }
        }
      }
    }
  }, 90_000)
})
