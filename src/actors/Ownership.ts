/**
 * Which users this process owns (issue 19). Absent: all of them (one process, as before). In cluster
 * mode `src/cluster/ClusterOwnership.ts` provides it: a user belongs to the runner holding the shard of
 * its user id, and the supervisor keeps actors, discovery and ticks to those users.
 */
import type { SqlError } from "@effect/sql/SqlError"
import * as Context from "effect/Context"
import type * as Effect from "effect/Effect"
import type * as Stream from "effect/Stream"
import type { MissionSnapshot } from "../services/MissionStore.js"

/** This runner in its cluster, for /health and the tick's answer. */
export interface ClusterView {
  /** This runner's address (RUNNER_ADDRESS). */
  readonly runner: string
  /** Shards this runner holds now, of `shards`. */
  readonly shardsOwned: number
  readonly shards: number
  /** Every runner registered on the database (this one included) and whether the cluster sees it healthy. */
  readonly peers: ReadonlyArray<{ readonly address: string; readonly healthy: boolean }>
}

export interface OwnershipShape {
  /** Synchronous: whether this process owns the user now. */
  readonly owns: (userId: string) => boolean
  /**
   * One element each time the set of users this process owns changed (shards gained or lost); `owns`
   * answers with the new set from then on. Before it does, the run claims of runners that died are
   * given back, so their users' runs are due here at once rather than when those claims expire.
   */
  readonly changes: Stream.Stream<void>
  /**
   * Snapshots of owned users changed since the last call by any runner's discovery pass (the passes
   * share one cursor, so a change another runner applied reaches its owner only this way).
   */
  readonly changedElsewhere: Effect.Effect<ReadonlyArray<MissionSnapshot>, SqlError>
  readonly view: Effect.Effect<ClusterView>
  /** The shard of a user (cluster's hash of the user id). */
  readonly shardOf: (userId: string) => number
  /** The shards `owns` answers from now (ascending): the store reads only their snapshots. */
  readonly shards: () => ReadonlyArray<number>
  /**
   * Of these users, the ones whose runs another runner holds now (its live lease, issue 19): their
   * actors wait here until it gave them back, so a user's runs never overlap across a handover.
   */
  readonly leasedElsewhere: (userIds: ReadonlyArray<string>) => Effect.Effect<ReadonlySet<string>, SqlError>
  /** Users whose lease this runner holds now (live). */
  readonly leasedHere: Effect.Effect<ReadonlyArray<string>, SqlError>
  /** Gives back this runner's leases of these users (their runs here are done); how many it held. */
  readonly giveBack: (userIds: ReadonlyArray<string>) => Effect.Effect<number, SqlError>
}

export class Ownership extends Context.Tag("mana-ai/Ownership")<Ownership, OwnershipShape>() {}
