/**
 * The runner's pool through a TCP proxy the test owns, so the database can be taken away from
 * outside (refused, cut, held) without touching the shared server.
 *
 *   layer(ProxiedWorld)(…, (it) => …)             // TestDatabase + TcpProxy + LlmStandIn
 *   runnerStack({ sql: ProxiedPool, … })          // the runner's services on the proxied pool
 */
import { Effect, Layer } from "effect"
import { databaseLayerFromUrl } from "../../src/services/Database.js"
import { LlmStandIn } from "./LlmStandIn.js"
import { TcpProxy, targetOf } from "./TcpProxy.js"
import { TestDatabase, TestDatabaseLive } from "./TestDatabase.js"

/** A pool of 4 runner connections to the test database, each through the proxy. */
export const ProxiedPool = Layer.unwrapEffect(
  Effect.gen(function* () {
    const db = yield* TestDatabase
    const proxy = yield* TcpProxy
    return databaseLayerFromUrl(proxy.rewrite(db.runnerUrl), 4)
  }),
)

/** The test's own database, a proxy in front of it and the LLM stand-in. */
export const ProxiedWorld = Layer.provideMerge(
  Layer.unwrapEffect(Effect.map(TestDatabase, (db) => TcpProxy.layer(targetOf(db.runnerUrl)))),
  Layer.merge(TestDatabaseLive, LlmStandIn.layer),
)
