/**
 * Cluster runners started at once on a new database (issue 19's start, found by the bench): each
 * runner's SqlRunnerStorage creates cluster's tables at start, and without a retry the runners
 * racing on CREATE TABLE IF NOT EXISTS failed to start ("Failed to execute statement"). Three
 * storage layers built at once, as the runner role, on a fresh database. Cluster mode needs a
 * Postgres server (as test/e2e/cluster.test.ts): on PGlite this file is skipped.
 */
import { layer } from "@effect/vitest"
import * as ShardingConfig from "@effect/cluster/ShardingConfig"
import { PgClient } from "@effect/sql-pg"
import { Effect, Exit, Layer } from "effect"
import { expect } from "vitest"
import { clusterDatabaseUrl, runnerStorageLayer } from "../../src/cluster/ClusterOwnership.js"
import { TestDatabase, testDatabaseLayer } from "../support/TestDatabase.js"

const storageOn = (url: Parameters<typeof clusterDatabaseUrl>[0]) =>
  runnerStorageLayer.pipe(
    Layer.provide(PgClient.layer({ url: clusterDatabaseUrl(url), maxConnections: 2 })),
    Layer.provide(ShardingConfig.layer()),
  )

const onServer = process.env.TEST_DATABASE_URL !== undefined && process.env.TEST_DATABASE_URL !== ""

layer(testDatabaseLayer(), { timeout: 120_000, excludeTestServices: true })("cluster's runner storage", (it) => {
  it.effect.skipIf(!onServer)("three runners starting at once on a new database all start, and cluster_runners exists once", () =>
    Effect.gen(function* () {
      const db = yield* TestDatabase
      const started = yield* Effect.all(
        [1, 2, 3].map(() => Effect.exit(Effect.scoped(Layer.build(storageOn(db.runnerUrl))).pipe(Effect.timeout("20 seconds")))),
        { concurrency: "unbounded" },
      )
      expect(started.map((e) => (Exit.isSuccess(e) ? "started" : String(Exit.causeOption(e))))).toEqual(["started", "started", "started"])
      const tables = yield* Effect.promise(() =>
        db.ownerQuery("SELECT count(*)::int AS n FROM pg_tables WHERE schemaname = 'mana_ai' AND tablename = 'cluster_runners'"),
      )
      expect(tables[0]?.n).toBe(1)
    }),
  )
})
