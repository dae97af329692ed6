/**
 * clientQueryQueue.ts on a real pg connection (the server, or PGlite behind its socket): statements sent
 * before the previous one answered reach pg one at a time, in the order sent, each handed over in the
 * step that ends the one before; a failing statement and a lost connection end their turn too.
 */
import { it } from "@effect/vitest"
import { Effect, Redacted } from "effect"
import pg from "pg"
import { expect } from "vitest"
import { clientQueueOf, queueQueries } from "../../src/services/clientQueryQueue.js"
import { watchPgHandOffs } from "../support/pgHandOffs.js"
import { TestDatabase, TestDatabaseLive } from "../support/TestDatabase.js"

const connected = Effect.acquireRelease(
  Effect.flatMap(TestDatabase, (db) =>
    Effect.promise(async () => {
      const client = new pg.Client({ connectionString: Redacted.value(db.runnerUrl) })
      await client.connect()
      return client
    }),
  ),
  (client) => Effect.promise(() => client.end().catch(() => undefined)),
)

it.layer(TestDatabaseLive, { timeout: 60_000 })("clientQueryQueue", (it) => {
  it.scoped("sends statements one at a time in the order sent, whatever the call's form", () =>
    Effect.gen(function* () {
      const client = yield* connected
      queueQueries(client)
      const seen = watchPgHandOffs()
      const order: Array<string> = []
      const results = yield* Effect.promise(() => {
        /** A callback that notes when its statement answered and gives its `n`. */
        const answered =
          (name: string, resolve: (n: number) => void, reject: (e: Error) => void) =>
          (error: Error | null | undefined, r: pg.QueryResult) => {
            if (error) return reject(error)
            order.push(name)
            resolve(Array.isArray(r.rows[0]) ? r.rows[0][0] : r.rows[0].n)
          }
        const fromPromise = client.query("SELECT pg_sleep(0.02), 1 AS n").then((r) => {
          order.push("promise")
          return r.rows[0].n as number
        })
        const fromCallback = new Promise<number>((resolve, reject) =>
          client.query("SELECT $1::int AS n", [2], answered("callback", resolve, reject)),
        )
        const fromConfig = new Promise<number>((resolve, reject) =>
          client.query({ text: "SELECT $1::int AS n", values: [3], rowMode: "array" }, answered("config", resolve, reject)),
        )
        const fromSubmittable = new Promise<number>((resolve, reject) =>
          client.query(new pg.Query("SELECT 4 AS n", undefined, answered("submittable", resolve, reject)) as unknown as pg.QueryConfig),
        )
        const fromTwoArguments = new Promise<number>((resolve, reject) =>
          client.query("SELECT 5 AS n", answered("two arguments", resolve, reject)),
        )
        return Promise.all([fromPromise, fromCallback, fromConfig, fromSubmittable, fromTwoArguments]).finally(seen.restore)
      })
      expect(results).toEqual([1, 2, 3, 4, 5])
      expect(order).toEqual(["promise", "callback", "config", "submittable", "two arguments"])
      expect(seen.calls).toBe(5)
      expect(seen.whileBusy).toBe(0)
      expect(clientQueueOf(client)?.mostWaiting()).toBe(4)
      expect(clientQueueOf(client)?.waiting()).toBe(0)
    }),
  )

  // The cluster's lock connection (@effect/cluster's SqlRunnerStorage) sends its next statement from the
  // callback of the one before while others wait: before the fix a statement handed over from the queue
  // ran with the queue not marked busy, so one sent then went to pg's own queue (its DeprecationWarning).
  it.scoped("a statement sent while one handed over from the queue runs waits its turn too", () =>
    Effect.gen(function* () {
      const client = yield* connected
      queueQueries(client)
      const seen = watchPgHandOffs()
      const order: Array<string> = []
      yield* Effect.promise(async () => {
        const a = client.query("SELECT pg_sleep(0.02), 1 AS n").then(() => order.push("a"))
        const b = client.query("SELECT pg_sleep(0.05), 2 AS n").then(() => order.push("b"))
        await a
        // b went to pg as a ended, from the queue; c comes while b runs.
        expect(clientQueueOf(client)?.waiting()).toBe(0)
        const c = client.query("SELECT 3 AS n").then(() => order.push("c"))
        expect(clientQueueOf(client)?.waiting()).toBe(1)
        const d = client.query("SELECT 4 AS n").then(() => order.push("d"))
        await Promise.all([b, c, d])
      }).pipe(Effect.ensuring(Effect.sync(seen.restore)))
      expect(order).toEqual(["a", "b", "c", "d"])
      expect(seen.calls).toBe(4)
      expect(seen.whileBusy).toBe(0)
      expect(clientQueueOf(client)?.waiting()).toBe(0)
    }),
  )

  it.scoped("a failing statement ends its turn: the next ones run", () =>
    Effect.gen(function* () {
      const client = yield* connected
      queueQueries(client)
      const outcomes = yield* Effect.promise(() =>
        Promise.allSettled([
          client.query("SELECT 1 AS n"),
          client.query("SELECT * FROM no_such_table_here"),
          new Promise((resolve, reject) =>
            client.query(new pg.Query("SELECT 1/0", undefined, (e: Error | undefined, r: unknown) => (e ? reject(e) : resolve(r))) as unknown as pg.QueryConfig),
          ),
          client.query("SELECT 3 AS n"),
        ]),
      )
      expect(outcomes.map((o) => o.status)).toEqual(["fulfilled", "rejected", "rejected", "fulfilled"])
      expect(outcomes[3]!.status === "fulfilled" && (outcomes[3]!.value as pg.QueryResult).rows[0].n).toBe(3)
      expect(clientQueueOf(client)?.waiting()).toBe(0)
    }),
  )

  it.scoped("a lost connection fails the statement under way and every one waiting", () =>
    Effect.gen(function* () {
      const db = yield* TestDatabase
      const client = yield* connected
      client.on("error", () => {})
      queueQueries(client)
      const pid = (client as unknown as { processID: number }).processID
      const outcomes = Effect.promise(() =>
        Promise.allSettled([client.query("SELECT pg_sleep(5)"), client.query("SELECT 2"), client.query("SELECT 3")]),
      )
      if (db.kind === "server") {
        // Ended from outside, as a failover or an operator would.
        yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 100)))
        yield* Effect.promise(() => db.ownerQuery("SELECT pg_terminate_backend($1)", [pid]))
      } else {
        // PGlite serves every client from one backend: the socket is cut instead.
        yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 100)))
        ;(client as unknown as { connection: { stream: { destroy: () => void } } }).connection.stream.destroy()
      }
      const settled = yield* outcomes
      expect(settled.map((o) => o.status)).toEqual(["rejected", "rejected", "rejected"])
      expect(clientQueueOf(client)?.waiting()).toBe(0)
    }),
  )
})
