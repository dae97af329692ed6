/**
 * Configuration (SPEC §10), read through Effect `Config` and validated at start: a malformed value
 * fails with a ConfigError whose message names the variable and the form it expects. One tag per
 * concern so a test provides only what the code under test reads.
 */
import { Config, ConfigError, Context, Duration, Either, Layer, type Option, Redacted } from "effect"

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

export const isValidTimeZone = (zone: string): boolean => {
  try {
    new Intl.DateTimeFormat("en-US", { timeZone: zone })
    return true
  } catch {
    return false
  }
}

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
}

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
})

export class LlmConfig extends Context.Tag("mana-ai/LlmConfig")<LlmConfig, LlmConfigShape>() {}

// ---------------------------------------------------------------- database

export interface DatabaseConfigShape {
  /** Unset: embedded Postgres. */
  readonly url: Option.Option<Redacted.Redacted<string>>
  readonly poolMax: number
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
})

export class DatabaseConfig extends Context.Tag("mana-ai/DatabaseConfig")<DatabaseConfig, DatabaseConfigShape>() {}

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

export class HttpConfig extends Context.Tag("mana-ai/HttpConfig")<HttpConfig, HttpConfigShape>() {}

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

export class ObservabilityConfig extends Context.Tag("mana-ai/ObservabilityConfig")<
  ObservabilityConfig,
  ObservabilityConfigShape
>() {}
