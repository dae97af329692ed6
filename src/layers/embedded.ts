/**
 * The embedded default (SPEC §11): no SYNC_DATABASE_URL. PGlite persisted under <data dir>/pglite,
 * served on a loopback port so the runner uses the one @effect/sql-pg path, acting as the runner
 * role; the demo workload seeded on first start; the offline planner unless MANA_LLM_URL is set.
 */
import { existsSync, mkdirSync, writeFileSync } from "node:fs"
import { join, resolve } from "node:path"
import type * as FileSystem from "@effect/platform/FileSystem"
import type * as HttpClient from "@effect/platform/HttpClient"
import type * as HttpServer from "@effect/platform/HttpServer"
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import { databaseLayerFromUrl } from "../services/Database.js"
import { seedDemoWorkload } from "./demoWorkload.js"
import { makeEmbeddedPostgres } from "./EmbeddedPostgres.js"
import { processLayer } from "./process.js"
import { embeddedServiceKey } from "./serviceKey.js"
import type { StartupConfig } from "./startupConfig.js"

const PGLITE_DIR = "pglite"
const SEEDED_MARKER = "demo-seeded"
/** psql and a few other clients next to the pool. */
const EXTRA_CONNECTIONS = 4

/** PGlite started, then the runner's pool on its socket; the psql URL printed. */
const embeddedDatabaseLayer = (dataDir: string, poolMax: number) =>
  Layer.unwrapScoped(
    Effect.gen(function* () {
      const pgliteDir = join(dataDir, PGLITE_DIR)
      yield* Effect.sync(() => mkdirSync(pgliteDir, { recursive: true }))
      yield* Effect.logInfo(`Starting embedded Postgres (PGlite) with its data in ${pgliteDir}`)
      const embedded = yield* makeEmbeddedPostgres({ dataDir: pgliteDir, maxConnections: poolMax + EXTRA_CONNECTIONS })
      yield* Effect.logInfo(`Embedded Postgres is up; connect with: psql "${embedded.displayUrl}"`).pipe(
        Effect.annotateLogs({ psqlUrl: embedded.displayUrl }),
      )
      return databaseLayerFromUrl(embedded.url, poolMax)
    }),
  )

/** Seeds the demo workload unless an earlier start did (a marker file next to the database). */
const demoSeedLayer = (dataDir: string) =>
  Layer.effectDiscard(
    Effect.gen(function* () {
      const marker = join(dataDir, SEEDED_MARKER)
      if (existsSync(marker)) {
        yield* Effect.logInfo("Demo workload already seeded on an earlier start; leaving the data as it is")
        return
      }
      const written = yield* seedDemoWorkload(new Date(yield* Clock.currentTimeMillis))
      yield* Effect.sync(() => writeFileSync(marker, `${new Date().toISOString()}\n`))
      yield* Effect.logInfo(`Seeded the demo workload: ${written} rows for users demo-alice, demo-bob and demo-carol`)
    }),
  )

/** A URL safe to print: scheme, host and path, never a user or password. */
const describeLlmUrl = (url: string): string => {
  try {
    const u = new URL(url)
    return `${u.protocol}//${u.host}${u.pathname}`
  } catch {
    return "<unparseable URL>"
  }
}

export const embeddedLayer = <E, R>(
  config: StartupConfig,
  dataDir: string,
  version: string,
  platform: Layer.Layer<HttpServer.HttpServer | FileSystem.FileSystem | HttpClient.HttpClient, E, R>,
) =>
  Layer.unwrapEffect(
    Effect.gen(function* () {
      const absolute = resolve(dataDir)
      const key = yield* embeddedServiceKey(absolute, config.http.serviceKey)
      const planner = Option.isSome(config.llm.url) ? "llm" : "offline"
      yield* Option.match(config.llm.url, {
        onNone: () =>
          Effect.logInfo(
            "Planner: the deterministic OFFLINE planner (no LLM is called); set MANA_LLM_URL to plan with an OpenAI-compatible LLM",
          ),
        onSome: (url) => Effect.logInfo(`Planner: LLM at ${describeLlmUrl(url)} (model ${config.llm.model}, PLANNER_MODE=${config.llm.plannerMode})`),
      })
      return processLayer(
        {
          config,
          serviceKey: key.key,
          version,
          planner,
          database: embeddedDatabaseLayer(absolute, config.database.poolMax),
          afterMigrations: demoSeedLayer(absolute),
        },
        platform,
      )
    }),
  )
