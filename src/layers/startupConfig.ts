/**
 * Everything SPEC §10 configures, read and cross-checked once at start, before anything else runs:
 * a malformed value stops the start with one line that names the variable and the form it expects.
 */
import { accessSync, constants } from "node:fs"
import * as Config from "effect/Config"
import * as ConfigError from "effect/ConfigError"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import type * as Redacted from "effect/Redacted"
import {
  type DatabaseConfigShape,
  databaseConfig,
  type GrantConfigShape,
  grantConfig,
  type HttpConfigShape,
  httpConfig,
  type LlmBreakerConfigShape,
  type LlmConfigShape,
  llmBreakerConfig,
  llmConfig,
  type ObservabilityConfigShape,
  observabilityConfig,
  type RunnerConfigShape,
  runnerConfig,
  type TokenBudgetConfigShape,
  tokenBudgetConfig,
} from "../services/AppConfig.js"
import { type ClusterConfigShape, clusterConfig } from "../cluster/ClusterConfig.js"

/** Embedded mode only: where PGlite's files, the generated service key and the seed marker live. */
const dataDirConfig: Config.Config<string> = Config.string("MANA_AI_DATA_DIR").pipe(
  Config.withDefault(".data"),
  Config.validate({ message: "MANA_AI_DATA_DIR must be a directory path", validation: (s) => s.trim().length > 0 }),
)

export type StartMode =
  /** SYNC_DATABASE_URL set: the sync server's database; LLM URL and service key are required. */
  | {
      readonly _tag: "Live"
      readonly databaseUrl: Redacted.Redacted<string>
      readonly llmUrl: string
      readonly serviceKey: Redacted.Redacted<string>
    }
  /** No SYNC_DATABASE_URL: embedded PGlite under dataDir, the offline planner unless MANA_LLM_URL is set. */
  | { readonly _tag: "Embedded"; readonly dataDir: string }

export interface StartupConfig {
  readonly runner: RunnerConfigShape
  readonly llm: LlmConfigShape
  readonly database: DatabaseConfigShape
  readonly http: HttpConfigShape
  readonly observability: ObservabilityConfigShape
  /** Mission Grant key (SPEC §15); None: grants are off. */
  readonly grant: GrantConfigShape
  readonly tokenBudget: TokenBudgetConfigShape
  readonly llmBreaker: LlmBreakerConfigShape
  /** RUNNER_ADDRESS set: this process is one runner of a cluster on the sync database (issue 19). */
  readonly cluster: Option.Option<ClusterConfigShape>
  readonly mode: StartMode
}

const readableFile = (path: string): boolean => {
  try {
    accessSync(path, constants.R_OK)
    return true
  } catch {
    return false
  }
}

const crossCheck = (c: Omit<StartupConfig, "mode"> & { readonly dataDir: string }): Either.Either<StartupConfig, ConfigError.ConfigError> => {
  const problems: Array<ConfigError.ConfigError> = []
  if (Option.isSome(c.llm.toolsFile) && !readableFile(c.llm.toolsFile.value)) {
    problems.push(
      ConfigError.InvalidData(["TOOLS_FILE"], `TOOLS_FILE must name a readable JSON file, got ${JSON.stringify(c.llm.toolsFile.value)}`),
    )
  }
  let mode: StartMode = { _tag: "Embedded", dataDir: c.dataDir }
  if (Option.isSome(c.database.url)) {
    if (Option.isNone(c.llm.url)) {
      problems.push(
        ConfigError.MissingData(
          ["MANA_LLM_URL"],
          "MANA_LLM_URL is required when SYNC_DATABASE_URL is set: an http(s) URL of an OpenAI-compatible API",
        ),
      )
    }
    if (Option.isNone(c.http.serviceKey)) {
      problems.push(
        ConfigError.MissingData(
          ["MANA_SERVICE_KEY"],
          "MANA_SERVICE_KEY is required when SYNC_DATABASE_URL is set: a secret of at least 16 characters",
        ),
      )
    }
    if (Option.isSome(c.llm.url) && Option.isSome(c.http.serviceKey)) {
      mode = { _tag: "Live", databaseUrl: c.database.url.value, llmUrl: c.llm.url.value, serviceKey: c.http.serviceKey.value }
    }
  }
  if (Option.isSome(c.cluster) && Option.isNone(c.database.url)) {
    problems.push(
      ConfigError.InvalidData(
        ["RUNNER_ADDRESS"],
        "RUNNER_ADDRESS needs SYNC_DATABASE_URL: the runners of a cluster share one Postgres server (embedded PGlite serves one process)",
      ),
    )
  }
  const [first, ...rest] = problems
  if (first !== undefined) return Either.left(rest.reduce(ConfigError.And, first))
  const { dataDir: _dataDir, ...sections } = c
  return Either.right({ ...sections, mode })
}

/** Every variable, all errors collected (Config.all reports each malformed value, not just the first). */
export const startupConfig: Config.Config<StartupConfig> = Config.all({
  runner: runnerConfig,
  llm: llmConfig,
  database: databaseConfig,
  http: httpConfig,
  observability: observabilityConfig,
  grant: grantConfig,
  tokenBudget: tokenBudgetConfig,
  llmBreaker: llmBreakerConfig,
  cluster: clusterConfig,
  dataDir: dataDirConfig,
}).pipe(Config.mapOrFail(crossCheck))

/** One line per problem, each naming its variable; secrets never appear (their checks do not quote them). */
export const describeConfigError = (error: ConfigError.ConfigError): ReadonlyArray<string> => {
  const leaf = (path: ReadonlyArray<string>, message: string, missing: boolean): string => {
    const name = path.join(".")
    if (name === "" || message.includes(name)) return message
    return missing ? `${name} is required` : `${name}: ${message}`
  }
  const walk = (e: ConfigError.ConfigError): ReadonlyArray<string> => {
    switch (e._op) {
      case "And":
      case "Or":
        return [...walk(e.left), ...walk(e.right)]
      case "InvalidData":
        return [leaf(e.path, e.message, false)]
      case "MissingData":
        return [leaf(e.path, e.message, true)]
      case "SourceUnavailable":
      case "Unsupported":
        return [leaf(e.path, e.message, false)]
    }
  }
  return [...new Set(walk(error))]
}

export class StartupError extends Data.TaggedError("StartupError")<{ readonly message: string }> {}

/**
 * The environment as configuration, with SPEC §10's rule that an empty value means unset: a variable
 * set to "" (or only blanks) is left out, so it takes its default, or is missing where it is required,
 * exactly as if it were not set. Every variable goes through this, those added later included.
 */
export const environmentProvider = (env: Readonly<Record<string, string | undefined>> = process.env): ConfigProvider.ConfigProvider =>
  ConfigProvider.fromMap(
    new Map(Object.entries(env).filter((entry): entry is [string, string] => entry[1] !== undefined && entry[1].trim() !== "")),
  )

/** Reads the environment (or a test's ConfigProvider) and fails with one readable line. */
export const loadStartupConfig: Effect.Effect<StartupConfig, StartupError> = Effect.mapError(
  startupConfig,
  (error) => new StartupError({ message: `invalid configuration: ${describeConfigError(error).join("; ")}` }),
)
