/**
 * GET /internal/audit/:userId (SPEC §15) on the real process composition: the key from
 * MANA_AI_PRIVATE_KEY_PEM, a real database as the runner role, a tick that runs a mission holding a
 * grant (offline planner), then the audit over HTTP.
 */
import { HttpClient, HttpClientRequest } from "@effect/platform"
import { expect, it } from "@effect/vitest"
import { Effect, Layer, Redacted } from "effect"
import { testProcessLayer } from "../../src/layers/test.js"
import { insertChange, missionData, runnerRows } from "../support/eventLogRows.js"
import { encryptValue, generateRunnerKeyPair, makeGrant } from "../support/grantFixtures.js"
import { TestDatabase, TestDatabaseLive } from "../support/TestDatabase.js"

const KEY = "test-service-key-0123456789"
const runner = await generateRunnerKeyPair()

const RealProcess = Layer.unwrapEffect(
  Effect.map(TestDatabase, (db) =>
    testProcessLayer({
      databaseUrl: db.runnerUrl,
      serviceKey: Redacted.make(KEY),
      env: { TICK_ENABLED: "false", DB_POOL_MAX: "4", SHUTDOWN_GRACE_MS: "1000", MANA_AI_PRIVATE_KEY_PEM: runner.privatePem },
    }),
  ),
).pipe(Layer.provideMerge(TestDatabaseLive))

const get = (path: string, key?: string) =>
  Effect.gen(function* () {
    const client = yield* HttpClient.HttpClient
    const request = key === undefined ? HttpClientRequest.get(path) : HttpClientRequest.setHeader(HttpClientRequest.get(path), "X-Service-Key", key)
    const response = yield* client.execute(request)
    return { status: response.status, body: (yield* response.json) as any }
  })

it.layer(RealProcess, { timeout: 60_000 })("GET /internal/audit on the real process", (it) => {
  it.effect("a tick decrypts the granted note; the audit lists it newest first, per mission, limited, behind the service key", () =>
    Effect.gen(function* () {
      const missionId = "audit-mission"
      const { grant, missionKey } = yield* Effect.promise(() =>
        makeGrant({ publicKey: runner.publicKey, missionId, recordIds: ["notes:n1", "notes:n2"] }),
      )
      for (const id of ["n1", "n2"]) {
        yield* insertChange({ user: "audit-user", app: "notes", table: "notes", id, data: { title: yield* Effect.promise(() => encryptValue(missionKey, `Secret ${id}`)) } })
      }
      yield* insertChange({
        user: "audit-user",
        id: missionId,
        data: missionData({
          nextRunAt: "1969-12-31T00:00:00.000Z",
          inputs: ["n1", "n2", "n3"].map((id) => ({ module: "notes", table: "notes", id })),
          grant,
        }),
      })
      const tick = yield* Effect.flatMap(HttpClient.HttpClient, (c) =>
        c.execute(HttpClientRequest.setHeader(HttpClientRequest.post("/internal/tick"), "X-Service-Key", KEY)),
      )
      expect(tick.status).toBe(200)

      expect((yield* get("/internal/audit/audit-user")).status).toBe(401)
      const all = yield* get("/internal/audit/audit-user", KEY)
      expect(all.status).toBe(200)
      expect(all.body.userId).toBe("audit-user")
      expect(all.body.rows.map((r: any) => [r.recordId, r.status, r.reason]).sort()).toEqual([
        ["n1", "ok", null],
        ["n2", "ok", null],
        ["n3", "scope-violation", "record-not-in-grant"],
      ])
      // iteration_id is the id of the iteration this run wrote.
      const written = yield* runnerRows("audit-user", missionId)
      const iterationId = (written[0]!.data as { iterations: Array<{ id: string }> }).iterations[0]!.id
      for (const r of all.body.rows) expect(r).toMatchObject({ missionId, tableName: "notes", iterationId })
      const ids = all.body.rows.map((r: any) => r.id)
      expect(ids).toEqual([...ids].sort((a: number, b: number) => b - a))

      expect((yield* get(`/internal/audit/audit-user?missionId=${missionId}&limit=1`, KEY)).body.rows).toEqual(all.body.rows.slice(0, 1))
      expect((yield* get("/internal/audit/audit-user?missionId=another", KEY)).body.rows).toEqual([])
      expect((yield* get("/internal/audit/someone-else", KEY)).body.rows).toEqual([])
      for (const bad of ["limit=0", "limit=1001", "limit=abc", "limit=2.5"]) {
        const response = yield* get(`/internal/audit/audit-user?${bad}`, KEY)
        expect(response.status, bad).toBe(400)
        expect(response.body.error).toBe("bad-request")
      }

      // The offline planner's plan is written in clear to the event log: no decrypted value in it.
      const rows = yield* runnerRows("audit-user", missionId)
      expect(rows).toHaveLength(1)
      expect(JSON.stringify(rows[0]!.data)).not.toContain("Secret")
    }),
  )
})
