/**
 * The process's composition for in-process tests: the same layers as main (HTTP, pool, migrations,
 * services, supervisor, lifecycle) on Node's test HTTP server, configured from a map as the
 * environment would be. The offline planner by default: Node's test HttpClient points at the
 * server under test, so an LLM planner would need its own client (use the e2e tests for that).
 */
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Redacted from "effect/Redacted"
import { databaseLayerFromUrl } from "../services/Database.js"
import { processLayer } from "./process.js"
import { environmentProvider, loadStartupConfig } from "./startupConfig.js"

export interface TestProcessOptions {
  /** The runner role's URL (TestDatabase's runnerUrl). */
  readonly databaseUrl: Redacted.Redacted<string>
  readonly serviceKey: Redacted.Redacted<string>
  /** Environment variables as main would read them (e.g. TICK_ENABLED, SHUTDOWN_GRACE_MS). */
  readonly env?: Readonly<Record<string, string>>
  /** Runs after the migrations, before the supervisor (seed here). */
  readonly afterMigrations?: Parameters<typeof processLayer>[0]["afterMigrations"]
}

export const testProcessLayer = (options: TestProcessOptions) =>
  Layer.unwrapEffect(
    loadStartupConfig.pipe(
      Effect.withConfigProvider(environmentProvider(options.env ?? {})),
      Effect.map((config) =>
        processLayer(
          {
            config,
            serviceKey: options.serviceKey,
            version: "test",
            planner: "offline",
            database: databaseLayerFromUrl(options.databaseUrl, config.database.poolMax, { preparedStatements: config.database.preparedStatements }),
            ...(options.afterMigrations === undefined ? {} : { afterMigrations: options.afterMigrations }),
          },
          Layer.mergeAll(NodeHttpServer.layerTest, NodeContext.layer),
        ),
      ),
    ),
  )
