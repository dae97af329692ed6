/** The process-wide GLOBAL_CONCURRENCY limit, held only during each LLM request (SPEC §8). */
import { Context, Effect, Layer } from "effect"
import { RunnerConfig } from "./AppConfig.js"

export interface GlobalLlmPermitsShape {
  readonly withPermit: <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
  /** Permits currently held, for metrics and tests. */
  readonly inUse: Effect.Effect<number>
}

export class GlobalLlmPermits extends Context.Tag("mana-ai/GlobalLlmPermits")<GlobalLlmPermits, GlobalLlmPermitsShape>() {
  static readonly make = (permits: number) =>
    Effect.gen(function* () {
      const semaphore = yield* Effect.makeSemaphore(permits)
      let held = 0
      return GlobalLlmPermits.of({
        withPermit: (self) =>
          semaphore.withPermits(1)(
            Effect.acquireUseRelease(
              Effect.sync(() => held++),
              () => self,
              () => Effect.sync(() => held--),
            ),
          ),
        inUse: Effect.sync(() => held),
      })
    })
  static readonly layer = Layer.effect(
    GlobalLlmPermits,
    Effect.flatMap(RunnerConfig, (c) => GlobalLlmPermits.make(c.globalConcurrency)),
  )
}
