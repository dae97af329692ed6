/**
 * Run by Bun (`test/services/pipelinedTransaction.test.ts`): another process's runner on the same
 * server. Argument: a JSON object `{ url, marker, rounds, pauseMs }`. On a pool of one connection it
 * runs one statement `rounds` times through pipelinedTransaction (prepared on the first round, bound by
 * name after), `pauseMs` apart, and prints one JSON line: each round's rows, or the error.
 */
import { SqlClient } from "@effect/sql"
import { Effect, Layer, Redacted } from "effect"
import { pgClientLayer } from "../../src/services/Database.js"
import { pipelinedTransaction } from "../../src/services/pipelinedTransaction.js"

const { url, marker, rounds, pauseMs } = JSON.parse(process.argv[2] ?? "{}") as { url: string; marker: string; rounds: number; pauseMs: number }

const program = Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  const results: Array<unknown> = []
  for (let i = 1; i <= rounds; i++) {
    const [rows] = yield* pipelinedTransaction(sql, [sql.unsafe(`SELECT $1::int AS i, '${marker}' AS marker`, [i])])
    results.push(rows)
    yield* Effect.sleep(pauseMs)
  }
  return results
})

const exit = await Effect.runPromiseExit(
  program.pipe(Effect.provide(Layer.orDie(pgClientLayer({ url: Redacted.make(url), maxConnections: 1, preparedStatements: true })))),
)
process.stdout.write(`${JSON.stringify(exit._tag === "Success" ? { results: exit.value } : { error: String(exit.cause) })}\n`)
process.exit(0)
