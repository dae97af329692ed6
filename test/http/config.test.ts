import { describe, expect, it } from "@effect/vitest"
import { Duration, Option, Redacted } from "effect"
import { accepted, refused } from "../support/startupEnv.js"

const KEY = "a-service-key-of-some-length"

/** Every variable of SPEC §10 that can be malformed (plus MANA_AI_DATA_DIR), with a bad value and the form expected. */
const malformed: ReadonlyArray<readonly [variable: string, value: string, expected: RegExp]> = [
  ["PORT", "http", /whole number from 0 to 65535/],
  ["PORT", "70000", /whole number from 0 to 65535/],
  ["SYNC_DATABASE_URL", "mysql://db/x", /postgres:\/\/ or postgresql:\/\/ URL/],
  ["DB_POOL_MAX", "0", /whole number ≥ 1/],
  ["DB_POOL_MAX", "ten", /whole number ≥ 1/],
  ["DB_PREPARED_STATEMENTS", "sometimes", /true or false/],
  ["MANA_LLM_URL", "llm.local:8080", /http\(s\) URL/],
  ["LLM_TEMPERATURE", "warm", /number from 0 to 2/],
  ["LLM_TEMPERATURE", "2.5", /number from 0 to 2/],
  ["MANA_SERVICE_KEY", "short", /at least 16 characters/],
  ["TICK_INTERVAL_MS", "5s", /milliseconds/],
  ["TICK_ENABLED", "yes please", /true or false/],
  ["USER_CONCURRENCY", "-1", /whole number ≥ 1/],
  ["GLOBAL_CONCURRENCY", "1.5", /whole number ≥ 1/],
  ["MISSION_TIMEOUT_MS", "two minutes", /milliseconds/],
  ["LLM_TIMEOUT_MS", "0", /milliseconds/],
  ["ACTOR_IDLE_TTL_MS", "10m", /milliseconds/],
  ["RESTART_MAX", "many", /whole number ≥ 1/],
  ["SHUTDOWN_GRACE_MS", "30s", /milliseconds/],
  ["DEFAULT_TIMEZONE", "Mars/Olympus_Mons", /IANA time zone/],
  ["TOOLS_FILE", "/nonexistent/tools.json", /readable JSON file/],
  ["PLANNER_REPAIR_ATTEMPTS", "9", /whole number from 0 to 5/],
  ["LOG_LEVEL", "loud", /one of trace, debug, info/],
  ["LOG_FORMAT", "xml", /json, logfmt or pretty/],
  ["OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318", /http\(s\) URL/],
  ["PLANNER_MODE", "native", /PLANNER_MODE must be tools or json/],
  ["PLANNER_MAX_ROUNDS", "0", /PLANNER_MAX_ROUNDS must be a whole number from 1 to 10/],
  ["MEMORY_TRIM_CODE", "sometimes", /MEMORY_TRIM_CODE must be true or false/],
]

/** Every variable the process reads (SPEC §10 plus MANA_AI_DATA_DIR, the discovery windows and MEMORY_TRIM_CODE). */
const VARIABLES = [
  "PORT",
  "SYNC_DATABASE_URL",
  "DB_POOL_MAX",
  "DB_PREPARED_STATEMENTS",
  "MANA_LLM_URL",
  "MANA_LLM_API_KEY",
  "LLM_MODEL",
  "LLM_TEMPERATURE",
  "MANA_SERVICE_KEY",
  "TICK_INTERVAL_MS",
  "TICK_ENABLED",
  "USER_CONCURRENCY",
  "GLOBAL_CONCURRENCY",
  "MISSION_TIMEOUT_MS",
  "LLM_TIMEOUT_MS",
  "ACTOR_IDLE_TTL_MS",
  "RESTART_MAX",
  "RESTART_WINDOW_MS",
  "SHUTDOWN_GRACE_MS",
  "DEFAULT_TIMEZONE",
  "TOOLS_FILE",
  "PLANNER_REPAIR_ATTEMPTS",
  "LOG_LEVEL",
  "LOG_FORMAT",
  "OTEL_EXPORTER_OTLP_ENDPOINT",
  "MANA_AI_DATA_DIR",
  "PLANNER_MODE",
  "PLANNER_MAX_ROUNDS",
  "USER_DAILY_TOKEN_BUDGET",
  "LLM_DAILY_TOKEN_BUDGET",
  "LLM_BREAKER_FAILURES",
  "MANA_AI_PRIVATE_KEY_FILE",
  "MANA_AI_PRIVATE_KEY_PEM",
  "DISCOVERY_LOOKBACK_MS",
  "DISCOVERY_RECONCILE_INTERVAL_MS",
  "MEMORY_TRIM_CODE",
] as const

const LIVE = { SYNC_DATABASE_URL: "postgres://runner:pw@db:5432/sync", MANA_LLM_URL: "http://llm:1", MANA_SERVICE_KEY: KEY }

describe("an empty variable means unset (SPEC §10)", () => {
  it.each(VARIABLES.flatMap((v) => [[v, ""] as const, [v, "   "] as const]))("%s=%j starts embedded exactly as if it were not set", (variable, value) => {
    expect(accepted({ [variable]: value })).toEqual(accepted({}))
  })

  it.each(VARIABLES.filter((v) => !(v in LIVE)))("%s empty beside a real database starts live exactly as if it were not set", (variable) => {
    expect(accepted({ ...LIVE, [variable]: "" })).toEqual(accepted(LIVE))
  })

  it.each(["MANA_LLM_URL", "MANA_SERVICE_KEY"])("%s empty beside a real database is missing, as required", (variable) => {
    expect(refused({ ...LIVE, [variable]: "" })).toContain(`${variable} is required when SYNC_DATABASE_URL is set`)
  })

  it("values around an empty one still count", () => {
    const config = accepted({ PORT: "", USER_CONCURRENCY: "7", TICK_ENABLED: "", LLM_MODEL: "gpt-x" })
    expect(config.http.port).toBe(3066)
    expect(config.runner.userConcurrency).toBe(7)
    expect(config.runner.tickEnabled).toBe(true)
    expect(config.llm.model).toBe("gpt-x")
  })
})

describe("start-up configuration", () => {
  it.each(malformed)("refuses %s=%j naming the variable and the form it expects", (variable, value, expected) => {
    const message = refused({ [variable]: value })
    expect(message).toContain(variable)
    expect(message).toMatch(expected)
  })

  it("never repeats a secret's value in the message", () => {
    expect(refused({ MANA_SERVICE_KEY: "tooshort1" })).not.toContain("tooshort1")
    expect(refused({ SYNC_DATABASE_URL: "mysql://u:hunter2@db/x" })).not.toContain("hunter2")
  })

  it("reports every malformed variable at once", () => {
    const message = refused({ PORT: "x", USER_CONCURRENCY: "0", LOG_FORMAT: "xml" })
    for (const name of ["PORT", "USER_CONCURRENCY", "LOG_FORMAT"]) expect(message).toContain(name)
  })

  it("with a real database requires MANA_LLM_URL and MANA_SERVICE_KEY", () => {
    const message = refused({ SYNC_DATABASE_URL: "postgres://runner:pw@db:5432/sync" })
    expect(message).toContain("MANA_LLM_URL is required when SYNC_DATABASE_URL is set")
    expect(message).toContain("MANA_SERVICE_KEY is required when SYNC_DATABASE_URL is set")
    expect(message).not.toContain("pw@")
    expect(refused({ SYNC_DATABASE_URL: "postgres://db/sync", MANA_LLM_URL: "http://llm:1" })).toContain("MANA_SERVICE_KEY")
    expect(refused({ SYNC_DATABASE_URL: "postgres://db/sync", MANA_SERVICE_KEY: KEY })).toContain("MANA_LLM_URL")
  })

  it("with a real database and both set, starts in live mode with the secrets redacted", () => {
    const config = accepted({ SYNC_DATABASE_URL: "postgres://runner:pw@db:5432/sync", MANA_LLM_URL: "http://llm:1", MANA_SERVICE_KEY: KEY })
    expect(config.mode._tag).toBe("Live")
    if (config.mode._tag !== "Live") return
    expect(Redacted.value(config.mode.serviceKey)).toBe(KEY)
    expect(String(config.mode.serviceKey)).not.toContain(KEY)
    expect(String(config.mode.databaseUrl)).not.toContain("pw")
  })

  it("with nothing set, starts embedded on the SPEC defaults", () => {
    const config = accepted({})
    expect(config.mode).toEqual({ _tag: "Embedded", dataDir: ".data" })
    expect(config.http.port).toBe(3066)
    expect(config.database.poolMax).toBe(10)
    expect(Option.isNone(config.llm.url)).toBe(true)
    expect(config.llm.model).toBe("gpt-4o-mini")
    expect(config.llm.temperature).toBe(0.3)
    expect(config.runner.tickEnabled).toBe(true)
    expect(Duration.toMillis(config.runner.tickInterval)).toBe(5000)
    expect(config.runner.userConcurrency).toBe(2)
    expect(config.runner.globalConcurrency).toBe(16)
    expect(Duration.toMillis(config.runner.missionTimeout)).toBe(120_000)
    expect(Duration.toMillis(config.llm.requestTimeout)).toBe(60_000)
    expect(Duration.toMillis(config.runner.actorIdleTtl)).toBe(600_000)
    expect(config.runner.restartMax).toBe(5)
    expect(Duration.toMillis(config.runner.restartWindow)).toBe(60_000)
    expect(Duration.toMillis(config.runner.shutdownGrace)).toBe(30_000)
    expect(config.runner.defaultTimezone).toBe("UTC")
    expect(config.runner.memoryTrimCode).toBe(true)
    expect(config.llm.repairAttempts).toBe(1)
    expect(config.llm.plannerMode).toBe("tools")
    expect(config.llm.maxRounds).toBe(3)
    expect(config.observability.logLevel).toBe("info")
    expect(Option.isNone(config.observability.otlpEndpoint)).toBe(true)
  })

  it("accepts well-formed values", () => {
    const config = accepted({ PORT: "0", TICK_ENABLED: "false", LLM_TEMPERATURE: "1.2", LOG_LEVEL: "WARN", DEFAULT_TIMEZONE: "Europe/Berlin", MEMORY_TRIM_CODE: "false" })
    expect(config.http.port).toBe(0)
    expect(config.runner.memoryTrimCode).toBe(false)
    expect(config.runner.tickEnabled).toBe(false)
    expect(config.llm.temperature).toBe(1.2)
    expect(config.observability.logLevel).toBe("warning")
  })
})
