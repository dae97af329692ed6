/**
 * Per-agent concurrency (SPEC §14): an agent's runs across all of its user's missions hold one permit
 * of `maxConcurrentMissions`. One semaphore per (user, agent), shared by every run of that agent and
 * released when none has used it for a while. A changed cap resizes it for the next acquisition;
 * runs already holding a permit finish.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as RcMap from "effect/RcMap"
import type * as Scope from "effect/Scope"

export interface AgentPermitKey {
  readonly userId: string
  readonly agentId: string
  /** The agent's maxConcurrentMissions (≥ 1). */
  readonly cap: number
}

export interface AgentPermitsShape {
  /** Runs `self` holding one permit of the agent's; waits while `cap` runs of that agent are under way. */
  readonly withPermit: (key: AgentPermitKey) => <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
}

/** The permits, semaphores dropped after `idleTimeToLive` unused; lives as long as the scope. */
export const makeAgentPermits = (idleTimeToLive: Duration.DurationInput = Duration.minutes(5)): Effect.Effect<AgentPermitsShape, never, Scope.Scope> =>
  Effect.gen(function* () {
    const semaphores = yield* RcMap.make({
      // Created at 1 and resized to the cap on every acquisition.
      lookup: (_key: string) => Effect.makeSemaphore(1),
      idleTimeToLive,
    })
    const withPermit =
      (key: AgentPermitKey) =>
      <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
        Effect.scoped(
          Effect.gen(function* () {
            const semaphore = yield* RcMap.get(semaphores, JSON.stringify([key.userId, key.agentId]))
            yield* semaphore.resize(Math.max(1, Math.floor(key.cap)))
            return yield* semaphore.withPermits(1)(self)
          }),
        )
    return { withPermit }
  })

export class AgentPermits extends Effect.Service<AgentPermits>()("mana-ai/AgentPermits", { scoped: makeAgentPermits() }) {}
