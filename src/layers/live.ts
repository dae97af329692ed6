/**
 * Against the sync server's database (SYNC_DATABASE_URL as the runner's role): the LLM planner,
 * the service key from MANA_SERVICE_KEY. Start-up config has already required both. Cluster mode's
 * modules (@effect/cluster, @effect/rpc) are imported only when RUNNER_ADDRESS asks for it (issue 16).
 */
import type * as FileSystem from "@effect/platform/FileSystem"
import type * as HttpClient from "@effect/platform/HttpClient"
import type * as HttpServer from "@effect/platform/HttpServer"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import { defaultInstanceId } from "../services/MissionRunner.js"
import { databaseLayerFromUrl } from "../services/Database.js"
import { processLayer } from "./process.js"
import type { StartMode, StartupConfig } from "./startupConfig.js"

/** Cluster mode: the ownership layer, and the claim owner id it watches (issue 19). */
const clusterOptions = (config: StartupConfig, mode: Extract<StartMode, { _tag: "Live" }>) =>
  Option.match(config.cluster, {
    onNone: () => Effect.succeed({}),
    onSome: (cluster) =>
      Effect.promise(() => import("../cluster/ClusterOwnership.js")).pipe(
        Effect.map(({ clusterOwnershipLayer }) => {
          const instanceId = defaultInstanceId()
          return { instanceId, ownership: clusterOwnershipLayer(cluster, mode.databaseUrl, instanceId) }
        }),
      ),
  })

export const liveLayer = <E, R>(
  config: StartupConfig,
  mode: Extract<StartMode, { _tag: "Live" }>,
  version: string,
  platform: Layer.Layer<HttpServer.HttpServer | FileSystem.FileSystem | HttpClient.HttpClient, E, R>,
) =>
  Layer.unwrapEffect(
    Effect.gen(function* () {
      yield* Effect.logInfo(`Planner: LLM (model ${config.llm.model}, PLANNER_MODE=${config.llm.plannerMode})`)
      const cluster = yield* clusterOptions(config, mode)
      return processLayer(
        {
          config,
          serviceKey: mode.serviceKey,
          version,
          planner: "llm",
          database: databaseLayerFromUrl(mode.databaseUrl, config.database.poolMax, { preparedStatements: config.database.preparedStatements }),
          ...cluster,
        },
        platform,
      )
    }),
  )
