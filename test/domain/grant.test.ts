/**
 * Mission Grant's pure part and its crypto (SPEC §15), against SPEC's verified check values and
 * fixtures built the way the app builds them (HKDF from a master key, AES-GCM, RSA-OAEP).
 */
import { webcrypto } from "node:crypto"
import { it } from "@effect/vitest"
import { Effect, Either, Option, TestClock } from "effect"
import { describe, expect } from "vitest"
import { checkGrantClaims, parseCiphertext } from "../../src/domain/grant.js"
import { makeGrantKeyring } from "../../src/services/GrantKeyring.js"
import { decryptRecord, decryptValue, importRunnerKey } from "../../src/services/grantCrypto.js"
import {
  deriveMissionKey,
  encryptBytes,
  encryptValue,
  generateRunnerKeyPair,
  hex,
  makeGrant,
  specMasterKey,
  wrapKey,
} from "../support/grantFixtures.js"

const subtle = webcrypto.subtle
const FIXED_IV = Uint8Array.from({ length: 12 }, (_, i) => i)
const SPEC_MDK = "7538df66c51d3ddb667c0135feb4ac7c2800ba372babc7e61e9423d6a9a65628"
const SPEC_HELLO = "enc:1:AAECAwQFBgcICQoL.lU/8WrtW0r8//aWe7hGssJyju37ROodMVL2VHMY65w=="

const aesKey = (bytes: Uint8Array) => Effect.promise(() => subtle.importKey("raw", bytes, "AES-GCM", false, ["decrypt"]))
const specKey = Effect.promise(() => deriveMissionKey(specMasterKey(), "mission-abc", ["notes", "tasks"], ["notes:n1", "tasks:t1"]))

describe("SPEC §15 check values", () => {
  it.effect("HKDF of the SPEC master key gives the SPEC mission data key, whatever the order of tables and ids", () =>
    Effect.gen(function* () {
      expect(hex(yield* specKey)).toBe(SPEC_MDK)
      const reordered = yield* Effect.promise(() =>
        deriveMissionKey(specMasterKey(), "mission-abc", ["tasks", "notes"], ["tasks:t1", "notes:n1"]),
      )
      expect(hex(reordered)).toBe(SPEC_MDK)
      const notesOnly = yield* Effect.promise(() => deriveMissionKey(specMasterKey(), "mission-abc", ["notes"], ["notes:n1"]))
      expect(hex(notesOnly)).toBe("c0994b8ed0b009baf050ecc3e3b627cbcb14e126385f922f685081e2c17feb69")
    }),
  )

  it.effect('"hello mission" under that key with IV 00..0b is the SPEC ciphertext, and the runner decrypts it', () =>
    Effect.gen(function* () {
      const mdk = yield* specKey
      expect(yield* Effect.promise(() => encryptValue(mdk, "hello mission", FIXED_IV))).toBe(SPEC_HELLO)
      expect(yield* decryptValue(yield* aesKey(mdk), SPEC_HELLO, "content")).toBe("hello mission")
      const obj = "enc:1:AAECAwQFBgcICQoL.zAXtX6NVl/BsrK7VrV36YHfCh/qLLMgc4ezfrFRTWjotYIDtcUP8Kf44indByA=="
      expect(yield* decryptValue(yield* aesKey(mdk), obj, "content")).toEqual({ title: "x", tags: ["y", "z"] })
    }),
  )

  it.effect("a value encrypted under the master key itself fails under the mission data key (wrong key)", () =>
    Effect.gen(function* () {
      const underMaster = "enc:1:AAECAwQFBgcICQoL.U1hk+6SyQWZmWMEoC/bV79DVnEVxMPyL360Aac9cpw=="
      const error = yield* Effect.flip(decryptValue(yield* aesKey(yield* specKey), underMaster, "content"))
      expect(error.reason).toBe("ciphertext-tampered-or-wrong-key")
    }),
  )
})

describe("decryption failures are typed, one reason each", () => {
  const cases: ReadonlyArray<[string, (mdk: Uint8Array) => Promise<string>, string]> = [
    ["no dot", async () => "enc:1:nodot", "ciphertext-malformed"],
    ["IV not base64", async () => "enc:1:***.lU/8WrtW0r8//aWe7hGssJyju37ROodMVL2VHMY65w==", "ciphertext-malformed"],
    ["IV of 8 bytes", async () => "enc:1:AAECAwQFBgc=.lU/8WrtW0r8//aWe7hGssJyju37ROodMVL2VHMY65w==", "ciphertext-malformed"],
    ["ciphertext shorter than the tag", async () => "enc:1:AAECAwQFBgcICQoL.AAEC", "ciphertext-malformed"],
    [
      "one ciphertext bit flipped",
      async () => {
        const [head, body] = SPEC_HELLO.split(".") as [string, string]
        const bytes = Buffer.from(body, "base64")
        bytes[0] = bytes[0]! ^ 1
        return `${head}.${bytes.toString("base64")}`
      },
      "ciphertext-tampered-or-wrong-key",
    ],
    ["a huge plaintext (2 MiB)", (mdk) => encryptValue(mdk, "x".repeat(2 * 1024 * 1024)), "ciphertext-too-large"],
    ["a binary plaintext (not UTF-8)", (mdk) => encryptBytes(mdk, Uint8Array.from([0xff, 0xfe, 0x00, 0xc3])), "plaintext-not-utf8"],
    ["a plaintext that is not JSON", (mdk) => encryptBytes(mdk, new TextEncoder().encode("hello, not json")), "plaintext-not-json"],
  ]
  for (const [name, make, reason] of cases) {
    it.effect(`${name} → ${reason}`, () =>
      Effect.gen(function* () {
        const mdk = yield* specKey
        const value = yield* Effect.promise(() => make(mdk))
        const error = yield* Effect.flip(decryptValue(yield* aesKey(mdk), value, "content"))
        expect(error._tag).toBe("DecryptFailed")
        expect(error.reason).toBe(reason)
        expect(error.message).not.toContain("hello")
      }),
    )
  }

  it("parseCiphertext splits at the first dot and checks the IV length", () => {
    expect(Either.isRight(parseCiphertext(SPEC_HELLO))).toBe(true)
    expect(parseCiphertext("plain text")).toEqual(Either.left("ciphertext-malformed"))
  })

  it.effect("decryptRecord decrypts every enc:1: field and keeps the rest; one bad field fails the record", () =>
    Effect.gen(function* () {
      const mdk = yield* specKey
      const key = yield* aesKey(mdk)
      const title = yield* Effect.promise(() => encryptValue(mdk, "Secret title"))
      const out = yield* decryptRecord(key, { id: "n1", title, content: SPEC_HELLO, pinned: true })
      expect(out).toEqual({ record: { id: "n1", title: "Secret title", content: "hello mission", pinned: true }, fields: 2 })
      const bad = yield* Effect.flip(decryptRecord(key, { title, content: "enc:1:nodot" }))
      expect(bad).toMatchObject({ reason: "ciphertext-malformed", field: "content" })
    }),
  )
})

describe("grant checks in SPEC order", () => {
  const NOW = Date.parse("2026-06-01T00:00:00.000Z")
  const valid = {
    wrappedKey: "AAAA",
    derivation: { version: "v1", missionId: "m1", tables: ["notes"], recordIds: ["notes:n1"] },
    issuedAt: "2026-05-01T00:00:00.000Z",
    expiresAt: "2026-07-01T00:00:00.000Z",
  }
  const cases: ReadonlyArray<[string, unknown, string]> = [
    ["expiresAt in the past", { ...valid, expiresAt: "2026-05-31T23:59:59.000Z" }, "expired"],
    ["expiresAt unparseable", { ...valid, expiresAt: "next week" }, "expired"],
    ["expiresAt missing", { ...valid, expiresAt: undefined }, "expired"],
    ["expired and for another mission: expired first", { ...valid, expiresAt: "2020-01-01T00:00:00Z", derivation: { ...valid.derivation, missionId: "m2" } }, "expired"],
    ["derivation.missionId of another mission", { ...valid, derivation: { ...valid.derivation, missionId: "m2" } }, "mission-mismatch"],
    ["no derivation at all", { ...valid, derivation: undefined }, "mission-mismatch"],
    ["mismatch and malformed: mismatch first", { ...valid, wrappedKey: 42, derivation: { ...valid.derivation, missionId: "m2" } }, "mission-mismatch"],
    ["wrappedKey not base64", { ...valid, wrappedKey: "not base64!" }, "malformed"],
    ["wrappedKey not a string", { ...valid, wrappedKey: 42 }, "malformed"],
    ["recordIds not an array of strings", { ...valid, derivation: { ...valid.derivation, recordIds: "notes:n1" } }, "malformed"],
    ["unknown derivation version", { ...valid, derivation: { ...valid.derivation, version: "v2" } }, "malformed"],
    ["a grant that is a string", "grant!", "expired"],
  ]
  for (const [name, grant, reason] of cases) {
    it(`${name} → ${reason}`, () => {
      const out = checkGrantClaims(grant, "m1", NOW)
      expect(Either.isLeft(out) ? out.left.reason : "passed").toBe(reason)
    })
  }
  it("a grant that passes gives its allow-list", () => {
    const out = checkGrantClaims(valid, "m1", NOW)
    expect(Either.isRight(out) && [...out.right.allowed]).toEqual(["notes:n1"])
  })
})

describe("GrantKeyring.open: the key-dependent checks", () => {
  const keys = Effect.promise(() => Promise.all([generateRunnerKeyPair(), generateRunnerKeyPair()]))
  const runnerKey = (privatePem: string) =>
    importRunnerKey(new Uint8Array(Buffer.from(privatePem.replace(/-----[^-]+-----|\s/g, ""), "base64"))).pipe(Effect.orDie)

  it.effect("not-configured comes before every other check", () =>
    Effect.gen(function* () {
      const out = yield* makeGrantKeyring(Option.none()).open({ expiresAt: "2000-01-01T00:00:00Z" }, "m1")
      expect(out).toMatchObject({ _tag: "Rejected", reason: "not-configured" })
    }),
  )

  it.effect("a grant wrapped for the runner's key opens; the key decrypts the app's values; another key is wrap-rejected", () =>
    Effect.gen(function* () {
      const [mine, other] = yield* keys
      const { grant } = yield* Effect.promise(() =>
        makeGrant({ publicKey: mine.publicKey, missionId: "mission-abc", recordIds: ["notes:n1", "tasks:t1"] }),
      )
      const keyring = makeGrantKeyring(Option.some(yield* runnerKey(mine.privatePem)))
      const open = yield* keyring.open(grant, "mission-abc")
      expect(open._tag).toBe("Open")
      if (open._tag !== "Open") return
      expect([...open.allowed].sort()).toEqual(["notes:n1", "tasks:t1"])
      expect(yield* decryptValue(open.key, SPEC_HELLO, "content")).toBe("hello mission")

      const otherKeyring = makeGrantKeyring(Option.some(yield* runnerKey(other.privatePem)))
      expect(yield* otherKeyring.open(grant, "mission-abc")).toMatchObject({ _tag: "Rejected", reason: "wrap-rejected" })
      expect(yield* keyring.open(grant, "mission-xyz")).toMatchObject({ _tag: "Rejected", reason: "mission-mismatch" })
    }),
  )

  it.effect("an unwrapped key of 31 bytes is malformed", () =>
    Effect.gen(function* () {
      const [mine] = yield* keys
      const wrapped = yield* Effect.promise(() => wrapKey(mine.publicKey, new Uint8Array(31).fill(7)))
      const grant = {
        wrappedKey: wrapped,
        derivation: { version: "v1", missionId: "m1", tables: ["notes"], recordIds: ["notes:n1"] },
        expiresAt: "2099-01-01T00:00:00Z",
      }
      const out = yield* makeGrantKeyring(Option.some(yield* runnerKey(mine.privatePem))).open(grant, "m1")
      expect(out).toMatchObject({ _tag: "Rejected", reason: "malformed" })
    }),
  )

  it.effect("expiry is judged by Effect's Clock", () =>
    Effect.gen(function* () {
      const [mine] = yield* keys
      const { grant } = yield* Effect.promise(() =>
        makeGrant({ publicKey: mine.publicKey, missionId: "m1", recordIds: ["notes:n1"], expiresAt: "1970-01-02T00:00:00.000Z" }),
      )
      const keyring = makeGrantKeyring(Option.some(yield* runnerKey(mine.privatePem)))
      expect((yield* keyring.open(grant, "m1"))._tag).toBe("Open")
      yield* TestClock.adjust("2 days")
      expect(yield* keyring.open(grant, "m1")).toMatchObject({ _tag: "Rejected", reason: "expired" })
    }),
  )
})
