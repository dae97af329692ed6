import { SqlClient } from "@effect/sql"
import { it } from "@effect/vitest"
import { Chunk, Effect, Exit, Fiber, Layer, Logger, Redacted, TestClock, TestServices } from "effect"
import { createServer } from "node:net"
import { expect } from "vitest"
import { databaseLayerFromUrl, describeDatabaseUrl } from "../../src/services/Database.js"
import { TestDatabase, TestDatabaseLive } from "../support/TestDatabase.js"

/** Runs `effect` with every log line captured as "LEVEL message". */
const withCapturedLogs = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.gen(function* () {
    const lines: Array<string> = []
    const logger = Logger.make(({ logLevel, message }) => {
      lines.push(`${logLevel.label} ${Array.isArray(message) ? message.join(" ") : String(message)}`)
    })
    // The live clock: the retry schedule really waits.
    const exit = yield* Effect.exit(
      TestServices.provideLive(effect).pipe(Effect.provide(Logger.replace(Logger.defaultLogger, logger))),
    )
    return { exit, lines }
  })

/** A loopback port nobody listens on. */
const freePort = Effect.promise(
  () =>
    new Promise<number>((resolve) => {
      const server = createServer()
      server.listen(0, "127.0.0.1", () => {
        const address = server.address()
        server.close(() => resolve(typeof address === "object" && address !== null ? address.port : 0))
      })
    }),
)

it("describeDatabaseUrl keeps user, host and database, drops password and parameters", () => {
  expect(describeDatabaseUrl(Redacted.make("postgres://runner:s3cret@db.internal:5433/sync?password=also&sslmode=require"))).toBe(
    "postgres://runner@db.internal:5433/sync",
  )
  expect(describeDatabaseUrl(Redacted.make("not a url"))).toBe("<unparseable database URL>")
})

it.layer(TestDatabaseLive, { timeout: 60_000 })("Database", (it) => {
  it.effect("connects as the runner and logs where, never the password", () =>
    Effect.gen(function* () {
      const db = yield* TestDatabase
      const url = new URL(Redacted.value(db.runnerUrl))
      const { exit, lines } = yield* withCapturedLogs(
        Effect.scoped(
          Effect.gen(function* () {
            const context = yield* Layer.build(databaseLayerFromUrl(db.runnerUrl, 3))
            const sql = Layer.succeedContext(context)
            return yield* Effect.provide(
              Effect.flatMap(SqlClient.SqlClient, (c) => c<{ u: string }>`SELECT current_user AS u`),
              sql,
            )
          }),
        ),
      )
      expect(Exit.isSuccess(exit) && exit.value[0]?.u).toBe(db.runnerRole)
      expect(lines.some((l) => l.includes(`Connected to Postgres at postgres://${db.runnerRole}@${url.host}`))).toBe(true)
      if (url.password !== "") expect(lines.join("\n")).not.toContain(url.password)
    }),
  )

  it.effect("retries an unreachable server at 0, 0.5 and 1.5 s with a warning each (TestClock), then fails with the last error", () =>
    Effect.gen(function* () {
      const port = yield* freePort
      const url = Redacted.make(`postgres://runner:hunter2-secret@127.0.0.1:${port}/sync`)
      const lines: Array<string> = []
      const logger = Logger.make(({ logLevel, message }) => {
        lines.push(`${logLevel.label} ${Array.isArray(message) ? message.join(" ") : String(message)}`)
      })
      const warnings = () => lines.filter((l) => l.startsWith("WARN") && l.includes(`127.0.0.1:${port}`)).length
      // The retry schedule sleeps on the TestClock; each refused attempt is real and takes milliseconds.
      const building = yield* Effect.fork(
        Effect.exit(Effect.scoped(Layer.build(databaseLayerFromUrl(url, 2, { retryFor: "1500 millis" })))).pipe(
          Effect.provide(Logger.replace(Logger.defaultLogger, logger)),
        ),
      )
      /** Waits in real time (a wide 30 s bound that measures nothing) until the retry's sleep is registered. */
      const retrySleep = Effect.gen(function* () {
        for (let i = 0; i < 3_000; i++) {
          const now = yield* TestClock.currentTimeMillis
          // The connect timeout (10 s) of an attempt under way is told apart by its length.
          const retry = Chunk.toReadonlyArray(yield* TestClock.sleeps()).filter((at) => at - now <= 2_000)
          if (retry.length > 0) return Math.min(...retry) - now
          yield* TestServices.provideLive(Effect.sleep("10 millis"))
        }
        return yield* Effect.dieMessage("no retry was scheduled")
      })
      expect(yield* retrySleep).toBe(500)
      expect(warnings()).toBe(1)
      yield* TestClock.adjust("500 millis")
      expect(yield* retrySleep).toBe(1_000)
      expect(warnings()).toBe(2)
      yield* TestClock.adjust("1 second")
      // The next delay (2 s) would pass the 1.5 s limit: the third attempt was the last.
      const exit = yield* Fiber.join(building)
      expect(Exit.isFailure(exit)).toBe(true)
      expect(warnings()).toBe(3)
      expect(lines.join("\n")).not.toContain("hunter2-secret")
    }),
  )

  it.effect.skipIf(process.env.TEST_DATABASE_URL === undefined)("a database that does not exist fails at once: waiting will not fix it", () =>
    Effect.gen(function* () {
      const db = yield* TestDatabase
      const url = new URL(Redacted.value(db.runnerUrl))
      // The local server trusts loopback logins, so a missing database stands in for bad credentials.
      url.pathname = "/mana_ai_no_such_database"
      const { exit, lines } = yield* withCapturedLogs(
        Effect.scoped(Layer.build(databaseLayerFromUrl(Redacted.make(url.toString()), 2))),
      )
      expect(Exit.isFailure(exit)).toBe(true)
      expect(lines.filter((l) => l.startsWith("ERROR")).length).toBe(1)
      expect(lines.filter((l) => l.startsWith("WARN")).length).toBe(0)
      expect(lines.find((l) => l.startsWith("ERROR"))).toContain("mana_ai_no_such_database")
      if (url.password !== "") expect(lines.join("\n")).not.toContain(url.password)
    }),
  )
})
