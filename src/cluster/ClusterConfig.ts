/**
 * Cluster mode's configuration (issue 19). Off unless RUNNER_ADDRESS is set: then this process is one
 * runner of an `@effect/cluster` cluster on the same database, reachable by its peers at that address.
 */
import * as Config from "effect/Config"
import * as ConfigError from "effect/ConfigError"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Either from "effect/Either"
import * as Option from "effect/Option"

export interface ClusterConfigShape {
  /** Where peers reach this runner (and where it listens): host and port. */
  readonly host: string
  readonly port: number
  /** Shards users are spread over (the same on every runner of one database). */
  readonly shards: number
  /** A dead runner's shard locks are free after this (SqlRunnerStorage); ~6 s gives failover in seconds. */
  readonly shardLockExpiration: Duration.Duration
  /** How often a runner reads the runner list and recomputes which shards are its own. */
  readonly refreshAssignmentsInterval: Duration.Duration
  /** How often the runners ping each other; an unanswered ping marks a runner unhealthy. */
  readonly runnerHealthCheckInterval: Duration.Duration
}

export class ClusterConfig extends Context.Tag("mana-ai/ClusterConfig")<ClusterConfig, ClusterConfigShape>() {}

/** `host:port` (an IPv6 host in brackets, `[::1]:34431`); the reason names what is wrong. */
export const parseRunnerAddress = (raw: string): Either.Either<{ host: string; port: number }, string> => {
  const text = raw.trim()
  const match = /^(?:\[([^\]]+)\]|([^:[\]\s/]+)):(\d+)$/.exec(text)
  if (match === null) return Either.left("it must be host:port, e.g. 10.0.0.5:34431 or [::1]:34431")
  const host = match[1] ?? match[2] ?? ""
  const port = Number(match[3])
  if (!Number.isInteger(port) || port < 1 || port > 65535) return Either.left(`its port must be 1 to 65535, got ${match[3]}`)
  return Either.right({ host, port })
}

const CLUSTER_SHARDS_DEFAULT = 300

/** None: cluster mode is off (one process, as before). */
export const clusterConfig: Config.Config<Option.Option<ClusterConfigShape>> = Config.all({
  address: Config.option(Config.string("RUNNER_ADDRESS")),
  shards: Config.string("CLUSTER_SHARDS").pipe(Config.withDefault(String(CLUSTER_SHARDS_DEFAULT))),
}).pipe(
  Config.mapOrFail(({ address, shards }) => {
    if (Option.isNone(address)) return Either.right(Option.none())
    const parsed = parseRunnerAddress(address.value)
    if (Either.isLeft(parsed)) {
      return Either.left(
        ConfigError.InvalidData(["RUNNER_ADDRESS"], `RUNNER_ADDRESS: ${parsed.left}, got ${JSON.stringify(address.value)}`),
      )
    }
    const n = /^\d+$/.test(shards.trim()) ? Number(shards.trim()) : Number.NaN
    if (!Number.isInteger(n) || n < 1 || n > 10_000) {
      return Either.left(
        ConfigError.InvalidData(["CLUSTER_SHARDS"], `CLUSTER_SHARDS must be a whole number from 1 to 10000, got ${JSON.stringify(shards)}`),
      )
    }
    return Either.right(
      Option.some({
        ...parsed.right,
        shards: n,
        // The measurements: with these, a SIGKILLed runner's users move in 4–7 s (defaults: ~30 s).
        // A dead runner is now found through its liveness session (ClusterOwnership's watchPeers) and
        // marked unhealthy at once; the assignment refresh then takes it out within half a second. The
        // lock expiry (and the refresh of the locks every expiry / 3, which gives up on a runner whose
        // refresh takes longer) stays at 6 s: shorter, a loaded machine drops live runners' shards.
        shardLockExpiration: Duration.seconds(6),
        refreshAssignmentsInterval: Duration.millis(500),
        runnerHealthCheckInterval: Duration.seconds(2),
      }),
    )
  }),
)

/**
 * The shard of a user id among `shards`, as `Sharding.getShardId(userId, group)` computes it in
 * @effect/cluster 0.60 (its internal string hash, the same as effect's `Hash.string`). Kept here, free
 * of cluster's modules, so the store can stamp `mission_snapshots.shard` on write; cluster start
 * checks that it still agrees with Sharding (`makeOwnership`).
 */
export const shardOf = (userId: string, shards: number): number => {
  let h = 5381
  let i = userId.length
  while (i) h = (h * 33) ^ userId.charCodeAt(--i)
  const hash = (h & 0xbfffffff) | ((h >>> 1) & 0x40000000)
  return Math.abs(hash % shards) + 1
}
