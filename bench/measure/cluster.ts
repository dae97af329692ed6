/**
 * Cluster mode (issue 19) with real runner processes (the bundle `npm start` runs, `bun dist/main.js`,
 * built first unless up to date, with RUNNER_ADDRESS):
 * - throughput with 2 runners ÷ 1 runner: the same due workload on a fresh database each, timed from
 *   the seed to the last write (the runners are up and hold their shards before the seed);
 * - failover: SIGKILL one of two runners, make every mission due at once, and time the kill to the
 *   first write by the survivor for a user the dead runner owned; p50 over several kills.
 * Latencies here include the machine's load; the throughput ratio is taken within one run.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { Effect, Redacted, type Scope } from "effect"
import { type BenchDatabase, makeBenchDatabase } from "../support/benchDatabase.js"
import type { BenchLlmStandIn } from "../support/llmStandIn.js"
import type { Figure } from "../support/report.js"
import { seedDueMissions } from "../support/seed.js"
import { percentile, round } from "../support/stats.js"
import { BUNDLE, ensureBundle, freePort } from "../../test/support/ManaProcess.js"

export interface ClusterOptions {
  readonly ownerUrl: string
  readonly standIn: BenchLlmStandIn
  /** Users of the throughput workload (one due mission each). */
  readonly users: number
  readonly kills: number
  readonly log: (line: string) => Effect.Effect<void>
}

const SERVICE_KEY = "bench-cluster-service-key-0123456789"
const SHARDS = 60

interface Runner {
  readonly child: ChildProcess
  readonly base: string
  readonly exited: Promise<void>
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

const until = async (what: string, timeoutMs: number, check: () => Promise<boolean>, everyMs = 50) => {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    if (await check().catch(() => false)) return
    if (Date.now() > deadline) throw new Error(`bench cluster: timed out waiting for ${what}`)
    await sleep(everyMs)
  }
}

const getJson = async (r: Runner, path: string, key = false) => {
  const response = await fetch(`${r.base}${path}`, { headers: key ? { "X-Service-Key": SERVICE_KEY } : {} })
  return response.ok ? ((await response.json()) as any) : undefined
}

const startRunner = (db: BenchDatabase, standIn: BenchLlmStandIn) =>
  Effect.acquireRelease(
    Effect.promise(async () => {
      const port = await freePort()
      const env: Record<string, string> = {
        PATH: process.env.PATH ?? "",
        HOME: process.env.HOME ?? "",
        PORT: String(port),
        RUNNER_ADDRESS: `127.0.0.1:${await freePort()}`,
        CLUSTER_SHARDS: String(SHARDS),
        SYNC_DATABASE_URL: Redacted.value(db.runnerUrl),
        MANA_LLM_URL: standIn.url,
        MANA_SERVICE_KEY: SERVICE_KEY,
        TICK_INTERVAL_MS: "200",
        LOG_LEVEL: "warning",
        LOG_FORMAT: "json",
        // As `npm start` runs it (package.json; `npm run bench` sets it for the bench and what it starts).
        BUN_JSC_useFTLJIT: process.env.BUN_JSC_useFTLJIT ?? "0",
      }
      ensureBundle()
      const child = spawn(process.execPath, [BUNDLE], { env, stdio: ["ignore", "ignore", "inherit"] })
      const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()))
      const r: Runner = { child, base: `http://127.0.0.1:${port}`, exited }
      await until("/ready", 60_000, async () => (await fetch(`${r.base}/ready`)).ok, 100)
      return r
    }),
    (r) =>
      Effect.promise(async () => {
        if (r.child.exitCode === null && r.child.signalCode === null) r.child.kill("SIGKILL")
        await r.exited
      }),
  )

/** Every runner holds shards, together all, and each sees all the others healthy. */
const settled = (runners: ReadonlyArray<Runner>) =>
  until("the runners to share the shards", 60_000, async () => {
    const views = await Promise.all(runners.map((r) => getJson(r, "/health")))
    const owned = views.reduce((n, h) => n + (h?.cluster?.shardsOwned ?? 0), 0)
    return (
      owned === SHARDS &&
      views.every((h) => h.cluster.shardsOwned > 0 && h.cluster.peers.filter((p: { healthy: boolean }) => p.healthy).length === runners.length)
    )
  }, 200)

const runnerRows = (db: BenchDatabase) =>
  Effect.map(
    db.ownerQuery(`SELECT count(*)::int AS n FROM sync_changes WHERE client_id = 'mana-ai-runner'`),
    (rows) => Number(rows[0]?.n ?? 0),
  )

/** Seconds from the seed to the last of `users` runs written, with `count` runners up. */
const throughputWith = (options: ClusterOptions, count: number): Effect.Effect<number, never, Scope.Scope> =>
  Effect.gen(function* () {
    const db = yield* makeBenchDatabase(options.ownerUrl)
    // Started together: no figure reads a start-up, and each start waits for /ready (a few seconds).
    const runners = yield* Effect.all(Array.from({ length: count }, () => startRunner(db, options.standIn)), { concurrency: "unbounded" })
    yield* Effect.promise(() => settled(runners))
    const t0 = Date.now()
    yield* seedDueMissions(db, { users: options.users, missionsPerUser: 1, firstDueAt: Date.now() - 60_000, spreadMs: 0, withGoal: false })
    yield* Effect.promise(() =>
      until(`${options.users} runs written`, 600_000, () => Effect.runPromise(Effect.map(runnerRows(db), (n) => n >= options.users)), 100),
    )
    return (Date.now() - t0) / 1000
  }).pipe(Effect.scoped)

/** Milliseconds from a SIGKILL to the survivor's first write for a user the dead runner owned. */
const failoverOnce = (options: ClusterOptions, round_: number): Effect.Effect<number, never, Scope.Scope> =>
  Effect.gen(function* () {
    const db = yield* makeBenchDatabase(options.ownerUrl)
    const [a, b] = yield* Effect.all([startRunner(db, options.standIn), startRunner(db, options.standIn)], { concurrency: 2 })
    yield* Effect.promise(() => settled([a, b]))
    const users = 40
    yield* seedDueMissions(db, { users, missionsPerUser: 1, firstDueAt: Date.now() + 86_400_000, spreadMs: 0, withGoal: false })
    const victim = round_ % 2 === 0 ? a : b
    let owned: Array<string> = []
    yield* Effect.promise(() =>
      until("every user's actor up", 60_000, async () => {
        const [onA, onB] = await Promise.all([getJson(a, "/internal/actors", true), getJson(b, "/internal/actors", true)])
        const list = (x: any): Array<{ userId: string }> => (Array.isArray(x) ? x : (x?.actors ?? []))
        owned = list(victim === a ? onA : onB).map((x) => x.userId)
        return list(onA).length + list(onB).length >= users
      }, 200),
    )
    victim.child.kill("SIGKILL")
    const killedAt = Date.now()
    yield* Effect.promise(() => victim.exited)
    // Every mission due now: only the survivor can write, the dead runner's users included.
    yield* db.ownerQuery(
      `INSERT INTO sync_changes (app_id, table_name, record_id, user_id, op, data, field_meta, client_id)
       SELECT 'ai', 'aiMissions', record_id, user_id, 'update', jsonb_build_object('nextRunAt', $1::text), '{}'::jsonb, 'browser-device'
       FROM (SELECT DISTINCT record_id, user_id FROM sync_changes WHERE app_id = 'ai' AND table_name = 'aiMissions') x`,
      [new Date(killedAt - 1_000).toISOString()],
    )
    yield* Effect.promise(() =>
      until("the survivor's first write for a dead runner's user", 120_000, async () => {
        const rows = await Effect.runPromise(
          db.ownerQuery(`SELECT 1 FROM sync_changes WHERE client_id = 'mana-ai-runner' AND user_id = ANY($1::text[]) LIMIT 1`, [owned]),
        )
        return rows.length > 0
      }, 25),
    )
    return Date.now() - killedAt
  }).pipe(Effect.scoped)

export const measureCluster = (options: ClusterOptions): Effect.Effect<ReadonlyArray<Figure>, never, Scope.Scope> =>
  Effect.gen(function* () {
    yield* options.log(`cluster: throughput, ${options.users} users, 1 runner then 2`)
    const one = yield* throughputWith(options, 1)
    const two = yield* throughputWith(options, 2)
    yield* options.log(`cluster: ${round(one, 2)} s with 1 runner, ${round(two, 2)} s with 2`)
    const failovers: Array<number> = []
    for (let i = 0; i < options.kills; i++) {
      const ms = yield* failoverOnce(options, i)
      failovers.push(ms)
      yield* options.log(`cluster: kill ${i + 1}/${options.kills}: first write by the survivor ${ms} ms after it`)
    }
    const sorted = [...failovers].sort((x, y) => x - y)
    return [
      {
        id: "cluster.throughputRatio",
        label: "cluster: throughput with 2 runners ÷ 1 runner (same workload)",
        value: round(one / two, 2),
        unit: "×",
        detail: { users: options.users, secondsOneRunner: round(one, 2), secondsTwoRunners: round(two, 2) },
      },
      {
        id: "cluster.failoverP50",
        label: "cluster: SIGKILL of a runner to the first write by the survivor, p50",
        value: round(percentile(sorted, 50) / 1000, 2),
        unit: "s",
        target: { op: "<", value: 10, text: "< 10 s" },
        detail: { kills: options.kills, ms: failovers },
      },
    ] as ReadonlyArray<Figure>
  })
