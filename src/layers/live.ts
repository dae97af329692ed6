/**
 * Against the sync server's database (SYNC_DATABASE_URL as the runner's role): the LLM planner,
 * the service key from MANA_SERVICE_KEY. Start-up config has already required both.
 */
import type { FileSystem, HttpClient, HttpServer } from "@effect/platform"
import { Effect, Layer, Option } from "effect"
import { clusterOwnershipLayer } from "../cluster/ClusterOwnership.js"
import { defaultInstanceId } from "../services/MissionRunner.js"
import { databaseLayerFromUrl } from "../services/Database.js"
import { processLayer } from "./process.js"
import type { StartMode, StartupConfig } from "./startupConfig.js"

/** Cluster mode: the ownership layer, and the claim owner id it watches (issue 19). */
const clusterOptions = (config: StartupConfig, mode: Extract<StartMode, { _tag: "Live" }>) => {
  if (Option.isNone(config.cluster)) return {}
  const instanceId = defaultInstanceId()
  return { instanceId, ownership: clusterOwnershipLayer(config.cluster.value, mode.databaseUrl, instanceId) }
}

export const liveLayer = <E, R>(
  config: StartupConfig,
  mode: Extract<StartMode, { _tag: "Live" }>,
  version: string,
  platform: Layer.Layer<HttpServer.HttpServer | FileSystem.FileSystem | HttpClient.HttpClient, E, R>,
) =>
  Layer.unwrapEffect(
    Effect.as(
      Effect.logInfo(`Planner: LLM (model ${config.llm.model}, PLANNER_MODE=${config.llm.plannerMode})`),
      processLayer(
        {
          config,
          serviceKey: mode.serviceKey,
          version,
          planner: "llm",
          database: databaseLayerFromUrl(mode.databaseUrl, config.database.poolMax),
          ...clusterOptions(config, mode),
        },
        platform,
      ),
    ),
  )
