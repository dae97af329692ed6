/** The process-wide GLOBAL_CONCURRENCY limit, held only during each LLM request (SPEC §8). */
import { Context, Effect, Layer } from "effect"
import { RunnerConfig } from "./AppConfig.js"
import { makeFairSemaphore } from "../primitives/FairSemaphore.js"

export interface GlobalLlmPermitsShape {
  readonly withPermit: <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
  /** Permits currently held, for metrics and tests. */
  readonly inUse: Effect.Effect<number>
}

export class GlobalLlmPermits extends Context.Tag("mana-ai/GlobalLlmPermits")<GlobalLlmPermits, GlobalLlmPermitsShape>() {
  // Every run in flight may wait here at once (thousands), so the permits are handed over FIFO.
  static readonly make = (permits: number) =>
    Effect.map(makeFairSemaphore(permits), (semaphore) =>
      GlobalLlmPermits.of({ withPermit: semaphore.withPermit, inUse: semaphore.taken }),
    )
  static readonly layer = Layer.effect(
    GlobalLlmPermits,
    Effect.flatMap(RunnerConfig, (c) => GlobalLlmPermits.make(c.globalConcurrency)),
  )
}
