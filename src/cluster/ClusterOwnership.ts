/**
 * Cluster mode (issue 19): this process is one runner of an `@effect/cluster` cluster on the sync
 * database, and owns the users whose shard (of the user id, as cluster computes it) it holds.
 *
 * Cluster does placement, single ownership and failover: shard locks are Postgres advisory locks on
 * a connection of this runner (SqlRunnerStorage), so a runner that dies loses them with its
 * connection, and the runners ping each other (RunnerHealth.layerPing over BunClusterSocket's
 * sockets) to take a dead one out of the hash ring. There is no entity: a user's actor stays today's
 * parked actor on the ActorHost of the runner holding its shard (2 KB parked, against 22 KB for a live
 * entity; its wake-up sits in the host's shared heap, which an entity's timer would not survive).
 * Nothing is sent between runners, so no message is persisted (MessageStorage.layerNoop: no
 * cluster_messages/cluster_replies to prune); a change another runner's discovery pass applied
 * reaches this runner through mission_snapshots (`changedElsewhere`). Claims stay the exactly-once
 * guard across a handover: a run under way on the old owner holds its claim.
 *
 * Cluster's tables (cluster_runners, cluster_locks when advisory locks are off) live in schema
 * mana_ai: the cluster's own small pool connects with search_path=mana_ai, so the runner role needs
 * no right beyond the schema it already owns.
 */
import * as MessageStorage from "@effect/cluster/MessageStorage"
import * as RunnerAddress from "@effect/cluster/RunnerAddress"
import * as RunnerHealth from "@effect/cluster/RunnerHealth"
import * as Runners from "@effect/cluster/Runners"
import { RunnerStorage } from "@effect/cluster/RunnerStorage"
import * as ShardId from "@effect/cluster/ShardId"
import { Sharding } from "@effect/cluster/Sharding"
import * as ShardingConfig from "@effect/cluster/ShardingConfig"
import * as SocketRunner from "@effect/cluster/SocketRunner"
import * as SqlRunnerStorage from "@effect/cluster/SqlRunnerStorage"
import { layerClientProtocol, layerSocketServer } from "@effect/platform-bun/BunClusterSocket"
import * as RpcSerialization from "@effect/rpc/RpcSerialization"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Reactivity from "@effect/experimental/Reactivity"
import * as PgClient from "@effect/sql-pg/PgClient"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Ref from "effect/Ref"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import * as SubscriptionRef from "effect/SubscriptionRef"
import { type ClusterView, Ownership, type OwnershipShape } from "../actors/Ownership.js"
import { pgClientLayer } from "../services/Database.js"
import { type MissionSnapshot, SnapshotRow, toSnapshot } from "../services/MissionStore.js"
import { type ClusterConfigShape, shardOf as shardOfCount } from "./ClusterConfig.js"

/** The only shard group: users. */
const GROUP = "default"

/** How often the runner compares the shards it holds with the last set it acted on. */
const SHARD_POLL = Duration.millis(100)

/** How often a runner looks for runners whose liveness session is gone (dead: failover starts then). */
const PEER_POLL = Duration.millis(250)

/**
 * How far behind its last read `changedElsewhere` reads again: a discovery pass stamps its snapshots
 * with its transaction's start and may commit later than this runner's read.
 */
const CHANGE_OVERLAP_SECONDS = 30

/** pg_advisory_xact_lock key for stamping snapshots with their shard at start: the bytes of "manaclus". */
const STAMP_LOCK_KEY = "7881696566297391475"

/** Users whose snapshots one statement stamps with their shard. */
const STAMP_BATCH = 5_000

/** How often expired user leases are deleted (a lease outlives its user's last claim by the claim TTL). */
const LEASE_PRUNE_EVERY = Duration.minutes(1)

/** The sync database URL with `search_path=mana_ai` for every connection of the cluster's pool. */
export const clusterDatabaseUrl = (url: Redacted.Redacted<string>): Redacted.Redacted<string> => {
  const u = new URL(Redacted.value(url))
  const existing = u.searchParams.get("options")
  u.searchParams.set("options", `${existing === null ? "" : `${existing} `}-c search_path=mana_ai`)
  return Redacted.make(u.toString())
}

export const describeAddress = (a: RunnerAddress.RunnerAddress): string =>
  a.host.includes(":") ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`

/**
 * SqlRunnerStorage, whose start creates cluster_runners and its locks table with CREATE TABLE IF NOT
 * EXISTS: two runners starting at once on a new database race on those (one fails with "Failed to
 * execute statement", a catalog unique violation), so a failed start is tried again, and the second
 * attempt finds the tables the other runner made.
 */
export const runnerStorageLayer = Layer.retry(
  SqlRunnerStorage.layer,
  Schedule.exponential("100 millis").pipe(Schedule.intersect(Schedule.recurs(5))),
)

/** Sharding on its own pool: socket server and client, ping health checks, shard locks in Postgres. */
export const shardingLayer = (config: ClusterConfigShape, databaseUrl: Redacted.Redacted<string>) => {
  const shardingConfig = ShardingConfig.layer({
    runnerAddress: Option.some(RunnerAddress.make(config.host, config.port)),
    shardsPerGroup: config.shards,
    shardLockExpiration: config.shardLockExpiration,
    shardLockRefreshInterval: Duration.seconds(2),
    refreshAssignmentsInterval: config.refreshAssignmentsInterval,
    runnerHealthCheckInterval: config.runnerHealthCheckInterval,
  })
  // Two connections at least: SqlRunnerStorage keeps one reserved for its advisory locks. Built as the
  // process's pool is (Database.ts): SqlRunnerStorage sends its lock statements for several shards at
  // once on that reserved connection, and our queue, not pg's deprecated one, makes them take turns.
  const pool = pgClientLayer({
    url: clusterDatabaseUrl(databaseUrl),
    maxConnections: 4,
    applicationName: "mana-ai-cluster",
    connectTimeout: Duration.seconds(10),
  })
  const runnerHealth = RunnerHealth.layerPing.pipe(Layer.provide(Runners.layerRpc), Layer.provide(layerClientProtocol))
  return SocketRunner.layer.pipe(
    Layer.provide(runnerHealth),
    Layer.provide([layerSocketServer, layerClientProtocol]),
    Layer.provideMerge(runnerStorageLayer),
    Layer.provideMerge(MessageStorage.layerNoop),
    Layer.provide(RpcSerialization.layerMsgPack),
    Layer.provideMerge(shardingConfig),
    Layer.provide(pool),
  )
}

/** A Postgres array literal of shard numbers, sent as one parameter. */
const shardArray = (shards: ReadonlySet<number>) => `{${[...shards].join(",")}}`

const ChangedKey = Schema.Struct({ user_id: Schema.String, record_id: Schema.String, changed_at: Schema.String })

/** Ownership from Sharding's shards; `changedElsewhere` on the runner's own pool (mana_ai.mission_snapshots). */
export const makeOwnership = (config: ClusterConfigShape, databaseUrl: Redacted.Redacted<string>, instanceId: string) =>
  Effect.gen(function* () {
    const sharding = yield* Sharding
    const runnerStorage = yield* RunnerStorage
    const sql = yield* SqlClient.SqlClient
    const self = `${config.host.includes(":") ? `[${config.host}]` : config.host}:${config.port}`
    const shardOf = (userId: string) => sharding.getShardId(userId as never, GROUP)
    const held = () => {
      const ids = new Set<number>()
      for (let i = 1; i <= config.shards; i++) if (sharding.hasShardId(ShardId.make(GROUP, i))) ids.add(i)
      return ids
    }
    // The set acted on: `owns` answers from it, so a user's owner changes only when the supervisor hears.
    const acted = yield* SubscriptionRef.make<ReadonlySet<number>>(new Set())
    let current: ReadonlySet<number> = new Set()
    // `owns` answers from the set the supervisor was told about (`changes` sets it as it emits).
    let ownedNow: ReadonlySet<number> = new Set()
    const sameSet = (a: ReadonlySet<number>, b: ReadonlySet<number>) => a.size === b.size && [...a].every((x) => b.has(x))
    yield* Effect.suspend(() => {
      const now = held()
      if (sameSet(now, current)) return Effect.void
      const gained = [...now].filter((x) => !current.has(x)).length
      const lost = [...current].filter((x) => !now.has(x)).length
      current = now
      return SubscriptionRef.set(acted, now).pipe(
        Effect.zipRight(
          Effect.logInfo("cluster shards changed").pipe(Effect.annotateLogs({ runner: self, shards: now.size, gained, lost })),
        ),
      )
    }).pipe(Effect.repeat(Schedule.spaced(SHARD_POLL)), Effect.forkScoped)

    // The store stamps mission_snapshots.shard with ClusterConfig's shardOf: it must be cluster's own.
    for (const sample of ["", "a", "user-1", "ünïcode-ß", "😀-emoji", "e5f1c2a0-4b3d-4e8f-9a7b-123456789abc"]) {
      if (shardOfCount(sample, config.shards) !== shardOf(sample).id) {
        return yield* Effect.dieMessage(
          `cluster's shard of ${JSON.stringify(sample)} is ${shardOf(sample).id}, the store's ${shardOfCount(sample, config.shards)}: mission_snapshots.shard would be wrong`,
        )
      }
    }
    // Snapshots written by one process (shard NULL) or with another CLUSTER_SHARDS get this count's shard.
    yield* sql.withTransaction(
      Effect.gen(function* () {
        yield* sql`SELECT pg_advisory_xact_lock(${STAMP_LOCK_KEY}::bigint)`
        const [recorded] = yield* sql<{ shards: number }>`SELECT shards FROM mana_ai.snapshot_shards`
        const all = recorded === undefined || Number(recorded.shards) !== config.shards
        const users = (yield* (all
          ? sql<{ user_id: string }>`SELECT DISTINCT user_id FROM mana_ai.mission_snapshots`
          : sql<{ user_id: string }>`SELECT DISTINCT user_id FROM mana_ai.mission_snapshots WHERE shard IS NULL`)).map((r) => r.user_id)
        for (let i = 0; i < users.length; i += STAMP_BATCH) {
          const batch = users.slice(i, i + STAMP_BATCH).map((u) => ({ user_id: u, shard: shardOfCount(u, config.shards) }))
          yield* sql`
            UPDATE mana_ai.mission_snapshots m SET shard = x.shard
            FROM jsonb_to_recordset(${JSON.stringify(batch)}::jsonb) AS x(user_id text, shard integer)
            WHERE m.user_id = x.user_id AND m.shard IS DISTINCT FROM x.shard`
        }
        yield* sql`
          INSERT INTO mana_ai.snapshot_shards (singleton, shards) VALUES (true, ${config.shards})
          ON CONFLICT (singleton) DO UPDATE SET shards = EXCLUDED.shards, stamped_at = now()`
        if (users.length > 0) {
          yield* Effect.logInfo("snapshots stamped with their cluster shard").pipe(
            Effect.annotateLogs({ users: users.length, shards: config.shards, reason: all ? "shard count changed" : "written by one process" }),
          )
        }
      }),
    ).pipe(Effect.orDie)

    // This process's claims are live while one session of its own is: a connection held for the process's
    // lifetime, registered with the claim owner id. A runner killed loses it with the process.
    const liveness = yield* PgClient.make({
      url: databaseUrl,
      maxConnections: 1,
      applicationName: "mana-ai-liveness",
      connectTimeout: Duration.seconds(10),
    }).pipe(Effect.provide(Reactivity.layer), Effect.orDie)
    const session = yield* liveness.reserve.pipe(Effect.orDie)
    yield* session.executeRaw("SELECT 1", []).pipe(Effect.orDie)
    // mana_ai.cluster_claim_owners, cluster_user_leases: migration 0005_cluster.
    const [me] = (yield* session.executeValues("SELECT pg_backend_pid(), (SELECT backend_start::text FROM pg_stat_activity WHERE pid = pg_backend_pid())", []).pipe(
      Effect.orDie,
    )) as ReadonlyArray<readonly [number, string]>
    yield* sql`
      INSERT INTO mana_ai.cluster_claim_owners (owner, pid, backend_start, runner_host, runner_port)
      VALUES (${instanceId}, ${me![0]}, ${me![1]}::timestamptz, ${config.host}, ${config.port})
      ON CONFLICT (owner) DO UPDATE SET pid = EXCLUDED.pid, backend_start = EXCLUDED.backend_start,
        runner_host = EXCLUDED.runner_host, runner_port = EXCLUDED.runner_port`.pipe(Effect.orDie)
    // Runs after the supervisor's drain (the supervisor is built on this layer): no run of ours is left,
    // so the users' leases go back before the shards do, and the new owners start their runs at once.
    yield* Effect.addFinalizer(() =>
      sql`DELETE FROM mana_ai.cluster_user_leases WHERE owner = ${instanceId}`.pipe(
        Effect.zipRight(sql`DELETE FROM mana_ai.cluster_claim_owners WHERE owner = ${instanceId}`),
        Effect.ignore,
      ),
    )
    yield* sql`DELETE FROM mana_ai.cluster_user_leases WHERE expires_at <= now()`.pipe(
      Effect.catchAll((e) => Effect.logWarning(`could not prune expired user leases: ${e.message}`)),
      Effect.repeat(Schedule.spaced(LEASE_PRUNE_EVERY)),
      Effect.forkScoped,
    )

    /**
     * Runners whose liveness session is gone (a runner that died: Postgres ends a killed process's
     * sessions at once): their claims and user leases are given back and their owner row goes, in one
     * statement, so each dead runner is handled once; returns how many claims and the dead runners.
     */
    const releaseOrphanedClaims = Effect.gen(function* () {
      const rows = yield* sql<{ runner_host: string | null; runner_port: number | null; claims: number }>`
        WITH dead AS (
          SELECT o.owner, o.runner_host, o.runner_port FROM mana_ai.cluster_claim_owners o
          WHERE o.owner <> ${instanceId} AND NOT EXISTS (
            SELECT 1 FROM pg_stat_activity a WHERE a.pid = o.pid AND a.backend_start = o.backend_start)
        ), gone AS (
          DELETE FROM mana_ai.run_claims c USING dead WHERE c.owner = dead.owner RETURNING 1
        ), unleased AS (
          DELETE FROM mana_ai.cluster_user_leases l USING dead WHERE l.owner = dead.owner RETURNING 1
        ), forgotten AS (
          DELETE FROM mana_ai.cluster_claim_owners o USING dead WHERE o.owner = dead.owner RETURNING 1
        )
        SELECT dead.runner_host, dead.runner_port, (SELECT count(*)::int FROM gone) AS claims FROM dead`
      return {
        claims: rows.length === 0 ? 0 : Number(rows[0]!.claims),
        runners: rows.flatMap((r) =>
          r.runner_host === null || r.runner_port === null ? [] : [RunnerAddress.make(r.runner_host, Number(r.runner_port))],
        ),
      }
    })

    /**
     * Failover (issue 19, item 4): a runner whose liveness session is gone is dead, so its claims go
     * back and the cluster is told at once (setRunnerHealth false: out of the hash ring at the next
     * assignment refresh), instead of waiting for a ping singleton that may have lived on the dead
     * runner, or for its heartbeat to expire (shardLockExpiration). A live runner marked so by mistake
     * (its liveness connection dropped) loses nothing: its shards stay under its advisory locks, and
     * the health check marks it healthy again when it answers a ping.
     */
    const watchPeers = Effect.gen(function* () {
      const { claims, runners } = yield* releaseOrphanedClaims
      for (const address of runners) {
        yield* runnerStorage.setRunnerHealth(address, false).pipe(
          Effect.catchAll((e) => Effect.logWarning(`could not mark a dead runner unhealthy: ${String(e)}`)),
        )
      }
      if (runners.length > 0 || claims > 0) {
        yield* Effect.logInfo("a runner died: its run claims given back, the cluster told").pipe(
          Effect.annotateLogs({ claims, runners: runners.map(describeAddress).join(", ") }),
        )
      }
    })
    yield* watchPeers.pipe(
      Effect.catchAll((e) => Effect.logWarning(`could not look for dead runners: ${e.message}`)),
      Effect.repeat(Schedule.spaced(PEER_POLL)),
      Effect.forkScoped,
    )

    const nowText = Effect.map(
      sql<{ now: string }>`SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS now`,
      (rows) => rows[0]!.now,
    )
    /** Where the next read starts, and what the last reads returned inside the overlap (key → changed_at). */
    const since = yield* Ref.make(yield* nowText.pipe(Effect.orDie))
    const seen = new Map<string, string>()

    const changedElsewhere: OwnershipShape["changedElsewhere"] = Effect.gen(function* () {
      const from = yield* Ref.get(since)
      const readAt = yield* nowText
      const keys = yield* sql`
        SELECT user_id, record_id, to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS changed_at
        FROM mana_ai.mission_snapshots
        WHERE updated_at > ${from}::timestamptz - ${`${CHANGE_OVERLAP_SECONDS} seconds`}::interval
          AND shard = ANY(${shardArray(ownedNow)}::int[])`.pipe(
        Effect.flatMap(Schema.decodeUnknown(Schema.Array(ChangedKey))),
        Effect.orDie,
      )
      const fresh = keys.filter((k) => {
        const key = `${k.user_id}\u0000${k.record_id}`
        if (seen.get(key) === k.changed_at) return false
        seen.set(key, k.changed_at)
        return ownedNow.has(shardOf(k.user_id).id)
      })
      // Forget what fell out of the overlap: it will not be read again.
      const horizon = new Date(Date.parse(from) - CHANGE_OVERLAP_SECONDS * 1000).toISOString()
      for (const [key, at] of seen) if (at < horizon) seen.delete(key)
      yield* Ref.set(since, readAt)
      if (fresh.length === 0) return [] as ReadonlyArray<MissionSnapshot>
      const wanted = JSON.stringify(fresh.map((k) => ({ user_id: k.user_id, record_id: k.record_id })))
      const rows = yield* sql`
        SELECT m.user_id, m.record_id, m.record - 'iterations' AS record, m.deleted, m.schedulable, m.next_run_at, m.malformed_reason
        FROM mana_ai.mission_snapshots m
        JOIN jsonb_to_recordset(${wanted}::jsonb) AS k(user_id text, record_id text)
          ON m.user_id = k.user_id AND m.record_id = k.record_id`
      return yield* Effect.forEach(rows, (r) => Effect.map(Schema.decodeUnknown(SnapshotRow)(r).pipe(Effect.orDie), (row) => toSnapshot(row)))
    })

    const view: Effect.Effect<ClusterView> = Effect.gen(function* () {
      const runners = yield* runnerStorage.getRunners.pipe(Effect.orElseSucceed(() => []))
      return {
        runner: self,
        shardsOwned: ownedNow.size,
        shards: config.shards,
        peers: runners.map(([runner, healthy]) => ({ address: describeAddress(runner.address), healthy })),
      }
    })

    const changes = acted.changes.pipe(
      Stream.mapEffect((set) =>
        releaseOrphanedClaims.pipe(
          Effect.tap(({ claims }) =>
            claims > 0 ? Effect.logInfo("run claims of a dead runner given back").pipe(Effect.annotateLogs({ claims })) : Effect.void,
          ),
          Effect.catchAll((e) => Effect.logWarning(`could not give back a dead runner's run claims: ${e.message}`)),
          Effect.zipRight(
            Effect.sync(() => {
              ownedNow = set
            }),
          ),
        ),
      ),
    )

    const leasedElsewhere: OwnershipShape["leasedElsewhere"] = (userIds) =>
      userIds.length === 0
        ? Effect.succeed(new Set<string>())
        : Effect.map(
            sql<{ user_id: string }>`
              SELECT user_id FROM mana_ai.cluster_user_leases
              WHERE user_id IN (SELECT jsonb_array_elements_text(${JSON.stringify(userIds)}::jsonb))
                AND owner <> ${instanceId} AND expires_at > now()`,
            (rows) => new Set(rows.map((r) => r.user_id)),
          )
    const leasedHere: OwnershipShape["leasedHere"] = Effect.map(
      sql<{ user_id: string }>`
        SELECT user_id FROM mana_ai.cluster_user_leases WHERE owner = ${instanceId} AND expires_at > now()`,
      (rows) => rows.map((r) => r.user_id),
    )
    const giveBack: OwnershipShape["giveBack"] = (userIds) =>
      userIds.length === 0
        ? Effect.succeed(0)
        : Effect.map(
            sql<{ n: number }>`
              WITH gone AS (
                DELETE FROM mana_ai.cluster_user_leases
                WHERE owner = ${instanceId} AND user_id IN (SELECT jsonb_array_elements_text(${JSON.stringify(userIds)}::jsonb))
                RETURNING 1)
              SELECT count(*)::int AS n FROM gone`,
            (rows) => Number(rows[0]?.n ?? 0),
          )

    return Ownership.of({
      owns: (userId) => ownedNow.has(shardOf(userId).id),
      changes,
      changedElsewhere,
      view,
      shardOf: (userId) => shardOf(userId).id,
      shards: () => [...ownedNow].sort((a, b) => a - b),
      leasedElsewhere,
      leasedHere,
      giveBack,
    })
  })

/** Ownership on a running Sharding; needs the runner's SqlClient (mission_snapshots) too. */
export const clusterOwnershipLayer = (config: ClusterConfigShape, databaseUrl: Redacted.Redacted<string>, instanceId: string) =>
  Layer.scoped(Ownership, makeOwnership(config, databaseUrl, instanceId)).pipe(Layer.provide(shardingLayer(config, databaseUrl)))
