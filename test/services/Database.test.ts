import { SqlClient } from "@effect/sql"
import { it } from "@effect/vitest"
import { Effect, Exit, Layer, Logger, Redacted, TestServices } from "effect"
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

  it.effect("retries an unreachable server with warnings, then fails with the last error", () =>
    Effect.gen(function* () {
      const port = yield* freePort
      const url = Redacted.make(`postgres://runner:hunter2-secret@127.0.0.1:${port}/sync`)
      const { exit, lines } = yield* withCapturedLogs(
        Effect.scoped(Layer.build(databaseLayerFromUrl(url, 2, { retryFor: "1500 millis" }))),
      )
      expect(Exit.isFailure(exit)).toBe(true)
      const warnings = lines.filter((l) => l.startsWith("WARN") && l.includes(`127.0.0.1:${port}`))
      // Attempts at 0, 0.5 and 1.5 s (exponential from 500 ms, up to 1.5 s): the first retry comes 1 s before
      // the limit, so two warnings hold on a busy machine; a third may be cut by a late scheduler.
      expect(warnings.length).toBeGreaterThanOrEqual(2)
      expect(warnings.length).toBeLessThanOrEqual(3)
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
