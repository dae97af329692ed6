/**
 * Spans only while tracing is on. Without OTEL_EXPORTER_OTLP_ENDPOINT, ObservabilityLive turns the
 * tracer off, and Effect.withSpan would still make a no-op span, capture a stack trace and change the
 * context on every call: on a run's path that is a measurable share of its CPU (issue 16).
 */
import * as Effect from "effect/Effect"
import * as FiberRef from "effect/FiberRef"
import type * as Tracer from "effect/Tracer"

/**
 * `Effect.withSpan(name, options)` while the tracer is enabled; `self` unchanged while it is off. The
 * flag is read from the fiber directly: one instruction of the run loop, where `FiberRef.get` and a
 * `flatMap` made three (issue 16: a run passes here about ten times).
 */
export const withSpanWhenTracing =
  (name: string, options?: Tracer.SpanOptions) =>
  <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
    Effect.withFiberRuntime((fiber) =>
      // The stack trace would name this helper, not the caller: not worth its cost.
      fiber.getFiberRef(FiberRef.currentTracerEnabled) ? Effect.withSpan(self, name, { ...options, captureStackTrace: false }) : self,
    )
