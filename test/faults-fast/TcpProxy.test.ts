/**
 * The outage simulator itself: a fault test is only as good as the fault it injects. Each mode is
 * checked against the real database behind it with a plain pg client.
 */
import { it } from "@effect/vitest"
import { Effect, Layer, Redacted } from "effect"
import pg from "pg"
import { expect } from "vitest"
import { recordEffect } from "../support/FaultLedger.js"
import { TcpProxy, makeTcpProxy, targetOf } from "../support/TcpProxy.js"
import { TestDatabase, TestDatabaseLive } from "../support/TestDatabase.js"

const L = Layer.provideMerge(
  Layer.unwrapEffect(Effect.map(TestDatabase, (db) => TcpProxy.layer(targetOf(db.runnerUrl)))),
  TestDatabaseLive,
)

const client = (url: string, connectionTimeoutMillis = 2000) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const c = new pg.Client({ connectionString: url, connectionTimeoutMillis })
      c.on("error", () => {}) // a dropped connection emits "error"; the query's rejection is what we check
      return c
    }),
    // end() on a cut connection may never settle: give it a moment, then move on.
    (c) => Effect.promise(() => c.end().catch(() => {})).pipe(Effect.timeout("1 second"), Effect.ignore),
  )

const connectError = (c: pg.Client) =>
  Effect.promise(() => c.connect().then(() => undefined, (e: Error & { code?: string }) => e.code ?? e.message))

const proxiedUrl = Effect.gen(function* () {
  const db = yield* TestDatabase
  const proxy = yield* TcpProxy
  return Redacted.value(proxy.rewrite(db.runnerUrl))
})

it.layer(L, { timeout: 60_000 })("TcpProxy", (it) => {
  it.scoped("forwards a session to the database and rewrites only host and port", () =>
    Effect.gen(function* () {
      const db = yield* TestDatabase
      const proxy = yield* TcpProxy
      const url = yield* proxiedUrl
      const original = new URL(Redacted.value(db.runnerUrl))
      const rewritten = new URL(url)
      expect(rewritten.port).toBe(String(proxy.port))
      expect([rewritten.username, rewritten.password, rewritten.pathname]).toEqual([
        original.username,
        original.password,
        original.pathname,
      ])
      const c = yield* client(url)
      expect(yield* connectError(c)).toBeUndefined()
      const rows = yield* Effect.promise(() => c.query("SELECT 41 + 1 AS n"))
      expect(rows.rows[0]?.n).toBe(42)
      expect((yield* proxy.stats).open).toBeGreaterThanOrEqual(1)
    }))

  it.scoped("dropAll cuts an open session: its next query fails, a new session works", () =>
    Effect.gen(function* () {
      const proxy = yield* TcpProxy
      const url = yield* proxiedUrl
      const c = yield* client(url)
      yield* connectError(c)
      const dropped = yield* proxy.dropAll
      expect(dropped).toBeGreaterThanOrEqual(1)
      const failed = yield* Effect.promise(() => c.query("SELECT 1").then(() => "ok", () => "failed"))
      expect(failed).toBe("failed")
      const again = yield* client(url)
      expect(yield* connectError(again)).toBeUndefined()
      yield* recordEffect({ suite: "TcpProxy", faults: { "proxy:drop-all": 1 } })
    }))

  it.scoped("refuse closes the listener (ECONNREFUSED) until resume, on the same port", () =>
    Effect.gen(function* () {
      const proxy = yield* TcpProxy
      const url = yield* proxiedUrl
      yield* proxy.setMode("refuse")
      expect(yield* connectError(yield* client(url))).toBe("ECONNREFUSED")
      yield* proxy.resume
      expect(yield* connectError(yield* client(url))).toBeUndefined()
      yield* recordEffect({ suite: "TcpProxy", faults: { "proxy:refuse": 1 } })
    }))

  it.scoped("reset accepts and resets; blackhole accepts and never answers, so the client times out", () =>
    Effect.gen(function* () {
      const proxy = yield* TcpProxy
      const url = yield* proxiedUrl
      yield* proxy.setMode("reset")
      expect(yield* connectError(yield* client(url))).not.toBeUndefined()
      yield* proxy.setMode("blackhole")
      const started = Date.now()
      const code = yield* connectError(yield* client(url, 700))
      expect(code).toMatch(/timeout/i)
      expect(Date.now() - started).toBeGreaterThanOrEqual(600)
      const stats = yield* proxy.stats
      expect(stats.reset).toBeGreaterThanOrEqual(1)
      expect(stats.blackholed).toBeGreaterThanOrEqual(1)
      yield* proxy.resume
      expect(yield* connectError(yield* client(url))).toBeUndefined()
      yield* recordEffect({ suite: "TcpProxy", faults: { "proxy:reset": 1, "proxy:blackhole": 1 } })
    }))

  it.scoped("outage drops everything, refuses for its duration, then forwards again by itself", () =>
    Effect.gen(function* () {
      const db = yield* TestDatabase
      const proxy = yield* makeTcpProxy(targetOf(db.runnerUrl))
      const url = Redacted.value(proxy.rewrite(db.runnerUrl))
      const c = yield* client(url)
      yield* connectError(c)
      const started = Date.now()
      yield* proxy.outage({ mode: "refuse", forMs: 500 })
      expect(Date.now() - started).toBeGreaterThanOrEqual(450)
      expect((yield* proxy.stats).dropped).toBe(1)
      expect(yield* proxy.mode).toBe("pass")
      expect(yield* connectError(yield* client(url))).toBeUndefined()
      yield* recordEffect({ suite: "TcpProxy", faults: { "proxy:outage": 1 } })
    }))
})
