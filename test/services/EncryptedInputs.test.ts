/**
 * Mission Grants through the real run pipeline (SPEC §15): a real database as the runner role, the
 * real resolvers, planner, LLM client (against the HTTP stand-in) and write-back; grants and
 * ciphertext built the way the app and mana-auth build them, for a fresh RSA key pair.
 */
import { it } from "@effect/vitest"
import { Effect, Either, Layer, Metric, Option, Redacted, TestServices } from "effect"
import { expect } from "vitest"
import { GrantConfig } from "../../src/services/AppConfig.js"
import { readAudit } from "../../src/services/decryptAudit.js"
import { GrantKeyring } from "../../src/services/GrantKeyring.js"
import { decryptsTotal, grantScopeViolationsTotal, grantSkipsTotal } from "../../src/services/metrics.js"
import { type ChangeRow, insertChange, missionData, runnerRows } from "../support/eventLogRows.js"
import { generateRunnerKeyPair, makeGrant, encryptBytes, encryptValue, specMasterKey } from "../support/grantFixtures.js"
import { LlmStandIn, messagesOf } from "../support/LlmStandIn.js"
import { runnerServices, runOnce } from "../support/RunnerStack.js"
import { TestDatabase, TestDatabaseLive } from "../support/TestDatabase.js"
import { SqlClient } from "@effect/sql"

const runner = await generateRunnerKeyPair()
const stranger = await generateRunnerKeyPair()
const der = new Uint8Array(Buffer.from(runner.privatePem.replace(/-----[^-]+-----|\s/g, ""), "base64"))
const Keyring = GrantKeyring.Default.pipe(
  Layer.provide(Layer.succeed(GrantConfig, { runnerKey: Option.some({ source: "MANA_AI_PRIVATE_KEY_PEM" as const, pkcs8: Redacted.make(der) }) })),
)
// json: one LLM request per run, so the tests can count the prompts that carried a plaintext.
const Stack = runnerServices({ plannerMode: "json" }).pipe(Layer.provide(Keyring), Layer.provideMerge(Layer.merge(TestDatabaseLive, LlmStandIn.layer)))

/** A user's master key (the app's), distinct per test user so a wrong key is really wrong. */
const MASTER = specMasterKey()
const OTHER_MASTER = Uint8Array.from({ length: 32 }, (_, i) => 200 - i)

let n = 0
const fresh = (prefix: string) => `${prefix}-${++n}-${Math.random().toString(36).slice(2, 8)}`

const count = (metric: Metric.Metric.Counter<number>, key: string, value: string) =>
  Effect.map(Metric.value(Metric.tagged(metric, key, value)), (s) => s.count)

const promise = <A>(f: () => Promise<A>) => Effect.promise(f)

interface Rec {
  readonly module: "notes" | "tasks" | "calendar" | "journal" | "kontext" | "profile"
  readonly app: string
  readonly table: string
  readonly id: string
}
const note = (id = fresh("n")): Rec => ({ module: "notes", app: "notes", table: "notes", id })
const task = (id = fresh("t")): Rec => ({ module: "tasks", app: "todo", table: "tasks", id })
const scopeKey = (r: Rec) => `${r.table}:${r.id}`

/** The record as the app syncs it: every field value given here is already ciphertext or plain. */
const insertRecord = (user: string, r: Rec, data: Record<string, unknown>, op: ChangeRow["op"] = "insert") =>
  insertChange({ user, app: r.app, table: r.table, id: r.id, op, data })

/** A due mission of `user` over `inputs`, with a grant over `covered` (none when covered is undefined). */
const grantedMission = (
  user: string,
  inputs: ReadonlyArray<Rec>,
  covered: ReadonlyArray<Rec> | undefined,
  grantOverrides: (grant: Record<string, unknown>, missionId: string) => unknown = (g) => g,
) =>
  Effect.gen(function* () {
    const missionId = fresh("mission")
    const fixture =
      covered === undefined
        ? undefined
        : yield* promise(() => makeGrant({ publicKey: runner.publicKey, masterKey: MASTER, missionId, recordIds: covered.map(scopeKey) }))
    yield* insertChange({
      user,
      id: missionId,
      data: missionData({
        inputs: inputs.map((r) => ({ module: r.module, table: r.table, id: r.id })),
        ...(fixture === undefined ? {} : { grant: grantOverrides(fixture.grant, missionId) }),
      }),
    })
    return { missionId, missionKey: fixture?.missionKey }
  })

const lastPrompt = Effect.gen(function* () {
  const requests = yield* (yield* LlmStandIn).requests
  return messagesOf(requests.at(-1)).map((m) => m.content).join("\n")
})

const auditOf = (user: string, missionId?: string) =>
  readAudit(user, { missionId, limit: 100 }).pipe(Effect.orDie)

const written = (result: Either.Either<{ readonly _tag: string }, unknown>) => {
  expect(Either.isRight(result) && result.right._tag).toBe("Written")
  return Either.isRight(result) && "iterationId" in result.right ? String(result.right.iterationId) : ""
}

it.layer(Stack, { timeout: 180_000 })("Mission Grant (run pipeline, grants on)", (it) => {
  it.effect("covered records are decrypted into the LLM request only; each read is one ok audit row with the iteration id", () =>
    Effect.gen(function* () {
      yield* (yield* LlmStandIn).reset
      const user = fresh("ann")
      const n1 = note()
      const t1 = task()
      const missionId = fresh("mission")
      const { grant, missionKey } = yield* promise(() =>
        makeGrant({ publicKey: runner.publicKey, masterKey: MASTER, missionId, recordIds: [scopeKey(n1), scopeKey(t1)] }),
      )
      const enc = (v: unknown) => promise(() => encryptValue(missionKey, v))
      yield* insertRecord(user, n1, { title: yield* enc("Marathon diary"), content: yield* enc("hello mission: knee feels better"), pinned: true })
      yield* insertRecord(user, t1, { title: yield* enc("Buy trail shoes"), status: "open", dueDate: "2026-04-01" })
      yield* insertChange({
        user,
        id: missionId,
        data: missionData({ inputs: [n1, t1].map((r) => ({ module: r.module, table: r.table, id: r.id })), grant }),
      })
      const before = yield* count(decryptsTotal, "table", "notes")

      const iterationId = written(yield* runOnce(user, missionId))

      const prompt = yield* lastPrompt
      expect(prompt).toContain("Marathon diary")
      expect(prompt).toContain("hello mission: knee feels better")
      expect(prompt).toContain("Buy trail shoes")
      expect(prompt).not.toContain("enc:1:")
      expect(prompt).not.toContain("Unavailable inputs")
      expect((yield* count(decryptsTotal, "table", "notes")) - before).toBe(2)

      const audit = yield* auditOf(user, missionId)
      expect(audit.map((r) => [r.tableName, r.recordId, r.status, r.reason, r.iterationId, r.missionId]).sort()).toEqual(
        [
          ["notes", n1.id, "ok", null, iterationId, missionId],
          ["tasks", t1.id, "ok", null, iterationId, missionId],
        ].sort(),
      )
      // What the runner wrote to the event log carries none of the plaintext (the stand-in's plan).
      const rows = yield* runnerRows(user, missionId)
      expect(rows).toHaveLength(1)
      expect(JSON.stringify(rows[0])).not.toMatch(/Marathon|knee|trail shoes/)
    }).pipe(TestServices.provideLive),
  )

  it.effect("an input outside recordIds is a scope violation: never read, audited, counted, named as unavailable", () =>
    Effect.gen(function* () {
      yield* (yield* LlmStandIn).reset
      const user = fresh("ann")
      const n1 = note()
      const n2 = note()
      const { missionId, missionKey } = yield* grantedMission(user, [n1, n2], [n1])
      yield* insertRecord(user, n1, { content: yield* promise(() => encryptValue(missionKey!, "granted text")) })
      yield* insertRecord(user, n2, { content: yield* promise(() => encryptValue(missionKey!, "never granted text")) })
      const before = yield* count(grantScopeViolationsTotal, "table", "notes")

      const iterationId = written(yield* runOnce(user, missionId))

      const prompt = yield* lastPrompt
      expect(prompt).toContain("granted text")
      expect(prompt).not.toContain("never granted text")
      expect(prompt).toContain(`notes/notes ${n2.id}: not covered by the mission's grant`)
      expect((yield* count(grantScopeViolationsTotal, "table", "notes")) - before).toBe(1)
      const audit = yield* auditOf(user, missionId)
      expect(audit.find((r) => r.recordId === n2.id)).toMatchObject({ status: "scope-violation", reason: "record-not-in-grant", iterationId })
      expect(audit.find((r) => r.recordId === n1.id)).toMatchObject({ status: "ok" })
    }).pipe(TestServices.provideLive),
  )

  it.effect("a tampered ciphertext, a wrong key, a deleted record, a huge and a binary plaintext each fail that one input, audited with its reason", () =>
    Effect.gen(function* () {
      yield* (yield* LlmStandIn).reset
      const user = fresh("ann")
      const [good, tampered, wrongKey, deleted, huge, binary] = [note(), note(), note(), note(), note(), note()]
      const all = [good, tampered, wrongKey, deleted, huge, binary]
      const { missionId, missionKey } = yield* grantedMission(user, all, all)
      const mdk = missionKey!
      yield* insertRecord(user, good, { content: yield* promise(() => encryptValue(mdk, "still readable")) })
      const ok = yield* promise(() => encryptValue(mdk, "tampered text"))
      const [head, body] = ok.split(".") as [string, string]
      const bytes = Buffer.from(body, "base64")
      bytes[3] = bytes[3]! ^ 0x40
      yield* insertRecord(user, tampered, { content: `${head}.${bytes.toString("base64")}` })
      // The app's own mistake upstream: a field under the master key, not the mission data key.
      yield* insertRecord(user, wrongKey, { content: yield* promise(() => encryptValue(OTHER_MASTER, "wrong key text")) })
      yield* insertRecord(user, deleted, { content: yield* promise(() => encryptValue(mdk, "deleted text")) })
      yield* insertRecord(user, deleted, {}, "delete")
      yield* insertRecord(user, huge, { content: yield* promise(() => encryptValue(mdk, "h".repeat(1_200_000))) })
      yield* insertRecord(user, binary, { content: yield* promise(() => encryptBytes(mdk, Uint8Array.from([0xc3, 0x28, 0xff]))) })

      written(yield* runOnce(user, missionId))

      const prompt = yield* lastPrompt
      expect(prompt).toContain("still readable")
      for (const secret of ["tampered text", "wrong key text", "deleted text", "hhhhhhhhhh"]) expect(prompt).not.toContain(secret)
      const audit = yield* auditOf(user, missionId)
      const byId = new Map(audit.map((r) => [r.recordId, [r.status, r.reason]]))
      expect(Object.fromEntries(all.map((r) => [r.id, byId.get(r.id)]))).toEqual({
        [good.id]: ["ok", null],
        [tampered.id]: ["failed", "ciphertext-tampered-or-wrong-key"],
        [wrongKey.id]: ["failed", "ciphertext-tampered-or-wrong-key"],
        [deleted.id]: ["failed", "record-deleted"],
        [huge.id]: ["failed", "ciphertext-too-large"],
        [binary.id]: ["failed", "plaintext-not-utf8"],
      })
      expect(audit).toHaveLength(6)
      expect(prompt).toContain(`notes/notes ${deleted.id}: could not be read (record-deleted)`)
    }).pipe(TestServices.provideLive),
  )

  it.effect("bad input of one user (malformed ciphertext, a wrong-shaped grant) fails only those inputs; another user's run at the same time goes on", () =>
    Effect.gen(function* () {
      const standIn = yield* LlmStandIn
      yield* standIn.reset
      const [ann, bob, cleo] = [fresh("ann"), fresh("bob"), fresh("cleo")]
      const bad = note()
      const annMission = yield* grantedMission(ann, [bad], [bad])
      yield* insertRecord(ann, bad, { content: "enc:1:AAECAwQFBgcICQoL", title: "enc:1:%%%.%%%" })
      const cleoNote = note()
      const cleoMission = yield* grantedMission(cleo, [cleoNote], [cleoNote], (g) => ({ ...g, derivation: ["not", "an", "object"] }))
      yield* insertRecord(cleo, cleoNote, { content: "enc:1:AAAA.AAAA" })
      const good = note()
      const bobMission = yield* grantedMission(bob, [good], [good])
      yield* insertRecord(bob, good, { content: yield* promise(() => encryptValue(bobMission.missionKey!, "bob's readable note")) })

      const results = yield* Effect.all(
        [runOnce(ann, annMission.missionId), runOnce(bob, bobMission.missionId), runOnce(cleo, cleoMission.missionId)],
        { concurrency: "unbounded" },
      )
      for (const r of results) written(r)
      const prompts = (yield* standIn.requests).map((r) => messagesOf(r).map((m) => m.content).join("\n"))
      expect(prompts.filter((p) => p.includes("bob's readable note"))).toHaveLength(1)
      expect((yield* auditOf(ann)).map((r) => [r.status, r.reason])).toEqual([["failed", "ciphertext-malformed"]])
      expect(yield* auditOf(bob)).toHaveLength(1)
      // A grant of the wrong shape is malformed as a whole: nothing tried, nothing audited.
      expect(yield* auditOf(cleo)).toEqual([])
    }).pipe(TestServices.provideLive),
  )

  const reasons: ReadonlyArray<[string, (g: Record<string, unknown>, missionId: string) => unknown]> = [
    ["expired", (g) => ({ ...g, expiresAt: "2020-01-01T00:00:00.000Z" })],
    ["mission-mismatch", (g) => ({ ...g, derivation: { ...(g.derivation as object), missionId: "someone-else" } })],
    ["malformed", (g) => ({ ...g, wrappedKey: "%%%not base64%%%" })],
    // A grant of the wrong shape: no tables, no recordIds.
    ["malformed", (g, missionId) => ({ ...g, derivation: { version: "v1", missionId } })],
    ["wrap-rejected", (g) => g],
  ]
  for (const [reason, change] of reasons) {
    it.effect(`a grant that fails with ${reason} is counted and logged; the run goes on without the encrypted inputs and the prompt names them`, () =>
      Effect.gen(function* () {
        yield* (yield* LlmStandIn).reset
        const user = fresh("ann")
        const n1 = note()
        const missionId = fresh("mission")
        const fixture = yield* promise(() =>
          makeGrant({ publicKey: reason === "wrap-rejected" ? stranger.publicKey : runner.publicKey, masterKey: MASTER, missionId, recordIds: [scopeKey(n1)] }),
        )
        yield* insertRecord(user, n1, { content: yield* promise(() => encryptValue(fixture.missionKey, "the secret note")) })
        yield* insertChange({
          user,
          id: missionId,
          data: missionData({ inputs: [{ module: "notes", table: "notes", id: n1.id }], grant: change(fixture.grant, missionId) }),
        })
        const before = yield* count(grantSkipsTotal, "reason", reason)

        written(yield* runOnce(user, missionId))

        expect((yield* count(grantSkipsTotal, "reason", reason)) - before).toBe(1)
        const prompt = yield* lastPrompt
        expect(prompt).not.toContain("the secret note")
        expect(prompt).toContain(`notes/notes ${n1.id}: the mission's grant is unusable (${reason})`)
        expect(yield* auditOf(user, missionId)).toEqual([])
      }).pipe(TestServices.provideLive),
    )
  }

  it.effect("a grant revoked (grant: null) between two runs: the second run reads nothing and audits nothing", () =>
    Effect.gen(function* () {
      const standIn = yield* LlmStandIn
      yield* standIn.reset
      const user = fresh("ann")
      const n1 = note()
      const { missionId, missionKey } = yield* grantedMission(user, [n1], [n1])
      yield* insertRecord(user, n1, { content: yield* promise(() => encryptValue(missionKey!, "revocable text")) })

      written(yield* runOnce(user, missionId))
      expect(yield* lastPrompt).toContain("revocable text")
      expect(yield* auditOf(user, missionId)).toHaveLength(1)

      // The app revokes the grant and the user asks for another run.
      const later = new Date(Date.now() + 1000).toISOString()
      yield* insertChange({
        user,
        id: missionId,
        op: "update",
        data: { grant: null, nextRunAt: "2026-03-03T08:00:00.000Z" },
        fieldTimestamps: { grant: later, nextRunAt: later },
      })
      written(yield* runOnce(user, missionId))
      const second = yield* lastPrompt
      expect((yield* standIn.requests).length).toBe(2)
      expect(second).not.toContain("revocable text")
      expect(second).toContain(`notes/notes ${n1.id}: the mission has no grant`)
      expect(yield* auditOf(user, missionId)).toHaveLength(1)
    }).pipe(TestServices.provideLive),
  )

  it.effect("two missions of one user over the same note: only the one holding a grant reads it", () =>
    Effect.gen(function* () {
      yield* (yield* LlmStandIn).reset
      const user = fresh("ann")
      const n1 = note()
      const a = yield* grantedMission(user, [n1], [n1])
      const b = yield* grantedMission(user, [n1], undefined)
      yield* insertRecord(user, n1, { content: yield* promise(() => encryptValue(a.missionKey!, "shared note text")) })

      written(yield* runOnce(user, b.missionId))
      expect(yield* lastPrompt).not.toContain("shared note text")
      written(yield* runOnce(user, a.missionId))
      expect(yield* lastPrompt).toContain("shared note text")

      expect(yield* auditOf(user, b.missionId)).toEqual([])
      expect((yield* auditOf(user, a.missionId)).map((r) => r.status)).toEqual(["ok"])
      expect((yield* auditOf(user)).map((r) => r.missionId)).toEqual([a.missionId])
    }).pipe(TestServices.provideLive),
  )

  it.effect("decrypt_audit is per user under forced RLS: another user's scope sees none of it and cannot write for it", () =>
    Effect.gen(function* () {
      yield* (yield* LlmStandIn).reset
      const user = fresh("ann")
      const n1 = note()
      const { missionId, missionKey } = yield* grantedMission(user, [n1], [n1])
      yield* insertRecord(user, n1, { content: yield* promise(() => encryptValue(missionKey!, "x")) })
      written(yield* runOnce(user, missionId))
      expect(yield* auditOf(user)).toHaveLength(1)
      expect(yield* auditOf("mallory")).toEqual([])

      const sql = yield* SqlClient.SqlClient
      // Outside any scope the runner role sees nothing; inside mallory's it cannot write ann's row.
      const unscoped = yield* sql`SELECT count(*)::int AS n FROM mana_ai.decrypt_audit`
      expect(unscoped).toEqual([{ n: 0 }])
      const forged = yield* Effect.either(
        sql.withTransaction(
          Effect.zipRight(
            sql`SELECT set_config('app.current_user_id', 'mallory', true)`,
            sql`INSERT INTO mana_ai.decrypt_audit (user_id, mission_id, iteration_id, table_name, record_id, status)
                VALUES (${user}, 'm', 'i', 'notes', 'n', 'ok')`,
          ),
        ),
      )
      expect(forged._tag).toBe("Left")
      const db = yield* TestDatabase
      const flags = yield* promise(() =>
        db.ownerQuery("SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = 'mana_ai.decrypt_audit'::regclass"),
      )
      expect(flags).toEqual([{ relrowsecurity: true, relforcerowsecurity: true }])
    }).pipe(TestServices.provideLive),
  )

  it.effect("the audit lists newest first, filtered by mission, cut at limit", () =>
    Effect.gen(function* () {
      yield* (yield* LlmStandIn).reset
      const user = fresh("ann")
      const notes = [note(), note(), note()]
      const { missionId, missionKey } = yield* grantedMission(user, notes, notes.slice(0, 2))
      for (const r of notes) yield* insertRecord(user, r, { content: yield* promise(() => encryptValue(missionKey!, "x")) })
      written(yield* runOnce(user, missionId))
      const all = yield* auditOf(user, missionId)
      expect(all).toHaveLength(3)
      const ids = all.map((r) => r.id)
      expect(ids).toEqual([...ids].sort((x, y) => y - x))
      expect(all.map((r) => Date.parse(r.at))).toEqual(all.map((r) => Date.parse(r.at)).sort((x, y) => y - x))
      expect(yield* readAudit(user, { missionId, limit: 2 }).pipe(Effect.orDie)).toEqual(all.slice(0, 2))
      expect(yield* readAudit(user, { missionId: "other", limit: 10 }).pipe(Effect.orDie)).toEqual([])
    }).pipe(TestServices.provideLive),
  )
})

// No key configured (no GrantKeyring in the composition, as with neither variable set).
const Unkeyed = runnerServices({ plannerMode: "json" }).pipe(Layer.provideMerge(Layer.merge(TestDatabaseLive, LlmStandIn.layer)))

it.layer(Unkeyed, { timeout: 180_000 })("Mission Grant (run pipeline, grants off)", (it) => {
  it.effect("a mission with a grant is counted as not-configured, runs without its encrypted inputs and audits nothing", () =>
    Effect.gen(function* () {
      yield* (yield* LlmStandIn).reset
      const user = fresh("ann")
      const n1 = note()
      const { missionId, missionKey } = yield* grantedMission(user, [n1], [n1])
      yield* insertRecord(user, n1, { content: yield* promise(() => encryptValue(missionKey!, "unreachable text")) })
      const before = yield* count(grantSkipsTotal, "reason", "not-configured")
      written(yield* runOnce(user, missionId))
      expect((yield* count(grantSkipsTotal, "reason", "not-configured")) - before).toBe(1)
      const prompt = yield* lastPrompt
      expect(prompt).not.toContain("unreachable text")
      expect(prompt).toContain(`notes/notes ${n1.id}: the mission's grant is unusable (not-configured)`)
      expect(yield* auditOf(user)).toEqual([])
    }).pipe(TestServices.provideLive),
  )
})
