/**
 * Configuration (SPEC §10), read through Effect `Config` and validated at start: a malformed value
 * fails with a ConfigError whose message names the variable and the form it expects. One tag per
 * concern so a test provides only what the code under test reads.
 */
import { createPrivateKey } from "node:crypto"
import { readFileSync } from "node:fs"
import * as Config from "effect/Config"
import * as ConfigError from "effect/ConfigError"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import { isValidTimeZone } from "../domain/cadence.js"

/**
 * A number read from text, so a value that does not parse gets the same message as one out of range:
 * the variable's name and the form it expects (Config.integer alone says only "Expected an integer").
 */
const numberIn = (
  name: string,
  fallback: number,
  options: { readonly min: number; readonly max?: number; readonly integer: boolean; readonly form: string },
) =>
  Config.string(name).pipe(
    Config.withDefault(String(fallback)),
    Config.mapOrFail((raw) => {
      const text = raw.trim()
      const n = options.integer ? (/^[+-]?\d+$/.test(text) ? Number(text) : Number.NaN) : text === "" ? Number.NaN : Number(text)
      return Number.isFinite(n) && n >= options.min && (options.max === undefined || n <= options.max)
        ? Either.right(n)
        : Either.left(ConfigError.InvalidData([name], `${name} must be ${options.form}, got ${JSON.stringify(raw)}`))
    }),
  )

const positiveInt = (name: string, fallback: number) =>
  numberIn(name, fallback, { min: 1, integer: true, form: "a whole number ≥ 1" })

const millis = (name: string, fallback: number) =>
  numberIn(name, fallback, { min: 1, integer: true, form: "a whole number of milliseconds ≥ 1" }).pipe(
    Config.map(Duration.millis),
  )

const bool = (name: string, fallback: boolean) =>
  Config.string(name).pipe(
    Config.withDefault(String(fallback)),
    Config.validate({
      message: `${name} must be true or false`,
      validation: (s) => ["true", "false", "1", "0"].includes(s.trim().toLowerCase()),
    }),
    Config.map((s) => ["true", "1"].includes(s.trim().toLowerCase())),
  )

const httpUrl = (name: string) =>
  Config.string(name).pipe(
    Config.validate({
      message: `${name} must be an http(s) URL, e.g. http://localhost:3025`,
      validation: (s) => {
        try {
          const u = new URL(s)
          return u.protocol === "http:" || u.protocol === "https:"
        } catch {
          return false
        }
      },
    }),
  )

// ---------------------------------------------------------------- runner (actors, runs)

export interface RunnerConfigShape {
  readonly userConcurrency: number
  readonly globalConcurrency: number
  readonly missionTimeout: Duration.Duration
  readonly actorIdleTtl: Duration.Duration
  readonly restartMax: number
  readonly restartWindow: Duration.Duration
  readonly shutdownGrace: Duration.Duration
  readonly tickInterval: Duration.Duration
  readonly tickEnabled: boolean
  readonly defaultTimezone: string
  /** How far behind its cursor discovery re-reads: longer than any sync-server transaction stays open. */
  readonly discoveryLookback: Duration.Duration
  /** How often discovery also re-replays every mission to apply rows the incremental path missed. */
  readonly reconcileInterval: Duration.Duration
  /**
   * MEMORY_TRIM_CODE: whether every quiet spell's collection also drops the compiled code (Bun.shrink;
   * src/layers/memoryTrim.ts). Off: only start-up's code is dropped, later quiet spells collect and keep it.
   */
  readonly memoryTrimCode: boolean
}

export const runnerConfig: Config.Config<RunnerConfigShape> = Config.all({
  userConcurrency: positiveInt("USER_CONCURRENCY", 2),
  globalConcurrency: positiveInt("GLOBAL_CONCURRENCY", 16),
  missionTimeout: millis("MISSION_TIMEOUT_MS", 120_000),
  actorIdleTtl: millis("ACTOR_IDLE_TTL_MS", 600_000),
  restartMax: positiveInt("RESTART_MAX", 5),
  restartWindow: millis("RESTART_WINDOW_MS", 60_000),
  shutdownGrace: millis("SHUTDOWN_GRACE_MS", 30_000),
  tickInterval: millis("TICK_INTERVAL_MS", 5_000),
  tickEnabled: bool("TICK_ENABLED", true),
  defaultTimezone: Config.string("DEFAULT_TIMEZONE").pipe(
    Config.withDefault("UTC"),
    Config.validate({ message: "DEFAULT_TIMEZONE must be an IANA time zone, e.g. Europe/Berlin", validation: isValidTimeZone }),
  ),
  discoveryLookback: millis("DISCOVERY_LOOKBACK_MS", 120_000),
  reconcileInterval: millis("DISCOVERY_RECONCILE_INTERVAL_MS", 600_000),
  memoryTrimCode: bool("MEMORY_TRIM_CODE", true),
})

export class RunnerConfig extends Context.Tag("mana-ai/RunnerConfig")<RunnerConfig, RunnerConfigShape>() {
  static readonly defaults: RunnerConfigShape = {
    userConcurrency: 2,
    globalConcurrency: 16,
    missionTimeout: Duration.millis(120_000),
    actorIdleTtl: Duration.millis(600_000),
    restartMax: 5,
    restartWindow: Duration.millis(60_000),
    shutdownGrace: Duration.millis(30_000),
    tickInterval: Duration.millis(5_000),
    tickEnabled: true,
    defaultTimezone: "UTC",
    discoveryLookback: Duration.millis(120_000),
    reconcileInterval: Duration.millis(600_000),
    memoryTrimCode: true,
  }
  static readonly test = (overrides: Partial<RunnerConfigShape> = {}) =>
    Layer.succeed(RunnerConfig, { ...RunnerConfig.defaults, ...overrides })
}

// ---------------------------------------------------------------- LLM and planner

export interface LlmConfigShape {
  /** Unset: the offline planner in embedded mode; required with a real database. */
  readonly url: Option.Option<string>
  readonly apiKey: Option.Option<Redacted.Redacted<string>>
  readonly model: string
  readonly temperature: number
  readonly requestTimeout: Duration.Duration
  readonly repairAttempts: number
  /** Unset: the built-in tool catalogue. */
  readonly toolsFile: Option.Option<string>
  /** `tools`: the catalogue as OpenAI tools, steps from tool calls; `json`: one fenced JSON answer (SPEC §4). */
  readonly plannerMode: PlannerMode
  /** Tool-calling rounds per plan (tools mode only). */
  readonly maxRounds: number
}

export type PlannerMode = "tools" | "json"

export const llmConfig: Config.Config<LlmConfigShape> = Config.all({
  url: Config.option(httpUrl("MANA_LLM_URL")),
  apiKey: Config.option(Config.redacted("MANA_LLM_API_KEY")),
  model: Config.string("LLM_MODEL").pipe(
    Config.withDefault("gpt-4o-mini"),
    Config.validate({ message: "LLM_MODEL must not be empty", validation: (s) => s.trim().length > 0 }),
  ),
  temperature: numberIn("LLM_TEMPERATURE", 0.3, { min: 0, max: 2, integer: false, form: "a number from 0 to 2" }),
  requestTimeout: millis("LLM_TIMEOUT_MS", 60_000),
  repairAttempts: numberIn("PLANNER_REPAIR_ATTEMPTS", 1, { min: 0, max: 5, integer: true, form: "a whole number from 0 to 5" }),
  toolsFile: Config.option(Config.string("TOOLS_FILE")),
  plannerMode: Config.string("PLANNER_MODE").pipe(
    Config.withDefault("tools"),
    Config.mapOrFail((raw) => {
      const mode = raw.trim()
      return mode === "tools" || mode === "json"
        ? Either.right<PlannerMode>(mode)
        : Either.left(ConfigError.InvalidData(["PLANNER_MODE"], `PLANNER_MODE must be tools or json, got ${JSON.stringify(raw)}`))
    }),
  ),
  maxRounds: numberIn("PLANNER_MAX_ROUNDS", 3, { min: 1, max: 10, integer: true, form: "a whole number from 1 to 10" }),
})

export class LlmConfig extends Context.Tag("mana-ai/LlmConfig")<LlmConfig, LlmConfigShape>() {}

// ---------------------------------------------------------------- database

export interface DatabaseConfigShape {
  /** Unset: embedded Postgres. */
  readonly url: Option.Option<Redacted.Redacted<string>>
  readonly poolMax: number
  /** Parse and plan a run's statements once per connection (named prepared statements, issue 16). */
  readonly preparedStatements: boolean
}

export const databaseConfig: Config.Config<DatabaseConfigShape> = Config.all({
  url: Config.option(
    Config.redacted("SYNC_DATABASE_URL").pipe(
      Config.validate({
        message: "SYNC_DATABASE_URL must be a postgres:// or postgresql:// URL",
        validation: (r) => /^postgres(ql)?:\/\//.test(Redacted.value(r)),
      }),
    ),
  ),
  poolMax: positiveInt("DB_POOL_MAX", 10),
  preparedStatements: bool("DB_PREPARED_STATEMENTS", true),
})

// ---------------------------------------------------------------- HTTP

export interface HttpConfigShape {
  readonly port: number
  /** Required with a real database; embedded: generated when unset. */
  readonly serviceKey: Option.Option<Redacted.Redacted<string>>
}

export const httpConfig: Config.Config<HttpConfigShape> = Config.all({
  port: numberIn("PORT", 3066, { min: 0, max: 65535, integer: true, form: "a whole number from 0 to 65535" }),
  serviceKey: Config.option(
    Config.redacted("MANA_SERVICE_KEY").pipe(
      Config.validate({
        message: "MANA_SERVICE_KEY must be at least 16 characters",
        validation: (r) => Redacted.value(r).length >= 16,
      }),
    ),
  ),
})

// ---------------------------------------------------------------- observability

export type LogFormat = "json" | "logfmt" | "pretty"

export interface ObservabilityConfigShape {
  readonly logLevel: "trace" | "debug" | "info" | "warning" | "error" | "fatal" | "none"
  readonly logFormat: LogFormat
  readonly otlpEndpoint: Option.Option<string>
}

const LOG_LEVELS = ["trace", "debug", "info", "warning", "error", "fatal", "none"] as const

export const observabilityConfig: Config.Config<ObservabilityConfigShape> = Config.all({
  logLevel: Config.string("LOG_LEVEL").pipe(
    Config.withDefault("info"),
    Config.map((s) => (s.trim().toLowerCase() === "warn" ? "warning" : s.trim().toLowerCase())),
    Config.validate({
      message: `LOG_LEVEL must be one of ${LOG_LEVELS.join(", ")}`,
      validation: (s): s is (typeof LOG_LEVELS)[number] => (LOG_LEVELS as ReadonlyArray<string>).includes(s),
    }),
  ),
  logFormat: Config.string("LOG_FORMAT").pipe(
    Config.withDefault(process.stdout.isTTY ? "pretty" : "json"),
    Config.validate({
      message: "LOG_FORMAT must be json, logfmt or pretty",
      validation: (s): s is LogFormat => s === "json" || s === "logfmt" || s === "pretty",
    }),
  ),
  otlpEndpoint: Config.option(httpUrl("OTEL_EXPORTER_OTLP_ENDPOINT")),
})

// ---------------------------------------------------------------- Mission Grant key (SPEC §15)

export type GrantKeyVariable = "MANA_AI_PRIVATE_KEY_FILE" | "MANA_AI_PRIVATE_KEY_PEM"

export interface GrantConfigShape {
  /** The runner's RSA-2048 key as PKCS#8 DER, and the variable it came from; None: grants are off. */
  readonly runnerKey: Option.Option<{ readonly source: GrantKeyVariable; readonly pkcs8: Redacted.Redacted<Uint8Array> }>
}

const GRANT_KEY_FORM = "a PKCS#8 PEM RSA-2048 private key (openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048)"

/** Parses and checks a PEM; the message names the variable and never quotes the key. */
const parseGrantKey = (name: GrantKeyVariable, pem: string): Either.Either<Uint8Array, ConfigError.ConfigError> => {
  const invalid = (why: string) => Either.left(ConfigError.InvalidData([name], `${name} must hold ${GRANT_KEY_FORM}: ${why}`))
  if (!pem.includes("-----BEGIN PRIVATE KEY-----")) return invalid("no PKCS#8 PEM block (-----BEGIN PRIVATE KEY-----) found")
  let key: ReturnType<typeof createPrivateKey>
  try {
    key = createPrivateKey({ key: pem, format: "pem" })
  } catch {
    return invalid("the PEM does not parse as a private key")
  }
  if (key.asymmetricKeyType !== "rsa") return invalid(`it is a ${key.asymmetricKeyType ?? "non-RSA"} key, not RSA`)
  const bits = key.asymmetricKeyDetails?.modulusLength
  if (bits !== 2048) return invalid(`it is an RSA key of ${bits ?? "unknown"} bits, not 2048`)
  return Either.right(new Uint8Array(key.export({ type: "pkcs8", format: "der" })))
}

const setValue = (name: GrantKeyVariable) =>
  Config.option(Config.redacted(name)).pipe(
    // An empty value means unset (SPEC §10).
    Config.map(Option.filter((r) => Redacted.value(r).trim() !== "")),
  )

export const grantConfig: Config.Config<GrantConfigShape> = Config.all({
  file: setValue("MANA_AI_PRIVATE_KEY_FILE"),
  pem: setValue("MANA_AI_PRIVATE_KEY_PEM"),
}).pipe(
  Config.mapOrFail(({ file, pem }): Either.Either<GrantConfigShape, ConfigError.ConfigError> => {
    if (Option.isSome(file) && Option.isSome(pem)) {
      return Either.left(
        ConfigError.InvalidData(
          ["MANA_AI_PRIVATE_KEY_FILE"],
          "MANA_AI_PRIVATE_KEY_FILE and MANA_AI_PRIVATE_KEY_PEM are both set: set only one (a PEM file path, or the PEM itself)",
        ),
      )
    }
    if (Option.isSome(file)) {
      const path = Redacted.value(file.value).trim()
      let text: string
      try {
        text = readFileSync(path, "utf8")
      } catch {
        return Either.left(
          ConfigError.InvalidData(
            ["MANA_AI_PRIVATE_KEY_FILE"],
            `MANA_AI_PRIVATE_KEY_FILE must name a readable file holding ${GRANT_KEY_FORM}, got ${JSON.stringify(path)}`,
          ),
        )
      }
      return Either.map(parseGrantKey("MANA_AI_PRIVATE_KEY_FILE", text), (der) => ({
        runnerKey: Option.some({ source: "MANA_AI_PRIVATE_KEY_FILE" as const, pkcs8: Redacted.make(der) }),
      }))
    }
    if (Option.isSome(pem)) {
      // A PEM passed through an env file often has its newlines escaped.
      const text = Redacted.value(pem.value).replace(/\\n/g, "\n")
      return Either.map(parseGrantKey("MANA_AI_PRIVATE_KEY_PEM", text), (der) => ({
        runnerKey: Option.some({ source: "MANA_AI_PRIVATE_KEY_PEM" as const, pkcs8: Redacted.make(der) }),
      }))
    }
    return Either.right({ runnerKey: Option.none() })
  }),
)

export class GrantConfig extends Context.Tag("mana-ai/GrantConfig")<GrantConfig, GrantConfigShape>() {}

// ---------------------------------------------------------------- token budgets and the LLM breaker (SPEC §14)

/** A whole number ≥ 0, or none when unset or empty (SPEC §10: an empty value means unset). */
const optionalTokenBudget = (name: string) =>
  Config.option(Config.string(name)).pipe(
    Config.mapOrFail((raw) => {
      const text = Option.getOrElse(raw, () => "").trim()
      if (text === "") return Either.right(Option.none<number>())
      const n = /^\+?\d+$/.test(text) ? Number(text) : Number.NaN
      return Number.isSafeInteger(n)
        ? Either.right(Option.some(n))
        : Either.left(
            ConfigError.InvalidData([name], `${name} must be a whole number of tokens ≥ 0 (unset: no budget), got ${JSON.stringify(Option.getOrElse(raw, () => ""))}`),
          )
    }),
  )

export interface TokenBudgetConfigShape {
  /** Per user, rolling 24 h, for missions without an agent budget. None: no budget. */
  readonly userDailyTokens: Option.Option<number>
  /** All runs of the process (every runner on this database), rolling 24 h. None: no budget. */
  readonly llmDailyTokens: Option.Option<number>
}

export const tokenBudgetConfig: Config.Config<TokenBudgetConfigShape> = Config.all({
  userDailyTokens: optionalTokenBudget("USER_DAILY_TOKEN_BUDGET"),
  llmDailyTokens: optionalTokenBudget("LLM_DAILY_TOKEN_BUDGET"),
})

export class TokenBudgetConfig extends Context.Tag("mana-ai/TokenBudgetConfig")<TokenBudgetConfig, TokenBudgetConfigShape>() {
  static readonly none: TokenBudgetConfigShape = { userDailyTokens: Option.none(), llmDailyTokens: Option.none() }
}

export interface LlmBreakerConfigShape {
  /** Transient LLM failures in a row, across the process, that open the breaker. */
  readonly failures: number
}

export const llmBreakerConfig: Config.Config<LlmBreakerConfigShape> = Config.all({
  failures: positiveInt("LLM_BREAKER_FAILURES", 10),
})

export class LlmBreakerConfig extends Context.Tag("mana-ai/LlmBreakerConfig")<LlmBreakerConfig, LlmBreakerConfigShape>() {}
