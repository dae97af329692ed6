/**
 * What the process-level fault tests share: a test database (server or PGlite), the LLM stand-in, a
 * TcpProxy in front of the database, and runner processes (ManaProcess: the real Bun process) started
 * against them in sync-database mode. Promise-based, for vitest's beforeAll/afterAll.
 *
 *   const rig = await makeRig()
 *   const p = await rig.startRunner({ TICK_ENABLED: "true" }, { viaProxy: true })
 *   ...
 *   await rig.close()   // SIGKILLs any process still alive, drops the database
 */
import { Context, Effect, Exit, Layer, Redacted, Scope } from "effect"
import { auditMissions, type MissionAudit } from "./FaultLedger.js"
import { LlmStandIn, type LlmStandInShape } from "./LlmStandIn.js"
import { eventually, type ManaProcess, request, startManaProcess } from "./ManaProcess.js"
import { type Change, insertChanges } from "./seed.js"
import { TcpProxy, type TcpProxyShape, targetOf } from "./TcpProxy.js"
import { TestDatabase, TestDatabaseLive, type TestDatabaseShape } from "./TestDatabase.js"

export const RIG_SERVICE_KEY = "faults-service-key-0123456789abcdef"

export interface RunnerRow {
  readonly user_id: string
  readonly record_id: string
  readonly data: { readonly iterations: ReadonlyArray<{ readonly id: string }>; readonly nextRunAt: string | null }
}

export interface Rig {
  readonly db: TestDatabaseShape
  readonly standIn: LlmStandInShape
  readonly proxy: TcpProxyShape
  readonly onServer: boolean
  readonly run: <A>(effect: Effect.Effect<A>) => Promise<A>
  readonly seed: (changes: ReadonlyArray<Change>) => Promise<ReadonlyArray<string>>
  /** A runner process, /ready already 200. Defaults: TICK_ENABLED=false, MISSION_TIMEOUT_MS=4000, pool of 4. */
  readonly startRunner: (
    env?: Readonly<Record<string, string>>,
    options?: { readonly viaProxy?: boolean },
  ) => Promise<ManaProcess>
  /** Rows the runner wrote for users whose id starts with `userPrefix`, in log order (read as the owner). */
  readonly runnerRows: (userPrefix: string) => Promise<ReadonlyArray<RunnerRow>>
  readonly tick: (p: ManaProcess) => Promise<{ status: number; body: any }>
  readonly audit: () => Promise<MissionAudit>
  /** As the owner: terminates the runner role's backends in this database; returns how many. */
  readonly terminateRunnerBackends: () => Promise<number>
  readonly close: () => Promise<void>
}

export const makeRig = async (): Promise<Rig> => {
  const run = <A>(effect: Effect.Effect<A>) => Effect.runPromise(effect)
  const scope = await run(Scope.make())
  const context = await run(
    Layer.buildWithScope(
      Layer.provideMerge(
        Layer.unwrapEffect(Effect.map(TestDatabase, (d) => TcpProxy.layer(targetOf(d.runnerUrl)))),
        Layer.merge(TestDatabaseLive, LlmStandIn.layer),
      ),
      scope,
    ),
  )
  const db = Context.get(context, TestDatabase)
  const standIn = Context.get(context, LlmStandIn)
  const proxy = Context.get(context, TcpProxy)
  const processes: Array<ManaProcess> = []

  const startRunner: Rig["startRunner"] = async (env = {}, options = {}) => {
    const url = options.viaProxy === true ? proxy.rewrite(db.runnerUrl) : db.runnerUrl
    const p = await startManaProcess({
      env: {
        SYNC_DATABASE_URL: Redacted.value(url),
        MANA_LLM_URL: standIn.url,
        MANA_SERVICE_KEY: RIG_SERVICE_KEY,
        TICK_ENABLED: "false",
        DB_POOL_MAX: "4",
        MISSION_TIMEOUT_MS: "4000",
        LLM_TIMEOUT_MS: "3000",
        SHUTDOWN_GRACE_MS: "2000",
        LOG_LEVEL: "info",
        ...env,
      },
    })
    processes.push(p)
    await eventually("/ready", 60_000, async () => (await request(p, "GET", "/ready")).status === 200)
    return p
  }

  return {
    db,
    standIn,
    proxy,
    onServer: db.kind === "server",
    run,
    seed: (changes) => run(insertChanges(changes).pipe(Effect.provideService(TestDatabase, db))),
    startRunner,
    runnerRows: async (userPrefix) =>
      (await db.ownerQuery(
        `SELECT user_id, record_id, data FROM sync_changes
         WHERE client_id = 'mana-ai-runner' AND starts_with(user_id, $1) ORDER BY created_at, id`,
        [userPrefix],
      )) as unknown as ReadonlyArray<RunnerRow>,
    tick: (p) => request(p, "POST", "/internal/tick", RIG_SERVICE_KEY),
    audit: () => run(auditMissions.pipe(Effect.provideService(TestDatabase, db))),
    terminateRunnerBackends: async () => {
      const rows = await db.ownerQuery(
        `SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity
         WHERE usename = $1 AND datname = current_database() AND pid <> pg_backend_pid()`,
        [db.runnerRole],
      )
      return Number(rows[0]?.n ?? 0)
    },
    close: async () => {
      for (const p of processes) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill("SIGKILL")
      await Promise.all(processes.map((p) => p.exited))
      await run(Scope.close(scope, Exit.void))
    },
  }
}
