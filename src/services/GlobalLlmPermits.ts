/**
 * The process-wide GLOBAL_CONCURRENCY limit, held only during each LLM request (SPEC §8). Granted
 * round-robin across users with requests waiting: the user is the fiber's `llmPermitUser`, set
 * around a run with `GlobalLlmPermits.forUser` or, on a fiber of the run's own,
 * `forUserToTheEnd` (requests outside any run share the key "").
 */
import * as Effect from "effect/Effect"
import * as FiberRef from "effect/FiberRef"
import { RunnerConfig } from "./AppConfig.js"
import { makeKeyedFairSemaphore } from "../primitives/KeyedFairSemaphore.js"

/** Whose turn an LLM request takes from the permits; inherited by forked fibers. */
export const llmPermitUser: FiberRef.FiberRef<string> = FiberRef.unsafeMake("")

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

// Every run in flight may wait here at once (thousands): the permits are handed over one at a
// time, round-robin by user, so one user's backlog does not delay another user's request.
const makePermits = (permits: number): Effect.Effect<GlobalLlmPermitsShape> =>
  Effect.map(makeKeyedFairSemaphore(permits), (semaphore) => {
    let closed = false
    const unlessClosed = <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.suspend(() => (closed ? Effect.interrupt : self))
    return {
      // Checked again once the permit is ours: a waiter handed one after the close passes it on.
      withPermit: <A, E, R>(self: Effect.Effect<A, E, R>) =>
        // The user read from the fiber and the close checked in one instruction.
        Effect.withFiberRuntime<A, E, R>((fiber) =>
          closed ? Effect.interrupt : semaphore.withPermit(fiber.getFiberRef(llmPermitUser))(unlessClosed(self)),
        ),
      inUse: semaphore.taken,
      close: Effect.sync(() => {
        closed = true
      }),
    }
  })

/** GLOBAL_CONCURRENCY permits, one set per process. */
export class GlobalLlmPermits extends Effect.Service<GlobalLlmPermits>()("mana-ai/GlobalLlmPermits", {
  effect: Effect.flatMap(RunnerConfig, (c) => makePermits(c.globalConcurrency)),
}) {
  /** A set of `permits` outside the process's composition (tests, doubles). */
  static readonly sized = (permits: number): Effect.Effect<GlobalLlmPermits> => Effect.map(makePermits(permits), GlobalLlmPermits.make)
  /** Runs `self` with its LLM requests taking `userId`'s turns. */
  static readonly forUser =
    (userId: string) =>
    <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
      Effect.locally(self, llmPermitUser, userId)
  /**
   * `forUser` for a fiber that runs one user's work to its end (an actor's run fiber): the fiber's
   * setting is left as it is afterwards, which saves `locally`'s restore (about 13 run-loop
   * instructions a run, issue 16). Fibers it forks inherit it, as with `forUser`.
   */
  static readonly forUserToTheEnd =
    (userId: string) =>
    <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
      Effect.zipRight(FiberRef.set(llmPermitUser, userId), self)
}
