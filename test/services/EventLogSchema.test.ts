/**
 * The generation of sync_changes is read from the catalog as the runner's role sees it (SPEC §13):
 * field_meta is today's, field_timestamps the seed's, neither (or no table) stops the start with
 * one line naming both columns. Runs once per generation (vitest.config.ts).
 */
import { it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { expect } from "vitest"
import { detectEventLogSchema } from "../../src/services/EventLogSchema.js"
import { RunnerSqlLive, TestDatabase, TestDatabaseLive } from "../support/TestDatabase.js"

const Env = Layer.provideMerge(RunnerSqlLive(2), TestDatabaseLive)

const owner = (text: string) => Effect.flatMap(TestDatabase, (db) => Effect.promise(() => db.ownerQuery(text)))

// The tests run in order: the later ones take the table apart.
it.layer(Env, { timeout: 60_000 })("EventLogSchema", (it) => {
  it.effect("finds the generation the database holds, as the runner's role", () =>
    Effect.gen(function* () {
      const db = yield* TestDatabase
      expect(yield* detectEventLogSchema).toEqual({ generation: db.generation, timeColumn: db.generation })
      // The harness made what it was asked for: exactly one of the two columns.
      const columns = yield* owner(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'sync_changes' AND column_name LIKE 'field_%'",
      )
      expect(columns.map((c) => c.column_name)).toEqual([db.generation])
    }))

  it.effect("a sync_changes with neither column is refused with a reason naming both", () =>
    Effect.gen(function* () {
      const db = yield* TestDatabase
      yield* owner(`ALTER TABLE sync_changes DROP COLUMN ${db.generation}`)
      const error = yield* Effect.flip(detectEventLogSchema)
      expect(error._tag).toBe("EventLogSchemaUnknown")
      expect(error.message).toContain("field_meta")
      expect(error.message).toContain("field_timestamps")
      expect(error.message).not.toContain("\n")
    }))

  it.effect("no sync_changes at all is refused with a reason naming both columns", () =>
    Effect.gen(function* () {
      yield* owner("DROP TABLE sync_changes CASCADE")
      const error = yield* Effect.flip(detectEventLogSchema)
      expect(error._tag).toBe("EventLogSchemaUnknown")
      expect(error.message).toMatch(/no table sync_changes.*field_meta.*field_timestamps/)
    }))
})
