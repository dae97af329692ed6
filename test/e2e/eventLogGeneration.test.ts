/**
 * The real Bun process pointed at a database whose sync_changes it cannot serve (SPEC §13): the start
 * stops with one line on stderr naming both columns, and exit code 1.
 */
import { Context, Effect, Exit, Layer, Redacted, Scope } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { startManaProcess } from "../support/ManaProcess.js"
import { TestDatabase, type TestDatabaseShape, testDatabaseLayer } from "../support/TestDatabase.js"

const run = <A>(effect: Effect.Effect<A>) => Effect.runPromise(effect)
let scope: Scope.CloseableScope
let db: TestDatabaseShape

beforeAll(async () => {
  scope = await run(Scope.make())
  db = Context.get(await run(Layer.buildWithScope(testDatabaseLayer(), scope)), TestDatabase)
}, 60_000)

afterAll(async () => {
  await run(Scope.close(scope, Exit.void))
}, 60_000)

const start = () =>
  startManaProcess({
    env: {
      SYNC_DATABASE_URL: Redacted.value(db.runnerUrl),
      MANA_LLM_URL: "http://127.0.0.1:1",
      MANA_SERVICE_KEY: "generation-test-key-0123456789",
      LOG_FORMAT: "json",
      LOG_LEVEL: "error",
    },
  })

describe("start-up against an event log of no known generation", () => {
  it("a sync_changes with neither field_meta nor field_timestamps: one line naming both, exit code 1", async () => {
    await db.ownerQuery(`ALTER TABLE sync_changes DROP COLUMN ${db.generation}`)
    const p = await start()
    const exited = await p.exited
    expect(exited.code).toBe(1)
    const lines = p.stderr().trim().split("\n")
    expect(lines).toHaveLength(1)
    expect(lines[0]).toMatch(/^mana-ai: EventLogSchemaUnknown: .*field_meta.*field_timestamps/)
  })

  it("no sync_changes at all: one line naming both columns, exit code 1", async () => {
    await db.ownerQuery("DROP TABLE sync_changes CASCADE")
    const p = await start()
    const exited = await p.exited
    expect(exited.code).toBe(1)
    const lines = p.stderr().trim().split("\n")
    expect(lines).toHaveLength(1)
    expect(lines[0]).toMatch(/^mana-ai: EventLogSchemaUnknown: no table sync_changes.*field_meta.*field_timestamps/)
  })
})
