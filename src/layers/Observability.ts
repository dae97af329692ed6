/**
 * Logs and traces (SPEC §10 LOG_LEVEL, LOG_FORMAT, OTEL_EXPORTER_OTLP_ENDPOINT). Every format prints
 * the log annotations, so a run's userId and missionId reach each of its lines. Spans go out over
 * OTLP/HTTP (JSON) through @effect/opentelemetry's Otlp tracer: no OpenTelemetry SDK is loaded, and
 * the tracer's modules are imported only when OTEL_EXPORTER_OTLP_ENDPOINT is set (issue 16: a
 * process without it does not carry them).
 */
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as Option from "effect/Option"
import type { LogFormat, ObservabilityConfigShape } from "../services/AppConfig.js"

const loggerFor = (format: LogFormat): Layer.Layer<never> => {
  switch (format) {
    case "json":
      return Logger.json
    case "logfmt":
      return Logger.logFmt
    case "pretty":
      return Logger.pretty
  }
}

const levelFor = (level: ObservabilityConfigShape["logLevel"]): LogLevel.LogLevel => {
  switch (level) {
    case "trace":
      return LogLevel.Trace
    case "debug":
      return LogLevel.Debug
    case "info":
      return LogLevel.Info
    case "warning":
      return LogLevel.Warning
    case "error":
      return LogLevel.Error
    case "fatal":
      return LogLevel.Fatal
    case "none":
      return LogLevel.None
  }
}

/** OTLP/HTTP's traces path under the endpoint, as the OpenTelemetry exporter variables define it. */
export const otlpTracesUrl = (endpoint: string): string => `${endpoint.replace(/\/+$/, "")}/v1/traces`

const TracingLive = (endpoint: string, serviceVersion: string): Layer.Layer<never> =>
  Layer.unwrapEffect(
    Effect.promise(async () => {
      const [OtlpSerialization, OtlpTracer, FetchHttpClient] = await Promise.all([
        import("@effect/opentelemetry/OtlpSerialization"),
        import("@effect/opentelemetry/OtlpTracer"),
        import("@effect/platform/FetchHttpClient"),
      ])
      return OtlpTracer.layer({
        url: otlpTracesUrl(endpoint),
        resource: { serviceName: "mana-ai", serviceVersion },
      }).pipe(Layer.provide(OtlpSerialization.layerJson), Layer.provide(FetchHttpClient.layer))
    }),
  )

export const ObservabilityLive = (config: ObservabilityConfigShape, serviceVersion: string): Layer.Layer<never> =>
  Layer.mergeAll(
    loggerFor(config.logFormat),
    Logger.minimumLogLevel(levelFor(config.logLevel)),
    Option.match(config.otlpEndpoint, {
      // Nothing to export to: no spans at all, so withSpanWhenTracing costs a run nothing (issue 16).
      onNone: () => Layer.setTracerEnabled(false),
      onSome: (endpoint) => TracingLive(endpoint, serviceVersion),
    }),
  )
