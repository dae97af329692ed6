/**
 * mana-ai's resident process, as main.ts imports it. Reads and checks every setting first (a bad one
 * stops the start with one line on stderr), then launches the live or the embedded composition on
 * Bun's HTTP server. SIGTERM/SIGINT interrupt the launch: the layers drain in reverse order and the
 * exit code is 0. Only the chosen mode's modules are imported (issue 16): PGlite for the embedded
 * default, the cluster modules for RUNNER_ADDRESS, the OTLP tracer for OTEL_EXPORTER_OTLP_ENDPOINT.
 */
import { embeddedDatabaseStarts, startupDone } from "./layers/jitPolicy.js"
import * as FetchHttpClient from "@effect/platform/FetchHttpClient"
import * as BunHttpServer from "@effect/platform-bun/BunHttpServer"
import * as BunRuntime from "@effect/platform-bun/BunRuntime"
import * as Cause from "effect/Cause"
import * as ConfigError from "effect/ConfigError"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { packageVersion } from "./http/ServerState.js"
import { ObservabilityLive } from "./layers/Observability.js"
import { describeConfigError, environmentProvider, loadStartupConfig } from "./layers/startupConfig.js"

/** One line an operator can act on; stack traces stay out (they are for defects, shown at LOG_LEVEL=debug). */
export const describeFailure = (cause: Cause.Cause<unknown>): string => {
  const error = Cause.squash(cause)
  if (ConfigError.isConfigError(error)) return `invalid configuration: ${describeConfigError(error).join("; ")}`
  if (error instanceof Error || (typeof error === "object" && error !== null && "message" in error)) {
    const tag = (error as { _tag?: unknown })._tag
    const message = String((error as { message: unknown }).message)
    return tag === "StartupError" || typeof tag !== "string" ? message : `${tag}: ${message}`
  }
  return String(error)
}

const program = Effect.gen(function* () {
  const config = yield* loadStartupConfig
  const version = packageVersion()
  // Bun closes a request idle for 10 s by default; POST /internal/tick waits for its runs however
  // long they take, so the idle timeout is off (0; Bun allows at most 255 s otherwise).
  const platform = Layer.mergeAll(
    BunHttpServer.layer({ port: config.http.port, idleTimeout: 0 }),
    FetchHttpClient.layer,
  )
  // The embedded database runs in this process and starts with it: its start-up keeps the milder factor.
  if (config.mode._tag !== "Live") embeddedDatabaseStarts()
  const app =
    config.mode._tag === "Live"
      ? (yield* Effect.promise(() => import("./layers/live.js"))).liveLayer(config, config.mode, version, platform)
      : (yield* Effect.promise(() => import("./layers/embedded.js"))).embeddedLayer(
          config,
          config.mode.dataDir,
          version,
          platform,
        )
  const mode = config.mode._tag === "Live" ? "sync database" : "embedded"
  return yield* Effect.logInfo(`mana-ai ${version} starting (${mode} mode)`).pipe(
    Effect.zipRight(Layer.launch(Layer.tap(app, () => Effect.sync(startupDone)))),
    Effect.provide(ObservabilityLive(config.observability, version)),
  )
})

BunRuntime.runMain(
  program.pipe(
    // SPEC §10: an empty value means unset, for every variable read anywhere in the process.
    Effect.withConfigProvider(environmentProvider()),
    Effect.tapErrorCause((cause) =>
      Cause.isInterruptedOnly(cause)
        ? Effect.void
        : Effect.sync(() => {
            process.stderr.write(`mana-ai: ${describeFailure(cause)}\n`)
            if (process.env.LOG_LEVEL?.toLowerCase() === "debug") process.stderr.write(`${Cause.pretty(cause)}\n`)
          }),
    ),
  ),
  // Failures are reported above in one line; the runtime's own report would add a stack trace.
  { disableErrorReporting: true, disablePrettyLogger: true },
)
