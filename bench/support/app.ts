/**
 * The runner's real services on the bench database, connected as the runner role: the pool
 * (Database.ts), the migrations, and the services each measurement needs.
 */
import { Layer } from "effect"
import { type RunnerConfigShape, RunnerConfig } from "../../src/services/AppConfig.js"
import { databaseLayerFromUrl } from "../../src/services/Database.js"
import { MigrationsLive } from "../../src/services/Migrations.js"
import { MissionStoreLive } from "../../src/services/MissionStoreLive.js"
import type { BenchDatabase } from "./benchDatabase.js"

/** DB_POOL_MAX's default: the bench measures the service as an operator would run it. */
export const POOL_MAX = 10

/** Pool + config, with the migrations applied before anything is handed out. */
export const baseLayer = (db: BenchDatabase, config: Partial<RunnerConfigShape> = {}, poolMax = POOL_MAX) =>
  Layer.provideMerge(MigrationsLive, Layer.merge(databaseLayerFromUrl(db.runnerUrl, poolMax), RunnerConfig.test(config))).pipe(
    Layer.orDie,
  )

export const storeLayer = (db: BenchDatabase, config: Partial<RunnerConfigShape> = {}) =>
  Layer.provideMerge(MissionStoreLive, baseLayer(db, config))
