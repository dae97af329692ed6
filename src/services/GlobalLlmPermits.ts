/** The process-wide GLOBAL_CONCURRENCY limit, held only during each LLM request (SPEC §8). */
import { Context, Effect, Layer } from "effect"
import { RunnerConfig } from "./AppConfig.js"
import { makeFairSemaphore } from "../primitives/FairSemaphore.js"

export interface GlobalLlmPermitsShape {
  readonly withPermit: <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
  /** Permits currently held, for metrics and tests. */
  readonly inUse: Effect.Effect<number>
  /**
   * The drain (SPEC §8): from now on no LLM request starts. A caller waiting for a permit, or
   * asking for one later, is interrupted instead (its run writes nothing and gives its claim back);
   * requests already out finish.
   */
  readonly close: Effect.Effect<void>
}

export class GlobalLlmPermits extends Context.Tag("mana-ai/GlobalLlmPermits")<GlobalLlmPermits, GlobalLlmPermitsShape>() {
  // Every run in flight may wait here at once (thousands), so the permits are handed over FIFO.
  static readonly make = (permits: number) =>
    Effect.map(makeFairSemaphore(permits), (semaphore) => {
      let closed = false
      const unlessClosed = <A, E, R>(self: Effect.Effect<A, E, R>) =>
        Effect.suspend(() => (closed ? Effect.interrupt : self))
      return GlobalLlmPermits.of({
        // Checked again once the permit is ours: a waiter handed one after the close passes it on.
        withPermit: (self) => unlessClosed(semaphore.withPermit(unlessClosed(self))),
        inUse: semaphore.taken,
        close: Effect.sync(() => {
          closed = true
        }),
      })
    })
  static readonly layer = Layer.effect(
    GlobalLlmPermits,
    Effect.flatMap(RunnerConfig, (c) => GlobalLlmPermits.make(c.globalConcurrency)),
  )
}
