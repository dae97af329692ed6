/**
 * sqlShapes builds a statement once per shape on placeholders and binds each call's values to it
 * (issue 16). Each shaped statement here is held to the one its builder makes from the same values
 * directly: the same text and the same parameters, for every shape and for values that would change
 * the text if a builder used them in logic (null, undefined, empty). The shaped statements run against
 * the database in the write-back and runner tests.
 */
import * as Statement from "@effect/sql/Statement"
import { PgClient } from "@effect/sql-pg"
import * as Effect from "effect/Effect"
import { describe, expect, it } from "vitest"
import type * as SqlClient from "@effect/sql/SqlClient"
import { AGENTS_APP_ID, AGENTS_TABLE } from "../../src/domain/agent.js"
import { MISSIONS_APP_ID, MISSIONS_TABLE } from "../../src/domain/mission.js"
import { runReadQuery, runReadShapes } from "../../src/services/currentMission.js"
import { claimTimes, scopedClaimStatement } from "../../src/services/runClaims.js"
import { type AppendShape, type AppendValues, appendShapeKey, appendStatementBuilder } from "../../src/services/WriteBack.js"
import { MAX_SHAPES, sqlShapes } from "../../src/services/sqlShapes.js"

/** A statement constructor with Postgres's compiler and no connection: these tests only compile. */
const sql = Statement.make(Effect.dieMessage("compile only"), PgClient.makeCompiler(), [], undefined)

const compiled = (s: { compile(): readonly [string, ReadonlyArray<unknown>] }) => s.compile()

describe("sqlShapes", () => {
  it("binds each call's values to its shape's text, as the builder would have built it", () => {
    const build = (f: { readonly limit: boolean }, v: { readonly a: unknown; readonly b: unknown; readonly n: unknown }) =>
      sql`SELECT ${v.a}::text, ${v.b}::int, ${"constant"} ${f.limit ? sql`LIMIT ${v.n}` : sql``} /* again */ ${v.a}::text`
    const shaped = sqlShapes((f: { readonly limit: boolean }) => (f.limit ? 1 : 0), build)
    const cases: Array<[{ readonly limit: boolean }, { readonly a: unknown; readonly b: unknown; readonly n: unknown }]> = [
      [{ limit: true }, { a: "x", b: 1, n: 5 }],
      [{ limit: false }, { a: "y", b: 2, n: undefined }],
      [{ limit: true }, { a: null, b: 3, n: 0 }],
      [{ limit: false }, { a: "z", b: null, n: 9 }],
    ]
    for (const [flags, values] of cases) {
      const [text, params] = compiled(shaped(flags, values))
      const [directText, directParams] = compiled(build(flags, values))
      expect(text).toBe(directText)
      expect(params).toEqual(directParams)
    }
    // One text per shape: the same string, not an equal one (its hash is computed once).
    expect(compiled(shaped({ limit: true }, { a: 1, b: 2, n: 3 }))[0]).toBe(compiled(shaped({ limit: true }, { a: 4, b: 5, n: 6 }))[0])
  })

  it("keeps at most MAX_SHAPES shapes; past them each call is built from its values, the same statement", () => {
    let built = 0
    const build = (n: number, v: { readonly a: unknown }) => {
      built++
      return sql`SELECT ${v.a}::text${sql.join("", false)(Array.from({ length: n }, (_, i) => sql`, ${i}::int`))}`
    }
    const shaped = sqlShapes((n: number) => n, build)
    for (let round = 0; round < 2; round++) {
      for (let n = 0; n < MAX_SHAPES + 10; n++) {
        const values = { a: `v${n}` }
        const [text, params] = compiled(shaped(n, values))
        const [directText, directParams] = compiled(build(n, values))
        expect(text).toBe(directText)
        expect(params).toEqual(directParams)
      }
    }
    // Per round: each call's direct build here; the first round also each cached shape's one build,
    // both rounds one build per call past the cache.
    expect(built).toBe(2 * (MAX_SHAPES + 10) + MAX_SHAPES + 2 * 10)
  })

  it("catches a builder that decides its text from a value (the test below relies on this)", () => {
    const build = (_f: null, v: { readonly a: unknown }) => (v.a === null ? sql`SELECT NULL` : sql`SELECT ${v.a}`)
    const shaped = sqlShapes(() => 0, build)
    expect(compiled(shaped(null, { a: null }))[0]).not.toBe(compiled(build(null, { a: null }))[0])
  })
})

describe("the write-back's append statement", () => {
  const base: AppendValues = {
    userId: "user-1",
    missionId: "mission-1",
    from: "00000000-0000-4000-8000-000000000001",
    iterationJson: '{"id":"it-1"}',
    dataJson: '{"iterations":[{"id":"it-1"}],"nextRunAt":null}',
    nextRunAt: "2026-12-03T05:00:00.000Z",
    fieldTimesJson: '{"iterations":"2026-12-02T05:00:00.000Z","nextRunAt":"2026-12-02T05:00:00.000Z"}',
    actorJson: '{"kind":"ai"}',
    writtenMs: 1_796_000_000_000,
    schedulable: true,
    missionRows: 3,
    agentId: "agent-1",
    agentRows: 2,
    iterationId: "it-1",
  }
  const variants: ReadonlyArray<AppendValues> = [
    base,
    { ...base, nextRunAt: null, schedulable: false },
    { ...base, from: undefined, iterationJson: undefined, missionRows: undefined, agentId: undefined, agentRows: undefined },
    { ...base, missionRows: 0, agentRows: 0, userId: "", dataJson: "" },
  ]
  for (const generation of ["field_meta", "field_timestamps"] as const) {
    for (const snapshotsPresent of [true, false]) {
      it(`is the directly built one for every shape (${generation}, snapshots ${snapshotsPresent ? "present" : "absent"})`, () => {
        const build = appendStatementBuilder(sql, generation, snapshotsPresent)
        const shaped = sqlShapes(appendShapeKey, build)
        const texts = new Set<string>()
        for (const copied of [true, false]) {
          for (const basis of [true, false]) {
            for (const agentCheck of [true, false]) {
              const shape: AppendShape = { copied, basis, agentCheck }
              for (const values of variants) {
                const [text, params] = compiled(shaped(shape, values))
                const [directText, directParams] = compiled(build(shape, values))
                expect(text).toBe(directText)
                expect(params).toEqual(directParams)
                texts.add(text)
              }
            }
          }
        }
        // agentCheck changes the text only with a basis: 6 texts.
        expect(texts.size).toBe(6)
      })
    }
  }
})

describe("the run's first transaction: the claim and the read", () => {
  // The builders take a client for its tagged templates only.
  const client = sql as unknown as SqlClient.SqlClient

  it("claim: the directly built statement, one process or a cluster", () => {
    const build = scopedClaimStatement(client)
    const shaped = sqlShapes((cluster: boolean) => (cluster ? 1 : 0), build)
    for (const cluster of [false, true, false]) {
      for (const userId of ["user-1", "", "o'brien"]) {
        const values = { userId, missionId: "m-1", iterationId: "it-1", owner: "runner-a", ...claimTimes(1_796_000_000_000, 180_000) }
        const [text, params] = compiled(shaped(cluster, values))
        const [directText, directParams] = compiled(build(cluster, values))
        expect(text).toBe(directText)
        expect(params).toEqual(directParams)
      }
    }
  })

  it("read: the prepared shape runReadQuery builds, for inputs of every kind", () => {
    const goal = { appId: "todo", table: "goals", recordId: "g-1" }
    const note = { appId: "notes", table: "notes", recordId: "n-1" }
    const agent = { appId: AGENTS_APP_ID, table: AGENTS_TABLE, recordId: "agent-1" }
    const self = { appId: MISSIONS_APP_ID, table: MISSIONS_TABLE, recordId: "m-1" }
    const alsos = [[], [goal], [goal, note], [agent], [goal, agent, note], [self, goal], [goal, goal, agent, agent], [note], []]
    for (const timeColumn of ["field_meta", "field_timestamps"] as const) {
      const read = runReadShapes(client, timeColumn)
      const texts = new Set<string>()
      for (const also of alsos) {
        const [text, params] = compiled(read("user-1", "m-1", also))
        const [directText, directParams] = compiled(runReadQuery(client, timeColumn, "user-1", "m-1", also, "prepared"))
        expect(text).toBe(directText)
        expect(params).toEqual(directParams)
        texts.add(text)
      }
      // No refs; one plain; two plain (twice); an agent; plain, agent, plain; one plain (twice); plain, agent.
      expect(texts.size).toBe(6)
    }
  })
})
